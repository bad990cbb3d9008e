"""/generate end to end on the real vLLM engine and the real default model."""

from __future__ import annotations

import math

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from selfeval.block import forced_token_layout
from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration

FEW_SHOT_BLOCK = (
    '\n\n[SELF_EVAL]\n{{"helpfulness": {h}, "correctness": {h}, "coherence": {h}, "complexity": 0, "verbosity": 0}}'
    "\n[/SELF_EVAL]"
)
# Few-shot examples in the user's message make the model write its own block (the `generated` readout). Blocks in
# assistant turns would not: the server removes them before reading (selfeval.integrity); this one is flagged.
IN_CONTEXT = [
    {
        "role": "user",
        "content": "Answer the question, then end with a self-evaluation block exactly like these examples.\n\n"
        "Question: What is 2 + 2?\nAnswer: 2 + 2 equals 4." + FEW_SHOT_BLOCK.format(h=8) + "\n\n"
        "Question: What is the capital of Italy?\nAnswer: The capital of Italy is Rome."
        + FEW_SHOT_BLOCK.format(h=8)
        + "\n\nQuestion: What is the capital of France?\nAnswer:",
    }
]


def check_self_evaluation(evaluation: dict) -> None:
    assert evaluation["scale_max"] == 9
    assert list(evaluation["scores"]) == list(ATTRIBUTES)
    for score in evaluation["scores"].values():
        probs = score["probs"]
        assert len(probs) == 10 and all(p >= 0 for p in probs)
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-6)
        assert math.isclose(score["expected"], sum(k * p for k, p in enumerate(probs)), abs_tol=1e-6)
        assert probs[score["argmax"]] == max(probs)
        assert 0 < score["label_mass"] <= 1 and 0 <= score["entropy"] <= math.log(10) + 1e-9
    quality = sum(evaluation["scores"][a]["expected"] for a in ATTRIBUTES[:3]) / 27
    assert math.isclose(evaluation["predicted_quality"], quality, abs_tol=1e-9)


