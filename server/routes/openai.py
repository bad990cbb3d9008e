"""OpenAI-compatible `POST /v1/chat/completions` (plain and SSE streaming) and `GET /v1/models`.

Streaming sends OpenAI chunks; the block text is never streamed. After a choice's last content chunk comes
one chunk with its `finish_reason`, `self_evaluation` and `decision`, then `data: [DONE]`. A client that
disconnects cancels the stream, and with it the engine request; so does one that hangs up on a non-streamed
request (`lifetime.until_disconnect`). The n choices succeed or fail together (`answers.all_or_nothing`).
The route only maps the service's answers (server.answers) to OpenAI's wire format.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server.answers import AnswerRequest, Answers, ChoiceText, PreparedAnswers
from server.errors import ServiceError, error_body
from server.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionUsage,
    ModelInfo,
    ModelList,
)
from server.routes.deps import answer_service
from server.routes.lifetime import until_disconnect, work_claim
from server.routes.stock_fallback import StockFallbackRoute
from server.service import GenerationService

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", route_class=StockFallbackRoute)  # chat completions (stock fallback: plugin only)
models_router = APIRouter(prefix="/v1")  # the model list: the standalone server's; vLLM's own in the plugin


@models_router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = request.app.state.see
    return ModelList(data=[ModelInfo(id=state.model_name, created=int(state.created_at))])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="OpenAI chat completions; each choice carries self_evaluation and decision",
)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    service = answer_service(request, body.model)
    asked = AnswerRequest(
        [m.model_dump() for m in body.messages],
        "chat",
        max_tokens=body.budget(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(body.stop_list()),
        n=body.n,
        score=body.score,
        thresholds=body.decision_thresholds,
    )
    prepared = await service.prepare_answers(asked, work_claim(request))  # every 4xx before the stream starts
    if body.stream:
        return StreamingResponse(stream_chat(service, body, prepared), media_type="text/event-stream")
    return completion(service, await until_disconnect(request, service.answers(prepared)))


def completion(service: GenerationService, answers: Answers) -> ChatCompletion:
    choices = [
        ChatChoice(
            index=choice.index,
            message=AssistantMessage(content=choice.answer),
            finish_reason=choice.finish_reason,
            self_evaluation=choice.self_evaluation,
            decision=choice.wire_decision(),
        )
        for choice in answers.choices
    ]
    return ChatCompletion(
        id=answers.id,
        model=service.model_name,
        choices=choices,
        usage=CompletionUsage(
            prompt_tokens=answers.prompt_tokens,
            completion_tokens=answers.completion_tokens,
            total_tokens=answers.prompt_tokens + answers.completion_tokens,
        ),
    )


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def stream_chat(
    service: GenerationService, body: ChatCompletionRequest, prepared: PreparedAnswers
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        payload = {
            "id": prepared.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": service.model_name,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage
        return sse(payload)

    completion_tokens = [0] * len(prepared.specs)
    for index in range(len(prepared.specs)):
        yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        # closing the events (a client gone: this generator is cancelled) cancels every choice's engine work
        async with aclosing(service.stream_answers(prepared)) as events:
            async for event in events:
                if isinstance(event, ChoiceText):
                    yield chunk([{"index": event.index, "delta": {"content": event.text}, "finish_reason": None}])
                    continue
                completion_tokens[event.index] = event.completion_tokens
                evaluation = event.self_evaluation.model_dump() if event.self_evaluation is not None else None
                final = {"index": event.index, "delta": {}, "finish_reason": event.finish_reason}
                yield chunk([{**final, "self_evaluation": evaluation, "decision": event.wire_decision()}])
        if body.stream_options and body.stream_options.include_usage:
            prompt_tokens, total = len(prepared.prompt_ids), sum(completion_tokens)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": total, "total_tokens": prompt_tokens + total}
            yield chunk([], usage)
    except ServiceError as exc:
        yield sse(error_body(exc.message, exc.error_type, exc.param, exc.code))
    except Exception:  # headers are sent: the error goes in the stream, never a bare [DONE] after a cut answer
        log.exception("stream %s failed", prepared.id)
        yield sse(error_body("internal server error; see the server log", "internal_error"))
    yield sse("[DONE]")
