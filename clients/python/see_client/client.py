"""`SeeClient` and `AsyncSeeClient`: the sidecar's endpoints as typed calls.

Bodies are built and results parsed by the same module functions for both clients, so sync and async differ
only in how they wait. Options that the caller leaves out are not sent, so the server's defaults apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypedDict, Unpack

import httpx

from see_client.retry import RetryPolicy
from see_client.transport import AsyncTransport, SyncTransport
from see_client.types import ChatResult, FeedbackResult, GenerateResult, ScoreResult, StreamEvent

Message = dict[str, str]
DEFAULT_TIMEOUT_S = 600.0  # generation on a busy CPU server can take minutes


class SamplingOptions(TypedDict, total=False):
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: str | list[str]
    decision_thresholds: dict[str, float | int | str]


class ChatOptions(SamplingOptions, total=False):
    n: int
    user: str


def _sent(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def generate_body(prompt: str | None, messages: Sequence[Message] | None, score: bool, options: dict) -> dict:
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of `prompt` or `messages`")
    body = {"prompt": prompt} if prompt is not None else {"messages": list(messages or [])}
    return {**body, "score": score, **_sent(options)}


def score_body(messages: Sequence[Message], response: str, decision_thresholds: dict | None) -> dict:
    return _sent({"messages": list(messages), "response": response, "decision_thresholds": decision_thresholds})


def feedback_body(response_id: str, judge_scores: dict[str, int], judge: str, choice: int, outcome: str | None) -> dict:
    return _sent({"id": response_id, "choice": choice, "judge_scores": dict(judge_scores), "judge": judge,
                  "outcome": outcome})  # fmt: skip


def chat_body(model: str, messages: Sequence[Message], options: dict, stream: bool = False) -> dict:
    return {"model": model, "messages": list(messages), **_sent(options), **({"stream": True} if stream else {})}


def stream_events(payload: dict) -> list[StreamEvent]:
    """The events in one chat-completion chunk: text deltas and per-choice finishes (role-only deltas dropped)."""
    events = []
    for choice in payload.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") or ""
        if text or choice.get("finish_reason") is not None:
            events.append(
                StreamEvent(
                    index=choice["index"],
                    text=text,
                    finish_reason=choice.get("finish_reason"),
                    self_evaluation=choice.get("self_evaluation"),
                    decision=choice.get("decision"),
                )
            )
    return events


class _Common:
    """Constructor arguments shared by both clients."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        http_client: httpx.Client | httpx.AsyncClient | None = None,
    ) -> None:
        """`http_client`: your own httpx client (proxies, TLS, mounts); its base URL and headers are used as is."""
        self.base_url = base_url.rstrip("/")
        self.model = model  # None: the server's one model, asked for once
        self._options = dict(
            api_key=api_key, timeout=timeout, retry=retry or RetryPolicy(), headers=headers, http=http_client
        )


class SeeClient(_Common):
    """Synchronous client. `SeeClient("http://host:8000", api_key=...)`; use as a context manager or `close()`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._transport = SyncTransport(self.base_url, **self._options)

    def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        score: bool = True,
        **options: Unpack[SamplingOptions],
    ) -> GenerateResult:
        body = generate_body(prompt, messages, score, dict(options))
        return GenerateResult.model_validate(self._transport.request("POST", "/generate", body).json())

    def score(
        self, messages: Sequence[Message], response: str, *, decision_thresholds: dict | None = None
    ) -> ScoreResult:
        body = score_body(messages, response, decision_thresholds)
        return ScoreResult.model_validate(self._transport.request("POST", "/v1/score", body).json())

    def feedback(
        self, response_id: str, judge_scores: dict[str, int], *, judge: str, choice: int = 0, outcome: str | None = None
    ) -> FeedbackResult:
        """Report a judge's 0-9 scores for a response this server gave (its `id`; `choice` for chat choices)."""
        body = feedback_body(response_id, judge_scores, judge, choice, outcome)
        return FeedbackResult.model_validate(self._transport.request("POST", "/v1/feedback", body).json())

    def chat(self, messages: Sequence[Message], **options: Unpack[ChatOptions]) -> ChatResult:
        body = chat_body(self.served_model(), messages, dict(options))
        return ChatResult.model_validate(self._transport.request("POST", "/v1/chat/completions", body).json())

    def stream_chat(self, messages: Sequence[Message], **options: Unpack[ChatOptions]) -> Iterator[StreamEvent]:
        body = chat_body(self.served_model(), messages, dict(options), stream=True)
        for payload in self._transport.stream("/v1/chat/completions", body):
            yield from stream_events(payload)

    def models(self) -> list[str]:
        return [entry["id"] for entry in self._transport.request("GET", "/v1/models").json()["data"]]

    def served_model(self) -> str:
        if self.model is None:
            self.model = self.models()[0]
        return self.model

    def ready(self) -> bool:
        """True once the model is loaded (GET /ready), without retrying."""
        try:
            return self._transport.http.get("/ready").status_code == 200
        except Exception:
            return False

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> SeeClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncSeeClient(_Common):
    """Asynchronous client with the same calls as `SeeClient`; use `async with` or `await close()`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._transport = AsyncTransport(self.base_url, **self._options)

    async def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        score: bool = True,
        **options: Unpack[SamplingOptions],
    ) -> GenerateResult:
        body = generate_body(prompt, messages, score, dict(options))
        return GenerateResult.model_validate((await self._transport.request("POST", "/generate", body)).json())

    async def score(
        self, messages: Sequence[Message], response: str, *, decision_thresholds: dict | None = None
    ) -> ScoreResult:
        body = score_body(messages, response, decision_thresholds)
        return ScoreResult.model_validate((await self._transport.request("POST", "/v1/score", body)).json())

    async def feedback(
        self, response_id: str, judge_scores: dict[str, int], *, judge: str, choice: int = 0, outcome: str | None = None
    ) -> FeedbackResult:
        """Report a judge's 0-9 scores for a response this server gave (its `id`; `choice` for chat choices)."""
        body = feedback_body(response_id, judge_scores, judge, choice, outcome)
        return FeedbackResult.model_validate((await self._transport.request("POST", "/v1/feedback", body)).json())

    async def chat(self, messages: Sequence[Message], **options: Unpack[ChatOptions]) -> ChatResult:
        body = chat_body(await self.served_model(), messages, dict(options))
        response = await self._transport.request("POST", "/v1/chat/completions", body)
        return ChatResult.model_validate(response.json())

    async def stream_chat(
        self, messages: Sequence[Message], **options: Unpack[ChatOptions]
    ) -> AsyncIterator[StreamEvent]:
        body = chat_body(await self.served_model(), messages, dict(options), stream=True)
        async for payload in self._transport.stream("/v1/chat/completions", body):
            for event in stream_events(payload):
                yield event

    async def models(self) -> list[str]:
        return [entry["id"] for entry in (await self._transport.request("GET", "/v1/models")).json()["data"]]

    async def served_model(self) -> str:
        if self.model is None:
            self.model = (await self.models())[0]
        return self.model

    async def ready(self) -> bool:
        try:
            return (await self._transport.http.get("/ready")).status_code == 200
        except Exception:
            return False

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncSeeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
