"""report.md and plots of a run against human labels: tables with intervals, paired differences, goals, plots.

Plots (matplotlib, Agg): reliability diagrams (top-label digit confidence vs how often the top digit is the
human's) per attribute for every distribution predictor; ROC curves for detecting bad responses from the
predicted quality and each scalar baseline; expected score vs human score (jittered) per attribute for ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.labelled_metrics import BAD_HELPFULNESS_MAX, LOWER_IS_BETTER, TARGETS, Predictor
from selfeval.calibration_error import binned
from selfeval.rubric import ATTRIBUTES

METRIC_NAMES = {
    "spearman": "Spearman",
    "auroc_bad": "AUROC bad",
    "mae": "MAE",
    "digit_ece": "digit ECE",
    "top1": "top-1",
    "top3": "top-3",
    "top5": "top-5",
}


def fmt(stat: dict | None) -> str:
    if not stat or stat.get("value") is None:
        return "n/a"
    if stat.get("low") is None:
        return f"{stat['value']:.3f}"
    return f"{stat['value']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def _table(cells_by_name: dict[str, dict], first_column: str, highlight: str | None = None) -> list[str]:
    """A markdown table: one row per predictor, one column per metric any of them has."""
    columns = [m for m in METRIC_NAMES if any(m in cells for cells in cells_by_name.values())]
    lines = [f"| {first_column} | " + " | ".join(METRIC_NAMES[m] for m in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, cells in cells_by_name.items():
        shown = f"**{name}**" if name == highlight else name
        lines.append(f"| {shown} | " + " | ".join(fmt(cells.get(m)) for m in columns) + " |")
    return lines


def render(metrics: dict) -> str:
    lines = [
        "# Self-scores against human labels",
        "",
        f"{metrics['n_responses']} responses to {metrics['n_prompts']} prompts of the held-out half "
        f"({metrics['bad_responses']} bad: human helpfulness <= {BAD_HELPFULNESS_MAX} on 0-9), every predictor on "
        f"the same rows in one run. 95% intervals: bootstrap over prompts, {metrics['resamples']} resamples. "
        f"Lower is better for {', '.join(METRIC_NAMES[m] for m in sorted(LOWER_IS_BETTER))}; higher for the rest.",
        "",
        "Predictors:",
    ]
    lines += [f"- `{name}`: {p['description']}" for name, p in metrics["predictors"].items()]
    goals = metrics["goals"]
    lines += ["", "## Goals (issue 15)", "", "| goal | measured |", "|---|---|"]
    for goal, value in goals.items():
        shown = (
            ", ".join(f"{a}: {'yes' if ok else 'no'}" for a, ok in value.items())
            if isinstance(value, dict)
            else ("n/a" if value is None else f"{value:.3f}")
        )
        lines.append(f"| {goal} | {shown} |")
    lines += ["", "## Decisions of the default policy on these rows", "", "| model | accept | review | escalate | n |"]
    lines.append("|---|---|---|---|---|")
    for name, mix in metrics["decisions"].items():
        lines.append(f"| {name} | {mix['accept']:.3f} | {mix['review']:.3f} | {mix['escalate']:.3f} | {mix['n']} |")
    for target in TARGETS:
        human = "human helpfulness" if target == "quality" else f"human {target}"
        lines += ["", f"## {target} (against {human})", ""]
        lines += _table(metrics["targets"][target], "predictor", metrics["ours"])
        lines += ["", "Paired differences:", "", *_table(metrics["paired_vs_baselines"][target], "ours minus")]
    if "readouts_only" in metrics:  # the baseline pass was cut short: both readouts on every row they scored
        more = metrics["readouts_only"]
        lines += [
            "",
            f"## The two readouts on all {more['n_responses']} responses both scored ({more['n_prompts']} prompts)",
            "",
            "The tables above cover only the responses every source scored; these cover every response the two "
            "sidecars scored.",
        ]
        for target in TARGETS:
            lines += ["", f"### {target}", "", *_table(more["targets"][target], "predictor", more["ours"])]
        lines += ["", "| model | accept | review | escalate | n |", "|---|---|---|---|---|"]
        for name, mix in more["decisions"].items():
            lines.append(f"| {name} | {mix['accept']:.3f} | {mix['review']:.3f} | {mix['escalate']:.3f} | {mix['n']} |")
    skipped = metrics["skipped"]
    lines += [
        "",
        f"Compared {skipped['compared']} of {skipped['responses_in_half']} responses; skipped by source: "
        f"{skipped['by_source']}.",
        "",
        "![reliability](reliability.png)",
        "",
        "![roc](roc.png)",
        "",
        "![scatter](scatter.png)",
        "",
    ]
    return "\n".join(lines)


def write_labelled_report(out: Path, metrics: dict, human: np.ndarray, predictors: Sequence[Predictor]) -> Path:
    _plots(out, human, predictors, metrics["ours"])
    path = out / "report.md"
    path.write_text(render(metrics), encoding="utf-8")
    return path


def _roc(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="mergesort")
    hits = positive[order].astype(float)
    tpr = np.r_[0.0, np.cumsum(hits) / max(hits.sum(), 1)]
    fpr = np.r_[0.0, np.cumsum(1 - hits) / max((1 - hits).sum(), 1)]
    return fpr, tpr


def _plots(out: Path, human: np.ndarray, predictors: Sequence[Predictor], ours: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distributions = [p for p in predictors if p.probs is not None]
    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 4), sharey=True)
    for k, (axis, attribute) in enumerate(zip(axes, ATTRIBUTES, strict=True)):
        axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        for p in distributions:
            probs = p.probs[:, k]
            rows = binned(probs.max(axis=1), (probs.argmax(axis=1) == human[:, k]).astype(float))
            axis.plot([r["confidence"] for r in rows], [r["outcome"] for r in rows], marker="o", label=p.name)
        axis.set(title=attribute, xlabel="top digit probability", xlim=(0, 1), ylim=(0, 1))
    axes[0].set_ylabel("share where the top digit is the human's")
    axes[-1].legend(fontsize=8)
    fig.suptitle("Reliability of the digit distributions (dashed = perfectly calibrated)")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=90)
    plt.close(fig)

    bad = human[:, 0] <= BAD_HELPFULNESS_MAX
    fig, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    for p in predictors:
        if p.kind == "constant":
            continue
        fpr, tpr = _roc(-p.point("quality"), bad)  # a lower predicted quality flags a bad response
        axis.plot(fpr, tpr, label=p.name, lw=2.2 if p.name == ours else 1.2)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title="Detecting bad responses (ROC)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=90)
    plt.close(fig)

    mine = next(p for p in predictors if p.name == ours)
    expected = (mine.probs * np.arange(mine.probs.shape[2])).sum(axis=2)
    jitter = np.random.default_rng(0).uniform(-0.35, 0.35, size=human.shape)
    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 4), sharey=True)
    for k, (axis, attribute) in enumerate(zip(axes, ATTRIBUTES, strict=True)):
        axis.scatter(human[:, k] + jitter[:, k], expected[:, k], s=6, alpha=0.4)
        axis.plot([0, 9], [0, 9], ls="--", color="grey", lw=1)
        axis.set(title=attribute, xlabel="human score (0-9, jittered)", xlim=(-0.5, 9.5), ylim=(0, 9))
    axes[0].set_ylabel(f"expected self-score ({ours})")
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=90)
    plt.close(fig)
