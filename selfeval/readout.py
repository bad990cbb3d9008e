"""Digit log-probabilities -> a score distribution for one attribute.

The engine returns the log-probabilities of the ten digit tokens at a score position (raw: before
temperature, penalties or grammar masks). Renormalising over the ten digits gives the model's own 0-9
distribution; `label_mass` keeps the probability the model put on digits at all before renormalising, a
validity diagnostic (low mass means the model did not expect a score there). Entropy is in nats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from selfeval.rubric import QUALITY_ATTRIBUTES, SCALE_MAX


class ReadoutError(ValueError):
    """Digit log-probabilities that cannot form a distribution (wrong count, NaN, all -inf)."""


def expected_score(probs: Sequence[float]) -> float:
    """The expected score of a 0-9 distribution."""
    return sum(score * p for score, p in enumerate(probs))


@dataclass(frozen=True)
class ScoreDistribution:
    """The model's 0-9 distribution for one attribute and its summary statistics."""

    probs: tuple[float, ...]
    label_mass: float
    emitted: int | None = None

    @property
    def expected(self) -> float:
        return expected_score(self.probs)

    @property
    def argmax(self) -> int:
        return max(range(len(self.probs)), key=lambda score: self.probs[score])

    @property
    def std(self) -> float:
        mean = self.expected
        variance = sum(p * (score - mean) ** 2 for score, p in enumerate(self.probs))
        return math.sqrt(max(variance, 0.0))

    @property
    def entropy(self) -> float:
        return -sum(p * math.log(p) for p in self.probs if p > 0.0)

    def top_k(self, k: int = 3) -> list[tuple[int, float]]:
        """The k most likely scores with their probabilities, most likely first (ties: lower score first)."""
        ranked = sorted(range(len(self.probs)), key=lambda score: (-self.probs[score], score))
        return [(score, self.probs[score]) for score in ranked[:k]]

    def to_dict(self) -> dict[str, object]:
        return {
            "expected": self.expected,
            "argmax": self.argmax,
            "probs": list(self.probs),
            "std": self.std,
            "entropy": self.entropy,
            "label_mass": self.label_mass,
            "emitted": self.emitted,
        }


def distribution_from_logprobs(digit_logprobs: Sequence[float], emitted: int | None = None) -> ScoreDistribution:
    """Build a distribution from the log-probabilities of the digits 0..9, in digit order."""
    if len(digit_logprobs) != SCALE_MAX + 1:
        raise ReadoutError(f"need {SCALE_MAX + 1} digit log-probabilities, got {len(digit_logprobs)}")
    values = [float(lp) for lp in digit_logprobs]
    if any(math.isnan(v) or v == math.inf for v in values):
        raise ReadoutError(f"digit log-probabilities must be finite or -inf, got {values}")
    peak = max(values)
    if peak == -math.inf:
        raise ReadoutError("every digit has probability 0; no distribution can be read")
    # log-sum-exp with the peak factored out, so tiny probabilities do not underflow to an all-zero vector
    weights = [math.exp(v - peak) for v in values]
    total = sum(weights)
    probs = tuple(w / total for w in weights)
    label_mass = min(1.0, math.exp(peak) * total)
    return ScoreDistribution(probs=probs, label_mass=label_mass, emitted=emitted)


def distribution_from_token_logprobs(
    logprobs_by_token: Mapping[int, float], digit_token_ids: Sequence[int], emitted: int | None = None
) -> ScoreDistribution:
    """Pick the ten digit ids (in digit order) out of a token-id -> logprob mapping; missing ids raise."""
    missing = [token for token in digit_token_ids if token not in logprobs_by_token]
    if missing:
        raise ReadoutError(f"the engine returned no log-probability for digit token ids {missing}")
    return distribution_from_logprobs([logprobs_by_token[token] for token in digit_token_ids], emitted)


def predicted_quality(distributions: Mapping[str, ScoreDistribution]) -> float:
    """Mean expected score of the three quality attributes, divided by the scale maximum: on [0, 1]."""
    return sum(distributions[a].expected for a in QUALITY_ATTRIBUTES) / (len(QUALITY_ATTRIBUTES) * SCALE_MAX)
