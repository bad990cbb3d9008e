"""Calibration metrics of self-scores against judge scores, with bootstrap 95 % intervals (pure numpy).

Definitions (docs/method.md §9; the open questions of §12 decided here, docs/evaluation.md repeats them):
- The point self-score of an attribute is the argmax of the model's 0-9 distribution (ties -> lower score). Under
  greedy decoding that is the digit the model wrote; for a forced readout it is what it would have written.
- quality: mean of the judge's helpfulness, correctness, coherence / 9 (the reward's term), averaged over prompts.
- calibration (squared, the reward's gamma = 2 form and the paper's headline) = mean_i (1 - MAE_i / 9)^2 over the
  five attributes; calibration_linear = mean_i (1 - MAE_i / 9).
- Per attribute: MAE of the point score and of the expected score, Spearman of the expected score against the
  judge (average ranks; undefined -> None when either side is constant), top-label ECE of the digit distribution
  (10 equal-width confidence bins), Brier score (sum over the ten digits) and log-loss (probabilities floored at
  1e-12, so zero mass on the judge's digit costs 27.6 nats instead of infinity).
- quality ECE: predicted quality (expected scores) against judge quality, 10 equal-width bins.
- top-k (k = 1, 3, 5), ranked among the ten digits: ties broken at random in expectation, so a uniform
  distribution scores k/10. Over the whole vocabulary: the engine returns only the digits' log-probabilities and
  the mass the digits hold, so a non-digit token could outrank the judge's digit only if it holds more than the
  digit's full-vocabulary probability; the lower bound assumes as many such tokens as the non-digit mass allows,
  the upper bound none. They coincide when the digits hold the mass (a well-formed block).
- Win rates against a baseline on the same prompts (paired by id): 1 win, 0.5 tie, 0 loss. The pairwise response
  win rate takes the judge's verdict in both orders and averages them (cancels position bias).
- Intervals: percentile bootstrap over prompts (B resamples, seeded); paired metrics resample the pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from selfeval.calibration_error import BINS, binned, digit_ece, ece  # noqa: F401  (re-exported)
from selfeval.rubric import ATTRIBUTES, QUALITY_ATTRIBUTES, SCALE_MAX

TOP_K = (1, 3, 5)
LOG_FLOOR = 1e-12
_DIGITS = np.arange(SCALE_MAX + 1)
_QUALITY = [ATTRIBUTES.index(a) for a in QUALITY_ATTRIBUTES]


@dataclass(frozen=True)
class Example:
    """One evaluated answer: the model's five distributions and the judge's five scores, attribute order."""

    id: str
    probs: Sequence[Sequence[float]]  # 5 x 10
    label_mass: Sequence[float]  # 5
    judge: Sequence[int]  # 5
    valid_block: bool


@dataclass(frozen=True)
class Arrays:
    probs: np.ndarray  # (n, 5, 10)
    mass: np.ndarray  # (n, 5)
    judge: np.ndarray  # (n, 5) ints
    valid: np.ndarray  # (n,) bool

    @classmethod
    def of(cls, examples: Sequence[Example]) -> Arrays:
        if not examples:
            raise ValueError("no examples to evaluate")
        probs = np.asarray([e.probs for e in examples], dtype=float)
        if probs.shape[1:] != (len(ATTRIBUTES), SCALE_MAX + 1):
            raise ValueError(f"each example needs {len(ATTRIBUTES)} x {SCALE_MAX + 1} probabilities")
        probs = probs / probs.sum(axis=2, keepdims=True)
        return cls(
            probs=probs,
            mass=np.asarray([e.label_mass for e in examples], dtype=float),
            judge=np.asarray([e.judge for e in examples], dtype=int),
            valid=np.asarray([e.valid_block for e in examples], dtype=bool),
        )

    @property
    def n(self) -> int:
        return len(self.judge)

    @property
    def point(self) -> np.ndarray:
        return self.probs.argmax(axis=2)

    @property
    def expected(self) -> np.ndarray:
        return (self.probs * _DIGITS).sum(axis=2)

    @property
    def judge_prob(self) -> np.ndarray:
        return np.take_along_axis(self.probs, self.judge[..., None], axis=2)[..., 0]


# ---- per-example quantities (means of these are the metrics) -------------------------------------------------


def judge_quality(judge: np.ndarray) -> np.ndarray:
    return judge[:, _QUALITY].mean(axis=1) / SCALE_MAX


def predicted_quality(a: Arrays) -> np.ndarray:
    return a.expected[:, _QUALITY].mean(axis=1) / SCALE_MAX


def calibration_linear(a: Arrays) -> np.ndarray:
    return 1.0 - np.abs(a.point - a.judge).mean(axis=1) / SCALE_MAX


def calibration_squared(a: Arrays) -> np.ndarray:
    return calibration_linear(a) ** 2


def brier(a: Arrays) -> np.ndarray:
    """(n, 5): sum over digits of (p_k - 1[k = judge])^2."""
    onehot = _DIGITS[None, None, :] == a.judge[..., None]
    return ((a.probs - onehot) ** 2).sum(axis=2)


def log_loss(a: Arrays) -> np.ndarray:
    return -np.log(np.maximum(a.judge_prob, LOG_FLOOR))


def topk_digits(a: Arrays, k: int) -> np.ndarray:
    """(n, 5): probability that the judge's digit is in the model's top k digits (random tie-break)."""
    p = a.judge_prob[..., None]
    greater = (a.probs > p).sum(axis=2)
    ties = (a.probs == p).sum(axis=2) - 1
    return np.clip((k - greater) / (ties + 1), 0.0, 1.0)


def topk_vocab_bounds(a: Arrays, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) hit indicators over the whole vocabulary, from the digits' share of the mass."""
    upper = topk_digits(a, k)
    p_full = a.judge_prob * a.mass
    other_mass = np.clip(1.0 - a.mass, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        max_outranking = np.where(p_full > 0, np.floor(other_mass / np.where(p_full > 0, p_full, 1.0)), np.inf)
    max_outranking = np.minimum(max_outranking, k)  # more than k cannot matter
    p = a.judge_prob[..., None]
    greater = (a.probs > p).sum(axis=2) + max_outranking
    ties = (a.probs == p).sum(axis=2) - 1
    lower = np.clip((k - greater) / (ties + 1), 0.0, 1.0)
    return lower, upper


# ---- statistics that are not plain means -------------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, ties sharing their average rank (vectorised: bootstraps call this thousands of times)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]] if len(values) else np.zeros(0, bool)
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho with average ranks; None when either side is constant (rho undefined)."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    rx, ry = average_ranks(np.asarray(x, float)), average_ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


# ---- bootstrap ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    seed: int = 0

    def indices(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).integers(0, n, size=(self.resamples, n))

    def mean(self, per_example: np.ndarray) -> dict:
        values = np.asarray(per_example, dtype=float)
        samples = values[self.indices(len(values))].mean(axis=1)
        return interval(float(values.mean()), samples)

    def statistic(self, n: int, fn: Callable[[np.ndarray], float | None]) -> dict:
        value = fn(np.arange(n))
        if value is None:
            return {"value": None, "low": None, "high": None}
        samples = [s for s in (fn(idx) for idx in self.indices(n)) if s is not None]
        return interval(float(value), np.asarray(samples))


def interval(value: float, samples: np.ndarray) -> dict:
    if len(samples) == 0:
        return {"value": value, "low": None, "high": None}
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"value": value, "low": float(low), "high": float(high)}


