"""The `see` command line against the real server and the real provisioning code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

SEE = [sys.executable, "-m", "seecli.main"]


def test_see_generate_prints_the_answer_and_the_score_table(server):
    done = subprocess.run(
        [*SEE, "generate", "What is 3 + 4?", "--url", server.url, "--max-tokens", "24", "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "predicted judge scores" in done.stdout
    for attribute in ("helpfulness", "correctness", "coherence", "complexity", "verbosity"):
        assert attribute in done.stdout


def test_see_generate_explains_an_unreachable_server():
    done = subprocess.run(
        [*SEE, "generate", "hi", "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "see serve" in done.stdout


def test_model_prepare_is_idempotent(model_dir):
    started = time.monotonic()
    done = subprocess.run([*SEE, "model", "prepare"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(model_dir)
    assert time.monotonic() - started < 60  # nothing re-downloaded or re-converted


def test_serving_a_checkpoint_without_a_card_is_refused_with_advice(model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "config.json", bare / "config.json")
    done = subprocess.run([*SEE, "serve", "--model", str(bare)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "see model card" in done.stderr


def test_see_model_card_writes_a_checked_card(model_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(model_dir / name, copy / name)
    done = subprocess.run(
        [*SEE, "model", "card", str(copy), "--prompt-mode", "see-base", "--base-model", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    card = json.loads((copy / "see_card.json").read_text())
    assert card["prompt_mode"] == "see-base" and card["digit_token_ids"] == list(range(32, 42))
