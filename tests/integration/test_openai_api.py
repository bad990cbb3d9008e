"""The OpenAI-compatible API, /v1/score and the decision policy on the real engine, via the official client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from selfeval.models import DEFAULT_MODEL_NAME
from selfeval.rubric import ATTRIBUTES

pytestmark = pytest.mark.integration

MODEL = DEFAULT_MODEL_NAME
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def check_extension(choice: dict) -> None:
    evaluation, decision = choice["self_evaluation"], choice["decision"]
    assert evaluation["source"] in ("generated", "forced")
    assert list(evaluation["scores"]) == list(ATTRIBUTES)
    for score in evaluation["scores"].values():
        assert math.isclose(sum(score["probs"]), 1.0, abs_tol=1e-6)
    assert decision["action"] in ("accept", "review", "escalate") and decision["reasons"]


def test_official_client_sees_content_and_the_extension(oai):
    completion = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=32, temperature=0)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content and "[SELF_EVAL]" not in choice.message.content
    check_extension(choice.model_dump())
    assert completion.usage.completion_tokens > 0


def test_every_choice_is_scored_when_n_is_above_one(oai):
    completion = oai.chat.completions.create(
        model=MODEL, messages=QUESTION, max_completion_tokens=16, temperature=0.9, n=3, seed=7
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    for choice in completion.choices:
        check_extension(choice.model_dump())


def test_score_false_skips_the_readout_and_keeps_the_answer(oai):
    request = dict(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    plain = oai.chat.completions.create(**request, extra_body={"score": False}).choices[0]
    scored = oai.chat.completions.create(**request).choices[0]
    assert plain.message.content == scored.message.content
    assert plain.model_dump()["self_evaluation"] is None and plain.model_dump()["decision"] is None
    chunks = list(oai.chat.completions.create(**request, stream=True, extra_body={"score": False}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == scored.message.content
    final = chunks[-1].choices[0].model_dump()
    assert final["finish_reason"] and final["self_evaluation"] is None and final["decision"] is None


def test_streamed_content_equals_non_streamed_content_at_temperature_zero(oai):
    request = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Give two tips for sleeping well."}],
        max_tokens=48,
        temperature=0,
    )
    plain = oai.chat.completions.create(**request).choices[0]
    chunks = list(oai.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.message.content
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1].choices[0].model_dump()
    check_extension(final)
    assert final["self_evaluation"]["scores"]["helpfulness"]["probs"] == pytest.approx(
        plain.model_dump()["self_evaluation"]["scores"]["helpfulness"]["probs"], abs=1e-5
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_async_client_works_unchanged(server):
    async def run() -> list:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=300)
        jobs = [
            client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16, temperature=0)
            for _ in range(3)
        ]
        return await asyncio.gather(*jobs)

    for completion in asyncio.run(run()):
        check_extension(completion.choices[0].model_dump())


def test_stream_never_contains_the_block_even_when_the_model_writes_one(client):
    from tests.integration.test_generate import IN_CONTEXT

    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": IN_CONTEXT,
            "max_tokens": 80,
            "temperature": 0,
            "stream": True,
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert "SELF_EVAL" not in "".join(line for line in lines if '"content"' in line)
    # the default writes the block (with an out-of-scale "10", so the readout is forced; test_generate says more)
    assert '"source": "generated"' in lines[-2] or "no valid self-evaluation block" in lines[-2]


def test_unknown_model_is_a_404(oai):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-nope", messages=QUESTION, max_tokens=4)
    assert caught.value.body["code"] == "model_not_found"


def test_validation_errors_are_400_through_the_client(oai):
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=QUESTION, n=9)


SURROGATE = "\\ud800"  # JSON text for a lone UTF-16 surrogate
HOSTILE_BODIES = [
    ("/v1/chat/completions", f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "{SURROGATE}"}}]}}',
     "messages[0].content"),
    ("/v1/chat/completions", f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], "seed": 1e20}}',
     "seed"),
    ("/v1/score", f'{{"messages": [{{"role": "user", "content": "hi"}}], "response": "x{SURROGATE}"}}', "response"),
    ("/v1/feedback", f'{{"id": "gen-1", "judge": "{SURROGATE}", "judge_scores": {{"helpfulness": 1, "correctness": 1, '
     '"coherence": 1, "complexity": 1, "verbosity": 1}}', "judge"),
    ("/v1/score", f'{{"messages": [{{"role": "user", "content": "hi"}}], "response": "x", '
     f'"decision_thresholds": {{"{SURROGATE}": 1}}}}', None),
]  # fmt: skip


@pytest.mark.parametrize(("route", "raw", "param"), HOSTILE_BODIES, ids=[f"bad{i}" for i in range(len(HOSTILE_BODIES))])
def test_invalid_unicode_and_huge_seeds_are_400s_on_every_route(client, route, raw, param):
    response = client.post(route, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "surrogate" in error["message"] or "unicode" in error["message"] or error["param"] == "seed"
    if param is not None:
        assert error["param"] == param


def test_a_chunked_streaming_request_streams_the_whole_answer(server):
    """A body sent without Content-Length (chunked) is read by the limits middleware and replayed; the stream
    must then listen on the client's own channel, not end at once on an invented disconnect."""
    payload = json.dumps({"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, "stream": True})
    body = payload.encode()
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
        timeout=300,
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.request.headers
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    finals = [json.loads(e[6:]) for e in events[:-1] if json.loads(e[6:])["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["self_evaluation"]["scores"]


def test_models_lists_the_served_model(oai):
    assert [m.id for m in oai.models.list()] == [MODEL]


def test_score_distinguishes_a_good_and_a_garbage_response(client):
    def scores(response: str) -> dict:
        body = client.post("/v1/score", json={"messages": QUESTION, "response": response})
        assert body.status_code == 200, body.text
        result = body.json()
        assert result["self_evaluation"]["source"] == "forced" and result["decision"]["action"]
        return {a: s["probs"] for a, s in result["self_evaluation"]["scores"].items()}

    good, garbage = scores("The capital of France is Paris."), scores("zxq blorp ;;;; 7 7 banana keyboard")
    distance = max(abs(p - q) for a in ATTRIBUTES for p, q in zip(good[a], garbage[a], strict=True))
    assert distance > 0.01
    again = scores("The capital of France is Paris.")  # the same text always gets the same readout
    for attribute in ATTRIBUTES:
        assert again[attribute] == pytest.approx(good[attribute], abs=1e-5)


def test_score_refuses_an_empty_response(client):
    response = client.post("/v1/score", json={"messages": QUESTION, "response": "   "})
    assert response.status_code == 400 and response.json()["error"]["param"] == "response"


def test_decision_thresholds_can_be_overridden_per_request(client):
    strict = {
        "escalate_below_quality": 0.0,
        "review_below_quality": 1.0,
        "review_low_score_prob": 1.0,
        "escalate_low_score_prob": 1.0,
        "review_above_entropy": 10.0,
        "review_below_label_mass": 0.0,
    }
    lenient = {**strict, "review_below_quality": 0.0}
    request = {"messages": QUESTION, "response": "Paris."}

    def action(thresholds: dict) -> str:
        body = client.post("/v1/score", json={**request, "decision_thresholds": thresholds}).json()
        return body["decision"]["action"]

    assert action(strict) == "review"
    assert action(lenient) == "accept"
    bad = client.post("/v1/score", json={**request, "decision_thresholds": {"nope": 1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("decision_thresholds")


def test_metrics_move_with_decisions_entropy_and_label_mass(client):
    def snapshot() -> dict:
        families = text_string_to_metric_families(client.get("/metrics").text)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}

    before = snapshot()
    client.post("/v1/score", json={"messages": QUESTION, "response": "Paris."})
    after = snapshot()
    moved = {name for (name, _), value in after.items() if value != before.get((name, _), 0)}
    for name in (
        "see_decisions_total",
        "see_score_entropy_nats_count",
        "see_score_label_mass_count",
        "see_expected_score_count",
        "see_readouts_total",
    ):
        assert name in moved, name


def engine_requests(client: httpx.Client) -> dict[str, float]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {s.labels["state"]: s.value for f in families if f.name == "see_engine_requests" for s in f.samples}


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_engine_queue_depth_is_exported_and_drains(server, client):
    """Three concurrent requests show up as running in the scheduler gauge, which drains back to zero.

    The gauge is sampled from its own thread for as long as the burst runs (a poll between bursts could miss a
    short one), and the burst's statuses are checked so a rejected burst reads as what it is.
    """

    async def three() -> list[tuple[int, float]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
            body = {"prompt": "Tell me about the sea.", "max_tokens": 64, "temperature": 0}

            async def one() -> tuple[int, float]:
                started = time.monotonic()
                response = await http.post("/generate", json=body)
                return response.status_code, round(time.monotonic() - started, 2)

            return await asyncio.gather(*(one() for _ in range(3)))

    seen: list[dict[str, float]] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        burst = pool.submit(asyncio.run, three())
        while not burst.done():
            seen.append(engine_requests(client))
            time.sleep(0.05)
        outcomes = burst.result()
    assert [status for status, _ in outcomes] == [200, 200, 200], outcomes
    assert max(sample.get("running", 0) for sample in seen) >= 2, (outcomes, seen)
    assert wait_for(lambda: engine_requests(client) == {"waiting": 0.0, "running": 0.0}, 10), engine_requests(client)


def test_a_client_that_disconnects_mid_stream_leaves_the_server_healthy(server, client):
    with (
        httpx.Client(base_url=server.url, timeout=60) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                "max_tokens": 400,
                "temperature": 0.9,
                "stream": True,
            },
        ) as response,
    ):
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the engine is writing; hang up
        during = engine_requests(client)["running"]
    assert during >= 1
    # the engine request was cancelled, not left to write its 400 tokens (~20 s here)
    assert wait_for(lambda: engine_requests(client).get("running") == 0, 5), engine_requests(client)
    assert client.post("/generate", json={"prompt": "Hi", "max_tokens": 4, "temperature": 0}).status_code == 200


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/generate", {"prompt": "a" * 900_000, "max_tokens": 4}),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "a" * 900_000}]}),
        ("/v1/score", {"messages": QUESTION, "response": "a" * 900_000}),
    ],
    ids=["generate", "chat", "score"],
)
def test_text_that_cannot_fit_is_refused_before_it_is_tokenised(client, route, body):
    """900,000 characters are at least 900,000 / (the longest token's characters) tokens, more than the context
    holds: a 400 from the character count (its message says characters), not from a megabyte of tokenising."""
    response = client.post(route, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "prompt_too_long" and "900" in error["message"] and "characters" in error["message"]
