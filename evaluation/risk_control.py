"""Fitting thresholds with a finite-sample risk guarantee (Learn-then-Test), and checking them on disjoint data.

The procedure (Angelopoulos et al., "Learn then Test", 2021), for one score (higher = better) and a target:
- candidate thresholds: the scores that pass 2.5 %, 5 %, ... 100 % of the calibration answers (they depend on
  the scores only, never on the labels);
- learn: a third of the calibration answers (whole prompts) orders the candidates, safest-looking first (by
  their own Clopper-Pearson upper bound), so that testing does not stop on a small, noisy strict end;
- test: on the other two thirds, the null hypothesis "P(bad | score >= t) > target" of each candidate, in that
  order, gets the exact binomial p-value P(Binomial(n_t, target) <= bad_t) (n_t answers passing t, bad_t of
  them bad); fixed-sequence testing stops at the first p-value above delta, and the loosest candidate
  rejected before it is kept. Candidates that pass fewer test answers than could ever be certified (even with
  none bad) are skipped, not tested. The family-wise error is <= delta, so with probability >= 1 - delta the
  kept threshold's bad rate among passing answers is <= target.
Assumption: the answers the policy will see are exchangeable with the calibration answers (same model,
same kind of traffic, same judge). Under distribution shift the guarantee does not hold; the server's realised
accept risk gauge and its alarm are there to notice that.

Several candidate scores are tried at delta / (number of candidates) each (Bonferroni), and the one that
accepts most of the calibration split is kept: choosing among them costs the guarantee nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from selfeval import binomial
from selfeval.certified_policy import CertifiedThreshold


class RiskControlError(ValueError):
    """A target that the calibration data cannot certify, with how much data would."""


def minimum_passing(target: float, delta: float) -> int:
    """The fewest passing answers that can certify `target` at all (every one of them good)."""
    return math.ceil(math.log(delta) / math.log1p(-target))


COVERAGE_GRID = np.arange(1, 41) / 40  # candidate thresholds: those passing 2.5 %, 5 %, ... 100 % of the answers
ORDER_SHARE = 1 / 3  # share of the calibration answers that learns the testing order; the rest tests


def grid_thresholds(scores: np.ndarray) -> np.ndarray:
    """Thresholds passing each share of COVERAGE_GRID of `scores` (label-free), distinct, loosest last."""
    ranked = np.sort(scores)[::-1]
    picks = ranked[np.maximum(np.ceil(COVERAGE_GRID * len(ranked)).astype(int) - 1, 0)]
    return np.unique(picks)[::-1]


def counts(scores: np.ndarray, bad: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(answers passing each threshold, bad answers among them)."""
    passing = scores[None, :] >= thresholds[:, None]
    return passing.sum(axis=1), (passing & bad[None, :]).sum(axis=1)


