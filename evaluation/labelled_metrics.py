"""Self-scores and baselines against human labels, with bootstrap intervals over prompts and paired differences.

Definitions (docs/evaluation.md "Against human labels" repeats them):
- Targets: the five attributes (human 0-4 labels doubled onto 0-9) and `quality`, whose human value is the
  human helpfulness (the product's headline: does the predicted quality rank answers as people do?).
- A predictor gives, per response, a 0-9 distribution per attribute (`distribution`: the sidecar's readout;
  `constant`: the train half's label distribution for every response) or one number (`scalar`: length,
  mean log-probability, P(True), used unchanged for every target, higher = more).
  Its point value for an attribute is the expected score; for quality the mean of the three quality
  attributes' expected scores.
- Spearman (average ranks; undefined when either side is constant); AUROC for detecting a bad response
  (human helpfulness <= 4 on 0-9, i.e. <= 2 on HelpSteer2's 0-4) with the predicted value as the score, lower
  meaning worse (ties count half); MAE of the expected score; top-label digit ECE (10 bins); the human digit in
  the top-1/3/5 of the ten digits (ties broken at random in expectation). MAE, ECE and top-k need
  distributions; quality has Spearman, AUROC and MAE (of the mean of three, against the human mean of three).
- Intervals: percentile bootstrap resampling prompts (both responses of a prompt together), the same resamples
  for every predictor, so `paired` differences (ours - baseline) carry their own intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.metrics import Arrays, average_ranks, interval, spearman, topk_digits
from selfeval.calibration_error import digit_ece
from selfeval.rubric import ATTRIBUTES, QUALITY_ATTRIBUTES, SCALE_MAX

TARGETS = (*ATTRIBUTES, "quality")
BAD_HELPFULNESS_MAX = 4  # on 0-9: HelpSteer2 helpfulness 0, 1 or 2
DISTRIBUTION_METRICS = ("spearman", "auroc_bad", "mae", "digit_ece", "top1", "top3", "top5")
LOWER_IS_BETTER = frozenset({"mae", "digit_ece"})
_QUALITY = [ATTRIBUTES.index(a) for a in QUALITY_ATTRIBUTES]
_DIGITS = np.arange(SCALE_MAX + 1)


@dataclass(frozen=True)
class Predictor:
    name: str
    kind: str  # distribution | constant | scalar
    description: str
    probs: np.ndarray | None = None  # (n, 5, 10)
    values: np.ndarray | None = None  # (n,) for scalars

    def point(self, target: str) -> np.ndarray:
        if self.kind == "scalar":
            return self.values
        expected = (self.probs * _DIGITS).sum(axis=2)
        return expected[:, _QUALITY].mean(axis=1) if target == "quality" else expected[:, ATTRIBUTES.index(target)]


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties half; None without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(np.asarray(score, float)) + 1.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class Evaluation:
    """Per-row ingredients computed once; `statistic(idx)` evaluates every metric on a resample."""

    def __init__(self, human: np.ndarray, predictors: Sequence[Predictor]) -> None:
        self.human = human  # (n, 5) ints 0-9
        self.predictors = list(predictors)
        self.good = human[:, 0] > BAD_HELPFULNESS_MAX
        self.human_quality = human[:, _QUALITY].mean(axis=1)
        self._topk = {}
        for p in self.predictors:
            if p.probs is not None:
                arrays = Arrays(p.probs, np.ones(p.probs.shape[:2]), human, np.ones(len(human), bool))
                self._topk[p.name] = {k: topk_digits(arrays, k) for k in (1, 3, 5)}

    def human_of(self, target: str) -> np.ndarray:
        return self.human[:, 0] if target == "quality" else self.human[:, ATTRIBUTES.index(target)]

    def statistic(self, p: Predictor, target: str, idx: np.ndarray) -> dict[str, float | None]:
        point = p.point(target)[idx]
        values: dict[str, float | None] = {
            "spearman": spearman(point, self.human_of(target)[idx]),
            "auroc_bad": auroc(point, self.good[idx]),  # higher predicted = good; AUROC of spotting the bad
        }
        if p.probs is None:
            return values
        if target == "quality":
            values["mae"] = float(np.abs(point - self.human_quality[idx]).mean())
            return values
        k = ATTRIBUTES.index(target)
        values["mae"] = float(np.abs(point - self.human[idx, k]).mean())
        values["digit_ece"] = digit_ece(p.probs[idx, k], self.human[idx, k])
        for top in (1, 3, 5):
            values[f"top{top}"] = float(self._topk[p.name][top][idx, k].mean())
        return values


def prompt_resamples(groups: np.ndarray, resamples: int, seed: int) -> list[np.ndarray]:
    """Row indices of `resamples` bootstrap draws of whole prompts (with replacement)."""
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), size=(resamples, len(unique)))
    return [np.concatenate([members[g] for g in draw]) for draw in draws]


def evaluate(
    human: np.ndarray,
    groups: np.ndarray,
    predictors: Sequence[Predictor],
    ours: str,
    resamples: int = 1000,
    seed: int = 0,
    progress=None,
) -> dict:
    """Every metric of every predictor on every target, with intervals, and `ours` minus each other predictor."""
    ev = Evaluation(human, predictors)
    everything = np.arange(len(human))
    point = {(p.name, t): ev.statistic(p, t, everything) for p in ev.predictors for t in TARGETS}
    samples: dict[tuple[str, str], list[dict]] = {key: [] for key in point}
    for idx in prompt_resamples(groups, resamples, seed):
        for p in ev.predictors:
            for t in TARGETS:
                samples[(p.name, t)].append(ev.statistic(p, t, idx))
        if progress is not None:
            progress()

    def spread(key, metric, minus=None) -> dict:
        value = point[key][metric]
        if minus is not None:
            other = point[minus].get(metric)
            if value is None or other is None:
                return {"value": None, "low": None, "high": None}
            value = value - other
            draws = [
                a[metric] - b[metric]
                for a, b in zip(samples[key], samples[minus], strict=True)
                if a.get(metric) is not None and b.get(metric) is not None
            ]
        else:
            if value is None:
                return {"value": None, "low": None, "high": None}
            draws = [s[metric] for s in samples[key] if s.get(metric) is not None]
        return interval(float(value), np.asarray(draws, float))

    rows = {
        t: {p.name: {m: spread((p.name, t), m) for m in point[(p.name, t)]} for p in ev.predictors} for t in TARGETS
    }
    paired = {
        t: {
            p.name: {m: spread((ours, t), m, minus=(p.name, t)) for m in point[(p.name, t)] if m in point[(ours, t)]}
            for p in ev.predictors
            if p.name != ours
        }
        for t in TARGETS
    }
    return {
        "n_responses": int(len(human)),
        "n_prompts": int(len(np.unique(groups))),
        "bad_responses": int((~ev.good).sum()),
        "resamples": resamples,
        "predictors": {p.name: {"kind": p.kind, "description": p.description} for p in ev.predictors},
        "targets": rows,
        "paired_vs_baselines": paired,
        "ours": ours,
    }


def constant_distribution(train_human: np.ndarray, n: int) -> np.ndarray:
    """(n, 5, 10): every response gets the training labels' digit frequencies of each attribute."""
    counts = np.stack([np.bincount(train_human[:, k], minlength=SCALE_MAX + 1) for k in range(len(ATTRIBUTES))])
    frequencies = counts / counts.sum(axis=1, keepdims=True)
    return np.broadcast_to(frequencies, (n, *frequencies.shape)).copy()


