"""Reports render: report.md with its plots for one run, and the comparison with the cross-judge check."""

import json

import numpy as np

from evaluation.metrics import Bootstrap, Example, compare_to_baseline, compute_metrics, pairwise_win_rate
from evaluation.report import PAPER_NOTE, ranking_check, write_comparison, write_report


def synthetic(n: int, seed: int, sharpness: float) -> list[Example]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        judge = rng.integers(0, 10, size=5)
        logits = -sharpness * (np.arange(10)[None, :] - judge[:, None]) ** 2 + rng.normal(0, 1, size=(5, 10))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        examples.append(Example(f"p{i}", probs.tolist(), [0.95] * 5, judge.tolist(), valid_block=i % 3 != 0))
    return examples


def run_info(label: str, judge: str) -> dict:
    return {
        "label": label,
        "model": f"/models/{label}",
        "answers_from": None,
        "prompts": "helpsteer2-heldout",
        "items": 40,
        "judged": 40,
        "skipped": 0,
        "skipped_examples": {},
        "readout_sources": {"generated": 27, "forced": 13},
        "finish_reasons": {"stop": 40},
        "judge": {"model": judge, "base_url": "http://127.0.0.1:1/v1", "counters": {}},
        "answers": {"max_tokens": 64, "temperature": 0.0},
    }


def write_run(directory, label, judge, examples, baseline=None):
    directory.mkdir(parents=True)
    metrics = compute_metrics(examples, Bootstrap(resamples=50))
    if baseline:
        metrics["vs_baseline"] = {"baseline": "base", **compare_to_baseline(examples, baseline, Bootstrap(50))}
        metrics["vs_baseline"]["response_win_rate"] = pairwise_win_rate([("A", "B"), ("tie", "tie")], Bootstrap(50))
    metrics["run"] = run_info(label, judge)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return write_report(directory, metrics, examples)


def test_report_renders_every_section_and_plot(tmp_path):
    base = synthetic(40, seed=1, sharpness=0.05)
    trained = synthetic(40, seed=1, sharpness=1.0)
    report = write_run(tmp_path / "trained", "trained", "judge-a", trained, baseline=base).read_text()
    for section in ("## Headline", "top-k", "## Per attribute", "## Against the baseline", "response win rate"):
        assert section in report
    for plot in ("reliability", "score_histograms", "confusion"):
        path = tmp_path / "trained" / "plots" / f"{plot}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        assert f"plots/{plot}.png" in report
    assert "[" in report.split("| quality (judge) |")[1].splitlines()[0]  # an interval is shown


def test_comparison_puts_the_paper_apart_and_checks_the_ranking_across_judges(tmp_path):
    sharp, blurred = synthetic(40, seed=2, sharpness=1.0), synthetic(40, seed=2, sharpness=0.02)
    for judge in ("judge-a", "judge-b"):
        write_run(tmp_path / f"trained-{judge}", "trained", judge, sharp)
        write_run(tmp_path / f"base-{judge}", "base", judge, blurred)
    runs = sorted(tmp_path.iterdir())
    text = write_comparison(runs, tmp_path / "cmp").read_text()
    assert "paper: SEE" in text and PAPER_NOTE in text
    assert "- calibration: holds" in text
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["cross_judge"]["calibration"]["holds"]


def test_ranking_check_reports_a_reversal():
    runs = [
        {"run": {"label": "x", "judge": {"model": "j1"}}, "quality": {"value": 0.6}},
        {"run": {"label": "y", "judge": {"model": "j1"}}, "quality": {"value": 0.5}},
        {"run": {"label": "x", "judge": {"model": "j2"}}, "quality": {"value": 0.4}},
        {"run": {"label": "y", "judge": {"model": "j2"}}, "quality": {"value": 0.7}},
    ]
    check = ranking_check(runs, "quality")
    assert not check["holds"] and check["orders"] == {"j1": ["x", "y"], "j2": ["y", "x"]}
