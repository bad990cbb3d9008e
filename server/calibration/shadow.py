"""Shadow judging: a sampled share of scored responses goes to an external judge; verdicts land as feedback.

A user request only ever does `offer()`: a coin flip and a `put_nowait` on a bounded queue, never an await,
never an exception. When the queue is full the response is dropped and counted, so a slow or dead judge
can cost judge coverage but never user latency or errors. Workers call the shared judge client
(`selfeval.judge`: reference-free prompt, strict JSON, its own attempts and backoff); a judge that stays down
after the attempts is counted as `failed` and the worker moves on. The judge never sees the self-scores.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from selfeval.judge import JudgeClient, JudgeError, JudgeSettings
from server.metrics import ServiceMetrics
from server.settings import ShadowSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowItem:
    response_id: str
    choice: int
    conversation: list[dict[str, str]]
    answer: str


VerdictSink = Callable[[ShadowItem, str, dict[str, int]], Awaitable[None]]  # (item, judge name, scores)


def judge_settings(settings: ShadowSettings) -> JudgeSettings:
    return JudgeSettings(
        base_url=settings.judge_url or "",
        model=settings.judge_model or "",
        api_key_env=settings.judge_api_key_env,
        max_attempts=settings.max_attempts,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=max(settings.backoff_base_s, 30.0),
        timeout_s=settings.timeout_s,
        concurrency=settings.concurrency,
    )


class ShadowJudge:
    def __init__(self, settings: ShadowSettings, sink: VerdictSink, metrics: ServiceMetrics, seed: int | None = None):
        self.settings = settings
        self.client = JudgeClient(judge_settings(settings))
        self.judge_name = f"shadow:{self.client.name}"
        self.sink = sink
        self.metrics = metrics
        self.queue: asyncio.Queue[ShadowItem] = asyncio.Queue(maxsize=settings.queue_size)
        self._random = random.Random(seed)
        self._workers: list[asyncio.Task] = []

    def _count(self, outcome: str) -> None:
        self.metrics.shadow_requests.labels(self.metrics.model_name, outcome).inc()

    def offer(self, item: ShadowItem) -> None:
        """Maybe queue a response for the judge; returns at once and never raises."""
        try:
            if self._random.random() >= self.settings.rate:
                return
            self.queue.put_nowait(item)
            self._count("queued")
        except asyncio.QueueFull:
            self._count("dropped_queue_full")
        except Exception:  # nothing here may fail a user request
            log.exception("shadow judging: could not queue %s", item.response_id)
        self.metrics.shadow_queue.labels(self.metrics.model_name).set(self.queue.qsize())

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.settings.concurrency)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self.client.aclose()

    async def _work(self) -> None:
        while True:
            item = await self.queue.get()
            self.metrics.shadow_queue.labels(self.metrics.model_name).set(self.queue.qsize())
            try:
                verdict = await self.client.judge(item.conversation, item.answer, None)
                await self.sink(item, self.judge_name, verdict.scores)
                self._count("judged")
            except asyncio.CancelledError:
                raise
            except JudgeError as exc:
                self._count("failed")
                log.warning("shadow judge gave no verdict for %s: %s", item.response_id, exc)
            except Exception:
                self._count("error")
                log.exception("shadow judging failed for %s", item.response_id)
            finally:
                self.queue.task_done()