def decision_mix(decisions: Sequence[str]) -> dict[str, float]:
    counts = Counter(decisions)
    return {action: round(counts[action] / len(decisions), 4) for action in ("accept", "review", "escalate")} | {
        "n": len(decisions)
    }


def goals(metrics: dict) -> dict:
    """Where the run lands against the issue's goals (reported, never tuned for)."""
    ours, rows, paired = metrics["ours"], metrics["targets"], metrics["paired_vs_baselines"]
    beats_every_baseline = {}
    for a in ATTRIBUTES:
        beats_every_baseline[a] = all(
            (diff.get("spearman") or {}).get("low") is not None and diff["spearman"]["low"] > 0
            for name, diff in paired[a].items()
            if metrics["predictors"][name]["kind"] != "constant"
        )
    top5 = [rows[a][ours]["top5"]["value"] for a in ATTRIBUTES]
    return {
        "quality_spearman_vs_helpfulness>=0.5": rows["quality"][ours]["spearman"]["value"],
        "auroc_bad>=0.80": rows["quality"][ours]["auroc_bad"]["value"],
        "each_attribute_spearman_above_every_baseline_ci_above_0": beats_every_baseline,
        "human_digit_in_top5>=0.88 (mean over attributes)": float(np.mean(top5)),
    }
