"""Liveness (`/health`), readiness (`/ready`) and Prometheus metrics (`/metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from server.errors import error_body

router = APIRouter()


@router.get("/health", summary="Liveness: the process is up (503 if the model failed to load or the engine died)")
async def health(request: Request):
    state = request.app.state.see
    if state.engine_dead():
        return JSONResponse(
            status_code=503,
            content=error_body("the inference engine died; the process is exiting", "service_unavailable",
                               code="engine_dead"),
        )  # fmt: skip
    if state.load_error:
        return JSONResponse(
            status_code=503,
            content=error_body(
                f"the model failed to load: {state.load_error}", "service_unavailable", code="model_load_failed"
            ),
        )
    return {"status": "ok", "ledger": ledger_state(state)}


def ledger_state(state) -> str:
    """disabled, opening, connected or unreachable: the ledger is monitoring, so it never fails liveness."""
    if not state.settings.ledger.enabled:
        return "disabled"
    if state.feedback_loop is None:
        return "opening"
    return "connected" if state.feedback_loop.ledger.connected else "unreachable"


@router.get("/ready", summary="Readiness: the engine is loaded and warmed up")
async def ready(request: Request):
    state = request.app.state.see
    state.require_service()
    return {"status": "ready", "model": state.model_name, "prompt_mode": state.card.prompt_mode}


@router.get("/metrics", summary="Prometheus metrics (text exposition format)")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.see.metrics.render()
    return Response(content=body, media_type=content_type)
