"""What the tests of the serving shapes share: one set of requests, and the check that two shapes answer them
alike (same answers at temperature 0, distributions within 1e-5, same decisions)."""

from __future__ import annotations

import json

import httpx

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
# the standalone sidecar's engine settings on CPU (tests/integration/conftest.py, server/engine.py)
LIKE_THE_SIDECAR = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "4096", "--enable-prefix-caching"]
PARITY_REQUESTS = [
    ("/generate", {"messages": QUESTION, "max_tokens": 32, "temperature": 0}),
    ("/v1/score", {"messages": QUESTION, "response": "The capital of France is Paris."}),
    ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 32, "temperature": 0, "n": 2, "seed": 3}),
    ("/v1/chat/completions", {"messages": QUESTION, "max_tokens": 32, "temperature": 0, "stream": True}),
]


def post(url: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=300)


def served_name(url: str, headers: dict | None = None) -> str:
    return httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]


def scored_parts(url: str, path: str, body: dict, headers: dict | None = None) -> list[dict]:
    """Each answer of one response with its self_evaluation and decision (one per chat choice; a stream's
    content chunks joined, its final chunk's extensions)."""
    if path != "/generate":  # /generate takes no model field
        body = {**body, "model": served_name(url, headers)}
    response = post(url, path, body, headers)
    assert response.status_code == 200, response.text
    if body.get("stream"):
        text, final = "", {}
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                choice = json.loads(line[len("data: ") :])["choices"][0]
                text += choice["delta"].get("content", "")
                final = choice if choice.get("finish_reason") else final
        return [{**final, "answer": text}]
    answer = response.json()
    if "choices" not in answer:
        return [answer]
    return [{**choice, "answer": choice["message"]["content"]} for choice in answer["choices"]]


def assert_same_answers(url: str, other_url: str, other_headers: dict | None = None) -> None:
    for path, body in PARITY_REQUESTS:
        others = scored_parts(other_url, path, body, other_headers)
        for mine, theirs in zip(scored_parts(url, path, body), others, strict=True):
            assert mine.get("answer") == theirs.get("answer"), path
            for attribute, score in mine["self_evaluation"]["scores"].items():
                probs = theirs["self_evaluation"]["scores"][attribute]["probs"]
                assert max(abs(a - b) for a, b in zip(score["probs"], probs, strict=True)) < 1e-5, (path, attribute)
            assert mine["decision"]["action"] == theirs["decision"]["action"], path
