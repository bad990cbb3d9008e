"""Admission by work: a model request is admitted by the engine room it may take, not only by being a request.

A request's work is the KV-cache room it can occupy: its prompt once (the n choices share it through prefix
caching) plus, per choice, its answer budget (`max_tokens`) and the room kept for the forced readout; a
`/v1/score` request is its prompt, the response and the readout room. The budget is `SEE_MAX_PENDING_TOKENS`,
or by default twice the engine's KV-cache capacity (what runs at once plus as much again waiting).

`RequestLimits` opens a `WorkTicket` for every model request (in the ASGI scope's state, key `work`); the route
claims the request's work once its prompt is tokenised; the middleware releases it when the response has gone
out to its last byte, whatever happened in between (stream, cancel, error). A claim that does not fit now is a
429 with Retry-After; one larger than the whole budget can never run and is a 400 saying what to shrink.
"""

from __future__ import annotations

from prometheus_client import Gauge

from server.errors import InvalidRequestError, OverCapacityError

DEFAULT_KV_CACHE_MULTIPLE = 2


class WorkBudget:
    def __init__(self, capacity: int | None, retry_after_s: int, in_use_gauge: Gauge | None = None) -> None:
        self.capacity = capacity  # None until the engine reports its KV cache (no model request runs before)
        self.retry_after_s = retry_after_s
        self.in_use = 0
        self.gauge = in_use_gauge

    def size_from_engine(self, kv_cache_tokens: int) -> None:
        """The default budget, once the engine is loaded: an operator's SEE_MAX_PENDING_TOKENS wins."""
        if self.capacity is None:
            self.capacity = DEFAULT_KV_CACHE_MULTIPLE * kv_cache_tokens

    def ticket(self) -> WorkTicket:
        return WorkTicket(self)

    def _moved(self, tokens: int) -> None:
        self.in_use += tokens
        if self.gauge is not None:
            self.gauge.set(self.in_use)


class WorkTicket:
    """One request's claim on the budget; `release` is idempotent and the middleware always calls it."""

    def __init__(self, budget: WorkBudget) -> None:
        self.budget = budget
        self.tokens = 0

    def claim(self, tokens: int) -> None:
        budget = self.budget
        if budget.capacity is None:
            return
        if tokens > budget.capacity:
            raise InvalidRequestError(
                f"this request may take {tokens} tokens of engine room (prompt, plus max_tokens and the "
                f"self-evaluation for each of its choices); this server admits at most {budget.capacity} at once "
                "(SEE_MAX_PENDING_TOKENS). Ask for fewer choices (n) or a smaller max_tokens, or shorten the prompt.",
                param="max_tokens",
                code="request_too_large",
            )
        if budget.in_use + tokens > budget.capacity:
            raise OverCapacityError(
                f"the server is at capacity ({budget.in_use} of {budget.capacity} tokens of work in progress; "
                f"this request needs {tokens}); retry shortly",
                retry_after_s=budget.retry_after_s,
            )
        budget._moved(tokens)
        self.tokens += tokens

    def release(self) -> None:
        if self.tokens:
            self.budget._moved(-self.tokens)
            self.tokens = 0
