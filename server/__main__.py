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

from selfeval.calibration import (
    CalibrationError,
    CalibrationMap,
    calibration_path,
    card_fingerprint,
    load_calibration,
)
from selfeval.card import CardError, ModelCard, check_card_against_tokenizer, load_card
from selfeval.certified_policy import CertifiedPolicy, PolicyError, load_policy, policy_path
from selfeval.models import ProvisionError, prepare_default_model, prepare_named_model
from server.app import build_app
from server.engine import build_engine_in_thread, stop_engine_processes
from server.settings import Settings

log = logging.getLogger("server")


def resolve_model(settings: Settings) -> tuple[Path, ModelCard]:
    if settings.model is None:
        model_dir = prepare_default_model(settings.cache_dir, report=log.info)
    elif not settings.model.is_dir():  # a provisioned model's name (the settings checked it is one)
        model_dir = prepare_named_model(str(settings.model), settings.cache_dir, report=log.info)
    else:
        model_dir = settings.model
    card = load_card(model_dir)
    from transformers import AutoTokenizer

    check_card_against_tokenizer(card, AutoTokenizer.from_pretrained(str(model_dir)))
    return model_dir, card


def resolve_calibration(settings: Settings, model_dir: Path, card: ModelCard) -> CalibrationMap | None:
    """The explicit calibration file, else see_calibration.json beside the card, else none."""
    path = settings.calibration_file or calibration_path(model_dir)
    if not path.is_file():
        return None
    calibration = load_calibration(path)
    calibration.check_for(card)
    log.info("calibration %s loaded from %s (fitted on %d verdicts)", calibration.version, path, calibration.fitted_on)
    return calibration


def resolve_certified_policy(
    settings: Settings, model_dir: Path, card: ModelCard, calibration: CalibrationMap | None
) -> CertifiedPolicy | None:
    """The explicit policy file, else see_policy.json beside the card, else none; checked against the card and
    against the calibration map it may need."""
    path = settings.certified_policy_file or policy_path(model_dir)
    if not settings.use_certified_policy or not path.is_file():
        return None
    policy = load_policy(path)
    policy.check_for(card_fingerprint(card), calibration.version if calibration is not None else None)
    log.info("certified policy %s loaded from %s: %s", policy.version, path, policy.accept_guarantee())
    return policy


def serve(settings: Settings) -> int:
    """Run the server until it is stopped; returns the process exit code."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        model_dir, card = resolve_model(settings)
        calibration = resolve_calibration(settings, model_dir, card)
        certified_policy = resolve_certified_policy(settings, model_dir, card, calibration)
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
        build_engine_in_thread,
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
