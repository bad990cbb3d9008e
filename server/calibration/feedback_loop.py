"""The production calibration loop: record every scored response, take verdicts back, watch calibration.

`FeedbackLoop` is what the service and the feedback route talk to; it owns the ledger, the calibration
monitor, shadow judging and retention. A response's ledger record is awaited (bounded by
`ledger.write_timeout_s`) before the response is sent, so an id a client holds can already take feedback;
if the ledger is slow or down the response is sent anyway and the miss is counted and logged, because a
monitoring store must never cost a user their answer. Feedback, by contrast, is acknowledged only after its
commit: the route awaits `add_feedback`, and errors there are the client's to see.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence

from selfeval.readout import ScoreDistribution
from server.calibration.ledger import Feedback, FeedbackOutcome, Ledger, LedgerError, ResponseRecord
from server.calibration.monitor import CalibrationMonitor, absolute_errors
from server.calibration.risk_monitor import AcceptRiskMonitor
from server.calibration.shadow import ShadowItem, ShadowJudge
from server.metrics import ServiceMetrics
from server.settings import Settings

log = logging.getLogger(__name__)
PRUNE_INTERVAL_S = 3600.0


def sha256_of(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeedbackLoop:
    def __init__(
        self,
        settings: Settings,
        card_fingerprint: str,
        metrics: ServiceMetrics,
        ledger: Ledger,
        accept_risk: AcceptRiskMonitor | None = None,
    ):
        self.settings = settings
        self.card_fingerprint = card_fingerprint
        self.metrics = metrics
        self.ledger = ledger
        metrics.ledger_connected.labels(metrics.model_name).set_function(lambda: float(ledger.connected))
        self.monitor = CalibrationMonitor(ledger, card_fingerprint, settings.monitor, metrics, accept_risk)
        self.shadow = ShadowJudge(settings.shadow, self._shadow_verdict, metrics) if settings.shadow.rate > 0 else None
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def open(
        cls,
        settings: Settings,
        card_fingerprint: str,
        metrics: ServiceMetrics,
        accept_risk: AcceptRiskMonitor | None = None,
    ) -> FeedbackLoop:
        ledger = await asyncio.to_thread(
            Ledger, settings.ledger.url, strict=settings.ledger.required, max_queued=settings.ledger.max_queued_writes
        )
        log.info("ledger: %s at %s", ledger.backend, ledger.shown_url())
        return cls(settings, card_fingerprint, metrics, ledger, accept_risk)

    def start(self) -> None:
        self.monitor.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.settings.ledger.retention_days is not None:
            self._tasks.append(asyncio.create_task(self._prune_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.monitor.stop()
        if self.shadow is not None:
            await self.shadow.stop()
        await asyncio.to_thread(self.ledger.close)

    # ---- responses out ------------------------------------------------------------------------------------

    async def record(
        self,
        *,
        response_id: str,
        choice: int,
        endpoint: str,
        conversation: Sequence[dict[str, str]],
        answer: str,
        source: str,
        distributions: dict[str, ScoreDistribution] | None,
        predicted_quality: float | None,
        decision: str | None,
        calibration_version: str | None,
    ) -> None:
        """Write the response's ledger record (bounded wait), then offer it to the shadow judge. Never raises."""
        store_text = self.settings.ledger.store_text
        record = ResponseRecord(
            id=response_id,
            choice=choice,
            model_name=self.metrics.model_name,
            card_fingerprint=self.card_fingerprint,
            endpoint=endpoint,
            readout_source=source,
            prompt_sha256=sha256_of(list(conversation)),
            answer_sha256=sha256_of(answer),
            distributions={a: list(d.probs) for a, d in distributions.items()} if distributions else None,
            predicted_quality=predicted_quality,
            decision=decision,
            calibration_version=calibration_version,
            prompt_text=json.dumps(list(conversation), ensure_ascii=False) if store_text else None,
            answer_text=answer if store_text else None,
            created_at=time.time(),
        )
        future = asyncio.wrap_future(self.ledger.submit(Ledger.insert_responses([record])))
        try:
            await asyncio.wait_for(asyncio.shield(future), self.settings.ledger.write_timeout_s)
        except TimeoutError:
            self._count_write("response", "timeout")
            log.warning("ledger record of %s not committed within %.1f s; answered anyway", response_id,
                        self.settings.ledger.write_timeout_s)  # fmt: skip
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._count_write("response", "error")
            log.warning("ledger record of %s failed: %s; answered anyway", response_id, exc)
            return
        self._count_write("response", "ok")
        if self.shadow is not None and distributions:
            self.shadow.offer(ShadowItem(response_id, choice, list(conversation), answer))

    # ---- verdicts in --------------------------------------------------------------------------------------

    async def add_feedback(self, feedback: Feedback) -> FeedbackOutcome:
        """Store a verdict durably (raises LedgerError when the ledger cannot), update metrics and the monitor."""
        future = asyncio.wrap_future(self.ledger.submit(Ledger.insert_feedback(feedback)))
        try:  # bounded: a hung database must not hold the caller (a retry is safe: verdicts are idempotent)
            outcome = await asyncio.wait_for(asyncio.shield(future), self.settings.ledger.feedback_timeout_s)
        except TimeoutError:
            self._count_write("feedback", "timeout")
            raise LedgerError(
                f"the ledger did not confirm within {self.settings.ledger.feedback_timeout_s:g} s"
            ) from None
        except LedgerError:
            self._count_write("feedback", "error")
            raise
        self._count_write("feedback", "ok")
        self.metrics.feedback.labels(self.metrics.model_name, feedback.source, outcome.status).inc()
        if outcome.status == "created" and outcome.distributions:
            if outcome.card_fingerprint == self.card_fingerprint:
                self.metrics.observe_absolute_errors(absolute_errors(outcome.distributions, feedback.scores))
            self.monitor.feedback_arrived()
        return outcome

    async def _shadow_verdict(self, item: ShadowItem, judge: str, scores: dict[str, int]) -> None:
        await self.add_feedback(Feedback(item.response_id, item.choice, judge, scores, source="shadow"))

    # ---- retention ----------------------------------------------------------------------------------------

    async def _prune_forever(self) -> None:
        while True:
            try:
                cutoff = time.time() - self.settings.ledger.retention_days * 86400
                deleted = await asyncio.wrap_future(self.ledger.submit(Ledger.prune(cutoff)))
                if deleted:
                    log.info("ledger retention: deleted %d responses older than %g days", deleted,
                             self.settings.ledger.retention_days)  # fmt: skip
            except Exception as exc:
                log.warning("ledger retention pass failed: %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    def _count_write(self, kind: str, outcome: str) -> None:
        self.metrics.ledger_writes.labels(self.metrics.model_name, kind, outcome).inc()
