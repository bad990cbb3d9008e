"""`see eval` end to end on the real default model and the rule-based judges over loopback HTTP: a run that
starts its own sidecar, a resume that asks nobody twice, a comparison against a baseline (win rates and pairwise
verdicts), re-judging by a second judge and the side-by-side comparison with the cross-judge check."""

from __future__ import annotations

import json
import subprocess
import sys

from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import REPO
from training.testing.rule_judge import STRICT_RULE_JUDGE_MODEL, running_rule_judge

LIMIT = 5


def see_eval(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "seecli.main", "eval", "--bootstrap", "200", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_eval_runs_resumes_compares_and_rejudges(tmp_path, model_dir):
    base = tmp_path / "base"
    common = ["--prompts", "helpsteer2-heldout", "--limit", str(LIMIT), "--max-tokens", "40"]
    with running_rule_judge() as (url, judge), running_rule_judge(model=STRICT_RULE_JUDGE_MODEL) as (strict_url, _):
        first = see_eval("--model", str(model_dir), "--judge", url, "--out", str(base), *common)
        assert first.returncode == 0, first.stderr[-3000:]
        calls = judge.stats()["requests"]
        assert calls == LIMIT  # every answer judged once, with its HelpSteer2 anchors
        sidecar_started = (base / "sidecar.log").stat().st_mtime_ns

        again = see_eval("--model", str(model_dir), "--judge", url, "--out", str(base), *common)
        assert again.returncode == 0, again.stderr[-3000:]
        assert judge.stats()["requests"] == calls  # judge cache: nothing paid twice
        assert len(lines(base / "answers.jsonl")) == LIMIT  # journaled answers: nothing regenerated
        assert (base / "sidecar.log").stat().st_mtime_ns == sidecar_started  # no sidecar started for nothing

        other_settings = see_eval("--model", str(model_dir), "--judge", url, "--out", str(base), "--limit", "3")
        assert other_settings.returncode == 1 and "other settings" in other_settings.stderr

        vs_self = tmp_path / "vs-self"
        compared = see_eval("--answers-from", str(base), "--judge", url, "--out", str(vs_self), "--baseline", str(base))
        assert compared.returncode == 0, compared.stderr[-3000:]

        strict = tmp_path / "strict"
        rejudged = see_eval("--answers-from", str(base), "--judge", strict_url, "--out", str(strict))
        assert rejudged.returncode == 0, rejudged.stderr[-3000:]

    metrics = json.loads((base / "metrics.json").read_text())
    assert metrics["examples"] == metrics["run"]["judged"] == LIMIT - metrics["run"]["skipped"] > 0
    assert 0.0 <= metrics["quality"]["value"] <= 1.0 and 0.0 <= metrics["calibration"]["value"] <= 1.0
    assert metrics["quality"]["low"] <= metrics["quality"]["value"] <= metrics["quality"]["high"]
    assert sum(metrics["run"]["readout_sources"].values()) == metrics["examples"]
    example = json.loads(lines(base / "examples.jsonl")[0])
    assert set(example["self_scores"]) == set(ATTRIBUTES)
    assert all(abs(sum(s["probs"]) - 1) < 1e-6 for s in example["self_scores"].values())
    report = (base / "report.md").read_text()
    assert "## Headline" in report and (base / "plots" / "reliability.png").stat().st_size > 0

    vs = json.loads((vs_self / "metrics.json").read_text())["vs_baseline"]
    assert vs["quality_win_rate"]["value"] == vs["calibration_win_rate"]["value"] == 0.5  # itself: all ties
    assert vs["response_win_rate"]["value"] == 0.5 and vs["response_win_rate"]["prompts"] == vs["paired_prompts"]

    strict_metrics = json.loads((strict / "metrics.json").read_text())
    assert strict_metrics["run"]["judge"]["model"] == STRICT_RULE_JUDGE_MODEL
    assert strict_metrics["quality"]["value"] <= metrics["quality"]["value"]  # stricter rules never score higher

    comparison = subprocess.run(
        [sys.executable, "-m", "seecli.main", "eval-compare", str(base), str(strict), "--out", str(tmp_path / "c")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert comparison.returncode == 0, comparison.stderr
    assert "Cross-judge" in comparison.stdout and "paper: SEE" in comparison.stdout
