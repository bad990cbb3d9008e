"""`POST /v1/score`: predict how the judge would score a response that any model wrote."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.openai_protocol import ScoreRequest, ScoreResponse, ScoreUsage
from server.routes.deps import answer_service
from server.routes.lifetime import until_disconnect, work_claim

router = APIRouter(prefix="/v1")


@router.post("/score", response_model=ScoreResponse, summary="Teacher-forced self-evaluation of a given response")
async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
    service = answer_service(request, body.model)
    messages = [m.model_dump() for m in body.messages]
    scoring = service.score(messages, body.response, body.decision_thresholds, work_claim(request))
    answers = await until_disconnect(request, scoring)
    choice = answers.choices[0]
    return ScoreResponse(
        id=answers.id,
        model=service.model_name,
        self_evaluation=choice.self_evaluation,
        decision=choice.wire_decision(),
        usage=ScoreUsage(prompt_tokens=answers.prompt_tokens, readout_tokens=choice.readout_tokens),
    )
