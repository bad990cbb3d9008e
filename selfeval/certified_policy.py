"""A certified decision policy: accept / review / escalate thresholds that carry a finite-sample guarantee.

Fitted by `see calibrate policy` (fitting code: `evaluation/risk_control.py`) on judged answers of one
checkpoint, stored beside the card as `see_policy.json`, loaded by the server, which then decides with it and
cites it in every decision's reasons. The policy thresholds one score of the five distributions (higher =
better):
- `quality`: the predicted quality (mean expected score of the three quality attributes, on [0, 1]);
- `helpfulness_above`: 1 - P(helpfulness <= bad_at_or_below), the model's own probability the answer is not bad.

An answer is "bad" when the judge's helpfulness is <= `bad_at_or_below` (0-9). The guarantees, each holding
with probability >= 1 - delta over the draw of the calibration set, for answers exchangeable with it:
- accept (score >= accept.threshold): P(bad | accept) <= accept.target_risk;
- not escalated (score >= escalate_below.threshold, i.e. accept or review): P(bad | not escalated) <=
  escalate_below.target_risk. Below it: escalate. Without that threshold nothing is escalated on the score.

The policy is tied to one checkpoint (card fingerprint) and to the scores it thresholds: raw (calibration_version
None; the server then decides on raw scores even while it serves a calibration map) or those of one map: the
server refuses a policy fitted for another checkpoint, or for a map it does not have.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfeval.jsonfile import read_json_object, write_json_atomic
from selfeval.readout import ScoreDistribution, predicted_quality

POLICY_FILENAME = "see_policy.json"
POLICY_FORMAT = "see-certified-policy"
POLICY_FORMAT_VERSION = 1
SCORES = ("quality", "helpfulness_above")
METHOD = "learn-then-test: fixed-sequence testing of thresholds, exact binomial (Clopper-Pearson) p-values"


class PolicyError(ValueError):
    """A missing, malformed or mismatched certified policy, with what to do about it."""


def policy_score(name: str, distributions: Mapping[str, ScoreDistribution], bad_at_or_below: int) -> float:
    """The value a certified policy thresholds; higher = better, on [0, 1]."""
    if name == "quality":
        return predicted_quality(distributions)
    if name == "helpfulness_above":
        return 1.0 - sum(distributions["helpfulness"].probs[: bad_at_or_below + 1])
    raise PolicyError(f"unknown policy score {name!r}; one of {list(SCORES)}")


@dataclass(frozen=True)
class CertifiedThreshold:
    """score >= threshold passes; among passing calibration answers `bad` of `n` were bad, so the bad rate
    among passing answers is <= `bound` (Clopper-Pearson, 1 - delta) <= target_risk."""

    threshold: float
    target_risk: float
    bound: float
    n: int
    bad: int


@dataclass(frozen=True)
class CertifiedPolicy:
    score: str
    bad_at_or_below: int
    delta: float  # the guarantees hold with probability >= 1 - delta
    accept: CertifiedThreshold
    escalate_below: CertifiedThreshold | None
    card_fingerprint: str
    model_name: str
    calibration_version: str | None  # the map whose calibrated scores were thresholded; None = raw scores
    source: str  # what it was fitted on (a dataset and split, or the ledger and a judge)
    fitted_on: int
    test: dict[str, Any] = field(default_factory=dict)  # realised risk and coverage on a disjoint split
    method: str = METHOD
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise PolicyError(f"score must be one of {list(SCORES)}, got {self.score!r}")
        if self.escalate_below is not None and self.escalate_below.threshold > self.accept.threshold:
            raise PolicyError("the escalate threshold must not be above the accept threshold")

    @property
    def version(self) -> str:
        body = json.dumps(
            [self.score, self.bad_at_or_below, self.delta, asdict(self.accept),
             asdict(self.escalate_below) if self.escalate_below else None,
             self.card_fingerprint, self.calibration_version, self.created_at],
            sort_keys=True,
        )  # fmt: skip
        return f"policy-{hashlib.sha256(body.encode()).hexdigest()[:12]}"

    @property
    def confidence(self) -> str:
        return f"{100 * (1 - self.delta):g} %"

    def accept_guarantee(self) -> str:
        return f"P(bad | accept) <= {self.accept.target_risk:g} at {self.confidence}"

    def review_guarantee(self) -> str | None:
        if self.escalate_below is None:
            return None
        return f"P(bad | not escalated) <= {self.escalate_below.target_risk:g} at {self.confidence}"

    def decide(self, distributions: Mapping[str, ScoreDistribution]) -> tuple[str, str]:
        """(action, reason) for one answer's distributions (raw or calibrated, as the policy was fitted)."""
        value = policy_score(self.score, distributions, self.bad_at_or_below)
        cite = f"certified {self.version}"
        if value >= self.accept.threshold:
            guarantee = self.accept_guarantee()
            return "accept", f"{self.score} {value:.3f} >= {self.accept.threshold:.3f}: {cite}, {guarantee}"
        if self.escalate_below is None or value >= self.escalate_below.threshold:
            guarantee = self.review_guarantee()
            tail = f"; {guarantee}" if guarantee else ""
            return "review", f"{self.score} {value:.3f} < accept threshold {self.accept.threshold:.3f} ({cite}{tail})"
        return "escalate", (
            f"{self.score} {value:.3f} < {self.escalate_below.threshold:.3f}: outside the set {cite} for "
            f"{self.review_guarantee()}"
        )

    def check_for(self, card_fingerprint: str, calibration_version: str | None) -> None:
        """Refuse another checkpoint, or a policy fitted on calibrated scores of a map that is not the one
        available (`calibration_version`; None = no map). A policy fitted on raw scores always applies: the
        server decides with it on the raw scores, whatever map it serves."""
        if self.card_fingerprint != card_fingerprint:
            raise PolicyError(
                f"this certified policy was fitted for card {self.card_fingerprint} ({self.model_name}), but the "
                f"served checkpoint's card is {card_fingerprint}; refit it with `see calibrate policy` or remove it"
            )
        if self.calibration_version is not None and self.calibration_version != calibration_version:
            served = f"map {calibration_version}" if calibration_version else "no calibration map"
            raise PolicyError(
                f"this certified policy thresholds scores calibrated by map {self.calibration_version}, but the "
                f"server has {served}; its guarantee would not apply: refit it with `see calibrate policy` or "
                "serve the map it was fitted on"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"format": POLICY_FORMAT, "format_version": POLICY_FORMAT_VERSION, "version": self.version} | asdict(
            self
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertifiedPolicy:
        if data.get("format") != POLICY_FORMAT or data.get("format_version") != POLICY_FORMAT_VERSION:
            raise PolicyError(f"not a {POLICY_FORMAT} v{POLICY_FORMAT_VERSION} file")
        try:
            escalate = data.get("escalate_below")
            loaded = cls(
                score=data["score"],
                bad_at_or_below=int(data["bad_at_or_below"]),
                delta=float(data["delta"]),
                accept=CertifiedThreshold(**data["accept"]),
                escalate_below=CertifiedThreshold(**escalate) if escalate else None,
                card_fingerprint=data["card_fingerprint"],
                model_name=data["model_name"],
                calibration_version=data.get("calibration_version"),
                source=data["source"],
                fitted_on=int(data["fitted_on"]),
                test=data.get("test") or {},
                method=data.get("method", METHOD),
                created_at=data["created_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"malformed certified policy: {exc}") from None
        if data.get("version") not in (None, loaded.version):
            raise PolicyError("certified policy file was edited: its version does not match its thresholds")
        return loaded


def policy_path(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / POLICY_FILENAME


def load_policy(path: str | os.PathLike[str]) -> CertifiedPolicy:
    return CertifiedPolicy.from_dict(read_json_object(path, PolicyError))


def write_policy(path: str | os.PathLike[str], policy: CertifiedPolicy) -> Path:
    """Atomic (temp file + rename): a server starting meanwhile never reads half a policy."""
    return write_json_atomic(path, policy.to_dict())
