"""Fuzzing the real server: schemathesis from its OpenAPI document, then hypothesis with hostile values (lone
surrogates, control characters, huge and negative numbers, NaN, deep JSON, hundreds of messages and stop
strings) that schema-driven generation does not reach. No request may get a 5xx.

A server of its own with an 8-token answer cap, so that the hundreds of generated requests that are valid
finish in seconds on a CPU; everything else about it is the production configuration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_server(model_dir, tmp_path_factory):
    with running_server(
        model_dir, tmp_path_factory.mktemp("fuzzed"), max_answer_tokens="8", default_max_tokens="8"
    ) as running:
        yield running


def test_no_generated_request_gets_a_server_error(small_server, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency"
    command = [
        cli, "run", f"{small_server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", "25", "--workers", "1", "--seed", "1",
        "--generation-database", "none", "--request-timeout", "120", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and " failed" not in result.stdout.split("SUMMARY")[-1]
    # the server is still healthy afterwards
    assert small_server.process.poll() is None


# ---- hypothesis: hostile values the schema-driven pass does not reach ------------------------------------

ANY_CHAR = st.characters(exclude_categories=())  # surrogates and control characters included
HOSTILE_TEXT = st.text(ANY_CHAR, max_size=40) | st.sampled_from(["<|im_start|>assistant\n", "[SELF_EVAL]", "\x00"])
HOSTILE_NUMBER = (
    st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, -1, 1, 2**63, 2**64, 1e308])
)
HOSTILE_VALUE = st.recursive(
    st.none() | st.booleans() | HOSTILE_NUMBER | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | HOSTILE_TEXT, "content": HOSTILE_TEXT | HOSTILE_VALUE}
)
BODIES = {
    "/generate": st.fixed_dictionaries(
        {},
        optional={
            "prompt": HOSTILE_TEXT | HOSTILE_VALUE,
            "messages": st.lists(MESSAGE, max_size=300),
            "max_tokens": HOSTILE_NUMBER,
            "temperature": HOSTILE_NUMBER,
            "top_p": HOSTILE_NUMBER,
            "seed": HOSTILE_NUMBER,
            "stop": st.lists(HOSTILE_TEXT, max_size=200) | HOSTILE_TEXT,
            "decision_thresholds": st.dictionaries(
                HOSTILE_TEXT | st.sampled_from(["low_score", "flagged_action"]), HOSTILE_VALUE, max_size=3
            ),
            "score": HOSTILE_VALUE,
        },
    ),  # fmt: skip
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": HOSTILE_TEXT, "messages": st.lists(MESSAGE, max_size=300)},
        optional={"n": HOSTILE_NUMBER, "max_tokens": HOSTILE_NUMBER, "stream": st.booleans(), "seed": HOSTILE_NUMBER},
    ),
    "/v1/score": st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, max_size=300), "response": HOSTILE_TEXT | HOSTILE_VALUE}
    ),
    "/v1/feedback": st.fixed_dictionaries(
        {
            "id": HOSTILE_TEXT,
            "judge": HOSTILE_TEXT,
            "choice": HOSTILE_NUMBER,
            "judge_scores": st.dictionaries(HOSTILE_TEXT | st.sampled_from(["helpfulness"]), HOSTILE_VALUE, max_size=6),
        },
    ),  # fmt: skip
}


def send(url: str, route: str, body) -> int:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes (valid JSON text); NaN/Infinity as Python writes them
    raw = json.dumps(body, ensure_ascii=True)
    return httpx.post(url + route, content=raw, headers={"content-type": "application/json"}, timeout=300).status_code


@pytest.mark.parametrize("route", list(BODIES))
def test_hostile_values_never_get_a_server_error(small_server, route):
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=BODIES[route])
    def check(body):
        status = send(small_server.url, route, body)
        assert status < 500, (status, body)

    check()
    assert small_server.process.poll() is None


def test_deep_json_and_oversized_numbers_are_400s(small_server):
    deep = "[" * 50_000 + "]" * 50_000
    for route, raw in [
        ("/generate", deep),
        ("/generate", '{"prompt": "hi", "stop": ' + deep + "}"),
        ("/generate", '{"prompt": "hi", "max_tokens": ' + "9" * 5000 + "}"),
        ("/v1/chat/completions", '{"model": "m", "messages": [], "n": 1e30}'),
    ]:
        response = httpx.post(small_server.url + route, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (route, raw[:60], response.text)
