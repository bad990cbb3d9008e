"""Reports: one run's `report.md` with PNG plots, and a side-by-side comparison of several runs.

Plots (matplotlib, Agg): a reliability diagram per attribute plus predicted quality, self vs judge score
histograms, and confusion matrices of the point self-score against the judge. The comparison puts the paper's
numbers (docs/method.md §10) in their own, clearly labelled columns and, when the runs were judged by more than
one judge, says whether each judge ranks the models the same way (cross-judge check).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.metrics import Arrays, Example
from selfeval.rubric import ATTRIBUTES, SCALE_MAX

# The paper's HelpSteer2-validation numbers (Qwen3-4B-Base, GPT-5.4 judge; docs/method.md §10). A different model,
# judge and prompt set from any CPU run: shown for orientation only.
PAPER_COLUMNS = {
    "paper: base": {"quality": 0.644, "calibration": 0.632, "top5_digits": 0.7707},
    "paper: adapted RLCR": {
        "quality": 0.662,
        "calibration": 0.675,
        "quality_win_rate": 0.570,
        "calibration_win_rate": 0.617,
    },
    "paper: SEE": {
        "quality": 0.704,
        "calibration": 0.731,
        "quality_win_rate": 0.671,
        "calibration_win_rate": 0.700,
        "top5_digits": 0.8776,
    },
}
PAPER_NOTE = (
    "Paper columns: Qwen3-4B-Base trained with SEE on a GPU, judged by GPT-5.4 on HelpSteer2 validation "
    "(docs/method.md §10; top-5 ranking scope unstated there). They are not comparable to a CPU run on the "
    "default model with the rule-based judge and are shown only for orientation."
)
HEADLINE = (
    ("quality", "quality (judge)"),
    ("calibration", "calibration (squared, paper's form)"),
    ("calibration_linear", "calibration (linear)"),
    ("mae", "mean abs error (points)"),
    ("valid_block_rate", "valid-block rate"),
    ("predicted_quality", "predicted quality"),
    ("quality_ece", "quality ECE"),
    ("quality_spearman", "quality Spearman"),
    ("digit_ece", "digit ECE (top-label)"),
    ("brier", "Brier (per attribute)"),
    ("log_loss", "log-loss (nats)"),
)


def fmt(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("value") is None:
        return "n/a"
    if stat.get("low") is None:
        return f"{stat['value']:.{digits}f}"
    return f"{stat['value']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def flat_metrics(metrics: dict) -> dict[str, dict | None]:
    """Headline, top-k and baseline metrics under one flat name each (for tables)."""
    flat = {key: metrics.get(key) for key, _ in HEADLINE}
    flat.update(metrics.get("topk", {}))
    vs = metrics.get("vs_baseline") or {}
    for key in ("quality_win_rate", "calibration_win_rate", "response_win_rate"):
        if vs.get(key):
            flat[key] = vs[key]
    return flat


def plot_run(out: Path, metrics: dict, examples: Sequence[Example]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    a = Arrays.of(examples)
    names = []

    fig, axes = plt.subplots(1, len(ATTRIBUTES) + 1, figsize=(4 * (len(ATTRIBUTES) + 1), 4), sharey=True)
    panels = [(name, metrics["reliability"][name], "confidence (max digit prob)") for name in ATTRIBUTES]
    panels.append(("predicted quality", metrics["quality_reliability"], "predicted quality"))
    for axis, (title, rows, xlabel) in zip(axes, panels, strict=True):
        axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        if rows:
            centers = [r["confidence"] for r in rows]
            axis.bar(centers, [r["outcome"] for r in rows], width=0.08, alpha=0.7, edgecolor="black")
            for r in rows:
                axis.annotate(str(r["count"]), (r["confidence"], r["outcome"]), fontsize=7, ha="center", va="bottom")
        axis.set(title=title, xlabel=xlabel, xlim=(0, 1), ylim=(0, 1))
    axes[0].set_ylabel("accuracy (digits) / judge quality")
    fig.suptitle("Reliability (bar height = observed, dashed = perfect calibration; numbers = items per bin)")
    fig.tight_layout()
    fig.savefig(plots / "reliability.png", dpi=90)
    plt.close(fig)
    names.append("plots/reliability.png")

    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 3.5), sharey=True)
    digits = np.arange(SCALE_MAX + 1)
    for d, (axis, name) in enumerate(zip(axes, ATTRIBUTES, strict=True)):
        own = np.bincount(a.point[:, d], minlength=SCALE_MAX + 1)
        judge = np.bincount(a.judge[:, d], minlength=SCALE_MAX + 1)
        axis.bar(digits - 0.2, own, width=0.4, label="self (argmax)")
        axis.bar(digits + 0.2, judge, width=0.4, label="judge")
        axis.set(title=name, xticks=digits, xlabel="score")
    axes[0].set_ylabel("items")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(plots / "score_histograms.png", dpi=90)
    plt.close(fig)
    names.append("plots/score_histograms.png")

    fig, axes = plt.subplots(1, len(ATTRIBUTES), figsize=(4 * len(ATTRIBUTES), 4))
    for d, (axis, name) in enumerate(zip(axes, ATTRIBUTES, strict=True)):
        matrix = np.zeros((SCALE_MAX + 1, SCALE_MAX + 1), dtype=int)
        np.add.at(matrix, (a.point[:, d], a.judge[:, d]), 1)
        axis.imshow(matrix, cmap="Blues", origin="lower")
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                axis.text(col, row, str(count), ha="center", va="center", fontsize=7)
        axis.set(title=name, xlabel="judge", ylabel="self (argmax)", xticks=digits, yticks=digits)
    fig.tight_layout()
    fig.savefig(plots / "confusion.png", dpi=90)
    plt.close(fig)
    names.append("plots/confusion.png")
    return names


def render_report(metrics: dict, plot_names: Sequence[str]) -> str:
    run = metrics["run"]
    lines = [
        f"# Evaluation: {run['label']} on {run['prompts']}",
        "",
        f"- model: `{run['model']}`"
        + (f" (answers re-judged from `{run['answers_from']}`)" if run["answers_from"] else ""),
        f"- judge: `{run['judge']['model']}` at `{run['judge']['base_url']}`",
        f"- items: {run['items']}, judged {run['judged']}, skipped {run['skipped']}"
        + (f" (e.g. {next(iter(run['skipped_examples'].values()))})" if run["skipped"] else ""),
        f"- readout: {run['readout_sources']['generated']} generated (model wrote a valid block), "
        f"{run['readout_sources']['forced']} forced; finish reasons {run['finish_reasons']}",
        f"- decoding: {json.dumps({k: v for k, v in run['answers'].items() if k != 'api_key_env'})}",
        f"- intervals: {metrics['bootstrap']['interval']} bootstrap over prompts, "
        f"{metrics['bootstrap']['resamples']} resamples",
        "",
        "## Headline",
        "",
        "| metric | value [95% CI] |",
        "|---|---|",
    ]
    lines += [f"| {label} | {fmt(metrics.get(key))} |" for key, label in HEADLINE]
    lines += [
        "",
        "## Judge digit within the model's top-k",
        "",
        "| k | among digits | whole vocabulary (lower) | whole vocabulary (upper) |",
        "|---|---|---|---|",
    ]
    topk = metrics["topk"]
    for k in (1, 3, 5):
        lines.append(
            f"| {k} | {fmt(topk[f'top{k}_digits'])} | {fmt(topk[f'top{k}_vocab_lower'])} | "
            f"{fmt(topk[f'top{k}_vocab_upper'])} |"
        )
    lines += [
        "",
        "## Per attribute",
        "",
        "| attribute | MAE | MAE (expected) | Spearman | ECE | Brier | log-loss | top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ATTRIBUTES:
        m = metrics["per_attribute"][name]
        cells = [m["mae"], m["mae_expected"], m["spearman"], m["ece"], m["brier"], m["log_loss"], m["top1_digits"]]
        lines.append(f"| {name} | " + " | ".join(fmt(c, 2) for c in cells) + " |")
    vs = metrics.get("vs_baseline")
    if vs:
        lines += [
            "",
            f"## Against the baseline `{vs['baseline']}` ({vs['paired_prompts']} paired prompts; tie = 0.5)",
            "",
            "| metric | value [95% CI] |",
            "|---|---|",
            f"| quality win rate | {fmt(vs['quality_win_rate'])} |",
            f"| calibration win rate | {fmt(vs['calibration_win_rate'])} |",
            f"| quality change | {fmt(vs['quality_delta'])} |",
            f"| calibration change | {fmt(vs['calibration_delta'])} |",
        ]
        pairwise = vs.get("response_win_rate")
        if pairwise:
            lines.append(
                f"| response win rate (judge, both orders) | {fmt(pairwise)} "
                f"(position-consistent verdicts {pairwise['position_consistency']:.2f}) |"
            )
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plot_names]
    lines += ["", "Metric definitions: `evaluation/metrics.py` docstring and docs/evaluation.md.", ""]
    return "\n".join(lines)


def write_report(out: Path, metrics: dict, examples: Sequence[Example]) -> Path:
    names = plot_run(out, metrics, examples)
    path = out / "report.md"
    path.write_text(render_report(metrics, names), encoding="utf-8")
    return path


COMPARED = (
    "quality",
    "calibration",
    "calibration_linear",
    "mae",
    "valid_block_rate",
    "quality_ece",
    "digit_ece",
    "brier",
    "log_loss",
    "top1_digits",
    "top5_digits",
    "top5_vocab_lower",
    "quality_win_rate",
    "calibration_win_rate",
    "response_win_rate",
)


def ranking_check(runs: Sequence[dict], key: str) -> dict:
    """Per judge, the model labels ordered best-first by `key`; `holds` if every judge gives the same order."""
    by_judge: dict[str, dict[str, float]] = {}
    for metrics in runs:
        value = (metrics.get(key) or {}).get("value")
        if value is not None:
            by_judge.setdefault(metrics["run"]["judge"]["model"], {})[metrics["run"]["label"]] = value
    common = set.intersection(*(set(v) for v in by_judge.values())) if by_judge else set()
    orders = {j: sorted(common, key=lambda label, j=j: -by_judge[j][label]) for j in by_judge}
    return {"orders": orders, "holds": len({tuple(o) for o in orders.values()}) <= 1, "models": sorted(common)}


def write_comparison(run_dirs: Sequence[Path], out: Path, paper: bool = True) -> Path:
    """`comparison.md` + `comparison.json`: runs side by side, the paper's numbers, the cross-judge check."""
    runs = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} has no metrics.json: finish that evaluation first")
        runs.append(json.loads(path.read_text(encoding="utf-8")))
    columns = [f"{m['run']['label']} / {m['run']['judge']['model']} / {m['run']['prompts']}" for m in runs]
    flats = [flat_metrics(m) for m in runs]
    header = ["metric", *columns, *(PAPER_COLUMNS if paper else [])]
    lines = ["# Evaluation comparison", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in COMPARED:
        cells = [fmt(f.get(key)) for f in flats]
        if paper:
            cells += [f"{p[key]:.3f}" if key in p else "" for p in PAPER_COLUMNS.values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if paper:
        lines += ["", PAPER_NOTE]
    judges = {m["run"]["judge"]["model"] for m in runs}
    checks = {}
    if len(judges) > 1:
        lines += ["", "## Cross-judge: does every judge rank the models the same way?", ""]
        for key in ("quality", "calibration"):
            check = checks[key] = ranking_check(runs, key)
            orders = "; ".join(f"{j}: {' > '.join(o)}" for j, o in sorted(check["orders"].items()))
            lines.append(f"- {key}: {'holds' if check['holds'] else 'does NOT hold'} ({orders})")
    lines.append("")
    path = out / "comparison.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    (out / "comparison.json").write_text(
        json.dumps({"runs": [str(r) for r in run_dirs], "columns": columns, "cross_judge": checks}, indent=2) + "\n"
    )
    return path
