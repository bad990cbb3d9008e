"""`see train` as two processes (torchrun, gloo on CPU) against the rule-based judge over loopback: the trainers
run on both ranks, main alone writes the run's records, and a run killed twice resumes with the same processes
each time, paying no judge prompt twice: once in the middle of the RL phase (it resumes from the step-1
checkpoint both ranks saved), once after a main-only phase (both ranks skip what the manifest records)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from selfeval.card import load_card
from tests.integration.conftest import REPO
from training.testing.rule_judge import running_rule_judge

PROCESSES = 2
PER_RANK_BATCH = 4  # 2 prompts x 4 samples = 8 completions per step, 4 on each rank
SFT_BATCH = 2  # per rank; keeps two ranks' activations (no gradient checkpointing on CPU) well inside 24 GB


def train_two_ranks(run_dir, judge_url, **env):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}"]
    command += ["-m", "seecli.main", "train", "--config", "cpu-smoke", "--run-dir", str(run_dir)]
    command += ["--set", f"judge.base_url={judge_url}", "--set", f"rl.per_device_batch={PER_RANK_BATCH}"]
    command += ["--set", f"sft.per_device_batch={SFT_BATCH}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


def read_jsonl(path):
    return [json.loads(line) for line in path.open()]


@pytest.mark.trains
@pytest.mark.timeout(3000)  # three two-process runs; ~7 min on a quiet 2-core machine
def test_two_ranks_resume_mid_rl_and_after_a_main_only_phase_paying_each_judge_prompt_once(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    rl_dir = run_dir / "cycle_1" / "rl"
    with running_rule_judge() as (url, judge):
        killed = train_two_ranks(run_dir, url, SEE_TRAIN_KILL_AFTER="cycle1.rl.step1")
        assert killed.returncode != 0, killed.stderr[-3000:]
        assert (
            not (run_dir / "cycle_1" / "cycle_manifest.json").exists()
            or not json.loads((run_dir / "cycle_1" / "cycle_manifest.json").read_text())["phases"]
        )
        assert [p.name for p in (rl_dir / "trainer").glob("checkpoint-*")] == ["checkpoint-1"]
        assert [s["step"] for s in read_jsonl(rl_dir / "steps.jsonl")] == [1]
        assert sorted(p.name for p in rl_dir.glob("judge_counters.rank*.json")) == [
            f"judge_counters.rank{rank}.json" for rank in range(PROCESSES)
        ]

        killed_again = train_two_ranks(run_dir, url, SEE_TRAIN_KILL_AFTER="cycle1.sft_data")
        assert killed_again.returncode != 0, killed_again.stderr[-3000:]
        phases = json.loads((run_dir / "cycle_1" / "cycle_manifest.json").read_text())["phases"]
        assert list(phases) == ["rl", "sft_data"]
        assert phases["rl"]["resumed_from_step"] == 1
        assert [s["step"] for s in phases["rl"]["steps"]] == [1, 2]  # step 1 from before the kill, kept
        assert not (rl_dir / "trainer").exists()  # the phase is recorded: its checkpoint is gone
        rollouts = read_jsonl(rl_dir / "rollouts.jsonl")
        # each rank generated and rewarded its own half of every step, once: what a rank did of step 2 before
        # the kill reached it was dropped and redone
        assert Counter((r["rank"], r["step"]) for r in rollouts) == {
            (rank, step): PER_RANK_BATCH for rank in range(PROCESSES) for step in (1, 2)
        }

        resumed = train_two_ranks(run_dir, url)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        stats = judge.stats()
    assert stats["max_repeats"] <= 1, stats
    assert "SEE cycles" in resumed.stdout + resumed.stderr  # the summary table, drawn once by main
    assert (resumed.stdout + resumed.stderr).count("final checkpoint:") == 1

    run = json.loads((run_dir / "run_manifest.json").read_text())
    assert run["cycles_done"] == 2 and run["processes"] == PROCESSES and run["final_model"] == str(run_dir / "final")
    recorded_requests = 0
    for cycle in (1, 2):
        phases = json.loads((run_dir / f"cycle_{cycle}" / "cycle_manifest.json").read_text())["phases"]
        assert list(phases) == ["rl", "sft_data", "sft"]
        recorded_requests += sum(phases[p]["judge"]["requests"] for p in ("rl", "sft_data"))
        metrics = phases["sft"]["metrics"]
        # DDP: one optimiser step covers a batch on each rank
        assert metrics["update_steps"] == math.ceil(metrics["examples"] / (SFT_BATCH * PROCESSES)), metrics
        assert metrics["supervised_tokens"] == 5 * metrics["examples"]
    # every paid call is in the manifests: cycle 1's RL phase counts both ranks' calls in both of its runs
    assert recorded_requests == stats["requests"]
    # the last run kept cycle 1's rollouts: nothing recorded before the second kill was redone
    assert read_jsonl(rl_dir / "rollouts.jsonl") == rollouts
    assert not (run_dir / "cycle_1" / "sft_model").exists()  # keep_checkpoints: last, dropped once by main
    card = load_card(run_dir / "final")
    assert card.lineage.cycles == 2 and card.prompt_mode == "chat"
    assert (run_dir / "final" / "model.safetensors").is_file()
