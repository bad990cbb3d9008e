"""`see train` as two processes (torchrun, gloo on CPU) against the rule-based judge over loopback: the trainers
run on both ranks, main alone writes the run's records, a kill of main after a main-only phase resumes with the
same processes, and no judge prompt is paid for twice."""

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
from training.rule_judge import running_rule_judge

PROCESSES = 2
PER_RANK_BATCH = 4  # 2 prompts x 4 samples = 8 completions per step, 4 on each rank


def train_two_ranks(run_dir, judge_url, **env):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}"]
    command += ["-m", "seecli.main", "train", "--config", "cpu-smoke", "--run-dir", str(run_dir)]
    command += ["--set", f"judge.base_url={judge_url}", "--set", f"rl.per_device_batch={PER_RANK_BATCH}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.timeout(3000)  # two two-process runs; ~6 min on a quiet 2-core machine
def test_two_ranks_train_resume_after_main_is_killed_and_pay_each_judge_prompt_once(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    with running_rule_judge() as (url, judge):
        killed = train_two_ranks(run_dir, url, SEE_TRAIN_KILL_AFTER="cycle1.sft_data")
        assert killed.returncode != 0, killed.stderr[-3000:]
        phases = json.loads((run_dir / "cycle_1" / "cycle_manifest.json").read_text())["phases"]
        assert list(phases) == ["rl", "sft_data"]
        rollouts = [json.loads(line) for line in (run_dir / "cycle_1" / "rl" / "rollouts.jsonl").open()]
        # each rank generated and rewarded its own half of every step
        assert Counter((r["rank"], r["step"]) for r in rollouts) == {
            (rank, step): PER_RANK_BATCH for rank in range(PROCESSES) for step in (1, 2)
        }
        calls_before_kill = judge.stats()["requests"]

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
        assert metrics["update_steps"] == math.ceil(metrics["examples"] / (4 * PROCESSES)), metrics
        assert metrics["supervised_tokens"] == 5 * metrics["examples"]
    # every paid call is in the manifests (both ranks' RL counters summed), and the kill lost none of them
    assert recorded_requests == stats["requests"] >= calls_before_kill
    # the resumed run kept cycle 1's rollouts and rows: nothing before the kill was redone
    again = [json.loads(line) for line in (run_dir / "cycle_1" / "rl" / "rollouts.jsonl").open()]
    assert again == rollouts
    assert not (run_dir / "cycle_1" / "sft_model").exists()  # keep_checkpoints: last, dropped once by main
    card = load_card(run_dir / "final")
    assert card.lineage.cycles == 2 and card.prompt_mode == "chat"
    assert (run_dir / "final" / "model.safetensors").is_file()
