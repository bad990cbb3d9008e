"""SDK transport: what is retried, how long it waits (Retry-After wins), and the typed errors."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

import see_client.transport as transport
from see_client import (
    NO_RETRIES,
    APIConnectionError,
    AsyncSeeClient,
    BadRequestError,
    GatewayTimeoutError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    SeeClient,
    ServiceUnavailableError,
)
from tests.unit.clients.fakes import ScriptedServer, chat_completion, error


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The delays the transport sleeps, without sleeping. Only the transport's own `time` and `asyncio` names are
    replaced: patching the modules themselves also caught every other thread's sleeps (a server loop still
    running in the test process put 0.1 s sleeps in this list)."""
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(transport, "time", SimpleNamespace(sleep=delays.append))
    monkeypatch.setattr(transport, "asyncio", SimpleNamespace(sleep=no_wait))
    return delays


def see(server: ScriptedServer, retry: RetryPolicy | None = None) -> SeeClient:
    return SeeClient("http://see.test", model="m", retry=retry, http_client=server.client())


def test_429_and_503_are_retried_honouring_retry_after(slept):
    server = ScriptedServer(
        error(429, "queue full", "queue_full", headers={"retry-after": "3"}),
        error(503, "loading", "model_loading", headers={"retry-after": "7"}),
        httpx.Response(200, json=chat_completion("4")),
    )
    events = []
    result = see(server, RetryPolicy(on_retry=events.append)).chat([{"role": "user", "content": "2+2?"}])
    assert result.content == "4" and result.decision.action == "accept"
    assert slept == [3.0, 7.0]
    assert [(e.attempt, e.reason) for e in events] == [(1, "429"), (2, "503")]


def test_without_retry_after_the_backoff_grows_and_stays_under_its_cap(slept):
    server = ScriptedServer(
        *[error(503, "loading", "model_loading")] * 4, httpx.Response(200, json=chat_completion("x"))
    )
    see(server, RetryPolicy(max_retries=4, backoff_base_s=1, backoff_max_s=3)).chat([{"role": "user", "content": "q"}])
    ceilings = [1, 2, 3, 3]
    assert len(slept) == 4 and all(c / 2 <= d <= c for d, c in zip(slept, ceilings, strict=True))


def test_a_retry_after_beyond_the_cap_is_capped(slept):
    server = ScriptedServer(
        error(429, "full", "queue_full", headers={"retry-after": "9999"}),
        httpx.Response(200, json=chat_completion("x")),
    )
    see(server, RetryPolicy(max_retry_after_s=5)).chat([{"role": "user", "content": "q"}])
    assert slept == [5.0]


def test_connection_errors_are_retried_then_raised_typed(slept):
    refused = httpx.ConnectError("refused")
    server = ScriptedServer(refused, httpx.Response(200, json=chat_completion("ok")))
    assert see(server).chat([{"role": "user", "content": "q"}]).content == "ok"
    with pytest.raises(APIConnectionError):
        see(ScriptedServer(refused, refused, refused), RetryPolicy(max_retries=2)).chat(
            [{"role": "user", "content": "q"}]
        )


def test_exhausted_retries_raise_the_last_error(slept):
    server = ScriptedServer(*[error(429, "full", "queue_full", headers={"retry-after": "1"})] * 3)
    with pytest.raises(RateLimitError) as caught:
        see(server, RetryPolicy(max_retries=2)).chat([{"role": "user", "content": "q"}])
    assert caught.value.retry_after == 1.0 and len(server.requests) == 3


@pytest.mark.parametrize(("status", "kind"), [(400, BadRequestError), (404, NotFoundError), (504, GatewayTimeoutError)])
def test_errors_that_need_a_different_request_are_not_retried(slept, status, kind):
    server = ScriptedServer(error(status, "fix max_tokens", "bad", param="max_tokens"))
    with pytest.raises(kind) as caught:
        see(server).chat([{"role": "user", "content": "q"}], max_tokens=10**9)
    assert caught.value.param == "max_tokens" and caught.value.status_code == status
    assert "fix max_tokens" in str(caught.value) and len(server.requests) == 1 and slept == []


def test_no_retries_policy_raises_at_once(slept):
    with pytest.raises(ServiceUnavailableError):
        see(ScriptedServer(error(503, "loading", "model_loading")), NO_RETRIES).chat([{"role": "user", "content": "q"}])


def test_a_non_json_error_body_still_gives_a_typed_error(slept):
    with pytest.raises(RateLimitError, match="too many"):
        see(ScriptedServer(httpx.Response(429, text="too many")), NO_RETRIES).generate("q")


def test_async_client_retries_the_same_way(slept):
    server = ScriptedServer(
        error(429, "full", "queue_full", headers={"retry-after": "2"}), httpx.Response(200, json=chat_completion("4"))
    )

    async def run():
        async with AsyncSeeClient("http://see.test", model="m", http_client=server.async_client()) as client:
            return await client.chat([{"role": "user", "content": "2+2?"}])

    assert asyncio.run(run()).content == "4" and slept == [2.0]


def test_options_left_out_are_not_sent_so_server_defaults_apply(slept):
    server = ScriptedServer(httpx.Response(200, json=chat_completion("x")))
    see(server).chat([{"role": "user", "content": "q"}], max_tokens=8, decision_thresholds={"low_score": 2})
    assert server.bodies() == [
        {
            "model": "m",
            "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 8,
            "decision_thresholds": {"low_score": 2},
        }
    ]
