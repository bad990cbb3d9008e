"""`see eval-labels` end to end: the default and the untrained model through their sidecars' /v1/score, the
baselines from a stock vLLM server, on a few held-out HelpSteer2 responses; a rerun asks no server again."""

from __future__ import annotations

import json
import subprocess
import sys

from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import REPO

LIMIT = 4


def eval_labels(out) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seecli.main", "eval-labels", "--limit", str(LIMIT), "--bootstrap", "50"]
    return subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1500)


def test_eval_labels_scores_every_source_and_resumes(tmp_path, model_dir):
    out = tmp_path / "eval"
    first = eval_labels(out)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_responses"] == LIMIT and metrics["skipped"]["compared"] == LIMIT
    assert set(metrics["predictors"]) == {
        "see-distilled",
        "untrained-readout",
        "length",
        "mean-logprob",
        "p-true",
        "constant",
    }
    for target in (*ATTRIBUTES, "quality"):
        assert set(metrics["paired_vs_baselines"][target]) == set(metrics["predictors"]) - {"see-distilled"}
    ours = [json.loads(line) for line in (out / "scores_see-distilled.jsonl").read_text().splitlines()]
    untrained = [json.loads(line) for line in (out / "scores_untrained-readout.jsonl").read_text().splitlines()]
    assert {r["source"] for r in ours} == {"forced"}
    assert ours[0]["probs"] != untrained[0]["probs"]  # two different models answered
    baselines = [json.loads(line) for line in (out / "baselines.jsonl").read_text().splitlines()]
    assert all(0 < r["p_true"] < 1 and r["mean_logprob"] < 0 and r["length_tokens"] > 0 for r in baselines)
    for name in ("report.md", "reliability.png", "roc.png", "scatter.png"):
        assert (out / name).stat().st_size > 0
    logs = {p.name: p.stat().st_mtime_ns for p in out.glob("*.log")}

    again = eval_labels(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.log")} == logs  # no server was started again
