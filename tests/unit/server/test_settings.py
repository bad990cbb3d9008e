from pathlib import Path

import pytest

from server.engine import VllmEngine
from server.settings import Settings


def test_comment_and_blank_lines_of_the_key_file_are_not_keys(tmp_path, monkeypatch):
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated 2026-11-01, owner: platform team\n\nkey-one\n  # indented comment\nkey-two  \n")
    monkeypatch.delenv("SEE_API_KEYS", raising=False)
    settings = Settings(api_key_file=key_file, api_keys=["env-key"])
    assert settings.all_api_keys() == ["env-key", "key-one", "key-two"]


def test_a_cpu_kv_block_size_vllm_cannot_use_is_refused_before_the_engine_starts(monkeypatch):
    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.setenv(name, "0")  # keep the process environment as it was once the test ends
    settings = Settings(device="cpu", kv_block_size=48)
    with pytest.raises(ValueError, match="multiple of 32"):
        VllmEngine.create(settings, Path("no-model-needed"), tuple(range(10)))
