"""SEE inside vLLM's own OpenAI server: the `vllm.endpoint_plugins` entry point `see_sidecar`.

    VLLM_PLUGINS=see_sidecar python -m vllm.entrypoints.openai.api_server --model <SEE checkpoint dir> ...

serves stock vLLM and, over the same engine, this project's `/generate`, `/v1/score`, `/v1/feedback` and
`/v1/chat/completions` (which replaces vLLM's own: each choice gains `self_evaluation` and `decision`; a request
using fields only vLLM implements still reaches vLLM's own handler, unscored: server/routes/stock_fallback.py),
through the same answer path as the standalone server (server.service). Our Prometheus series (`see_*`) join vLLM's on
its `/metrics`. Everything else stays vLLM's: flags, `--api-key`, `/health`, `/v1/models`, `/v1/completions`,
request validation errors. vLLM's `--api-key` guards only paths under `/v1` (and a few other prefixes), so the
plugin checks the same keys on `/generate` itself.

What the plugin does not bring: the standalone server's admission control and request limits (vLLM queues the
work itself), its `/ready` and its HTTP metrics. A ledger (`SEE_LEDGER__*`) opens at start; vLLM gives plugins no
shutdown hook, so responses still queued for the ledger when the process stops are not written (acknowledged
feedback always is: it is committed before the 200). SEE settings come from the same `SEE_*` variables.
"""

from __future__ import annotations

import logging
import os
import secrets
from argparse import Namespace
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute

from selfeval.calibration import card_fingerprint
from server.app import AppState
from server.calibration.feedback_loop import FeedbackLoop
from server.calibration.risk_monitor import AcceptRiskMonitor
from server.checkpoint import checked_card, resolve_calibration, resolve_certified_policy
from server.engine import VllmEngine
from server.errors import AuthenticationError, install_service_error_handler
from server.metrics import ServiceMetrics
from server.routes import feedback, generate, openai, score
from server.routes.stock_fallback import StockFallbackRoute
from server.service import GenerationService
from server.settings import Settings

log = logging.getLogger(__name__)
PLUGIN_NAME = "see_sidecar"
CHAT_PATH = "/v1/chat/completions"


def vllm_api_keys(args: Namespace) -> list[str]:
    """The keys vLLM's server checks: `--api-key` (one or several) if given, else VLLM_API_KEY (as vLLM does)."""
    configured = getattr(args, "api_key", None)
    if isinstance(configured, str):
        configured = [configured]
    return [key for key in (configured or [os.environ.get("VLLM_API_KEY")]) if key]


async def require_vllm_api_key(request: Request) -> None:
    """401 on a route outside vLLM's guarded prefixes unless it carries one of vLLM's API keys."""
    keys = vllm_api_keys(request.app.state.args)
    sent = request.headers.get("authorization", "")
    if keys and not any(secrets.compare_digest(sent.encode(), f"Bearer {key}".encode()) for key in keys):
        raise AuthenticationError(
            "missing or invalid API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
        )


class SeeEndpointPlugin:
    """vLLM calls `attach_router` while it builds its app and `init_state` once its engine is up."""

    name = PLUGIN_NAME
    required_tasks = ("generate",)

    def attach_router(self, app: FastAPI) -> None:
        stock_chat = [r for r in app.routes if isinstance(r, APIRoute) and r.path == CHAT_PATH and "POST" in r.methods]
        app.include_router(generate.router, dependencies=[Depends(require_vllm_api_key)])
        for router in (openai.router, score.router, feedback.router):  # under /v1: vLLM's own key check
            app.include_router(router)
        if stock_chat:  # vLLM drops its route from routing after this; requests only it can serve still reach it
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as StockRequest

            for route in app.routes:
                if isinstance(route, StockFallbackRoute):
                    route.fallback, route.stock_fields = stock_chat[0], frozenset(StockRequest.model_fields)
        install_service_error_handler(app)

    async def init_state(self, engine_client, state, args: Namespace) -> None:
        if engine_client is None:
            raise RuntimeError(f"the {PLUGIN_NAME} plugin needs an engine; vLLM's render-only server has none")
        settings = Settings()
        model_dir = Path(args.model)
        card = checked_card(model_dir)
        calibration = resolve_calibration(settings, model_dir, card)
        certified_policy = resolve_certified_policy(settings, model_dir, card, calibration)
        model_name = (args.served_model_name or [args.model])[0]
        metrics = ServiceMetrics(model_name)
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        get_prometheus_registry().register(metrics.registry)  # our series on vLLM's /metrics
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        engine = VllmEngine(engine_client, tokenizer, model_dir, card.digit_token_ids, settings.readout_requests)
        feedback_loop = None
        if settings.ledger.enabled:
            accept_risk = AcceptRiskMonitor(certified_policy, calibration, metrics) if certified_policy else None
            feedback_loop = await FeedbackLoop.open(settings, card_fingerprint(card), metrics, accept_risk)
            feedback_loop.start()
        service = GenerationService(
            engine,
            card,
            settings,
            metrics,
            model_name,
            calibration=calibration,
            certified_policy=certified_policy,
            feedback_loop=feedback_loop,
        )
        if settings.warmup:
            await service.warmup()
        state.see = AppState(
            settings,
            model_dir,
            card,
            model_name,
            metrics,
            engine=engine,
            service=service,
            calibration=calibration,
            feedback_loop=feedback_loop,
        )
        log.info("%s: SEE routes serve %s from %s", PLUGIN_NAME, model_name, model_dir)