def order_split(n: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """A seeded mask of the answers that learn the order (whole groups, e.g. both answers to one prompt)."""
    groups = np.arange(n) if groups is None else np.asarray(groups)
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(unique, size=max(1, round(ORDER_SHARE * len(unique))), replace=False)
    return np.isin(groups, chosen)


def certify(
    scores: np.ndarray,
    bad: np.ndarray,
    target: float,
    delta: float,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> CertifiedThreshold | None:
    """The loosest threshold whose passing answers' bad rate is certified <= target at 1 - delta, or None.

    Learn: a third of the answers ranks the candidate thresholds by their Clopper-Pearson upper bound
    (safest-looking first). Test: the other two thirds test them in that order with exact binomial p-values,
    stopping at the first that is not rejected; the loosest rejected one is kept."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    if len(scores) < 3:
        return None
    thresholds = grid_thresholds(scores)
    learn = order_split(len(scores), groups, seed)
    n_learn, bad_learn = counts(scores[learn], bad[learn], thresholds)
    ranking = binomial.upper_bounds(bad_learn, n_learn, delta)
    order = sorted(range(len(thresholds)), key=lambda j: (ranking[j], -n_learn[j]))
    n_test, bad_test = counts(scores[~learn], bad[~learn], thresholds)
    tested = [j for j in order if n_test[j] >= minimum_passing(target, delta)]
    if not tested:
        return None
    p_values = binomial.cdf(bad_test[tested], n_test[tested], target)
    failures = np.flatnonzero(p_values > delta)
    rejected = tested[: failures[0] if len(failures) else len(tested)]
    if not rejected:
        return None
    loosest = min(rejected, key=lambda j: thresholds[j])
    count, bad_count = int(n_test[loosest]), int(bad_test[loosest])
    return CertifiedThreshold(
        threshold=float(thresholds[loosest]),
        target_risk=target,
        bound=binomial.upper_bound(bad_count, count, delta),
        n=count,
        bad=bad_count,
    )


def realised(scores: np.ndarray, bad: np.ndarray, threshold: float) -> dict:
    """On data the threshold was not fitted on: the bad rate among passing answers and the share passing,
    each with a two-sided 95 % Clopper-Pearson interval."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    passing = scores >= threshold
    n, bad_count = int(passing.sum()), int(bad[passing].sum())
    return {
        "answers": len(scores),
        "passing": n,
        "bad": bad_count,
        "risk": bad_count / n if n else None,
        "risk_interval": list(binomial.interval(bad_count, n)),
        "coverage": n / len(scores) if len(scores) else None,
        "coverage_interval": list(binomial.interval(n, len(scores))),
    }


def labels_needed(scores: np.ndarray, bad: np.ndarray, target: float, delta: float) -> int | None:
    """How many labelled answers would certify `target`, at the best bad rate this data shows among its
    top-scored 10 %, 20 %, ... 100 % (two thirds of them testing); None when no share is below the target."""
    scores, bad = np.asarray(scores, float), np.asarray(bad, bool)
    ranked_bad = bad[np.argsort(-scores, kind="stable")]
    best = None
    for share in np.arange(1, 11) / 10:
        top = max(1, round(share * len(scores)))
        needed_passing = binomial.accepted_needed(float(ranked_bad[:top].mean()), target, delta)
        if needed_passing is not None:
            total = math.ceil(needed_passing / share / (1 - ORDER_SHARE))  # only the testing part counts
            best = total if best is None else min(best, total)
    return best


@dataclass(frozen=True)
class FittedScore:
    name: str
    accept: CertifiedThreshold | None
    escalate_below: CertifiedThreshold | None
    coverage: float  # share of the calibration split accepted


def fit_scores(
    candidates: Mapping[str, np.ndarray],
    bad: np.ndarray,
    target_risk: float,
    delta: float,
    review_risk: float | None = None,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> list[FittedScore]:
    """Each candidate score fitted at delta / len(candidates); best first (accepts the most, then name order)."""
    each = delta / len(candidates)
    fitted = []
    for name, scores in candidates.items():
        accept = certify(scores, bad, target_risk, each, groups, seed)
        escalate = certify(scores, bad, review_risk, each, groups, seed) if review_risk is not None and accept else None
        if escalate is not None and escalate.threshold > accept.threshold:
            escalate = None  # the review guarantee is looser than accept's: nothing left to escalate on
        coverage = float((np.asarray(scores) >= accept.threshold).mean()) if accept else 0.0
        fitted.append(FittedScore(name, accept, escalate, coverage))
    return sorted(fitted, key=lambda f: -f.coverage)


def refusal(candidates: Mapping[str, np.ndarray], bad: np.ndarray, target: float, delta: float) -> str:
    """Why no candidate certifies `target`, and how many labelled answers would."""
    each = delta / len(candidates)
    needed = [n for s in candidates.values() if (n := labels_needed(s, bad, target, each)) is not None]
    base = f"no threshold certifies P(bad | accept) <= {target:g} at {100 * (1 - delta):g} % from {len(bad)} answers"
    if not needed:
        return (
            f"{base}: no score reaches a bad rate below {target:g} even among its best-scored answers "
            f"(overall bad rate {np.mean(bad):.2f}); choose a target above that or a better-scoring model"
        )
    return f"{base}: at the bad rates this data shows, about {min(needed)} labelled answers would be needed"


def split_study(
    candidates: Mapping[str, np.ndarray],
    bad: np.ndarray,
    groups: np.ndarray,
    target: float,
    delta: float,
    splits: int = 200,
    calibration_share: float = 0.5,
    seed: int = 0,
) -> dict[str, dict]:
    """Each score fitted alone (at delta) on random calibration halves of whole prompts, checked on the rest:
    how often the guarantee held on the test part and what it accepted there."""
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    outcomes: dict[str, list] = {name: [] for name in candidates}
    for _ in range(splits):
        chosen = rng.choice(unique, size=round(calibration_share * len(unique)), replace=False)
        calibration = np.isin(groups, chosen)
        for name, scores in candidates.items():
            scores = np.asarray(scores, float)
            fitted = certify(scores[calibration], bad[calibration], target, delta, groups[calibration], seed)
            if fitted is None:
                outcomes[name].append(None)
                continue
            outcomes[name].append(realised(scores[~calibration], bad[~calibration], fitted.threshold))
    return {name: summarise_splits(results, target) for name, results in outcomes.items()}


def summarise_splits(results: Sequence[dict | None], target: float) -> dict:
    """The guarantee is about all draws: a violation is a split that certified a threshold whose test-part
    bad rate is above the target (a split that certified nothing promised nothing). Test parts are finite,
    so their sampling noise counts against the procedure: the share is conservative."""
    certified = [r for r in results if r is not None]
    risks = [r["risk"] if r["passing"] else 0.0 for r in certified]
    violations = sum(1 for risk in risks if risk > target)
    return {
        "splits": len(results),
        "certified": len(certified),
        "violations": violations,
        "violation_share": violations / len(results) if results else None,
        "held_share": 1 - violations / len(results) if results else None,
        "mean_test_risk": float(np.mean(risks)) if certified else None,
        "mean_test_coverage": float(np.mean([r["coverage"] for r in certified])) if certified else None,
        "mean_coverage_all_splits": float(np.mean([r["coverage"] if r else 0.0 for r in results])),
    }
