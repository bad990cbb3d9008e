"""Remote engine mode: the sidecar generates and reads its scores on a stock vLLM server over HTTP
(`SEE_ENGINE_URL`), on the real engine and default model; and split mode with the answers written there
(`SEE_ANSWER_ENGINE_URL`).

It answers exactly as the in-process sidecar does; its forced readouts find their prefixes in the remote's
cache; and a remote that goes away is a 503 the client can retry, while the sidecar itself stays up.
"""

from __future__ import annotations

import httpx
import pytest

from server.engine import CPU_KV_BLOCK_SIZE
from server.launch import cpu_engine_env, free_port, served, stock_vllm_command
from tests.integration.conftest import REPO, running_server
from tests.integration.shapes import LIKE_THE_SIDECAR, QUESTION, assert_same_answers, post

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote(model_dir, tmp_path_factory):
    """(the stock vLLM process, the sidecar fronting it, the stock server's URL)."""
    import torch

    directory = tmp_path_factory.mktemp("remote")
    port = free_port()
    flags = [*LIKE_THE_SIDECAR, "--enable-prompt-tokens-details"]
    flags += [] if torch.cuda.is_available() else ["--block-size", str(CPU_KV_BLOCK_SIZE)]
    command = stock_vllm_command(model_dir, port, "remote-engine", *flags)
    engine_url = f"http://127.0.0.1:{port}"
    with (
        served(command, cpu_engine_env(), directory / "vllm.log", f"{engine_url}/health", cwd=REPO) as engine,
        running_server(model_dir, directory, engine_url=engine_url, allow_looser_thresholds="true") as sidecar,
    ):
        yield engine, sidecar, engine_url


def test_the_remote_mode_answers_exactly_as_the_in_process_sidecar(remote, server):
    _, sidecar, _ = remote
    assert_same_answers(server.url, sidecar.url)


def test_forced_readouts_find_their_prefix_in_the_remote_cache(remote):
    _, sidecar, _ = remote
    scored = post(sidecar.url, "/v1/score", {"messages": QUESTION, "response": "Paris is the capital of France."})
    assert scored.status_code == 200 and scored.json()["self_evaluation"]["source"] == "forced"
    metrics = httpx.get(f"{sidecar.url}/metrics", timeout=30).text
    cached = [line for line in metrics.splitlines() if line.startswith("see_readout_context_tokens_total")
              and 'kind="cached"' in line]  # fmt: skip
    assert cached and float(cached[0].split()[-1]) > 0, cached


def generated_tokens(engine_url: str) -> float:
    lines = httpx.get(f"{engine_url}/metrics", timeout=30).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("vllm:generation_tokens_total"))


def test_split_mode_with_a_remote_answer_engine_answers_there_and_reads_here(remote, model_dir, server, tmp_path):
    """SEE_ANSWER_ENGINE_URL: the remote writes the answers (here it serves the checkpoint itself, so they equal
    the in-process sidecar's) and this sidecar's own engine reads them (the scores equal `/v1/score`'s)."""
    _, _, engine_url = remote
    body = {"messages": QUESTION, "max_tokens": 32, "temperature": 0}
    with running_server(model_dir, tmp_path, answer_engine_url=engine_url) as split:
        before = generated_tokens(engine_url)
        answer = post(split.url, "/generate", body)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert generated_tokens(engine_url) - before >= result["usage"]["completion_tokens"] > 0  # written there
        assert result["answer"] == post(server.url, "/generate", body).json()["answer"]
        scored = post(server.url, "/v1/score", {"messages": QUESTION, "response": result["answer"]}).json()
        for attribute, score in result["self_evaluation"]["scores"].items():
            expected = scored["self_evaluation"]["scores"][attribute]["probs"]
            assert max(abs(p - q) for p, q in zip(score["probs"], expected, strict=True)) < 1e-4, attribute


def test_a_remote_that_goes_away_is_a_retryable_503_and_the_sidecar_stays_up(remote):
    engine, sidecar, _ = remote
    engine.terminate()
    engine.wait(timeout=60)
    answer = post(sidecar.url, "/generate", {"messages": QUESTION, "max_tokens": 8})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "engine_unavailable"
    assert httpx.get(f"{sidecar.url}/health", timeout=30).status_code == 200
    assert sidecar.process.poll() is None
