"""`see train --config cpu-smoke` end to end on the default model against the rule-based judge over loopback HTTP:
killed (SIGKILL) right after cycle 1's RL phase, resumed without repeating a judge call, then served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.integration.conftest import REPO, running_server
from training.testing.rule_judge import running_rule_judge


def train(run_dir, judge_url, *settings, **env):
    command = [sys.executable, "-m", "seecli.main", "train", "--config", "cpu-smoke", "--run-dir", str(run_dir)]
    command += ["--set", f"judge.base_url={judge_url}"]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800)


@pytest.mark.trains
@pytest.mark.timeout(2400)  # two training runs of up to 1800 s each on a loaded machine; ~8 min on a quiet one
def test_cpu_smoke_trains_resumes_after_a_kill_and_serves(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    with running_rule_judge() as (url, judge):
        killed = train(run_dir, url, SEE_TRAIN_KILL_AFTER="cycle1.rl")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        manifest = json.loads((run_dir / "cycle_1" / "cycle_manifest.json").read_text())
        assert list(manifest["phases"]) == ["rl"] and manifest["phases"]["rl"]["rollout_engine"] == "transformers"
        rollouts = (run_dir / "cycle_1" / "rl" / "rollouts.jsonl").read_text().splitlines()
        assert len(rollouts) == 2 * 2 * 4  # steps x prompts x generations

        resumed = train(run_dir, url)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        stats = judge.stats()
    assert stats["max_repeats"] <= 1, stats  # no judge prompt was paid for twice
    run = json.loads((run_dir / "run_manifest.json").read_text())
    assert run["cycles_done"] == 2 and run["final_model"] == str(run_dir / "final")
    recorded_requests = 0
    for cycle in (1, 2):
        phases = json.loads((run_dir / f"cycle_{cycle}" / "cycle_manifest.json").read_text())["phases"]
        assert list(phases) == ["rl", "sft_data", "sft"]
        assert phases["sft"]["metrics"]["supervised_tokens"] == 5 * phases["sft"]["metrics"]["examples"]
        recorded_requests += sum(phases[p]["judge"]["requests"] for p in ("rl", "sft_data"))
    assert recorded_requests == stats["requests"]  # every paid call is in the manifests, none counted twice
    # the resumed run did not redo cycle 1's RL phase: its rollout log is the one written before the kill
    assert (run_dir / "cycle_1" / "rl" / "rollouts.jsonl").read_text().splitlines() == rollouts
    card = json.loads((run_dir / "final" / "see_card.json").read_text())
    assert card["lineage"]["cycles"] == 2 and card["lineage"]["judge"] == "rule-based-judge-v1"
    assert card["prompt_mode"] == "chat"

    with running_server(run_dir / "final", tmp_path) as server:
        body = {"messages": [{"role": "user", "content": "Name a primary colour."}], "max_tokens": 24}
        response = httpx.post(f"{server.url}/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    scores = response.json()["self_evaluation"]["scores"]
    assert set(scores) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    assert all(abs(sum(s["probs"]) - 1) < 1e-6 for s in scores.values())
