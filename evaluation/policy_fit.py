"""From judged answers to a certified policy: gather scores and verdicts, split, fit, check, describe.

Two sources of judged answers for one checkpoint:
- a human-labelled dataset whose responses the served model scored through `/v1/score` (a journal as
  `see eval-labels` writes it); calibration and test parts are disjoint by prompt;
- the ledger's judge verdicts (production, shadow judge included); the parts are split by response id.
The certified rule (`evaluation/risk_control.py`) is fitted on the calibration part only and its realised
risk and coverage are measured on the test part; the test part never influences the thresholds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.risk_control import RiskControlError, fit_scores, minimum_passing, realised, refusal
from selfeval.calibration import CalibrationMap
from selfeval.certified_policy import SCORES, CertifiedPolicy, policy_score
from selfeval.readout import ScoreDistribution
from selfeval.rubric import ATTRIBUTES


@dataclass(frozen=True)
class JudgedScores:
    """Answers with the model's five distributions (raw) and the judge's helpfulness, grouped by prompt."""

    ids: list[str]
    groups: np.ndarray
    distributions: list[dict[str, ScoreDistribution]]
    helpfulness: np.ndarray  # 0-9

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> JudgedScores:
        keep = np.flatnonzero(mask)
        return JudgedScores(
            [self.ids[i] for i in keep],
            self.groups[keep],
            [self.distributions[i] for i in keep],
            self.helpfulness[keep],
        )

    def scores(self, name: str, bad_at_or_below: int, calibration: CalibrationMap | None) -> np.ndarray:
        mapped = self.distributions if calibration is None else [calibration.apply(d) for d in self.distributions]
        return np.array([policy_score(name, d, bad_at_or_below) for d in mapped])


def distributions_of(probs: Sequence[Sequence[float]], mass: Sequence[float] | None = None) -> dict:
    mass = mass or [1.0] * len(ATTRIBUTES)
    return {a: ScoreDistribution(tuple(p), m) for a, p, m in zip(ATTRIBUTES, probs, mass, strict=True)}


def from_journal(items: Sequence, records: Mapping[str, dict]) -> JudgedScores:
    """Labelled items (evaluation.labelled.LabelledItem) that a `/v1/score` journal scored (skips left out)."""
    scored = [i for i in items if i.id in records and "skipped" not in records[i.id]]
    return JudgedScores(
        [i.id for i in scored],
        np.array([i.group for i in scored]),
        [distributions_of(records[i.id]["probs"], records[i.id].get("mass")) for i in scored],
        np.array([i.human["helpfulness"] for i in scored]),
    )


def from_ledger(pairs: Sequence) -> JudgedScores:
    """Ledger verdicts (server.calibration.ledger.ScoredPair); each answer is its own group."""
    return JudgedScores(
        [f"{p.response_id}/{p.choice}/{p.judge}" for p in pairs],
        np.array([f"{p.response_id}/{p.choice}" for p in pairs]),
        [distributions_of([p.distributions[a] for a in ATTRIBUTES]) for p in pairs],
        np.array([p.scores["helpfulness"] for p in pairs]),
    )


def in_test_part(groups: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    """A deterministic split by group: a group is in the test part when its seeded hash falls below the share."""

    def unit(group) -> float:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return np.array([unit(g) < test_share for g in groups], dtype=bool)


@dataclass(frozen=True)
class PolicyRequest:
    target_risk: float
    delta: float
    bad_at_or_below: int
    review_risk: float | None = None
    score: str = "auto"  # one of SCORES, or auto: all tried (Bonferroni), the one accepting most kept
    seed: int = 0


def fit_policy(
    calibration_part: JudgedScores,
    test_part: JudgedScores,
    request: PolicyRequest,
    *,
    card_fingerprint: str,
    model_name: str,
    calibration: CalibrationMap | None,
    source: str,
) -> tuple[CertifiedPolicy, list[dict]]:
    """The certified policy fitted on `calibration_part` and checked on `test_part`, and one summary row per
    candidate score (calibration coverage, test risk and coverage). Raises RiskControlError with advice."""
    names = SCORES if request.score == "auto" else (request.score,)
    fewest = minimum_passing(request.target_risk, request.delta / len(names))
    if len(calibration_part) < fewest:
        raise RiskControlError(
            f"only {len(calibration_part)} judged answers to fit on; certifying P(bad | accept) <= "
            f"{request.target_risk:g} needs at least {fewest} accepted ones even if none is bad: collect more"
        )
    bad = calibration_part.helpfulness <= request.bad_at_or_below
    candidates = {n: calibration_part.scores(n, request.bad_at_or_below, calibration) for n in names}
    fitted = fit_scores(
        candidates, bad, request.target_risk, request.delta, request.review_risk, calibration_part.groups, request.seed
    )
    test_bad = test_part.helpfulness <= request.bad_at_or_below
    rows = []
    for f in fitted:
        test_scores = test_part.scores(f.name, request.bad_at_or_below, calibration)
        row = {
            "score": f.name,
            "calibration_coverage": f.coverage,
            "accept": f.accept,
            "escalate_below": f.escalate_below,
        }
        if f.accept is not None and len(test_part):
            row["test_accept"] = realised(test_scores, test_bad, f.accept.threshold)
            if f.escalate_below is not None:
                row["test_not_escalated"] = realised(test_scores, test_bad, f.escalate_below.threshold)
        rows.append(row)
    best = fitted[0]
    if best.accept is None:
        raise RiskControlError(refusal(candidates, bad, request.target_risk, request.delta))
    test = {k: rows[0][k] for k in ("test_accept", "test_not_escalated") if k in rows[0]}
    test["answers"] = len(test_part)
    test["bad_rate"] = float(test_bad.mean()) if len(test_part) else None
    policy = CertifiedPolicy(
        score=best.name,
        bad_at_or_below=request.bad_at_or_below,
        delta=request.delta,
        accept=best.accept,
        escalate_below=best.escalate_below,
        card_fingerprint=card_fingerprint,
        model_name=model_name,
        calibration_version=calibration.version if calibration is not None else None,
        source=source,
        fitted_on=len(calibration_part),
        test=test,
    )
    return policy, rows