# ---- the metric set ---------------------------------------------------------------------------------------------


def compute_metrics(examples: Sequence[Example], boot: Bootstrap | None = None) -> dict:
    """Every single-run metric with its 95 % interval (see the module docstring for the definitions)."""
    boot = boot or Bootstrap()
    a = Arrays.of(examples)
    bri, ll = brier(a), log_loss(a)
    point_err, expected_err = np.abs(a.point - a.judge), np.abs(a.expected - a.judge)
    per_attribute = {}
    for d, name in enumerate(ATTRIBUTES):
        per_attribute[name] = {
            "mae": boot.mean(point_err[:, d]),
            "mae_expected": boot.mean(expected_err[:, d]),
            "spearman": boot.statistic(a.n, lambda i, d=d: spearman(a.expected[i, d], a.judge[i, d])),
            "ece": boot.statistic(a.n, lambda i, d=d: digit_ece(a.probs[i, d], a.judge[i, d])),
            "brier": boot.mean(bri[:, d]),
            "log_loss": boot.mean(ll[:, d]),
            **{f"top{k}_digits": boot.mean(topk_digits(a, k)[:, d]) for k in TOP_K},
        }
    pred_q, judge_q = predicted_quality(a), judge_quality(a.judge)
    topk = {}
    for k in TOP_K:
        lower, upper = topk_vocab_bounds(a, k)
        topk[f"top{k}_digits"] = boot.mean(topk_digits(a, k).mean(axis=1))
        topk[f"top{k}_vocab_lower"] = boot.mean(lower.mean(axis=1))
        topk[f"top{k}_vocab_upper"] = boot.mean(upper.mean(axis=1))
    flat_probs, flat_judge = a.probs.reshape(-1, SCALE_MAX + 1), a.judge.reshape(-1)
    valid = a.valid
    return {
        "examples": a.n,
        "bootstrap": {"resamples": boot.resamples, "seed": boot.seed, "interval": "percentile 95%"},
        "valid_block_rate": boot.mean(valid.astype(float)),
        "quality": boot.mean(judge_q),
        "calibration": boot.mean(calibration_squared(a)),
        "calibration_linear": boot.mean(calibration_linear(a)),
        "calibration_valid_blocks_only": boot.mean(calibration_squared(a)[valid]) if valid.any() else None,
        "mae": boot.mean(point_err.mean(axis=1)),
        "predicted_quality": boot.mean(pred_q),
        "quality_ece": boot.statistic(a.n, lambda i: ece(pred_q[i], judge_q[i])),
        "quality_spearman": boot.statistic(a.n, lambda i: spearman(pred_q[i], judge_q[i])),
        "digit_ece": boot.statistic(
            a.n, lambda i: digit_ece(a.probs[i].reshape(-1, SCALE_MAX + 1), a.judge[i].reshape(-1))
        ),
        "brier": boot.mean(bri.mean(axis=1)),
        "log_loss": boot.mean(ll.mean(axis=1)),
        "topk": topk,
        "per_attribute": per_attribute,
        "reliability": {
            name: binned(a.probs[:, d].max(axis=1), (a.point[:, d] == a.judge[:, d]).astype(float))
            for d, name in enumerate(ATTRIBUTES)
        },
        "quality_reliability": binned(pred_q, judge_q),
        "digit_reliability": binned(flat_probs.max(axis=1), (flat_probs.argmax(axis=1) == flat_judge).astype(float)),
    }


