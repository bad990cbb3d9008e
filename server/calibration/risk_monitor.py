"""The certified policy's promise, checked against new judge verdicts: realised accept risk and its alarm.

The certified policy (`selfeval/certified_policy.py`) promises P(bad | accept) <= target for answers like the
ones it was fitted on. Production traffic may drift away from them. From the newest judge verdicts in the
ledger for the served checkpoint (the calibration monitor's window), this replays the certified rule on each
verdict's stored distributions (through the served calibration map when the policy was fitted on calibrated
scores) and counts how many of the answers it accepts the judge found bad (helpfulness <= the policy's
`bad_at_or_below`). The gauges give the realised share with a 95 % Clopper-Pearson interval; the alarm fires
when even the interval's lower end is above the target, i.e. the promise is broken beyond sampling noise.
Replaying the rule (instead of reading the served decision) measures exactly what was certified: decisions
made stricter by integrity flags or per-request thresholds do not hide a broken promise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfeval import binomial
from selfeval.calibration import CalibrationMap
from selfeval.certified_policy import CertifiedPolicy
from selfeval.readout import ScoreDistribution
from server.calibration.ledger import ScoredPair
from server.metrics import ServiceMetrics


@dataclass(frozen=True)
class AcceptRisk:
    accepted: int  # verdicts whose answers the certified rule accepts
    bad: int
    interval: tuple[float, float]
    alarm: bool

    @property
    def realised(self) -> float | None:
        return self.bad / self.accepted if self.accepted else None


class AcceptRiskMonitor:
    def __init__(self, policy: CertifiedPolicy, calibration: CalibrationMap | None, metrics: ServiceMetrics):
        self.policy = policy
        self.calibration = calibration if policy.calibration_version is not None else None
        self.metrics = metrics
        metrics.certified_target.labels(metrics.model_name).set(policy.accept.target_risk)

    def accepts(self, pair: ScoredPair) -> bool:
        distributions = {a: ScoreDistribution(tuple(p), 1.0) for a, p in pair.distributions.items()}
        if self.calibration is not None:
            distributions = self.calibration.apply(distributions)
        return self.policy.decide(distributions)[0] == "accept"

    def measure(self, pairs: Sequence[ScoredPair]) -> AcceptRisk:
        accepted = [p for p in pairs if self.accepts(p)]
        bad = sum(1 for p in accepted if p.scores["helpfulness"] <= self.policy.bad_at_or_below)
        low, high = binomial.interval(bad, len(accepted))
        return AcceptRisk(len(accepted), bad, (low, high), bool(accepted) and low > self.policy.accept.target_risk)

    def observe(self, pairs: Sequence[ScoredPair]) -> AcceptRisk:
        risk = self.measure(pairs)
        name = self.metrics.model_name
        self.metrics.certified_accepted.labels(name).set(risk.accepted)
        if risk.realised is not None:
            self.metrics.certified_risk.labels(name).set(risk.realised)
            self.metrics.certified_risk_bound.labels(name, "lower").set(risk.interval[0])
            self.metrics.certified_risk_bound.labels(name, "upper").set(risk.interval[1])
        self.metrics.certified_alarm.labels(name).set(1 if risk.alarm else 0)
        return risk
