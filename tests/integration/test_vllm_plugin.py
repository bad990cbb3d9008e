"""The `see_sidecar` endpoint plugin inside vLLM's own OpenAI server, on the real engine and default model,
started exactly as the Helm chart's plugin shape starts it (its rendered command, args and environment).

vLLM's server gains /generate, /v1/score and a scored /v1/chat/completions; its own routes stay; our series
join its /metrics; and the plugin answers exactly as the standalone sidecar does (same request, temperature 0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from deploy.tools import ensure_tools
from selfeval.rubric import ATTRIBUTES
from server.engine import CPU_KV_BLOCK_SIZE
from server.launch import cpu_engine_env, free_port, served
from server.vllm_plugin import PLUGIN_NAME
from tests.deploy.conftest import SIDECAR_CHART, Helm, by_kind
from tests.integration.conftest import REPO
from tests.integration.shapes import LIKE_THE_SIDECAR, QUESTION, assert_same_answers, post

pytestmark = pytest.mark.integration
SERVED_NAME = "see-plugin"
KEY = "plugin-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def chart_plugin_process(model_dir: Path, port: int, directory: Path, flags: list[str]) -> tuple[list[str], dict]:
    """The Helm chart's plugin-shape container as a local process: its command, args and environment (ConfigMap,
    env and the API key from its Secret), with paths that exist here. So the chart's command is what runs."""
    key_file = directory / "api-keys"
    key_file.write_text(KEY + "\n")
    sets = {"shape": "plugin", "image.flavor": "cpu", "config.model": str(model_dir),
            "config.served_model_name": SERVED_NAME, "config.host": "127.0.0.1", "config.port": port,
            "config.cache_dir": str(directory / "cache"), "config.ledger.url": str(directory / "ledger.sqlite3"),
            "config.api_key_file": str(key_file), "plugin.vllmArgs": flags, "apiKeys.keys": [KEY]}  # fmt: skip
    kinds = by_kind(Helm(ensure_tools()["helm"]).template(SIDECAR_CHART, sets=sets))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # config.model is given: nothing to provision
    (container,) = pod["containers"]
    env = {**cpu_engine_env(), **kinds["ConfigMap"]["data"]}
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = kinds["Secret"]["stringData"][ref["key"]] if ref else item["value"]
    command = [sys.executable if part == "python3" else part for part in container["command"]]
    return command + container["args"], env


@pytest.fixture(scope="module")
def plugin_url(model_dir, tmp_path_factory):
    import torch

    directory = tmp_path_factory.mktemp("plugin")
    port = free_port()
    flags = [*LIKE_THE_SIDECAR, *([] if torch.cuda.is_available() else ["--block-size", str(CPU_KV_BLOCK_SIZE)])]
    command, env = chart_plugin_process(model_dir, port, directory, flags)
    assert env["VLLM_PLUGINS"] == PLUGIN_NAME and env["VLLM_API_KEY"] == KEY
    url = f"http://127.0.0.1:{port}"
    with served(command, env, directory / "vllm.log", f"{url}/health", cwd=REPO):
        yield url


def test_generate_and_score_are_served_inside_vllm(plugin_url):
    generated = post(plugin_url, "/generate", {"messages": QUESTION, "max_tokens": 24, "temperature": 0}, AUTH)
    assert generated.status_code == 200, generated.text
    body = generated.json()
    assert body["model"] == SERVED_NAME and body["answer"]
    assert set(body["self_evaluation"]["scores"]) == set(ATTRIBUTES)
    assert body["decision"]["action"] in {"accept", "review", "escalate"}

    scored = post(plugin_url, "/v1/score", {"model": SERVED_NAME, "messages": QUESTION, "response": "Paris."}, AUTH)
    assert scored.status_code == 200, scored.text
    assert scored.json()["self_evaluation"]["source"] == "forced"


