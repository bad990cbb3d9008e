"""RL phase pieces that need no training: cutting completions after the closing tag, the step journals, mid-phase
checkpoints, GRPO args."""

import json

import pytest

from training.config import load_config
from training.rl import (
    CHECKPOINT_MARKER,
    StepJournal,
    _seal_checkpoint,
    cut_after_close_tag,
    grpo_args,
    grpo_settings,
    latest_checkpoint,
)


def test_completion_is_cut_right_after_the_closing_tag(tokenizer):
    text = 'Hi.\n\n[SELF_EVAL]\n{"helpfulness": 7}\n[/SELF_EVAL]\nUser: more text the model ran on with'
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = cut_after_close_tag(ids, tokenizer.decode)
    assert "[/SELF_EVAL]" in tokenizer.decode(cut) and "[/SELF_EVAL]" not in tokenizer.decode(cut[:-1])
    assert "User:" not in tokenizer.decode(cut)
    no_tag = tokenizer.encode("no block here", add_special_tokens=False)
    assert cut_after_close_tag(no_tag, tokenizer.decode) == no_tag


def test_rollout_log_survives_a_torn_line(tmp_path):
    log = StepJournal(tmp_path / "r.jsonl")
    log.append({"a": 1})
    with open(tmp_path / "r.jsonl", "a") as handle:
        handle.write('{"a": ')
    log.append({"a": 2})
    assert [r["a"] for r in log.read()] == [1, 2]
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0]) == {"a": 1}


def test_a_resumed_phase_drops_the_records_of_the_steps_it_redoes(tmp_path):
    journal = StepJournal(tmp_path / "rollouts.jsonl")
    for step in (1, 1, 2, 2, 3):
        journal.append({"step": step})
    with open(journal.path, "a") as handle:
        handle.write('{"step": 3, "torn')  # the kill came mid-line
    assert journal.drop_after(2) == 1
    assert [r["step"] for r in journal.read()] == [1, 1, 2, 2]
    assert journal.path.read_text().endswith("}\n")  # the torn tail went too
    assert journal.drop_after(2) == 0
    journal.append({"step": 3})
    assert [r["step"] for r in journal.read()] == [1, 1, 2, 2, 3]


def test_only_a_sealed_checkpoint_is_resumed_and_sealing_drops_the_older_one(tmp_path):
    trainer = tmp_path / "trainer"
    assert latest_checkpoint(trainer) is None  # no directory yet
    (trainer / "checkpoint-2").mkdir(parents=True)
    _seal_checkpoint(trainer, 2, processes=2)
    (trainer / "checkpoint-4").mkdir()  # saved, but the kill came before every rank was done: no marker
    found = latest_checkpoint(trainer)
    assert (found.path.name, found.step, found.processes) == ("checkpoint-2", 2, 2)
    (trainer / "checkpoint-4" / CHECKPOINT_MARKER).write_text('{"step": 4, "proc')  # torn marker
    assert latest_checkpoint(trainer).step == 2
    _seal_checkpoint(trainer, 4, processes=2)
    assert latest_checkpoint(trainer).step == 4
    assert [p.name for p in trainer.iterdir()] == ["checkpoint-4"]


def test_checkpoints_are_saved_every_n_steps_with_optimiser_state_or_not_at_all(tmp_path):
    saving = grpo_settings(load_config("cpu-smoke"), tmp_path, cycle=1, on_gpu=False, world_size=1)
    assert (saving["save_strategy"], saving["save_steps"], saving["save_only_model"]) == ("steps", 1, False)
    never = load_config("cpu-smoke", ["rl.checkpoint_every=0"])
    assert grpo_settings(never, tmp_path, cycle=1, on_gpu=False, world_size=1)["save_strategy"] == "no"
    assert load_config("paper").rl.checkpoint_every == 2


def test_grpo_is_set_to_the_papers_algorithm(tmp_path):
    config = load_config("paper")
    args = grpo_args(config, tmp_path, cycle=1, on_gpu=False, world_size=1)
    assert (args.beta, args.epsilon, args.num_iterations, args.loss_type) == (0.01, 0.2, 1, "dapo")
    assert (args.temperature, args.top_p, args.top_k, args.learning_rate) == (0.8, 0.9, 25, 1e-6)
    assert args.num_generations == 8 and args.entropy_coef == 0.001 and args.scale_rewards == "group"
    # one optimiser update per step: 16 prompts x 8 samples over batches of 8 completions
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 128
    # vLLM rollouts take the stop string (kept in the output); the recomputed logprobs are the policy's
    assert args.use_vllm and args.generation_kwargs == {"stop": ["[/SELF_EVAL]"], "include_stop_str_in_output": True}
    assert args.vllm_importance_sampling_correction is False and args.vllm_max_model_length == 4096 + 8192
    plain = grpo_args(load_config("paper", ["rl.use_vllm=false"]), tmp_path, cycle=1, on_gpu=False, world_size=1)
    assert not plain.use_vllm and plain.generation_kwargs == {"stop_strings": ["[/SELF_EVAL]"]}
    gpu = grpo_settings(config, tmp_path, cycle=1, on_gpu=True, world_size=4)  # GRPOConfig wants a GPU for bf16
    assert gpu["use_vllm"] and gpu["bf16"] and gpu["gradient_checkpointing"]
    assert gpu["vllm_gpu_memory_utilization"] == 0.3
    roomier = grpo_settings(load_config("paper", ["rl.vllm_gpu_memory_utilization=0.45"]), tmp_path, 1, True, 4)
    assert roomier["vllm_gpu_memory_utilization"] == 0.45
    assert gpu["per_device_train_batch_size"] * gpu["gradient_accumulation_steps"] * 4 == 128


