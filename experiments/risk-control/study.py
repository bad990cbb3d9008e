# ruff: noqa: E501  (report table rows read best one per line)
"""Risk-controlled decisions on the held-out HelpSteer2 half: the procedure's validity per score, and baselines.

Reads only journals already written (no server): the shipped default's `/v1/score` readouts, the untrained
readout and the cheap baselines of the sample `see eval-labels --limit 400` scores
(`experiments/hs2-distill/eval/`). Nothing here fits anything that ships: the default ships no certified
policy (the held-out half may not fit thresholds, and the train half's calibration prompts of attempt 3 could
not certify one: `experiments/hs2-distill/README.md`). Writes `metrics.json`, `report.md` and
`risk_coverage.png` next to this file. Usage: `python experiments/risk-control/study.py` (~2 min).

1. The hand-set default policy's decisions on these answers, and their realised bad rates.
2. Learn-then-Test for every score on 200 random halvings (by prompt) of the 400 responses, at targets 0.2,
   0.25 and 0.3: how often a certified threshold broke its promise on the other half, and how much it
   accepted. Scores: the shipped readout (predicted quality; P(helpfulness > 4)), the untrained readout,
   length, mean log-probability, P(True).
3. Risk-coverage curves of every score.
4. Our readout on all 1,000 held-out responses (Spearman, AUROC).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.labelled import labelled_items
from evaluation.labelled_metrics import auroc, prompt_resamples
from evaluation.metrics import spearman
from evaluation.policy_fit import distributions_of
from evaluation.risk_control import realised, split_study
from selfeval.certified_policy import policy_score
from selfeval.journal import read_records
from selfeval.jsonfile import write_json_atomic
from training.data import default_dataset

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent / "hs2-distill" / "eval"
TEST_LIMIT = 400  # the test part: the sample `see eval-labels --limit 400` scores (seed 0)
BAD_AT_OR_BELOW = 4
TARGETS = (0.2, 0.25, 0.3)
DELTA = 0.05
SPLITS = 200


def test_items() -> list:
    return labelled_items(default_dataset(), "eval.json", TEST_LIMIT)


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_records(path)}


def readout_score(record: dict, name: str) -> float:
    return policy_score(name, distributions_of(record["probs"], record.get("mass")), BAD_AT_OR_BELOW)


def scores_on_test_part(test_items) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[str]]:
    ours, untrained, base = (by_id(EVAL / f) for f in ("scores_see-distilled.jsonl",
                                                      "scores_untrained-readout.jsonl", "baselines.jsonl"))  # fmt: skip
    kept = [i for i in test_items if all(i.id in s and "skipped" not in s[i.id] for s in (ours, untrained, base))]
    scores = {
        "see quality": np.array([readout_score(ours[i.id], "quality") for i in kept]),
        "see P(helpfulness > 4)": np.array([readout_score(ours[i.id], "helpfulness_above") for i in kept]),
        "untrained quality": np.array([readout_score(untrained[i.id], "quality") for i in kept]),
        "length": np.array([base[i.id]["length_tokens"] for i in kept], float),
        "mean log-probability": np.array([base[i.id]["mean_logprob"] for i in kept], float),
        "P(True)": np.array([base[i.id]["p_true"] for i in kept], float),
    }
    bad = np.array([i.human["helpfulness"] <= BAD_AT_OR_BELOW for i in kept])
    hand_set = [ours[i.id]["decision"] for i in kept]
    return scores, bad, np.array([i.group for i in kept]), hand_set


def readout_on_whole_half() -> dict:
    """Issue 15's headline numbers for our readout on all 1,000 held-out responses (the 400 above and the
    other 600; only our readout is scored on all of them), 95 % CI over prompts."""
    journal = by_id(EVAL / "scores_see-distilled.jsonl")
    items = labelled_items(default_dataset(), "eval.json")
    kept = [i for i in items if i.id in journal and "skipped" not in journal[i.id]]
    quality = np.array([journal[i.id]["predicted_quality"] for i in kept])
    helpfulness = np.array([i.human["helpfulness"] for i in kept])
    good = helpfulness > BAD_AT_OR_BELOW
    draws = prompt_resamples(np.array([i.group for i in kept]), 1000, 0)
    spearmans = [spearman(quality[d], helpfulness[d]) for d in draws]
    aurocs = [auroc(quality[d], good[d]) for d in draws]
    return {
        "responses": len(kept),
        "quality_spearman_vs_helpfulness": [spearman(quality, helpfulness), *np.percentile(spearmans, [2.5, 97.5])],
        "auroc_bad": [auroc(quality, good), *np.percentile(aurocs, [2.5, 97.5])],
    }


def hand_set_check(hand_set: list[str], bad: np.ndarray) -> dict:
    actions = np.array(hand_set)
    return {
        "action_mix": {a: float((actions == a).mean()) for a in ("accept", "review", "escalate")},
        "accept": _realised_mask(actions == "accept", bad),
        "not_escalated": _realised_mask(actions != "escalate", bad),
    }


def _realised_mask(passing: np.ndarray, bad: np.ndarray) -> dict:
    return realised(passing.astype(float), bad, 0.5)


def risk_coverage(scores: dict[str, np.ndarray], bad: np.ndarray) -> dict[str, list]:
    """Bad rate among the top-scored share, for shares 5 %, 10 %, ... 100 %."""
    shares = np.arange(1, 21) / 20
    curves = {}
    for name, values in scores.items():
        ranked = bad[np.argsort(-values, kind="stable")]
        curves[name] = [float(ranked[: max(1, round(s * len(ranked)))].mean()) for s in shares]
    return {"shares": shares.tolist(), **curves}


def plot(curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in curves.items():
        if name != "shares":
            ax.plot(curves["shares"], values, marker="o", markersize=3, label=name, linewidth=2 if "see" in name else 1)
    for target in TARGETS:
        ax.axhline(target, color="k", linestyle=":", linewidth=0.8)
    ax.set_xlabel("share of answers accepted (highest scores first)")
    ax.set_ylabel("bad share among accepted")
    ax.set_title("Risk-coverage on 400 held-out responses (dotted: targets)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    scores, bad, groups, hand_set = scores_on_test_part(test_items())
    studies = {}
    for target in TARGETS:
        print(f"200 splits at target {target} ...", flush=True)
        studies[str(target)] = split_study(scores, bad, groups, target, DELTA, splits=SPLITS)
    curves = risk_coverage(scores, bad)
    metrics = {
        "test_part": {"responses": TEST_LIMIT, "compared": int(len(bad)), "bad_rate": float(bad.mean())},
        "hand_set": hand_set_check(hand_set, bad),
        "split_study": {"delta": DELTA, "splits": SPLITS, "by_target": studies},
        "risk_coverage": curves,
        "readout_on_whole_half": readout_on_whole_half(),
    }
    write_json_atomic(HERE / "metrics.json", metrics)
    plot(curves, HERE / "risk_coverage.png")
    (HERE / "report.md").write_text(report(metrics), encoding="utf-8")
    print((HERE / "report.md").read_text(encoding="utf-8"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _cell(cell: dict) -> str:
    if cell["risk"] is None:
        return f"nothing accepted of {cell['answers']}"
    low, high = cell["risk_interval"]
    return f"{_pct(cell['risk'])} [{100 * low:.1f}, {100 * high:.1f}] bad among {cell['passing']} ({_pct(cell['coverage'])} of answers)"


def report(m: dict) -> str:
    hand_set = m["hand_set"]
    lines = [
        "# Risk-controlled decisions on the held-out HelpSteer2 half (generated by `study.py`)",
        "",
        f"Bad = human helpfulness <= {BAD_AT_OR_BELOW} on 0-9 (<= 2 on HelpSteer2's 0-4). "
        f"{m['test_part']['compared']} held-out responses (the `see eval-labels --limit 400` sample), bad rate "
        f"{_pct(m['test_part']['bad_rate'])}. The default ships no certified policy; nothing here is shipped.",
        "",
        "## The hand-set default policy on these answers",
        "",
        "| rule | realised |",
        "|---|---|",
        f"| accept | {_cell(hand_set['accept'])} |",
        f"| not escalated | {_cell(hand_set['not_escalated'])} |",
        "",
        "Action mix: " + ", ".join(f"{a} {_pct(v)}" for a, v in hand_set["action_mix"].items()) + ".",
        "",
        f"## Learn-then-Test for every score: {m['split_study']['splits']} random halvings by prompt",
        "",
        "Fitted on one half (delta 0.05, each score alone), checked on the other. A violation is a split that "
        "certified a threshold whose bad rate on the other half is above the target (that half's sampling "
        "noise counts against the procedure). Coverage: share of the other half accepted, 0 when nothing was "
        "certified. A method check on held-out data: no threshold from it is used anywhere.",
        "",
        "| target | score | splits certified | violations (share of all splits) | mean coverage, all splits | mean realised risk when certified |",
        "|---|---|---|---|---|---|",
        *_study_rows(m["split_study"]["by_target"]),
        "",
        "Risk-coverage curves: `risk_coverage.png`.",
        "",
        "## The readout on the whole held-out half",
        "",
        "Our readout alone on all {responses} held-out responses (95 % CI over prompts): predicted quality vs "
        "human helpfulness Spearman {s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}], AUROC for a bad response {a[0]:.2f} "
        "[{a[1]:.2f}, {a[2]:.2f}].".format(
            responses=m["readout_on_whole_half"]["responses"],
            s=m["readout_on_whole_half"]["quality_spearman_vs_helpfulness"],
            a=m["readout_on_whole_half"]["auroc_bad"],
        ),
        "",
    ]
    return "\n".join(lines)


def _study_rows(by_target: dict) -> list[str]:
    return [
        f"| {target} | {name} | {s['certified']} | {s['violations']} ({_pct(s['violation_share'])}) | "
        f"{_pct(s['mean_coverage_all_splits'])} | {_pct(s['mean_test_risk'])} |"
        for target, by_score in by_target.items()
        for name, s in by_score.items()
    ]


if __name__ == "__main__":
    main()
