"""When and how long to wait before retrying a request.

Retried: connection failures (refused, reset before an answer: the request never ran), 429 (queue full) and
503 (model loading), which are exactly the answers that say "later". A 429 or 503 with `Retry-After` waits
that long; otherwise exponential backoff with jitter. Never retried: 4xx that need a different request, and
504 or read timeouts, where the server may already have spent the work.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from see_client.errors import parse_retry_after

RETRY_STATUSES = frozenset({429, 503})
RETRY_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryEvent:
    """Handed to `RetryPolicy.on_retry` before each wait (for logging and tests)."""

    attempt: int  # the attempt that failed, from 1
    reason: str  # "429", "503" or the transport error's class name
    delay_s: float


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0  # a Retry-After above this is capped, not obeyed blindly
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("retry settings must not be negative")

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the given failed attempt (1-based)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def delay_after_response(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying after `response`, or None if it must not be retried."""
        if response.status_code not in RETRY_STATUSES or attempt > self.max_retries:
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        delay = self.backoff(attempt) if retry_after is None else min(retry_after, self.max_retry_after_s)
        self._notify(attempt, str(response.status_code), delay)
        return delay

    def delay_after_error(self, attempt: int, error: Exception) -> float | None:
        """Seconds to wait before retrying after a transport error, or None if it must be raised."""
        if not isinstance(error, RETRY_TRANSPORT_ERRORS) or attempt > self.max_retries:
            return None
        delay = self.backoff(attempt)
        self._notify(attempt, type(error).__name__, delay)
        return delay

    def _notify(self, attempt: int, reason: str, delay: float) -> None:
        if self.on_retry is not None:
            self.on_retry(RetryEvent(attempt, reason, delay))


NO_RETRIES = RetryPolicy(max_retries=0)
