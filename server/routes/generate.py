"""`POST /generate`: an answer plus the five predicted judge-score distributions."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.answers import AnswerRequest
from server.protocol import GenerateRequest, GenerateResponse, Usage
from server.routes.deps import answer_service
from server.routes.lifetime import until_disconnect, work_claim

router = APIRouter()


@router.post("/generate", response_model=GenerateResponse, summary="Answer a conversation and self-evaluate the answer")
async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
    service = answer_service(request)
    asked = AnswerRequest(
        body.conversation(),
        "generate",
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(body.stop_list()),
        score=body.score,
        thresholds=body.decision_thresholds,
    )
    prepared = await service.prepare_answers(asked, work_claim(request))
    answers = await until_disconnect(request, service.answers(prepared))
    choice = answers.choices[0]
    return GenerateResponse(
        id=answers.id,
        model=service.model_name,
        answer=choice.answer,
        finish_reason=choice.finish_reason,
        self_evaluation=choice.self_evaluation,
        decision=choice.wire_decision(),
        usage=Usage(
            prompt_tokens=answers.prompt_tokens,
            completion_tokens=answers.completion_tokens,
            total_tokens=answers.prompt_tokens + answers.completion_tokens,
            readout_tokens=choice.readout_tokens,
        ),
    )
