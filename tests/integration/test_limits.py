"""API keys, body-size caps, the bounded admission queue and the request timeout, on a real server."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
import pytest

from see_client import NO_RETRIES, AsyncSeeClient, AuthenticationError, RetryEvent, RetryPolicy, SeeClient
from selfeval.models import DEFAULT_MODEL_NAME
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration

KEY = "test-key-0123456789"
FILE_KEY = "rotated-key-from-a-file"
SMALL = {"prompt": "Hi", "max_tokens": 4, "temperature": 0}
WORK_BUDGET = 4000  # tokens: one 1,500-token answer fits twice, not three times


@pytest.fixture(scope="module")
def guarded(model_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("guarded")
    key_file = log_dir / "keys"
    key_file.write_text(f"{FILE_KEY}\n")
    with running_server(
        model_dir,
        log_dir,
        api_keys=json.dumps([KEY]),
        api_key_file=str(key_file),
        max_body_bytes="4096",
        body_timeout_s="3",
        max_pending_requests="2",
        max_pending_tokens=str(WORK_BUDGET),
        retry_after_s="3",
        request_timeout_s="8",
        max_prompt_tokens="400",
        max_answer_tokens="1600",
    ) as running:
        yield running


def auth(key: str = KEY) -> dict:
    return {"authorization": f"Bearer {key}"}


def test_model_routes_need_a_key(guarded):
    for path, body in (
        ("/generate", SMALL),
        ("/v1/score", {"messages": [{"role": "user", "content": "x"}], "response": "y"}),
    ):
        response = httpx.post(f"{guarded.url}{path}", json=body, timeout=60)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth("nope"), timeout=60)
    assert wrong.status_code == 401
    assert httpx.get(f"{guarded.url}/v1/models", timeout=60).status_code == 401


def test_keys_from_settings_and_from_the_key_file_both_work(guarded):
    for key in (KEY, FILE_KEY):
        assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(key), timeout=120).status_code == 200


def test_probes_and_metrics_stay_open(guarded):
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{guarded.url}{path}", timeout=30).status_code == 200


def test_the_official_client_authenticates_with_its_api_key(guarded):
    client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY, max_retries=0, timeout=120)
    completion = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0
    )
    assert completion.choices[0].model_dump()["decision"]["action"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_an_oversized_body_is_a_413_with_or_without_content_length(guarded):
    big = {"prompt": "x" * 10_000, "max_tokens": 4}
    response = httpx.post(f"{guarded.url}/generate", json=big, headers=auth(), timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunks():
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    chunked = httpx.post(
        f"{guarded.url}/generate", content=chunks(), headers={**auth(), "content-type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413


def test_a_chunked_body_under_the_limit_is_served(guarded):
    payload = json.dumps(SMALL).encode()
    response = httpx.post(
        f"{guarded.url}/generate",
        content=iter([payload[:5], payload[5:]]),
        headers={**auth(), "content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 200, response.text


def test_a_burst_beyond_the_queue_gets_429_with_retry_after_and_the_server_recovers(guarded):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=guarded.url, headers=auth(), timeout=120) as client:
            body = {"prompt": "Tell me about the sea.", "max_tokens": 8, "temperature": 0}
            return await asyncio.gather(*(client.post("/generate", json=body) for _ in range(8)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    rejected = [r for r in responses if r.status_code == 429]
    assert statuses.count(200) >= 1 and 429 in statuses, statuses
    assert set(statuses) <= {200, 429}
    for response in rejected:
        assert response.headers["retry-after"] == "3" and response.json()["error"]["type"] == "rate_limit_error"
    assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(), timeout=120).status_code == 200


def test_a_request_over_the_timeout_is_aborted_with_504_and_the_server_goes_on(guarded):
    long = {"prompt": "Write a long story about a lighthouse keeper.", "max_tokens": 1500, "temperature": 0}
    response = httpx.post(f"{guarded.url}/generate", json=long, headers=auth(), timeout=120)
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout_error"
    assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(), timeout=120).status_code == 200


def test_prompt_and_answer_caps_are_400s_that_name_the_setting(guarded):
    long_prompt = {"prompt": "word " * 300, "max_tokens": 4}
    response = httpx.post(f"{guarded.url}/generate", json=long_prompt, headers=auth(), timeout=60)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "prompt_too_long" and error["param"] == "messages"
    assert "SEE_MAX_PROMPT_TOKENS" in error["message"]

    too_many = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1601}
    response = httpx.post(f"{guarded.url}/v1/chat/completions", json=too_many, headers=auth(), timeout=60)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "max_tokens_too_large" and error["param"] == "max_tokens"
    assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(), timeout=120).status_code == 200


def test_the_sdk_rides_out_a_burst_by_honouring_retry_after(guarded):
    events: list[RetryEvent] = []
    retry = RetryPolicy(max_retries=30, on_retry=events.append)

    async def burst():
        async with AsyncSeeClient(guarded.url, api_key=KEY, retry=retry) as client:
            prompts = [f"Tell me about the sea, part {i}." for i in range(6)]
            return await asyncio.gather(*(client.generate(p, max_tokens=8, temperature=0) for p in prompts))

    results = asyncio.run(burst())
    assert len(results) == 6 and all(result.self_evaluation is not None for result in results)
    assert events and all(event.reason == "429" and event.delay_s == 3.0 for event in events)
    with pytest.raises(AuthenticationError):
        SeeClient(guarded.url, api_key="wrong", retry=NO_RETRIES).generate("Hi", max_tokens=4)


def test_rejections_by_the_limits_are_counted_on_the_route_they_hit(guarded):
    """401, 413 and 429 are answered before routing; they must still reach see_http_requests (a full queue
    shows on the dashboard), labelled with the route, not 'unmatched'."""
    from prometheus_client.parser import text_string_to_metric_families

    def counted() -> dict[tuple[str, str], float]:
        text = httpx.get(f"{guarded.url}/metrics", timeout=30).text
        family = next(f for f in text_string_to_metric_families(text) if f.name == "see_http_requests")
        return {
            (s.labels["route"], s.labels["status_code"]): s.value for s in family.samples if s.name.endswith("_total")
        }

    before = counted()
    httpx.post(f"{guarded.url}/generate", json=SMALL, timeout=60)  # no key: 401
    httpx.post(f"{guarded.url}/v1/score", content=b"x" * 8000, headers=auth(), timeout=60)  # 413

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=guarded.url, headers=auth(), timeout=120) as client:
            responses = await asyncio.gather(*(client.post("/generate", json=SMALL) for _ in range(6)))
        return [r.status_code for r in responses]

    burst_statuses = asyncio.run(burst())
    after = counted()
    for key in (("/generate", "401"), ("/v1/score", "413")):
        assert after.get(key, 0) == before.get(key, 0) + 1, (key, after)
    assert 429 in burst_statuses, burst_statuses
    assert after.get(("/generate", "429"), 0) == before.get(("/generate", "429"), 0) + burst_statuses.count(429)


def test_per_request_thresholds_may_tighten_but_not_loosen_the_policy(guarded):
    body = {"messages": [{"role": "user", "content": "Capital of France?"}], "response": "Paris."}
    tighter = httpx.post(
        f"{guarded.url}/v1/score", json={**body, "decision_thresholds": {"review_below_quality": 0.99}},
        headers=auth(), timeout=120,
    )  # fmt: skip
    assert tighter.status_code == 200 and tighter.json()["decision"]["action"] in ("review", "escalate")
    looser = httpx.post(
        f"{guarded.url}/v1/score", json={**body, "decision_thresholds": {"escalate_below_quality": 0}},
        headers=auth(), timeout=120,
    )  # fmt: skip
    error = looser.json()["error"]
    assert looser.status_code == 400 and error["code"] == "threshold_loosens_policy"
    assert (
        error["param"] == "decision_thresholds.escalate_below_quality"
        and "SEE_ALLOW_LOOSER_THRESHOLDS" in error["message"]
    )


def work_in_progress(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "see_work_in_progress_tokens")
    return family.samples[0].value


def test_admission_counts_work_not_requests(guarded):
    """Two requests are within max_pending_requests=2, but a held 2 x 1,500-token stream leaves no room in the
    4,000-token budget for a third 1,500-token answer: 429. A request larger than the whole budget is a 400 that
    says what to shrink. The claim is released when the stream ends, even when its client walks away."""
    story = "Write a very long story about a lighthouse keeper."  # runs past 1,500 tokens or the 8 s timeout
    chat = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": story}]}
    huge = httpx.post(
        f"{guarded.url}/v1/chat/completions", json={**chat, "n": 3, "max_tokens": 1500}, headers=auth(), timeout=60
    )
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "request_too_large", huge.text
    assert "SEE_MAX_PENDING_TOKENS" in huge.json()["error"]["message"]

    held = {**chat, "n": 2, "max_tokens": 1500, "stream": True, "temperature": 0}
    client = httpx.Client(base_url=guarded.url, headers=auth(), timeout=120)
    with client, client.stream("POST", "/v1/chat/completions", json=held) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()  # kept: a dropped iterator closes the connection, and the stream with it
        next(lines)  # admitted and generating
        assert work_in_progress(guarded.url) > 1500 * 2
        third = client.post("/generate", json={"prompt": "Hi", "max_tokens": 1500})
        error = third.json()["error"]
        assert third.status_code == 429 and error["code"] == "queue_full", third.text
        assert "tokens of work" in error["message"] and third.headers["retry-after"] == "3"
    deadline = time.monotonic() + 30
    while work_in_progress(guarded.url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert work_in_progress(guarded.url) == 0
    assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(), timeout=120).status_code == 200


def test_a_body_that_trickles_in_gets_408_and_holds_no_slot(guarded):
    """Slowloris: headers promise 200 bytes, 20 arrive, then nothing. uvicorn has no body-read timeout of its
    own; the limits middleware reads the body within SEE_BODY_TIMEOUT_S (3 s here) or answers 408, before
    admission, so trickling clients cannot fill the queue."""
    host, port = guarded.url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(3):  # more than max_pending_requests=2
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(
                f"POST /generate HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n".encode()
                + b'{"prompt": "Hi", "m'
            )
            slow.append(sock)
        # while they hang, a whole request is admitted
        assert httpx.post(f"{guarded.url}/generate", json=SMALL, headers=auth(), timeout=120).status_code == 200
        started = time.monotonic()
        answer = b""
        while b'"code"' not in answer and (chunk := slow[0].recv(4096)):  # headers and body may come apart
            answer += chunk
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert '"code":"request_timeout"' in answer.replace(" ", "") and time.monotonic() - started < 30
    finally:
        for sock in slow:
            sock.close()
