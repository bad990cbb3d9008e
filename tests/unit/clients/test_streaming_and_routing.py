"""SDK streaming (SSE framing, errors inside a stream) and the Escalator's routing of each decision."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from see_client import (
    NO_RETRIES,
    AsyncEscalator,
    AsyncSeeClient,
    Escalator,
    FallbackEndpoint,
    SeeClient,
    ServiceUnavailableError,
    StreamError,
)
from tests.unit.clients.fakes import ScriptedServer, chat_completion, error, self_evaluation

QUESTION = [{"role": "user", "content": "q"}]


def sse(*payloads) -> httpx.Response:
    lines = [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]
    return httpx.Response(200, text="".join(lines), headers={"content-type": "text/event-stream"})


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]}


def paris_stream() -> httpx.Response:
    return sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Par"}),
        chunk({"content": "is."}),
        chunk({}, "stop", self_evaluation=self_evaluation(7.0), decision={"action": "accept", "reasons": ["ok"]}),
        "[DONE]",
    )


def test_stream_yields_text_then_one_final_event_with_scores():
    server = ScriptedServer(paris_stream())
    events = list(SeeClient(model="m", http_client=server.client()).stream_chat(QUESTION))
    assert "".join(e.text for e in events) == "Paris." and [e.is_final for e in events] == [False, False, True]
    final = events[-1]
    assert final.decision.action == "accept" and final.self_evaluation.expected()["helpfulness"] == 7.0
    assert server.bodies()[0]["stream"] is True


def test_async_stream_matches_sync():
    server = ScriptedServer(paris_stream())

    async def run():
        async with AsyncSeeClient(model="m", http_client=server.async_client()) as client:
            return [event async for event in client.stream_chat(QUESTION)]

    events = asyncio.run(run())
    assert "".join(e.text for e in events) == "Paris." and events[-1].finish_reason == "stop"


def test_an_error_inside_a_stream_raises_stream_error():
    broken = sse(chunk({"content": "Pa"}), {"error": {"message": "engine failed", "type": "server_error"}}, "[DONE]")
    with pytest.raises(StreamError, match="engine failed"):
        list(SeeClient(model="m", http_client=ScriptedServer(broken).client()).stream_chat(QUESTION))


def test_model_is_asked_for_once_when_not_given():
    models = httpx.Response(200, json={"object": "list", "data": [{"id": "served", "object": "model", "created": 0}]})
    answers = [httpx.Response(200, json=chat_completion(text)) for text in "ab"]
    server = ScriptedServer(models, *answers)
    client = SeeClient(http_client=server.client())
    client.chat(QUESTION)
    client.chat(QUESTION)
    assert [b["model"] for b in server.bodies()] == ["served", "served"] and len(server.requests) == 3


def router(sidecar: ScriptedServer, fallback: ScriptedServer, **kwargs) -> Escalator:
    escalator = Escalator(
        SeeClient(model="m", retry=NO_RETRIES, http_client=sidecar.client()),
        FallbackEndpoint(base_url="http://big.test/v1", model="big"),
        **kwargs,
    )
    escalator._fallback.http = fallback.client("http://big.test/v1")
    return escalator


@pytest.mark.parametrize(
    ("action", "escalate_on_review", "answered_by"),
    [
        ("accept", False, "sidecar"),
        ("review", False, "sidecar"),
        ("review", True, "fallback"),
        ("escalate", False, "fallback"),
    ],
)
def test_each_decision_is_routed(action, escalate_on_review, answered_by):
    sidecar = ScriptedServer(httpx.Response(200, json=chat_completion("small answer", action)))
    fallback = ScriptedServer(httpx.Response(200, json=chat_completion("big answer", None, model="big")))
    routed = router(sidecar, fallback, escalate_on_review=escalate_on_review).chat(
        QUESTION, max_tokens=9, decision_thresholds={"low_score": 2}
    )
    assert routed.action == action and routed.answered_by == answered_by and routed.reasons == [f"{action} rule"]
    assert routed.content == ("small answer" if answered_by == "sidecar" else "big answer")
    assert routed.needs_review == (action == "review" and answered_by == "sidecar")
    if answered_by == "fallback":
        assert fallback.requests[0].url.path == "/v1/chat/completions"
        assert fallback.bodies() == [{"model": "big", "messages": QUESTION, "max_tokens": 9}]  # no SEE-only options
    else:
        assert fallback.requests == []


def test_a_failing_sidecar_falls_back_or_raises_as_configured():
    fallback = ScriptedServer(httpx.Response(200, json=chat_completion("big answer", None)))
    routed = router(ScriptedServer(error(503, "loading", "model_loading")), fallback).chat(QUESTION)
    assert routed.answered_by == "fallback" and routed.sidecar is None and "sidecar failed" in routed.reasons[0]
    with pytest.raises(ServiceUnavailableError):
        router(ScriptedServer(error(503, "loading", "model_loading")), ScriptedServer(), fallback_on_error=False).chat(
            QUESTION
        )


def test_async_escalator_routes_like_the_sync_one():
    sidecar = ScriptedServer(httpx.Response(200, json=chat_completion("small", "escalate")))
    fallback = ScriptedServer(httpx.Response(200, json=chat_completion("big", None)))

    async def run():
        escalator = AsyncEscalator(
            AsyncSeeClient(model="m", http_client=sidecar.async_client()),
            FallbackEndpoint(base_url="http://big.test/v1", model="big"),
        )
        escalator._fallback.http = fallback.async_client("http://big.test/v1")
        return await escalator.chat(QUESTION)

    routed = asyncio.run(run())
    assert routed.answered_by == "fallback" and routed.content == "big"
