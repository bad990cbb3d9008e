"""What every model route needs first: the answer service of a loaded, live engine, for the model it names.

A request for another model is a 404 naming the served one; a dead engine a 503; a loading one a 503 saying
when to retry (`AppState.require_service`).
"""

from __future__ import annotations

from fastapi import Request

from server.errors import NotFoundError
from server.service import GenerationService


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise NotFoundError(
            f"model {requested!r} not found; this server serves {served!r}", param="model", code="model_not_found"
        )


def answer_service(request: Request, model: str | None = None) -> GenerationService:
    service: GenerationService = request.app.state.see.require_service()
    check_model(model, service.model_name)
    return service
