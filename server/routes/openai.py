"""OpenAI-compatible `POST /v1/chat/completions` (plain and SSE streaming) and `GET /v1/models`.

Streaming sends OpenAI chunks; the block text is never streamed. After a choice's last content chunk comes
one chunk with its `finish_reason`, `self_evaluation` and `decision`, then `data: [DONE]`. A client that
disconnects cancels the stream, and with it the engine request; so does one that hangs up on a non-streamed
request (`lifetime.until_disconnect`). The n choices succeed or fail together (`lifetime.all_or_nothing`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from server.engine import new_request_id
from server.errors import NotFoundError, ServiceError, error_body
from server.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionUsage,
    ModelInfo,
    ModelList,
)
from server.policy import Decision
from server.protocol import SEED_MAX
from server.routes.lifetime import all_or_nothing, until_disconnect, work_claim
from server.service import GenerationService, answer_text

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise NotFoundError(
            f"model {requested!r} not found; this server serves {served!r}", param="model", code="model_not_found"
        )


def seed_for(request: ChatCompletionRequest, index: int) -> int | None:
    return None if request.seed is None else (request.seed + index) % (SEED_MAX + 1)


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = request.app.state.see
    return ModelList(data=[ModelInfo(id=state.model_name, created=int(state.created_at))])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    summary="OpenAI chat completions; each choice carries self_evaluation and decision",
)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    service: GenerationService = request.app.state.see.require_service()
    check_model(body.model, service.model_name)
    service.thresholds(body.decision_thresholds)  # validate overrides before any work
    base = await service.prepare(  # tokenised once for all n choices
        [m.model_dump() for m in body.messages],
        max_tokens=body.budget(),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=None,
        stop=body.stop_list(),
        read_digits=body.score,
    )
    work_claim(request)(service.work(base, body.n))
    prepared = [(base.prompt_ids, replace(base.spec, seed=seed_for(body, i))) for i in range(body.n)]
    request_id = new_request_id("chatcmpl")
    if body.stream:
        chunks = stream_chat(service, body, prepared, base.flags, request_id)
        return StreamingResponse(chunks, media_type="text/event-stream")
    choices_done = all_or_nothing(
        service.complete(ids, spec, f"{request_id}-{i}", flags=base.flags) for i, (ids, spec) in enumerate(prepared)
    )
    results = await until_disconnect(request, choices_done)
    choices, records = [], []
    conversation = [m.model_dump() for m in body.messages]
    for index, (generation, readout) in enumerate(results):
        evaluation, decision = scored(service, body, readout)
        answer = answer_text(generation, readout)
        records.append(service.record(request_id, index, "chat", conversation, answer, readout, decision))
        choices.append(
            ChatChoice(
                index=index,
                message=AssistantMessage(content=answer),
                finish_reason=generation.finish_reason,
                self_evaluation=evaluation,
                decision=decision.to_dict() if decision is not None else None,
            )
        )
    await asyncio.gather(*records)  # the n ledger records wait together, not write_timeout_s one after another
    prompt_tokens = len(prepared[0][0])
    completion_tokens = sum(len(generation.token_ids) for generation, _ in results)
    return ChatCompletion(
        id=request_id,
        model=service.model_name,
        choices=choices,
        usage=CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


def scored(service: GenerationService, body: ChatCompletionRequest, readout) -> tuple[dict | None, Decision | None]:
    """The choice's SEE extension fields: (self_evaluation, decision), both None when scoring was off."""
    if not body.score:
        return None, None
    return service.wire(readout).model_dump(), service.decide(readout, body.decision_thresholds)


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def stream_chat(
    service: GenerationService, body: ChatCompletionRequest, prepared, flags: list[str], request_id: str
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(choices: list[dict], usage: dict | None = None) -> str:
        payload = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": service.model_name,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage
        return sse(payload)

    queue: asyncio.Queue[str | None] = asyncio.Queue()
    conversation = [m.model_dump() for m in body.messages]
    completion_tokens = [0] * len(prepared)

    async def run_choice(index: int, prompt_ids, spec) -> None:
        await queue.put(chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        async for item in service.stream(prompt_ids, spec, f"{request_id}-{index}", flags):
            if isinstance(item, str):
                await queue.put(chunk([{"index": index, "delta": {"content": item}, "finish_reason": None}]))
                continue
            generation, readout = item
            completion_tokens[index] = len(generation.token_ids)
            evaluation, decision = scored(service, body, readout)
            answer = answer_text(generation, readout)
            await service.record(request_id, index, "chat", conversation, answer, readout, decision)
            final = {"index": index, "delta": {}, "finish_reason": generation.finish_reason}
            wire_decision = decision.to_dict() if decision is not None else None
            await queue.put(chunk([{**final, "self_evaluation": evaluation, "decision": wire_decision}]))

    async def run_all() -> None:
        try:
            await all_or_nothing(run_choice(i, ids, spec) for i, (ids, spec) in enumerate(prepared))
            if body.stream_options and body.stream_options.include_usage:
                prompt_tokens = len(prepared[0][0])
                total = sum(completion_tokens)
                await queue.put(
                    chunk(
                        [],
                        {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": total,
                            "total_tokens": prompt_tokens + total,
                        },
                    )
                )
        except ServiceError as exc:
            await queue.put(sse(error_body(exc.message, exc.error_type, exc.param, exc.code)))
        except Exception:  # headers are sent: the error goes in the stream, never a bare [DONE] after a cut answer
            log.exception("stream %s failed", request_id)
            await queue.put(sse(error_body("internal server error; see the server log", "internal_error")))
        finally:
            await queue.put(None)

    producer = asyncio.create_task(run_all())
    try:
        while (item := await queue.get()) is not None:
            yield item
        yield sse("[DONE]")
    finally:
        producer.cancel()  # client went away (or we finished): stop generating