def win_scores(ours: np.ndarray, theirs: np.ndarray, tolerance: float = 1e-12) -> np.ndarray:
    """Per pair: 1 if ours is higher, 0.5 on a tie, 0 if lower."""
    diff = np.asarray(ours, float) - np.asarray(theirs, float)
    return np.where(np.abs(diff) <= tolerance, 0.5, (diff > 0).astype(float))


def compare_to_baseline(ours: Sequence[Example], theirs: Sequence[Example], boot: Bootstrap | None = None) -> dict:
    """Quality and calibration win rates on the prompts both runs answered (paired by example id)."""
    boot = boot or Bootstrap()
    by_id = {e.id: e for e in theirs}
    pairs = [(e, by_id[e.id]) for e in ours if e.id in by_id]
    if not pairs:
        raise ValueError("the baseline run shares no prompt with this run")
    a, b = Arrays.of([p[0] for p in pairs]), Arrays.of([p[1] for p in pairs])
    return {
        "paired_prompts": len(pairs),
        "quality_win_rate": boot.mean(win_scores(judge_quality(a.judge), judge_quality(b.judge))),
        "calibration_win_rate": boot.mean(win_scores(calibration_squared(a), calibration_squared(b))),
        "quality_delta": boot.mean(judge_quality(a.judge) - judge_quality(b.judge)),
        "calibration_delta": boot.mean(calibration_squared(a) - calibration_squared(b)),
    }


VERDICT_SCORE_AS_A = {"A": 1.0, "B": 0.0, "tie": 0.5}
VERDICT_SCORE_AS_B = {"A": 0.0, "B": 1.0, "tie": 0.5}
CONSISTENT_VERDICTS = {("A", "B"), ("B", "A"), ("tie", "tie")}


def pairwise_win_rate(verdicts: Sequence[tuple[str, str]], boot: Bootstrap | None = None) -> dict:
    """Win rate of our response from (verdict with ours as A, verdict with ours as B) per prompt."""
    boot = boot or Bootstrap()
    if not verdicts:
        raise ValueError("no pairwise verdicts")
    per_prompt = np.asarray([(VERDICT_SCORE_AS_A[x] + VERDICT_SCORE_AS_B[y]) / 2 for x, y in verdicts])
    consistent = [(x, y) in CONSISTENT_VERDICTS for x, y in verdicts]
    result = boot.mean(per_prompt)
    result["position_consistency"] = float(np.mean(consistent))  # the same verdict whichever response came first
    result["prompts"] = len(verdicts)
    return result