def test_reward_judges_valid_blocks_only_and_logs_every_rollout(tmp_path):
    import asyncio

    from selfeval.judge import JudgeClient, JudgeSettings
    from training.loop import _rollout_summary
    from training.progress import NullProgress
    from training.records import RolloutRecord
    from training.reward import score_reward
    from training.rl import RewardContext, make_reward_function
    from training.testing.rule_judge import RULE_JUDGE_MODEL, running_rule_judge

    config = load_config("cpu-smoke")
    scores = {"helpfulness": 7, "correctness": 7, "coherence": 8, "complexity": 2, "verbosity": 2}
    group = _group(scores)
    valid = (
        'Paris is the capital.\n\n[SELF_EVAL]\n{"helpfulness": 7, "correctness": 7, "coherence": 8, '
        '"complexity": 2, "verbosity": 2}\n[/SELF_EVAL]'
    )
    with running_rule_judge() as (url, state):
        judge = JudgeClient(JudgeSettings(base_url=url, model=RULE_JUDGE_MODEL, api_key_env="", max_attempts=1))
        journal = StepJournal(tmp_path / "rollouts.jsonl")
        reward = make_reward_function(RewardContext(config, {5: group}, judge, journal, 1, NullProgress()))
        rewards = asyncio.run(reward(prompts=["p", "p"], completions=[valid, "Paris."], group_index=[5, 5]))
        assert state.requests == 1  # the invalid output never reaches the judge
    records = journal.read()
    judged = next(r for r in records if r["format_ok"])
    assert rewards[0] == score_reward(scores, judged["judge_scores"], config.reward).reward
    assert rewards[1] == -1.0
    assert {r["collection_status"] for r in records} == {"judge_ok", "format_invalid"}
    invalid = next(r for r in records if not r["format_ok"])
    assert "format_error" in invalid and "judge_cached" not in invalid and "format_error" not in judged
    summary = _rollout_summary([RolloutRecord.from_dict(r) for r in records])
    assert summary["format_rate"] == 0.5 and summary["reward"] == (rewards[0] - 1) / 2


def _group(scores):
    from selfeval.judge import Reference
    from training.data import PromptGroup

    conversation = [{"role": "user", "content": "What is the capital of France?"}]
    return PromptGroup(5, "What is the capital of France?", conversation, [Reference("Paris.", scores)])


def test_step_clock_laps_split_the_phase_totals_per_step():
    from training.rl import StepClock

    clock = StepClock()
    clock.add("generation_s", 2.0)
    clock.add("reward_s", 0.5)
    assert clock.lap() == {"generation_s": 2.0, "reward_s": 0.5}
    clock.add("generation_s", 1.0)
    assert clock.lap() == {"generation_s": 1.0, "reward_s": 0.0}
    assert clock.totals == {"generation_s": 3.0, "reward_s": 0.5}


def test_the_private_trl_method_we_override_keeps_the_shape_it_was_checked_with():
    """training/rl.py overrides GRPOTrainer._generate_single_turn, a private method: a trl that renamed it, stopped
    calling it or changed its return would let completions run past [/SELF_EVAL] without an error."""
    import inspect

    from trl import GRPOTrainer

    assert list(inspect.signature(GRPOTrainer._generate_single_turn).parameters)[:2] == ["self", "prompt_ids"]
    callers = [line for line in inspect.getsource(GRPOTrainer).splitlines() if "self._generate_single_turn(" in line]
    assert callers, "GRPOTrainer no longer generates through _generate_single_turn"
    body = inspect.getsource(GRPOTrainer._generate_single_turn).rstrip()
    assert body.endswith("return completion_ids, logprobs")


def test_vllm_rollouts_are_refused_before_any_work_where_vllm_cpu_packs_weights(monkeypatch):
    from training import rl
    from training.config import ConfigError

    config = load_config("cpu-smoke", ["rl.use_vllm=true"])
    monkeypatch.setattr(rl, "vllm_cpu_packs_linear_weights", lambda: True)
    with pytest.raises(ConfigError, match="rl.use_vllm=false"):
        rl.check_rollout_engine(config, on_gpu=False)
    rl.check_rollout_engine(config, on_gpu=True)  # GPUs keep their weights
    rl.check_rollout_engine(load_config("cpu-smoke", []), on_gpu=False)  # transformers rollouts
    monkeypatch.setattr(rl, "vllm_cpu_packs_linear_weights", lambda: False)
    rl.check_rollout_engine(config, on_gpu=False)
