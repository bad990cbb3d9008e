"""`POST /v1/feedback`: a judge's verdict on a response this server gave, stored durably in the ledger.

Acknowledged (200) only after the ledger committed it. The same (id, choice, judge) twice is one record:
a repeat with the same scores answers `duplicate`, a repeat with different scores is a 409 (verdicts are
immutable; record a second opinion under another judge name). Unknown ids are 404, malformed scores 400.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.calibration.feedback_loop import FeedbackLoop
from server.calibration.ledger import Feedback, LedgerError
from server.calibration.monitor import absolute_errors
from server.errors import ConflictError, NotFoundError, NotReadyError
from server.protocol import FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/v1")


def feedback_loop_of(request: Request) -> FeedbackLoop:
    state = request.app.state.see
    if not state.settings.ledger.enabled:
        raise NotReadyError(
            "this server runs without a ledger, so it cannot take feedback; start it with SEE_LEDGER__ENABLED=true",
            code="ledger_disabled",
        )
    if state.feedback_loop is None:
        raise NotReadyError("the ledger is still opening; retry when GET /ready answers 200", code="ledger_opening")
    return state.feedback_loop


@router.post("/feedback", response_model=FeedbackResponse, summary="Store a judge's scores for a served response")
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    loop = feedback_loop_of(request)
    scores = body.judge_scores.model_dump()
    try:
        outcome = await loop.add_feedback(Feedback(body.id, body.choice, body.judge, scores, outcome=body.outcome))
    except LedgerError as exc:
        raise NotReadyError(
            f"the ledger could not confirm the feedback ({exc}); retry: the same verdict is stored once",
            code="ledger_unavailable",
        ) from None
    where = f"{body.id!r}" + (f" choice {body.choice}" if body.choice else "")
    if outcome.status == "unknown_id":
        raise NotFoundError(
            f"no scored response {where} in the ledger (unscored responses and ids older than the retention "
            "period have none)",
            param="id",
            code="unknown_response_id",
        )
    if outcome.status == "conflict":
        raise ConflictError(
            f"judge {body.judge!r} already gave {where} the scores {outcome.stored_scores}; verdicts are immutable, "
            "record another opinion under another judge name",
            param="judge_scores",
            code="feedback_conflict",
        )
    errors = absolute_errors(outcome.distributions, scores) if outcome.distributions else {}
    return FeedbackResponse(id=body.id, choice=body.choice, judge=body.judge, status=outcome.status,
                            absolute_error=errors)  # fmt: skip
