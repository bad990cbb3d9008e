"""Acting on the sidecar's decision: accept the answer, flag it for review, or escalate to a second model.

`Escalator` asks the sidecar first. `accept` returns its answer; `review` returns it flagged (or escalates,
if `escalate_on_review`); `escalate` sends the same conversation to a fallback, any OpenAI-compatible chat
endpoint (a larger model, a hosted API), and returns that answer. If the sidecar itself fails (down, 5xx,
timeout) and `fallback_on_error` is set, the fallback answers too, with the failure as the reason: an
orchestrator keeps working while the sidecar is away. Every outcome says who answered and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

from see_client.client import AsyncSeeClient, ChatOptions, Message, SeeClient, chat_body
from see_client.errors import APIConnectionError, APITimeoutError, ServerError
from see_client.retry import RetryPolicy
from see_client.transport import AsyncTransport, SyncTransport
from see_client.types import Action, ChatResult

SIDECAR_FAILURES = (APIConnectionError, APITimeoutError, ServerError)
SEE_ONLY_OPTIONS = ("decision_thresholds",)


@dataclass
class Routed:
    """What the orchestrator should use: `content`, who wrote it, and the sidecar's verdict."""

    content: str
    action: Action
    answered_by: Literal["sidecar", "fallback"]
    reasons: list[str]
    sidecar: ChatResult | None
    fallback: ChatResult | None = None

    @property
    def needs_review(self) -> bool:
        return self.action == "review" and self.answered_by == "sidecar"


@dataclass
class FallbackEndpoint:
    """An OpenAI-compatible chat endpoint: `base_url` as OpenAI clients take it (ending in /v1)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def transport_options(self) -> dict[str, Any]:
        return dict(api_key=self.api_key, timeout=self.timeout, retry=self.retry)


def _fallback_options(options: dict) -> dict:
    return {key: value for key, value in options.items() if key not in SEE_ONLY_OPTIONS and key != "n"}


def _route(sidecar: ChatResult, escalate_on_review: bool) -> tuple[Action, list[str], bool]:
    """(action, reasons, escalate?) for a sidecar answer; a missing decision counts as escalate."""
    decision = sidecar.decision
    if decision is None:
        return "escalate", ["the sidecar returned no decision"], True
    escalate = decision.action == "escalate" or (decision.action == "review" and escalate_on_review)
    return decision.action, list(decision.reasons), escalate


def _outcome(sidecar: ChatResult | None, action: Action, reasons: list[str], fallback: ChatResult | None) -> Routed:
    if fallback is not None:
        return Routed(fallback.content, action, "fallback", reasons, sidecar, fallback)
    assert sidecar is not None
    return Routed(sidecar.content, action, "sidecar", reasons, sidecar)


class Escalator:
    """Synchronous router over a `SeeClient` and a fallback endpoint."""

    def __init__(
        self,
        sidecar: SeeClient,
        fallback: FallbackEndpoint,
        *,
        escalate_on_review: bool = False,
        fallback_on_error: bool = True,
    ) -> None:
        self.sidecar = sidecar
        self.fallback = fallback
        self.escalate_on_review = escalate_on_review
        self.fallback_on_error = fallback_on_error
        self._fallback = SyncTransport(fallback.base_url.rstrip("/"), **fallback.transport_options())

    def chat(self, messages: Sequence[Message], **options: Unpack[ChatOptions]) -> Routed:
        try:
            first = self.sidecar.chat(messages, **options)
        except SIDECAR_FAILURES as error:
            if not self.fallback_on_error:
                raise
            return _outcome(None, "escalate", [f"sidecar failed: {error}"], self._ask_fallback(messages, options))
        action, reasons, escalate = _route(first, self.escalate_on_review)
        return _outcome(first, action, reasons, self._ask_fallback(messages, options) if escalate else None)

    def _ask_fallback(self, messages: Sequence[Message], options: dict) -> ChatResult:
        body = chat_body(self.fallback.model, messages, _fallback_options(options))
        return ChatResult.model_validate(self._fallback.request("POST", "/chat/completions", body).json())

    def close(self) -> None:
        self._fallback.close()


class AsyncEscalator:
    """Asynchronous router over an `AsyncSeeClient` and a fallback endpoint."""

    def __init__(
        self,
        sidecar: AsyncSeeClient,
        fallback: FallbackEndpoint,
        *,
        escalate_on_review: bool = False,
        fallback_on_error: bool = True,
    ) -> None:
        self.sidecar = sidecar
        self.fallback = fallback
        self.escalate_on_review = escalate_on_review
        self.fallback_on_error = fallback_on_error
        self._fallback = AsyncTransport(fallback.base_url.rstrip("/"), **fallback.transport_options())

    async def chat(self, messages: Sequence[Message], **options: Unpack[ChatOptions]) -> Routed:
        try:
            first = await self.sidecar.chat(messages, **options)
        except SIDECAR_FAILURES as error:
            if not self.fallback_on_error:
                raise
            answer = await self._ask_fallback(messages, options)
            return _outcome(None, "escalate", [f"sidecar failed: {error}"], answer)
        action, reasons, escalate = _route(first, self.escalate_on_review)
        return _outcome(first, action, reasons, await self._ask_fallback(messages, options) if escalate else None)

    async def _ask_fallback(self, messages: Sequence[Message], options: dict) -> ChatResult:
        body = chat_body(self.fallback.model, messages, _fallback_options(options))
        response = await self._fallback.request("POST", "/chat/completions", body)
        return ChatResult.model_validate(response.json())

    async def close(self) -> None:
        await self._fallback.close()
