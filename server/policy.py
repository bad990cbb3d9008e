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
- the request carries integrity flags (selfeval.integrity: it tried to steer its own scores) ->
  `flagged_action` (none turns the rule off)

Per-request overrides may only tighten the policy unless the operator allows loosening (`loosened_by` says
which override loosens what): "tighter" means at least as many answers leave `accept`.

A certified policy (`selfeval/certified_policy.py`, fitted by `see calibrate policy`) replaces the score rules
when one is loaded: its thresholds decide, its guarantee is cited in the reasons and its version in `policy`.
The integrity-flag and no-readout rules still apply on top; the entropy and label-mass rules do not (the
guarantee is a statement about the certified rule alone). A request that brings its own thresholds gets the
more severe of the certified action and the hand-set rules with those thresholds (overrides only tighten),
unless the operator allows loosening: then the hand-set rules with those thresholds decide alone, uncertified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from selfeval.certified_policy import CertifiedPolicy
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
    flagged_action: Literal["none", "review", "escalate"] = Field(
        "review", description="At least this when the request carries integrity flags"
    )

    def merged(self, overrides: dict | None) -> PolicyThresholds:
        return self if not overrides else PolicyThresholds(**{**self.model_dump(), **overrides})

    def loosened_by(self, other: PolicyThresholds) -> list[tuple[str, str]]:
        """(field, why) for every threshold of `other` that would accept what this policy does not."""
        looser = []
        for name, tighter_when in TIGHTER_WHEN.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if tighter_when == "higher" and theirs < mine:
                looser.append((name, f"= {theirs} is below the server's {mine}"))
            elif tighter_when == "lower" and theirs > mine:
                looser.append((name, f"= {theirs} is above the server's {mine}"))
        for name in ("unavailable_action", "flagged_action"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if SEVERITY.get(theirs, -1) < SEVERITY.get(mine, -1):
                looser.append((name, f"= {theirs!r} is milder than the server's {mine!r}"))
        return looser


# which way each numeric threshold moves to send more answers to review/escalate
TIGHTER_WHEN = {
    "escalate_below_quality": "higher",
    "review_below_quality": "higher",
    "low_score": "higher",
    "escalate_low_score_prob": "lower",
    "review_low_score_prob": "lower",
    "review_above_entropy": "lower",
    "review_below_label_mass": "higher",
}


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: list[str]
    policy: str | None = None  # the certified policy's version when it decided; None = the hand-set rules

    def to_dict(self) -> dict:
        return {"action": self.action, "reasons": list(self.reasons), "policy": self.policy}


def low_score_probability(distribution: ScoreDistribution, low_score: int) -> float:
    return sum(distribution.probs[: low_score + 1])


def most_severe(proposals: list[tuple[Action, str]], policy: str | None = None) -> Decision:
    action = max((a for a, _ in proposals), key=SEVERITY.__getitem__)
    return Decision(action, [reason for _, reason in proposals], policy)


def flag_proposals(thresholds: PolicyThresholds, flags: Sequence[str]) -> list[tuple[Action, str]]:
    if flags and thresholds.flagged_action != "none":
        return [(thresholds.flagged_action, f"request flagged: {', '.join(flags)}")]
    return []


def decide_certified(
    distributions: dict[str, ScoreDistribution] | None,
    policy: CertifiedPolicy,
    thresholds: PolicyThresholds,
    flags: Sequence[str] = (),
    with_rules: bool = False,
) -> Decision:
    """The certified policy's action, made at least as severe as the flag rule asks (and, `with_rules`, as the
    hand-set rules with these thresholds ask)."""
    if not distributions:
        return Decision(thresholds.unavailable_action, ["no self-evaluation could be read"], policy.version)
    proposals = [*flag_proposals(thresholds, flags), policy.decide(distributions)]
    if with_rules and (ruled := decide(distributions, thresholds)).action != "accept":
        proposals += [(ruled.action, f"per-request thresholds: {reason}") for reason in ruled.reasons]
    return most_severe(proposals, policy.version)


def decide(
    distributions: dict[str, ScoreDistribution] | None, thresholds: PolicyThresholds, flags: Sequence[str] = ()
) -> Decision:
    if not distributions:
        return Decision(thresholds.unavailable_action, ["no self-evaluation could be read"])
    proposals = flag_proposals(thresholds, flags)
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
    return most_severe(proposals)
