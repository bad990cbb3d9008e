"""`POST /v1/score`: predict how the judge would score a response that any model wrote."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.engine import new_request_id
from server.openai_protocol import ScoreRequest, ScoreResponse, ScoreUsage
from server.routes.lifetime import until_disconnect, work_claim
from server.routes.openai import check_model

router = APIRouter(prefix="/v1")


@router.post("/score", response_model=ScoreResponse, summary="Teacher-forced self-evaluation of a given response")
async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
    service = request.app.state.see.require_service()
    check_model(body.model, service.model_name)
    service.thresholds(body.decision_thresholds)  # validate overrides before any work
    request_id = new_request_id("score")
    scoring = service.score([m.model_dump() for m in body.messages], body.response, request_id, work_claim(request))
    prompt_ids, readout = await until_disconnect(request, scoring)
    decision = service.decide(readout, body.decision_thresholds)
    conversation = [m.model_dump() for m in body.messages]
    await service.record(request_id, 0, "score", conversation, readout.answer, readout, decision)
    return ScoreResponse(
        id=request_id,
        model=service.model_name,
        self_evaluation=service.wire(readout),
        decision=decision.to_dict(),
        usage=ScoreUsage(prompt_tokens=len(prompt_ids), readout_tokens=readout.readout_tokens),
    )
