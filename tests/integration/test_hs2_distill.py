"""`see train --config hs2-distill` end to end on a few real HelpSteer2 rows and the real base model: killed
after the features phase, resumed without redoing it; its delta is small, rebuilds the same weights bit for bit,
and moves the score-digit readout while every frozen tensor stays the base's."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from selfeval.card import ModelCard, load_card
from selfeval.delta import build_from_delta, sha256_of
from selfeval.models import prepare_base_model
from tests.integration.conftest import REPO
from training.data import default_dataset

ROWS = 8


def train(run_dir, data, **env):
    command = [sys.executable, "-m", "seecli.main", "train", "--config", "hs2-distill", "--run-dir", str(run_dir)]
    for setting in (
        f"data.path={data}",
        "sft.epochs=2",
        "sft.validation_fraction=0.25",
        "sft.calibration_fraction=0.25",
        "sft.grad_accum=2",  # 4 training rows: 2 update steps per epoch
        "sft.learning_rate=1e-3",
    ):
        command += ["--set", setting]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=1500)


def digit_log_probs(model_dir, row):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([row["ids"]])).logits[0]
    digits = list(load_card(model_dir).digit_token_ids)
    return torch.log_softmax(logits[[p - 1 for p in row["positions"]]], dim=-1)[:, digits]


@pytest.mark.trains
@pytest.mark.timeout(2400)
def test_hs2_distill_resumes_and_ships_a_delta_that_rebuilds_and_moves_the_readout(tmp_path):
    with gzip.open(default_dataset(), "rt", encoding="utf-8") as handle:
        train_rows = [line for line in handle if '"kitware_file": "train.json"' in line][:ROWS]
    data = tmp_path / "hs2.jsonl"
    data.write_text("".join(train_rows), encoding="utf-8")
    run_dir = tmp_path / "run"

    killed = train(run_dir, data, SEE_TRAIN_KILL_AFTER="labels.features")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert list(manifest["phases"]) == ["rows", "features"]
    assert manifest["phases"]["rows"]["label_lookups"] == ROWS  # every row was scored by the labels judge
    shards = {p.name: p.stat().st_mtime_ns for p in (run_dir / "features").glob("shard_*")}

    resumed = train(run_dir, data)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "features").glob("shard_*")} == shards  # not redone
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert list(manifest["phases"]) == ["rows", "features", "sft", "export"]
    history = manifest["phases"]["sft"]["history"]
    assert [entry["epoch"] for entry in history] == [0, 1, 2]

    base = prepare_base_model(report=print)
    final = run_dir / "final"
    delta = run_dir / "delta" / "delta.safetensors"
    card = load_card(final)
    lineage = card.lineage
    assert lineage.base_sha256 == sha256_of(base / "model.safetensors")
    assert lineage.data_sha256 == sha256_of(data)
    assert lineage.delta_sha256 == sha256_of(delta)
    assert lineage.config["run"]["mode"] == "labels-distill" and lineage.metrics["sft"]["epochs"] == 2
    # calibration prompts (sft.calibration_fraction) stay out of training and validation, recorded for the policy fit
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    groups_of = {split: {r["group"] for r in rows if r["split"] == split} for split in ("train", "validation")}
    recorded = set(lineage.metrics["rows"]["calibration_groups"])
    assert len(recorded) == 1 and {r["group"] for r in rows if r["split"] == "calibration"} == recorded
    assert not recorded & (groups_of["train"] | groups_of["validation"]) and len(groups_of["validation"]) == 1
    assert manifest["phases"]["sft"]["train_rows"] == sum(r["split"] == "train" for r in rows) == 4
    assert delta.stat().st_size < 20 * 2**20
    record = json.loads((run_dir / "delta" / "delta.json").read_text())
    assert record["weights_sha256"] == sha256_of(final / "model.safetensors")

    again = build_from_delta(base, delta, tmp_path / "again", ModelCard.from_dict(record["card"]))
    assert again == record["weights_sha256"]  # base + delta gives the same bytes on a second build

    trained, original = load_file(str(final / "model.safetensors")), load_file(str(base / "model.safetensors"))
    top = len({name.split(".")[2] for name in original if name.startswith("model.layers.")}) - 2
    for name, tensor in original.items():
        moved = not torch.equal(trained[name], tensor)
        in_top = name.startswith("model.norm.") or any(name.startswith(f"model.layers.{top + i}.") for i in (0, 1))
        assert moved == in_top, name  # exactly the trained tensors changed

    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    shift = (digit_log_probs(final, rows[0]) - digit_log_probs(base, rows[0])).abs().max()
    assert shift > 1e-2  # the readout moved
