"""What a served checkpoint brings, checked before any engine starts: its model card (digits single tokens
under its own tokenizer), the calibration map beside it or named in the settings, and the certified policy.

Shared by the standalone server (`python -m server`) and the vLLM endpoint plugin (`server.vllm_plugin`), so
both serve a checkpoint under the same checks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from selfeval.calibration import CalibrationMap, calibration_path, card_fingerprint, load_calibration
from selfeval.card import ModelCard, check_card_against_tokenizer, load_card
from selfeval.certified_policy import CertifiedPolicy, load_policy, policy_path
from selfeval.models import prepare_default_model, prepare_named_model
from server.settings import Settings

log = logging.getLogger(__name__)


def resolve_model(settings: Settings) -> tuple[Path, ModelCard]:
    """The model directory (provisioning the default or a named model) and its checked card."""
    if settings.model is None:
        model_dir = prepare_default_model(settings.cache_dir, report=log.info)
    elif not settings.model.is_dir():  # a provisioned model's name (the settings checked it is one)
        model_dir = prepare_named_model(str(settings.model), settings.cache_dir, report=log.info)
    else:
        model_dir = settings.model
    return model_dir, checked_card(model_dir)


def resolve_answer_model(settings: Settings) -> Path | None:
    """Split mode's answer model directory (provisioning a named one), or None when the checkpoint answers."""
    if settings.answer_model is None:
        return None
    if settings.answer_model.is_dir():
        return settings.answer_model
    return prepare_named_model(str(settings.answer_model), settings.cache_dir, report=log.info)


def checked_card(model_dir: Path) -> ModelCard:
    """The card beside the weights, refused (CardError) when its digits are not single tokens."""
    card = load_card(model_dir)
    from transformers import AutoTokenizer

    check_card_against_tokenizer(card, AutoTokenizer.from_pretrained(str(model_dir)))
    return card


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
