# ruff: noqa: E501  (report table rows read best one per line)
"""Risk-controlled decisions on the held-out HelpSteer2 half: the shipped policy, 200 random splits, baselines.

Reads only journals already written (no server): the shipped default's `/v1/score` readouts of the whole
held-out half (the calibration part here, the test part in `experiments/hs2-distill/eval/`), and the
untrained readout and cheap baselines on the test part. Writes `metrics.json`, `report.md` and
`risk_coverage.png` next to this file. Usage: `python experiments/risk-control/study.py` (~3 min).

1. The shipped policy (`selfeval/deltas/hs2-distill/see_policy.json`, fitted by `see calibrate policy` on the
   calibration part): its realised risk and coverage on the test part, next to the hand-set default policy's.
2. The same procedure for every score, on 200 random halvings (by prompt) of the 400 test-part responses,
   at targets 0.2, 0.25 and 0.3: how often a certified threshold broke its promise on the other half, and
   how much it accepted. Scores: the shipped readout (predicted quality; P(helpfulness > 4)), the untrained
   readout, length, mean log-probability, P(True).
3. Risk-coverage curves of every score on the test part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.labelled import labelled_items
from evaluation.labelled_metrics import auroc, prompt_resamples
from evaluation.metrics import spearman
from evaluation.policy_fit import distributions_of
from evaluation.risk_control import realised, split_study
from selfeval.certified_policy import load_policy, policy_path, policy_score
from selfeval.journal import read_records
from selfeval.jsonfile import write_json_atomic
from selfeval.models import SHIPPED_DELTA_DIR
from training.config import DEFAULT_DATA, REPO_ROOT

HERE = Path(__file__).resolve().parent
EVAL = HERE.parent / "hs2-distill" / "eval"
JOURNAL = HERE / "calibration" / "scores_see-distilled.jsonl"  # written by `see calibrate policy` (run.sh)
TEST_LIMIT = 400  # the test part: the sample `see eval-labels --limit 400` scores (seed 0)
BAD_AT_OR_BELOW = 4
TARGETS = (0.2, 0.25, 0.3)
DELTA = 0.05
SPLITS = 200


def parts() -> tuple[list, list]:
    """(calibration items, test items) of the held-out half, disjoint by prompt, as `see calibrate policy
    --test-limit 400` splits it."""
    everything = labelled_items(REPO_ROOT / DEFAULT_DATA, "eval.json")
    test_groups = {i.group for i in labelled_items(REPO_ROOT / DEFAULT_DATA, "eval.json", TEST_LIMIT)}
    return [i for i in everything if i.group not in test_groups], [i for i in everything if i.group in test_groups]


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


def whole_half_scores(items) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The shipped readout on all 1,000 held-out responses (calibration and test parts): only our scores exist
    on all of them."""
    journal = {**by_id(JOURNAL), **by_id(EVAL / "scores_see-distilled.jsonl")}
    kept = [i for i in items if i.id in journal and "skipped" not in journal[i.id]]
    scores = {
        "see quality": np.array([readout_score(journal[i.id], "quality") for i in kept]),
        "see P(helpfulness > 4)": np.array([readout_score(journal[i.id], "helpfulness_above") for i in kept]),
    }
    bad = np.array([i.human["helpfulness"] <= BAD_AT_OR_BELOW for i in kept])
    return scores, bad, np.array([i.group for i in kept])


def readout_on_whole_half(items) -> dict:
    """Issue 15's headline numbers for our readout on all 1,000 held-out responses (bootstrap over prompts)."""
    journal = {**by_id(JOURNAL), **by_id(EVAL / "scores_see-distilled.jsonl")}
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


def shipped_policy_check(test_items) -> dict:
    policy = load_policy(policy_path(SHIPPED_DELTA_DIR))
    ours = by_id(EVAL / "scores_see-distilled.jsonl")
    scored = [i for i in test_items if i.id in ours and "skipped" not in ours[i.id]]
    bad = np.array([i.human["helpfulness"] <= policy.bad_at_or_below for i in scored])
    values = np.array([readout_score(ours[i.id], policy.score) for i in scored])
    actions = [policy.decide(distributions_of(ours[i.id]["probs"], ours[i.id].get("mass")))[0] for i in scored]
    hand_set = np.array([ours[i.id]["decision"] for i in scored])
    out = {
        "policy": policy.to_dict(),
        "test_answers": len(scored),
        "test_bad_rate": float(bad.mean()),
        "accept": realised(values, bad, policy.accept.threshold),
        "action_mix": {a: actions.count(a) / len(actions) for a in ("accept", "review", "escalate")},
        "hand_set_action_mix": {a: float((hand_set == a).mean()) for a in ("accept", "review", "escalate")},
        "hand_set_accept": _realised_mask(hand_set == "accept", bad),
        "hand_set_not_escalated": _realised_mask(hand_set != "escalate", bad),
    }
    if policy.escalate_below is not None:
        out["not_escalated"] = realised(values, bad, policy.escalate_below.threshold)
    return out


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


