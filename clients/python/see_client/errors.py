"""Typed errors of the SDK, mapped once from the sidecar's OpenAI-shaped error bodies.

Every HTTP error becomes an `APIStatusError` subclass chosen by status code, carrying the server's
`message`, `type`, `code` and `param` (the field to fix). Transport failures are `APIConnectionError`
or `APITimeoutError`. Nothing is swallowed: a failed request never turns into a made-up score.
"""

from __future__ import annotations

import httpx


class SeeError(Exception):
    """Base class of every error the SDK raises."""


class APIConnectionError(SeeError):
    """The server could not be reached (refused, reset, DNS), after any retries."""


class APITimeoutError(SeeError):
    """No answer within the client's timeout."""


class APIStatusError(SeeError):
    """The server answered with an error status; fields come from its OpenAI-shaped body."""

    def __init__(self, response: httpx.Response) -> None:
        body = _error_body(response)
        self.response = response
        self.status_code = response.status_code
        self.message = str(body.get("message") or response.reason_phrase or "error")
        self.type = body.get("type")
        self.code = body.get("code")
        self.param = body.get("param")
        where = f" (param: {self.param})" if self.param else ""
        super().__init__(f"{self.status_code} {self.code or self.type or ''}: {self.message}{where}".strip())

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.response.headers.get("retry-after"))


class BadRequestError(APIStatusError):
    """400: the request is invalid; `param` names the field."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class NotFoundError(APIStatusError):
    """404: unknown model or route."""


class ConflictError(APIStatusError):
    """409: the feedback contradicts a verdict already stored for the same response and judge."""


class RequestTooLargeError(APIStatusError):
    """413: the body is over the server's size cap."""


class RateLimitError(APIStatusError):
    """429: the server's queue is full; retried automatically, honouring Retry-After."""


class ServerError(APIStatusError):
    """5xx not covered below."""


class ServiceUnavailableError(ServerError):
    """503: the model is still loading (or failed to load); retried automatically."""


class GatewayTimeoutError(ServerError):
    """504: the request ran past the server's timeout and was aborted there."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}


def error_for(response: httpx.Response) -> APIStatusError:
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else APIStatusError
    return kind(response)


def _error_body(response: httpx.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {"message": response.text[:500] or None}
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {"message": str(payload)[:500]}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form); None when absent or not a number."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
