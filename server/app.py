"""The FastAPI application factory and its lifecycle.

`build_app` wires settings, metrics, routes and error handlers; nothing heavy happens at import. The engine
loads in a background task during the lifespan, so `/health` answers at once while `/ready` and the model
routes answer 503 until the engine is loaded and warmed up. A load failure is recorded, reported by
`/health` (so an orchestrator restarts the process) and handed to `on_fatal`; so is an engine that dies later
(a watchdog polls vLLM's liveness flag every second): the process exits non-zero instead of staying up and
answering every request with an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from selfeval.calibration import CalibrationMap, card_fingerprint
from selfeval.card import ModelCard
from selfeval.certified_policy import CertifiedPolicy
from server.calibration.feedback_loop import FeedbackLoop
from server.calibration.risk_monitor import AcceptRiskMonitor
from server.engine import Engine, SchedulerObserver
from server.errors import EngineDeadError, NotReadyError, install_error_handlers
from server.limits import RequestLimits
from server.metrics import HttpMetricsMiddleware, ServiceMetrics
from server.routes import feedback, generate, health, openai, score
from server.service import GenerationService
from server.settings import Settings
from server.work import WorkBudget

log = logging.getLogger(__name__)

ENGINE_CHECK_INTERVAL_S = 1.0
EngineBuilder = Callable[[Settings, Path, tuple[int, ...], SchedulerObserver], Awaitable[Engine]]


@dataclass
class AppState:
    settings: Settings
    model_dir: Path
    card: ModelCard
    model_name: str
    metrics: ServiceMetrics
    engine: Engine | None = None
    service: GenerationService | None = None
    calibration: CalibrationMap | None = None
    feedback_loop: FeedbackLoop | None = None
    load_error: str | None = None
    engine_loading: bool = False
    started_at: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)

    def engine_dead(self) -> bool:
        return self.engine is not None and self.engine.is_dead()

    def require_service(self) -> GenerationService:
        if self.engine_dead():
            raise EngineDeadError(
                "the inference engine of this replica died; it is restarting, retry the request", code="engine_dead"
            )
        if self.service is not None:
            return self.service
        if self.load_error:
            raise NotReadyError(f"the model failed to load: {self.load_error}", code="model_load_failed")
        raise NotReadyError("the model is still loading; retry when GET /ready answers 200", code="model_loading")


def build_app(
    settings: Settings,
    model_dir: Path,
    card: ModelCard,
    engine_builder: EngineBuilder,
    on_fatal: Callable[[], None] | None = None,
    calibration: CalibrationMap | None = None,
    certified_policy: CertifiedPolicy | None = None,
    on_abandoned_load: Callable[[], None] | None = None,
) -> FastAPI:
    """`on_abandoned_load` runs when the app stops while the engine is still loading: the build goes on in its
    worker thread, out of reach of the engine's shutdown, so the caller stops what it started (the server
    process stops its engine processes; a test's in-process app has none and passes nothing)."""
    model_name = settings.served_model_name or card.model_name
    state = AppState(settings, model_dir, card, model_name, ServiceMetrics(model_name), calibration=calibration)
    work = WorkBudget(
        settings.max_pending_tokens,
        settings.retry_after_s,
        state.metrics.work_in_progress.labels(model_name),
    )

    async def load() -> None:
        try:
            if settings.ledger.enabled:  # before the engine: feedback works while the model loads
                accept_risk = (
                    AcceptRiskMonitor(certified_policy, calibration, state.metrics) if certified_policy else None
                )
                state.feedback_loop = await FeedbackLoop.open(
                    settings, card_fingerprint(card), state.metrics, accept_risk
                )
                state.feedback_loop.start()
            state.engine_loading = True
            try:
                state.engine = await engine_builder(
                    settings, model_dir, card.digit_token_ids, state.metrics.observe_scheduler
                )
            finally:
                state.engine_loading = False
            work.size_from_engine(state.engine.kv_cache_tokens)
            state.metrics.work_capacity.labels(model_name).set(work.capacity or 0)
            log.info("admission budget: %d tokens of work", work.capacity)
            service = GenerationService(
                state.engine,
                card,
                settings,
                state.metrics,
                model_name,
                calibration=calibration,
                certified_policy=certified_policy,
                feedback_loop=state.feedback_loop,
            )
            if settings.warmup:
                started = time.monotonic()
                await service.warmup()
                log.info("warm-up done in %.1f s", time.monotonic() - started)
            state.service = service
            log.info("ready: serving %s from %s", model_name, model_dir)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("the engine failed to load")
            if on_fatal is not None:
                on_fatal()
            return
        await watch_engine()

    async def watch_engine() -> None:
        """A dead engine never comes back: report it on /health and exit, so the orchestrator restarts the
        process (and stops routing to it) instead of this replica answering every request with an error."""
        while not state.engine_dead():
            await asyncio.sleep(ENGINE_CHECK_INTERVAL_S)
        log.error("the inference engine died; exiting so that the process is restarted")
        if on_fatal is not None:
            on_fatal()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(load())
        try:
            yield
        finally:
            loading = state.engine_loading
            task.cancel()
            if state.engine is not None:
                state.engine.shutdown()
            elif loading and on_abandoned_load is not None:
                on_abandoned_load()
            if state.feedback_loop is not None:
                await state.feedback_loop.stop()

    app = FastAPI(
        title="SEE Sidecar",
        summary="Answers with the model's own prediction of how a judge would score them",
        lifespan=lifespan,
    )
    app.state.see = state
    install_error_handlers(app)

    app.add_middleware(
        RequestLimits,
        api_keys=settings.all_api_keys(),
        protect_metrics=settings.protect_metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_pending_requests=settings.max_pending_requests,
        max_pending_feedback=settings.max_pending_feedback,
        retry_after_s=settings.retry_after_s,
        in_flight=state.metrics.in_flight.labels(model_name),
        work=work,
    )
    # added last = outermost: rejections by the limits (401, 413, 429) are counted like any other answer
    app.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    app.include_router(health.router)
    app.include_router(generate.router)
    app.include_router(openai.models_router)
    app.include_router(openai.router)
    app.include_router(score.router)
    app.include_router(feedback.router)
    return app