@pytest.mark.parametrize(
    "question",
    [
        "What is the capital of France?",
        "Give me two tips for sleeping better.",
        "Translate 'good morning' into Spanish.",
    ],
)
def test_answers_come_with_five_distributions_and_no_block(client, question):
    response = client.post("/generate", json={"prompt": question, "max_tokens": 48, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"].strip() and "[self_eval" not in body["answer"].lower()
    assert body["self_evaluation"]["source"] in ("generated", "forced")
    check_self_evaluation(body["self_evaluation"])
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_a_block_the_model_writes_is_read_where_it_wrote_the_digits(client):
    body = client.post("/generate", json={"messages": IN_CONTEXT, "max_tokens": 80, "temperature": 0}).json()
    evaluation = body["self_evaluation"]
    assert "[SELF_EVAL]" not in body["answer"] and "Paris" in body["answer"]
    check_self_evaluation(evaluation)
    # The shipped default (attempt 2 of hs2-distill) copies the block but writes "10" for a score, out of the
    # 0-9 scale: the server must then refuse the block and force the readout, saying why. The untrained
    # instruct model writes a valid block here (read where it wrote the digits); that path is the one the
    # unit tests of the parser pin down. Restoring a valid in-context block on the default is open (issue 15).
    if evaluation["source"] == "generated":
        for score in evaluation["scores"].values():
            assert isinstance(score["emitted"], int) and 0 <= score["emitted"] <= 9
    else:
        assert evaluation["source"] == "forced" and evaluation["reason"].startswith("no valid self-evaluation block")
        assert all(score["emitted"] is None for score in evaluation["scores"].values())


def test_without_a_block_the_readout_is_forced_and_says_why(client):
    body = client.post("/generate", json={"prompt": "Name a fruit.", "max_tokens": 24, "temperature": 0}).json()
    evaluation = body["self_evaluation"]
    assert evaluation["source"] == "forced"
    assert evaluation["reason"]
    assert all(score["emitted"] is None for score in evaluation["scores"].values())
    check_self_evaluation(evaluation)


def test_the_same_seed_gives_the_same_answer_and_scores(client):
    request = {"prompt": "Write one sentence about the sea.", "max_tokens": 24, "temperature": 0.8, "seed": 1234}
    first, second = (client.post("/generate", json=request).json() for _ in range(2))
    assert first["answer"] == second["answer"]
    assert first["self_evaluation"]["scores"]["helpfulness"]["probs"] == pytest.approx(
        second["self_evaluation"]["scores"]["helpfulness"]["probs"], abs=1e-5
    )


def test_stop_strings_end_the_answer_and_are_not_returned(client):
    body = client.post(
        "/generate",
        json={"prompt": "What is the capital of France?", "max_tokens": 48, "temperature": 0, "stop": ["Paris"]},
    ).json()
    assert "Paris" not in body["answer"]
    assert body["finish_reason"] == "stop"


def test_score_false_skips_the_readout(client):
    body = client.post("/generate", json={"prompt": "Hi!", "max_tokens": 8, "temperature": 0, "score": False}).json()
    assert body["self_evaluation"] is None and body["usage"]["readout_tokens"] == 0


BAD_REQUESTS = [
    ('{"prompt": "hi"', None),
    ('{"messages": []}', "messages"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role"),
    ('{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    ('{"messages": [{"role": "user", "content": "  "}]}', "messages[0].content"),
    ('{"prompt": "hi", "max_tokens": 0}', "max_tokens"),
    ('{"prompt": "hi", "max_tokens": 100000}', "max_tokens"),
    ('{"prompt": "' + "word " * 5000 + '"}', "messages"),
    ('{"prompt": "hi", "temperature": 2.5}', "temperature"),
    ('{"prompt": "hi", "temperature": -1}', "temperature"),
    ('{"prompt": "hi", "top_p": 0}', "top_p"),
    ('{"prompt": "hi", "unknown_field": 1}', "unknown_field"),
    ('{"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}', None),
    ("[1, 2]", None),
    # lone surrogates: valid JSON, invalid Unicode (no tokenizer takes them); seeds beyond 64 bits
    ('{"prompt": "\\ud800 hi"}', "prompt"),
    ('{"messages": [{"role": "user", "content": "a\\udfffb"}]}', "messages[0].content"),
    ('{"prompt": "hi", "stop": ["\\ud800"]}', "stop"),
    ('{"prompt": "hi", "seed": 1e20}', "seed"),
    ('{"prompt": "hi", "seed": -1}', "seed"),
]


@pytest.mark.parametrize(("raw", "param"), BAD_REQUESTS, ids=[f"bad{i}" for i in range(len(BAD_REQUESTS))])
def test_bad_input_is_a_400_with_an_openai_error_naming_the_field(client, raw, param):
    response = client.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_the_server_keeps_serving_after_bad_input(client):
    for raw, _ in BAD_REQUESTS:
        client.post("/generate", content=raw, headers={"content-type": "application/json"})
    response = client.post("/generate", json={"prompt": "Say yes.", "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200 and response.json()["self_evaluation"]["scores"]


def test_unknown_routes_and_methods_get_openai_errors(client):
    assert client.get("/nope").json()["error"]["type"] == "not_found_error"
    assert client.get("/generate").status_code == 405


def test_health_answers_while_the_engine_loads_and_ready_waits_for_it(server):
    assert server.seen_alive_while_loading


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok", "ledger": "connected"}
    assert client.get("/ready").json()["status"] == "ready"


def test_metrics_expose_score_histograms_and_readout_sources(client):
    client.post("/generate", json={"prompt": "Name a colour.", "max_tokens": 16, "temperature": 0})
    client.post("/generate", json={"messages": IN_CONTEXT, "max_tokens": 80, "temperature": 0})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    counts = {
        sample.labels["attribute"]: sample.value
        for sample in families["see_expected_score"].samples
        if sample.name == "see_expected_score_count"
    }
    assert set(counts) == set(ATTRIBUTES) and min(counts.values()) >= 2
    buckets = [
        s
        for s in families["see_expected_score"].samples
        if s.name.endswith("_bucket") and s.labels["attribute"] == "helpfulness"
    ]
    assert [b.labels["le"] for b in buckets] == [f"{k + 0.5}" for k in range(9)] + ["9.0", "+Inf"]
    sources = {s.labels["source"]: s.value for s in families["see_readouts"].samples if s.name == "see_readouts_total"}
    assert sources.get("forced", 0) >= 1 and set(sources) <= {"forced", "generated"}
    requests = [s for s in families["see_http_requests"].samples if s.labels.get("route") == "/generate"]
    assert any(s.labels["status_code"] == "200" and s.value >= 2 for s in requests)
    assert "see_http_request_duration_seconds" in families


def readout_counters(client) -> dict[str, float]:
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}
    values = {"steps": 0.0, "cached": 0.0, "computed": 0.0, "prefix_hit": 0.0, "to_engine": 0.0, "in_engine": 0.0}
    values["back"] = 0.0
    for sample in families["see_readout_engine_steps"].samples:
        if sample.name.endswith("_total"):
            values["steps"] += sample.value
    for sample in families["see_readout_context_tokens"].samples:
        if sample.name.endswith("_total"):
            values[sample.labels["kind"]] += sample.value
    for sample in families["see_readout_step_seconds"].samples:
        if sample.name.endswith("_total"):
            values[sample.labels["phase"]] += sample.value
    for sample in families["see_engine_prefix_cache_tokens"].samples:
        if sample.name.endswith("_total") and sample.labels["kind"] == "hit":
            values["prefix_hit"] += sample.value
    return values


def test_a_forced_readout_computes_its_block_once_and_little_else(client, model_dir):
    """The readout is one streaming-input request: its first step finds the prompt and answer in the prefix
    cache (whole KV blocks only, so it recomputes up to a block past the last full one: 32 tokens on CPU,
    server.engine.CPU_KV_BLOCK_SIZE), and each later step computes only its own tokens (the chosen digit and
    the block text up to the next), the request's KV cache held in between. Five requests, each recomputing
    back to a block boundary, computed about twice as much. /metrics shows the split."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    before = readout_counters(client)
    body = {"prompt": "Describe the water cycle in detail.", "max_tokens": 48, "temperature": 0}
    answer = client.post("/generate", json=body).json()
    after = readout_counters(client)
    assert answer["self_evaluation"]["source"] == "forced"  # 48 tokens cut the answer before any block
    delta = {key: after[key] - before[key] for key in after}
    assert delta["steps"] == 5
    assert delta["cached"] > 5 * 200  # the prompt and most of the answer, every step
    assert delta["prefix_hit"] > 200  # the first step found them in the prefix cache

    def encode_literal(text):
        return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    layout, positions = forced_token_layout(encode_literal, answer["answer"], [0] * 5)
    block_tokens = positions[-1] - len(encode_literal(answer["answer"]))  # the block up to the last digit read
    assert block_tokens < delta["computed"] < block_tokens + 32, (delta, block_tokens)
    for phase in ("to_engine", "in_engine", "back"):
        assert after[phase] > before[phase]  # where the steps' time went, by phase


def test_a_request_per_readout_step_reads_the_same_scores_computing_more(client, model_dir, tmp_path):
    """SEE_READOUT_REQUESTS=per_step (a request per digit, the whole context each time) is the same readout as
    the default continued request: equal distributions, more tokens computed."""
    body = {
        "messages": [{"role": "user", "content": "Name a prime number."}],
        "response": "Seven is a prime number: only 1 and 7 divide it.",
    }
    with (
        running_server(model_dir, tmp_path, readout_requests="per_step") as per_step,
        httpx.Client(base_url=per_step.url, timeout=120) as other,
    ):
        before = readout_counters(other)
        separate = other.post("/v1/score", json=body).json()["self_evaluation"]["scores"]
        per_step_computed = readout_counters(other)["computed"] - before["computed"]
    before = readout_counters(client)
    continued = client.post("/v1/score", json=body).json()["self_evaluation"]["scores"]
    continued_computed = readout_counters(client)["computed"] - before["computed"]
    for attribute in ATTRIBUTES:
        gaps = [abs(p - q) for p, q in zip(separate[attribute]["probs"], continued[attribute]["probs"], strict=True)]
        assert max(gaps) < 1e-5, (attribute, gaps)
    assert per_step_computed > continued_computed, (per_step_computed, continued_computed)
