"""Split mode on the real engines (`SEE_ANSWER_MODEL`): the untrained base writes the answers exactly as it
alone would, every score is the served checkpoint's readout of that answer (its `/v1/score`), and the death
of either engine ends the replica like a dead single engine does."""

from __future__ import annotations

import json
import os
import signal

import httpx
import psutil
import pytest

from selfeval.models import BASE_MODEL_NAME, DEFAULT_MODEL_NAME, prepare_base_model
from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import running_server
from tests.integration.test_faults_engine import EXIT_WITHIN_S, health_after_death, processes_named

pytestmark = pytest.mark.integration

PROMPTS = [
    "Give me three tips for better sleep.",
    "Explain what a prime number is to a ten-year-old.",
    "Write a haiku about autumn rain.",
]
MAX_TOKENS = 48


def generate(url: str, prompt: str, score: bool = True) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0}
    response = httpx.post(f"{url}/generate", json=body | {"score": score}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def scored(url: str, prompt: str, answer: str) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "response": answer}
    response = httpx.post(f"{url}/v1/score", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["self_evaluation"]


def max_prob_gap(a: dict, b: dict) -> float:
    return max(
        abs(p - q)
        for attribute in ATTRIBUTES
        for p, q in zip(a["scores"][attribute]["probs"], b["scores"][attribute]["probs"], strict=True)
    )


def engine_cores(server_pid: int) -> list[psutil.Process]:
    """The EngineCore processes under the server, oldest first (split mode starts the readout's first)."""
    return processes_named(server_pid, "EngineCore")


def test_split_mode_answers_like_the_base_and_scores_like_the_checkpoint(model_dir, server, tmp_path):
    for name in ("base", "split"):
        (tmp_path / name).mkdir()
    # the reference answers: the base model served alone, then the checkpoint's own (the session server)
    with running_server(prepare_base_model(report=print), tmp_path / "base") as base:
        base_answers = [generate(base.url, prompt, score=False)["answer"] for prompt in PROMPTS]
        base_scores = [scored(base.url, prompt, answer) for prompt, answer in zip(PROMPTS, base_answers, strict=True)]
    own_answers = [generate(server.url, prompt, score=False)["answer"] for prompt in PROMPTS]
    assert own_answers != base_answers, "the checkpoint answers like its base: this test cannot tell the modes apart"

    with running_server(model_dir, tmp_path / "split", answer_model=BASE_MODEL_NAME) as split:
        assert len(engine_cores(split.process.pid)) == 2
        for prompt, base_answer, base_score in zip(PROMPTS, base_answers, base_scores, strict=True):
            result = generate(split.url, prompt)
            assert result["model"] == DEFAULT_MODEL_NAME
            assert result["answer"] == base_answer, "split mode must answer exactly as the base alone"
            evaluation = result["self_evaluation"]
            assert evaluation["source"] == "forced"
            checkpoint_score = scored(server.url, prompt, base_answer)  # the checkpoint alone, same answer
            assert max_prob_gap(evaluation, checkpoint_score) < 1e-4
            assert max_prob_gap(evaluation, base_score) > 1e-2, "the scores must be the checkpoint's, not the base's"

        # a stream carries the same answer, scored the same way
        body = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": PROMPTS[0]}]}
        body |= {"max_tokens": MAX_TOKENS, "temperature": 0}
        with httpx.stream("POST", f"{split.url}/v1/chat/completions", json=body | {"stream": True}, timeout=300) as r:
            assert r.status_code == 200
            chunks = [line for line in r.iter_lines() if line.startswith("data: {")]
        text = "".join(json.loads(c[6:])["choices"][0]["delta"].get("content") or "" for c in chunks if "choices" in c)
        assert text == base_answers[0]

        # the readout engine holds none of the answer: its first step computes the prompt and answer
        metrics = httpx.get(f"{split.url}/metrics", timeout=30).text
        computed = next(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('see_readout_context_tokens_total{kind="computed"')
        )
        assert computed > sum(len(a) for a in base_answers) / 8  # at least the answers' tokens, and then some

        # either engine's death ends the replica: the answer engine (started second) here
        os.kill(engine_cores(split.process.pid)[-1].pid, signal.SIGKILL)
        seen = health_after_death(split.url, split.process, EXIT_WITHIN_S)
        try:
            split.process.wait(timeout=30)
        except Exception:
            pytest.fail(f"the server kept running after its answer engine died; /health said {seen[-5:]}")
        assert seen and seen[-1] != 200, seen
        assert split.process.returncode == 1, split.log_tail()
        assert "the inference engine died" in split.log_tail(20_000)
