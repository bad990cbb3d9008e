"""The served default is the base model plus the shipped hs2-distill delta: rebuilt from scratch in another
cache it has the pinned weights hash, its card carries the lineage, and its readout differs from the base's."""

from __future__ import annotations

import json
import shutil

import pytest

from selfeval.card import load_card
from selfeval.delta import sha256_of
from selfeval.models import (
    BASE_MODEL_NAME,
    DEFAULT_MODEL_NAME,
    SHIPPED_DELTA_DIR,
    ProvisionError,
    prepare_base_model,
    prepare_default_model,
)


def test_the_shipped_delta_rebuilds_the_pinned_default_in_a_fresh_cache(tmp_path, model_dir):
    record = json.loads((SHIPPED_DELTA_DIR / "delta.json").read_text())
    assert (SHIPPED_DELTA_DIR / record["delta_file"]).stat().st_size <= 20 * 2**20
    base = prepare_base_model(report=print)
    cache = tmp_path / "cache"
    shutil.copytree(base, cache / "models" / BASE_MODEL_NAME)  # a fresh cache holding only the base model
    built = prepare_default_model(cache, report=print)
    assert built.name == DEFAULT_MODEL_NAME == model_dir.name
    assert (
        sha256_of(built / "model.safetensors") == record["weights_sha256"] == sha256_of(model_dir / "model.safetensors")
    )
    card = load_card(built)
    assert card.lineage.delta_sha256 == sha256_of(SHIPPED_DELTA_DIR / record["delta_file"])
    assert card.lineage.base_sha256 == sha256_of(base / "model.safetensors")
    assert card.lineage.config["run"]["mode"] == "labels-distill"
    assert card.lineage.config["data"]["kitware_file"] == "train.json"  # never the held-out half


def test_a_tampered_delta_is_refused_and_nothing_is_served(tmp_path, model_dir):
    delta_dir = tmp_path / "delta"
    shutil.copytree(SHIPPED_DELTA_DIR, delta_dir)
    record = json.loads((delta_dir / "delta.json").read_text())
    blob = bytearray((delta_dir / record["delta_file"]).read_bytes())
    blob[-1] ^= 1
    (delta_dir / record["delta_file"]).write_bytes(bytes(blob))
    with pytest.raises(ProvisionError, match="is not the delta its record pins"):
        prepare_default_model(tmp_path / "cache", report=print, delta_dir=delta_dir)
    assert not (tmp_path / "cache" / "models" / DEFAULT_MODEL_NAME).exists()


def test_the_untrained_model_stays_servable_by_name(model_dir):
    from server.settings import Settings

    assert Settings(model=BASE_MODEL_NAME).model.name == BASE_MODEL_NAME
    with pytest.raises(ValueError, match="provisioned models by name"):
        Settings(model="no-such-model")
