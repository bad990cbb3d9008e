"""Plugin shape: a chat request that uses fields only vLLM implements is served by vLLM's own handler, unscored.

Enabling the endpoint plugin must not break what a vLLM deployment already serves. A chat request carrying a
field of vLLM's chat API that this project does not implement (`tools`, `response_format`, `logprobs`, ...) goes
to vLLM's own `/v1/chat/completions`, exactly as without the plugin; its response carries `X-SEE-Scored: false`
(no self_evaluation, no decision, no ledger row). A field neither API knows is still our 400 naming it. The
standalone server has no stock handler (`fallback` stays None): there every such request is a 400.
"""

from __future__ import annotations

import json
import logging

from fastapi.routing import APIRoute

from server.limits import read_body, replaying
from server.openai_protocol import ChatCompletionRequest

log = logging.getLogger(__name__)
SCORED_HEADER = b"x-see-scored"
OUR_FIELDS = frozenset(ChatCompletionRequest.model_fields)


def unscored(send):
    """`send` with `X-SEE-Scored: false` added to the response's headers."""

    async def marked(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (SCORED_HEADER, b"false")]}
        await send(message)

    return marked


class StockFallbackRoute(APIRoute):
    """Our route; with `fallback` set (vLLM's route it replaced), bodies with stock-only fields go there."""

    fallback: APIRoute | None = None
    stock_fields: frozenset[str] = frozenset()

    def stock_only_fields(self, body: bytes) -> list[str]:
        try:
            fields = json.loads(body)
        except ValueError:
            return []  # our handler answers the 400
        return sorted((set(fields) - OUR_FIELDS) & self.stock_fields) if isinstance(fields, dict) else []

    async def handle(self, scope, receive, send) -> None:
        if self.fallback is None:
            return await super().handle(scope, receive, send)
        body = await read_body(receive)
        receive = replaying(body, receive)
        fields = self.stock_only_fields(body)
        if not fields:
            return await super().handle(scope, receive, send)
        log.info("%s %s uses %s, which only vLLM implements: served by vLLM, unscored", scope["method"],
                 self.path, ", ".join(fields))  # fmt: skip
        await self.fallback.handle(scope, receive, unscored(send))