def test_chat_completions_is_replaced_and_the_rest_of_vllm_stays(plugin_url):
    body = {"model": SERVED_NAME, "messages": QUESTION, "max_tokens": 16}
    chat = post(plugin_url, "/v1/chat/completions", body, AUTH)
    assert chat.status_code == 200, chat.text
    choice = chat.json()["choices"][0]
    assert choice["self_evaluation"]["scores"] and choice["decision"]["action"]

    models = httpx.get(f"{plugin_url}/v1/models", headers=AUTH, timeout=30).json()  # vLLM's own list
    assert [m["id"] for m in models["data"]] == [SERVED_NAME] and models["data"][0]["owned_by"] == "vllm"
    completion = post(plugin_url, "/v1/completions", {"model": SERVED_NAME, "prompt": "The capital of France is",
                                                      "max_tokens": 4, "temperature": 0}, AUTH)  # fmt: skip
    assert completion.status_code == 200 and "self_evaluation" not in completion.json()["choices"][0]


def test_our_errors_and_series_ride_on_vllm(plugin_url):
    wrong = post(plugin_url, "/v1/score", {"model": "other", "messages": QUESTION, "response": "Paris."}, AUTH)
    assert wrong.status_code == 404
    assert wrong.json()["error"]["code"] == "model_not_found" and SERVED_NAME in wrong.json()["error"]["message"]
    empty = post(plugin_url, "/v1/score", {"model": SERVED_NAME, "messages": QUESTION, "response": " "}, AUTH)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "response"
    both = post(plugin_url, "/generate", {"prompt": "Hi", "messages": QUESTION}, AUTH)  # vLLM's validation handler
    assert both.status_code == 400 and "exactly one of" in both.json()["error"]["message"]

    metrics = httpx.get(f"{plugin_url}/metrics", timeout=30).text
    assert "vllm:num_requests_running" in metrics
    assert 'see_readouts_total{model_name="see-plugin",source=' in metrics


def test_the_plugin_answers_exactly_as_the_standalone_sidecar(plugin_url, server):
    """Same requests at temperature 0 through both shapes: the same answers, distributions within 1e-5."""
    assert_same_answers(server.url, plugin_url, AUTH)


def test_vllms_api_key_guards_our_routes_too(plugin_url):
    """vLLM's --api-key covers /v1/*; /generate is outside its guarded prefixes, so the plugin checks it."""
    for path, body in [("/generate", {"prompt": "Hi", "max_tokens": 2}),
                       ("/v1/score", {"messages": QUESTION, "response": "Paris."})]:  # fmt: skip
        for headers in (None, {"Authorization": "Bearer wrong"}):
            refused = post(plugin_url, path, body, headers)
            assert refused.status_code == 401, (path, headers, refused.text)
    generated = post(plugin_url, "/generate", {"prompt": "Hi", "max_tokens": 2}, AUTH)
    assert generated.status_code == 200, generated.text


def test_chat_fields_only_vllm_implements_are_served_by_vllm_unscored(plugin_url):
    """Enabling the plugin must not break what vLLM served: `logprobs` (ours has no such field) goes to vLLM's own
    handler, marked unscored; a field neither API knows is still our 400; everything else is scored."""
    base = {"model": SERVED_NAME, "messages": QUESTION, "max_tokens": 6, "temperature": 0}
    stock = post(plugin_url, "/v1/chat/completions", {**base, "logprobs": True, "top_logprobs": 2}, AUTH)
    assert stock.status_code == 200, stock.text
    assert stock.headers["x-see-scored"] == "false"
    choice = stock.json()["choices"][0]
    assert "self_evaluation" not in choice and len(choice["logprobs"]["content"][0]["top_logprobs"]) == 2

    streamed = post(plugin_url, "/v1/chat/completions", {**base, "logprobs": True, "stream": True}, AUTH)
    assert streamed.status_code == 200 and streamed.headers["x-see-scored"] == "false", streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]") and "self_evaluation" not in streamed.text

    assert post(plugin_url, "/v1/chat/completions", {**base, "logprobs": True}).status_code == 401  # still vLLM's key
    unknown = post(plugin_url, "/v1/chat/completions", {**base, "not_a_field": 1}, AUTH)
    assert unknown.status_code == 400 and "not_a_field" in unknown.text, unknown.text
    scored = post(plugin_url, "/v1/chat/completions", base, AUTH)
    assert scored.status_code == 200 and "x-see-scored" not in scored.headers
    assert scored.json()["choices"][0]["self_evaluation"]["scores"]
