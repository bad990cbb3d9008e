"""How long a request's work may live: no longer than its client.

- `until_disconnect`: a non-streaming request's work runs as a task beside a watcher on the ASGI receive
  channel; when the client hangs up the task is cancelled, which aborts its engine requests and frees its
  admission slot at once instead of generating for nobody until the request timeout. The answer is a 499
  (nginx's "client closed request"), which only the metrics see.
- `work_claim`: how a route takes its request's tokens of work from the admission budget (`server.work`); the
  middleware that opened the ticket releases it when the response is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from server.errors import ServiceError
from server.service import Claim, no_claim

T = TypeVar("T")


class ClientDisconnectedError(ServiceError):
    status_code = 499
    error_type = "client_closed_request"


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():  # cancelled by the watcher, not by the server
            raise ClientDisconnectedError("the client closed the connection; the request was aborted") from None
        raise
    finally:
        watcher.cancel()


def work_claim(request: Request) -> Claim:
    """The request's ticket's claim; no claim where no ticket was opened (an app built without the limits)."""
    ticket = request.scope.get("state", {}).get("work")
    return ticket.claim if ticket is not None else no_claim
