"""Request guards in front of the app: API keys, body size, and a bounded admission queue.

An ASGI middleware rather than a FastAPI one, so that a streaming response stays counted until its last byte:
- API keys (optional): `Authorization: Bearer <key>` on every model route (`/generate`, `/v1/...`); compared
  in constant time against every configured key. `/health`, `/ready` and `/metrics` stay open unless
  `protect_metrics` is set. 401 otherwise.
- Body size: over `max_body_bytes` is a 413, checked on Content-Length or, for chunked bodies, while reading.
- Body time: the whole body is read here, within `body_timeout_s`, or the answer is a 408: a client that
  trickles its body (slowloris) holds no admission slot and no worker for longer than that.
- Admission: at most `max_pending_requests` model requests at once (running or waiting in the engine); one
  more gets a 429 with `Retry-After` instead of piling up. Feedback has its own bound, `max_pending_feedback`.
  Each admitted model request also gets a `WorkTicket` (scope state `work`) on which its route claims the
  tokens it may take; released here when the response is done (`server.work`).
"""

from __future__ import annotations

import asyncio
import hmac
import json

from prometheus_client import Gauge

from server.work import WorkBudget

MODEL_ROUTES = ("/generate", "/v1/")
UNQUEUED_ROUTES = ("/v1/feedback",)  # needs a key like any /v1 route, and a bound of its own, not engine capacity
OPEN_ROUTES = ("/health", "/ready")


def _json_error(status: int, message: str, error_type: str, code: str, headers: list | None = None):
    body = json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": code}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    }
    return start, {"type": "http.response.body", "body": body}


class RequestLimits:
    def __init__(
        self,
        app,
        *,
        api_keys: list[str],
        protect_metrics: bool,
        max_body_bytes: int,
        body_timeout_s: float,
        max_pending_requests: int,
        max_pending_feedback: int,
        retry_after_s: int,
        in_flight: Gauge,
        work: WorkBudget,
    ) -> None:
        self.app = app
        self.api_keys = [key.encode() for key in api_keys]
        self.protect_metrics = protect_metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.retry_after_s = retry_after_s
        self.in_flight = in_flight
        self.work = work
        self.limits = {"model": max_pending_requests, "feedback": max_pending_feedback}
        self.pending = {"model": 0, "feedback": 0}

    def _needs_key(self, path: str) -> bool:
        if not self.api_keys or path.startswith(OPEN_ROUTES):
            return False
        return self.protect_metrics or not path.startswith("/metrics")

    def _authorized(self, scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        # compare against every key, without stopping early, so timing says nothing about which one matched
        return sum(hmac.compare_digest(token.strip(), key) for key in self.api_keys) > 0

    async def _reject(self, send, *parts) -> None:
        start, body = _json_error(*parts)
        await send(start)
        await send(body)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self._needs_key(path) and not self._authorized(scope):
            return await self._reject(
                send,
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "invalid_api_key",
            )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._reject(send, *self._too_large())
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    body = await read_body(receive, self.max_body_bytes)
            except TimeoutError:
                return await self._reject(send, *self._too_slow())
            if body is None:
                return await self._reject(send, *self._too_large())
            receive = replaying(body, receive)
        if scope["method"] == "POST" and path.startswith(UNQUEUED_ROUTES):
            return await self._admit("feedback", scope, receive, send)
        if not (scope["method"] == "POST" and path.startswith(MODEL_ROUTES)):
            return await self.app(scope, receive, send)
        return await self._admit("model", scope, receive, send)

    async def _admit(self, queue: str, scope, receive, send) -> None:
        """Run the request if its queue has room, else 429 with Retry-After. Two queues: model requests (engine
        capacity, shown as in-flight) and feedback (no engine, but each waits on the ledger: a flood of verdicts
        or a stalled database must not pile up without limit)."""
        limit = self.limits[queue]
        if self.pending[queue] >= limit:
            what = "requests" if queue == "model" else "feedback requests"
            return await self._reject(
                send,
                429,
                f"the server is at capacity ({limit} {what} in progress); retry shortly",
                "rate_limit_error",
                "queue_full",
                [(b"retry-after", str(self.retry_after_s).encode())],
            )
        self.pending[queue] += 1
        gauge = self.in_flight if queue == "model" else None
        ticket = self.work.ticket() if queue == "model" else None
        if gauge is not None:
            gauge.inc()
        if ticket is not None:
            scope.setdefault("state", {})["work"] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            self.pending[queue] -= 1
            if gauge is not None:
                gauge.dec()
            if ticket is not None:
                ticket.release()

    def _too_slow(self):
        return (
            408,
            f"the request body did not arrive within {self.body_timeout_s:g} s (SEE_BODY_TIMEOUT_S); send it at once",
            "invalid_request_error",
            "request_timeout",
        )

    def _too_large(self):
        return (
            413,
            f"request body is larger than {self.max_body_bytes} bytes",
            "invalid_request_error",
            "request_too_large",
        )


async def read_body(receive, max_bytes: int | None = None) -> bytes | None:
    """The whole request body from an ASGI receive (what came before a disconnect); None once over `max_bytes`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if max_bytes is not None and size > max_bytes:
            return None
        if not message.get("more_body"):
            return b"".join(chunks)


def replaying(body: bytes, receive):
    """An ASGI receive that gives the body already read as one message, then the client's own channel: a
    streaming response listens on it for the disconnect, which must be the client's, not an invented one."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
