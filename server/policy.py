"""Accept / review / escalate from the five score distributions, with reasons.

The self-score is a cheap "check-engine light", not a verdict, so the policy is deliberately simple and
readable: each rule looks at one property of the distributions and proposes an action; the most severe
proposal wins and every rule that fired is listed as a reason. Thresholds come from settings and can be
overridden per request. No readout at all is never silently accepted.

Rules (0-9 scale, probabilities from the renormalised digit distributions):
- predicted quality below `escalate_below_quality` -> escalate; below `review_below_quality` -> review
- P(helpfulness <= low_score or correctness <= low_score) >= `escalate_low_score_prob` -> escalate;
  >= `review_low_score_prob` -> review
- any attribute's entropy above `review_above_entropy` nats (the model is unsure) -> review
- any attribute's label mass below `review_below_label_mass` (the model did not expect a score) -> review
- readout unavailable -> `unavailable_action`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfeval.readout import ScoreDistribution, predicted_quality

Action = Literal["accept", "review", "escalate"]
SEVERITY = {"accept": 0, "review": 1, "escalate": 2}


class PolicyThresholds(BaseModel):
    """Decision thresholds; every field can be overridden per request."""

    model_config = ConfigDict(extra="forbid")

    escalate_below_quality: float = Field(0.35, ge=0.0, le=1.0)
    review_below_quality: float = Field(0.55, ge=0.0, le=1.0)
    low_score: int = Field(3, ge=0, le=9, description="A helpfulness/correctness score at or below this is 'low'")
    escalate_low_score_prob: float = Field(0.5, ge=0.0, le=1.0)
    review_low_score_prob: float = Field(0.25, ge=0.0, le=1.0)
    review_above_entropy: float = Field(1.9, ge=0.0, description="nats; ln 10 = 2.30 is uniform")
    review_below_label_mass: float = Field(0.5, ge=0.0, le=1.0)
    unavailable_action: Literal["review", "escalate"] = "escalate"

    def merged(self, overrides: dict | None) -> PolicyThresholds:
        return self if not overrides else PolicyThresholds(**{**self.model_dump(), **overrides})


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"action": self.action, "reasons": list(self.reasons)}


def low_score_probability(distribution: ScoreDistribution, low_score: int) -> float:
    return sum(distribution.probs[: low_score + 1])


def decide(distributions: dict[str, ScoreDistribution] | None, thresholds: PolicyThresholds) -> Decision:
    if not distributions:
        return Decision(thresholds.unavailable_action, ["no self-evaluation could be read"])
    proposals: list[tuple[Action, str]] = []
    quality = predicted_quality(distributions)
    if quality < thresholds.escalate_below_quality:
        proposals.append(("escalate", f"predicted quality {quality:.2f} < {thresholds.escalate_below_quality}"))
    elif quality < thresholds.review_below_quality:
        proposals.append(("review", f"predicted quality {quality:.2f} < {thresholds.review_below_quality}"))
    for attribute in ("helpfulness", "correctness"):
        p_low = low_score_probability(distributions[attribute], thresholds.low_score)
        if p_low >= thresholds.escalate_low_score_prob:
            proposals.append(("escalate", f"P({attribute} <= {thresholds.low_score}) = {p_low:.2f}"))
        elif p_low >= thresholds.review_low_score_prob:
            proposals.append(("review", f"P({attribute} <= {thresholds.low_score}) = {p_low:.2f}"))
    for attribute, distribution in distributions.items():
        if distribution.entropy > thresholds.review_above_entropy:
            proposals.append(("review", f"{attribute} entropy {distribution.entropy:.2f} nats (uncertain)"))
        if distribution.label_mass < thresholds.review_below_label_mass:
            proposals.append(("review", f"{attribute} label mass {distribution.label_mass:.2f} (no score expected)"))
    if not proposals:
        return Decision("accept", [f"predicted quality {quality:.2f}; no rule fired"])
    action = max((a for a, _ in proposals), key=SEVERITY.__getitem__)
    return Decision(action, [reason for _, reason in proposals])
