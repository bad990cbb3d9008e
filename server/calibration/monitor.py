"""Calibration of the served model against judge feedback: rolling MAE and ECE, and a drift alarm.

Everything is computed from the ledger, not from this process's memory, so every replica sharing a
PostgreSQL ledger reports the same numbers and a restart loses nothing. Two windows over the feedback of the
served checkpoint (its card fingerprint), optionally of one judge:
- recent: the newest `window` verdicts: rolling MAE of the expected score and top-label digit ECE per attribute;
- reference: the oldest `window` verdicts for this checkpoint, the calibration it had when it was deployed.

Drift fires when the recent mean absolute error (per verdict: mean over the five attributes) exceeds the
reference's by `drift_threshold` points AND the increase is at least `drift_z` standard errors (Welch), so
a threshold crossed by sampling noise in a small window does not page anyone. Below `min_count` verdicts in
either window there is no verdict (the gauge stays 0 and the window sizes say why). With a certified policy
loaded, the newest window also feeds its realised accept risk (`server/calibration/risk_monitor.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from selfeval.calibration_error import digit_ece
from selfeval.readout import expected_score
from selfeval.rubric import ATTRIBUTES
from server.calibration.ledger import Ledger, ScoredPair
from server.calibration.risk_monitor import AcceptRiskMonitor
from server.metrics import ServiceMetrics
from server.settings import MonitorSettings

log = logging.getLogger(__name__)


def absolute_errors(distributions: Mapping[str, Sequence[float]], scores: Mapping[str, int]) -> dict[str, float]:
    """|expected self-score - judge score| per attribute."""
    return {a: abs(expected_score(distributions[a]) - scores[a]) for a in ATTRIBUTES}


def verdict_errors(pairs: Sequence[ScoredPair]) -> np.ndarray:
    """One number per verdict: the mean absolute error over the five attributes."""
    return np.array([np.mean(list(absolute_errors(p.distributions, p.scores).values())) for p in pairs])


def window_metrics(pairs: Sequence[ScoredPair]) -> dict[str, dict[str, float]]:
    """MAE and top-label digit ECE per attribute over a window of verdicts."""
    out = {}
    for attribute in ATTRIBUTES:
        probs = np.array([p.distributions[attribute] for p in pairs], dtype=float)
        judge = np.array([p.scores[attribute] for p in pairs])
        expected = probs @ np.arange(probs.shape[1])
        out[attribute] = {"mae": float(np.abs(expected - judge).mean()), "ece": digit_ece(probs, judge)}
    return out


@dataclass(frozen=True)
class DriftVerdict:
    drifting: bool
    delta: float | None  # recent minus reference mean absolute error
    z: float | None
    reason: str


def drift_verdict(reference: np.ndarray, recent: np.ndarray, settings: MonitorSettings) -> DriftVerdict:
    if len(reference) < settings.min_count or len(recent) < settings.min_count:
        return DriftVerdict(
            False, None, None, f"need {settings.min_count} verdicts per window, have {len(reference)}/{len(recent)}"
        )
    delta = float(recent.mean() - reference.mean())
    standard_error = math.sqrt(recent.var(ddof=1) / len(recent) + reference.var(ddof=1) / len(reference))
    z = delta / standard_error if standard_error > 0 else (math.inf if delta > 0 else 0.0)
    drifting = delta > settings.drift_threshold and z >= settings.drift_z
    return DriftVerdict(drifting, delta, z, f"delta {delta:+.2f} points, z {z:.1f}")


def split_windows(oldest: Sequence[ScoredPair], newest: Sequence[ScoredPair]) -> tuple[list, list]:
    """Reference = the oldest verdicts, recent = the newest ones not already in the reference."""
    taken = {(p.response_id, p.choice, p.judge) for p in oldest}
    recent = [p for p in newest if (p.response_id, p.choice, p.judge) not in taken]
    if len(recent) < len(newest):  # the windows overlap: split what there is in halves instead
        everything = list(oldest) + recent
        half = len(everything) // 2
        return everything[:half], everything[half:]
    return list(oldest), recent


class CalibrationMonitor:
    """Keeps the calibration gauges current: after local feedback (debounced) and on a timer (other replicas)."""

    def __init__(
        self,
        ledger: Ledger,
        card_fingerprint: str,
        settings: MonitorSettings,
        metrics: ServiceMetrics,
        accept_risk: AcceptRiskMonitor | None = None,
    ):
        self.ledger = ledger
        self.accept_risk = accept_risk
        self.card_fingerprint = card_fingerprint
        self.settings = settings
        self.metrics = metrics
        self.last_verdict: DriftVerdict | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def feedback_arrived(self) -> None:
        self._dirty.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a ledger outage must not end monitoring
                log.warning("calibration refresh failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.settings.refresh_interval_s)
            self._dirty.clear()

    async def refresh(self) -> DriftVerdict:
        window = self.settings.window
        query = dict(card_fingerprint=self.card_fingerprint, judge=self.settings.judge, limit=window)
        oldest = await asyncio.wrap_future(self.ledger.submit(Ledger.scored_pairs(**query, newest=False)))
        newest = await asyncio.wrap_future(self.ledger.submit(Ledger.scored_pairs(**query, newest=True)))
        reference, recent = split_windows(oldest, newest)
        if self.accept_risk is not None:
            self.accept_risk.observe(newest)
        name = self.metrics.model_name
        self.metrics.window_size.labels(name, "reference").set(len(reference))
        self.metrics.window_size.labels(name, "recent").set(len(recent))
        if recent:
            for attribute, values in window_metrics(recent).items():
                self.metrics.rolling_mae.labels(name, attribute).set(values["mae"])
                self.metrics.rolling_ece.labels(name, attribute).set(values["ece"])
        verdict = drift_verdict(verdict_errors(reference), verdict_errors(recent), self.settings)
        self.metrics.drift.labels(name).set(1 if verdict.drifting else 0)
        if verdict.delta is not None:
            self.metrics.drift_delta.labels(name).set(verdict.delta)
        if verdict.drifting and not (self.last_verdict and self.last_verdict.drifting):
            log.warning("calibration drift: %s", verdict.reason)
        self.last_verdict = verdict
        return verdict
