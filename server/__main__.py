"""Boot only: settings -> model directory (provisioning the default model) -> card checks -> app -> uvicorn.

`python -m server` reads everything from `SEE_*` environment variables; `see serve` passes CLI flags too.
A model whose card is missing or whose digits are not single tokens is refused here, before any engine
starts, with a message that says what to do.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import uvicorn

from selfeval.calibration import CalibrationError
from selfeval.card import CardError
from selfeval.certified_policy import PolicyError
from selfeval.models import ProvisionError
from server.app import EngineBuilder, build_app
from server.checkpoint import resolve_answer_model, resolve_calibration, resolve_certified_policy, resolve_model
from server.engine import build_engine_in_thread, stop_engine_processes
from server.remote_engine import RemoteEngine
from server.settings import Settings
from server.split_engine import build_split_engine

log = logging.getLogger("server")


def engine_builder(settings: Settings, answer_model_dir: Path | None) -> EngineBuilder:
    """The served checkpoint's engine (in this process, or remote with SEE_ENGINE_URL); in split mode wrapped
    with the answer engine (a second one in this process, or remote with SEE_ANSWER_ENGINE_URL)."""
    checkpoint = RemoteEngine.create if settings.engine_url else build_engine_in_thread
    if answer_model_dir is None and settings.answer_engine_url is None:
        return checkpoint

    async def split(settings: Settings, model_dir: Path, digit_token_ids: tuple[int, ...], observe):
        async def answers(observe):
            if settings.answer_engine_url is not None:
                remote = settings.model_copy(update={"engine_url": settings.answer_engine_url})
                return await RemoteEngine.create(remote, model_dir, digit_token_ids)
            return await build_engine_in_thread(settings, answer_model_dir, digit_token_ids, observe)

        def readout():
            return checkpoint(settings, model_dir, digit_token_ids, None)

        return await build_split_engine(readout, answers, observe)

    return split


def serve(settings: Settings) -> int:
    """Run the server until it is stopped; returns the process exit code."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model_dir, card = resolve_model(settings)
        calibration = resolve_calibration(settings, model_dir, card)
        certified_policy = resolve_certified_policy(settings, model_dir, card, calibration)
        answer_model_dir = resolve_answer_model(settings)
    except (CardError, ProvisionError, CalibrationError, PolicyError) as exc:
        log.error("%s", exc)
        return 2
    holder: dict[str, uvicorn.Server] = {}

    def stop() -> None:
        holder["server"].should_exit = True

    app = build_app(
        settings,
        model_dir,
        card,
        engine_builder(settings, answer_model_dir),
        on_fatal=stop,
        calibration=calibration,
        certified_policy=certified_policy,
        on_abandoned_load=stop_engine_processes,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=30
        )
    )
    holder["server"] = server
    # uvicorn re-raises the SIGTERM/SIGINT that stopped it once it is done; with the default action that kills
    # the process before the engine processes below are stopped. A no-op handler lets this function finish.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    log.info(
        "listening on http://%s:%d (model loading; GET /ready turns 200 when it is ready)", settings.host, settings.port
    )
    try:
        server.run()
    finally:  # an engine stopped while it was still loading was never handed to shutdown: no orphans
        stop_engine_processes()
    state = app.state.see
    return 1 if state.load_error or state.engine_dead() else 0


if __name__ == "__main__":
    sys.exit(serve(Settings()))