def plot(curves: dict, shipped: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in curves.items():
        if name != "shares":
            ax.plot(curves["shares"], values, marker="o", markersize=3, label=name, linewidth=2 if "see" in name else 1)
    accept = shipped["accept"]
    ax.errorbar([accept["coverage"]], [accept["risk"]],
                yerr=[[accept["risk"] - accept["risk_interval"][0]], [accept["risk_interval"][1] - accept["risk"]]],
                fmt="k*", markersize=12, capsize=4, label="shipped certified accept (test part, 95% CI)")  # fmt: skip
    target = shipped["policy"]["accept"]["target_risk"]
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"promised P(bad | accept) <= {target:g}")
    ax.set_xlabel("share of answers accepted (highest scores first)")
    ax.set_ylabel("bad share among accepted")
    ax.set_title("Risk-coverage on the 400 test-part responses")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    calibration_items, test_items = parts()
    calibration_scored = len([r for r in read_records(JOURNAL) if "skipped" not in r])
    shipped = shipped_policy_check(test_items)
    scores, bad, groups, _ = scores_on_test_part(test_items)
    studies = {}
    for target in TARGETS:
        print(f"200 splits at target {target} ...", flush=True)
        studies[str(target)] = split_study(scores, bad, groups, target, DELTA, splits=SPLITS)
    whole_half = {}
    whole_scores, whole_bad, whole_groups = whole_half_scores(calibration_items + test_items)
    for target in TARGETS:
        print(f"200 splits of the whole half at target {target} ...", flush=True)
        whole_half[str(target)] = split_study(whole_scores, whole_bad, whole_groups, target, DELTA, splits=SPLITS)
    whole_readout = readout_on_whole_half(calibration_items + test_items)
    curves = risk_coverage(scores, bad)
    metrics = {
        "calibration_part": {"responses": len(calibration_items), "scored": calibration_scored},
        "test_part": {"responses": len(test_items), "compared": int(len(bad)), "bad_rate": float(bad.mean())},
        "shipped": shipped,
        "split_study": {"delta": DELTA, "splits": SPLITS, "by_target": studies},
        "split_study_whole_half": {
            "delta": DELTA,
            "splits": SPLITS,
            "responses": int(len(whole_bad)),
            "bad_rate": float(whole_bad.mean()),
            "by_target": whole_half,
        },
        "risk_coverage": curves,
        "readout_on_whole_half": whole_readout,
    }
    write_json_atomic(HERE / "metrics.json", metrics)
    plot(curves, shipped, HERE / "risk_coverage.png")
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
    shipped, policy = m["shipped"], m["shipped"]["policy"]
    lines = [
        "# Risk-controlled decisions on the held-out HelpSteer2 half (generated by `study.py`)",
        "",
        f"Bad = human helpfulness <= {BAD_AT_OR_BELOW} on 0-9 (<= 2 on HelpSteer2's 0-4). Test part: "
        f"{m['test_part']['compared']} responses, bad rate {_pct(m['test_part']['bad_rate'])}.",
        "",
        "## The shipped policy, fitted on the calibration part, checked on the test part",
        "",
        f"`{policy['version']}`: score `{policy['score']}`, fitted on {policy['fitted_on']} responses; "
        f"accept when >= {policy['accept']['threshold']:.3f} (certified bound {policy['accept']['bound']:.3f} from "
        f"{policy['accept']['bad']}/{policy['accept']['n']} bad in the testing two thirds of the calibration part).",
        "",
        "| rule | promise | realised on the test part |",
        "|---|---|---|",
        f"| certified accept | P(bad \\| accept) <= {policy['accept']['target_risk']:g} at {100 * (1 - policy['delta']):g} % | "
        f"{_cell(shipped['accept'])} |",
    ]
    if "not_escalated" in shipped:
        lines.append(
            f"| certified not escalated | P(bad \\| not escalated) <= {policy['escalate_below']['target_risk']:g} | "
            f"{_cell(shipped['not_escalated'])} |"
        )
    lines += [
        f"| hand-set default accept | none | {_cell(shipped['hand_set_accept'])} |",
        f"| hand-set default not escalated | none | {_cell(shipped['hand_set_not_escalated'])} |",
        "",
        "Action mix on the test part: certified "
        + ", ".join(f"{a} {_pct(v)}" for a, v in shipped["action_mix"].items())
        + "; hand-set defaults "
        + ", ".join(f"{a} {_pct(v)}" for a, v in shipped["hand_set_action_mix"].items())
        + ".",
        "",
        f"## The same procedure for every score: {m['split_study']['splits']} random halvings of the test part by prompt",
        "",
        "Fitted on one half (Learn-then-Test, delta 0.05, each score alone), checked on the other. A violation is a "
        "split that certified a threshold whose bad rate on the other half is above the target (that half's "
        "sampling noise counts against the procedure). Coverage: share of the other half accepted, 0 when "
        "nothing was certified.",
        "",
        "| target | score | splits certified | violations (share of all splits) | mean coverage, all splits | mean realised risk when certified |",
        "|---|---|---|---|---|---|",
    ]
    lines += _study_rows(m["split_study"]["by_target"])
    lines += [
        "",
        f"The same for our two scores on all {m['split_study_whole_half']['responses']} "
        "held-out responses (calibration and test parts together; the baselines exist on the test part only), "
        "so each half holds ~500 responses:",
        "",
        "| target | score | splits certified | violations (share of all splits) | mean coverage, all splits | mean realised risk when certified |",
        "|---|---|---|---|---|---|",
        *_study_rows(m["split_study_whole_half"]["by_target"]),
        "",
        "Risk-coverage curves: `risk_coverage.png`.",
        "",
        "## The readout on the whole held-out half",
        "",
        "Issue 15's headline numbers for our readout alone on all {responses} held-out responses (95 % CI over "
        "prompts): predicted quality vs human helpfulness Spearman {s[0]:.2f} [{s[1]:.2f}, {s[2]:.2f}], AUROC "
        "for a bad response {a[0]:.2f} [{a[1]:.2f}, {a[2]:.2f}].".format(
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
