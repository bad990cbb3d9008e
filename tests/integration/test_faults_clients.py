"""Fault injection from the client side on the real server: callers that hang up before their answer.

A non-streamed request whose client is gone must stop generating at once and give its admission slot back,
not write its answer for nobody until SEE_REQUEST_TIMEOUT_S. (Streams: test_openai_api's disconnect test.)
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from selfeval.models import DEFAULT_MODEL_NAME
from tests.integration.test_openai_api import engine_requests, wait_for

pytestmark = pytest.mark.integration

LONG = [{"role": "user", "content": "Write a very long story about a lighthouse keeper and the sea."}]


def in_flight(client: httpx.Client) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(s.value for f in families if f.name == "see_requests_in_flight" for s in f.samples)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/generate", {"messages": LONG, "max_tokens": 1500, "temperature": 0.9}),
        ("/v1/chat/completions", {"model": DEFAULT_MODEL_NAME, "messages": LONG, "max_tokens": 1500, "n": 2}),
    ],
    ids=["generate", "chat-n2"],
)
def test_a_client_that_hangs_up_on_a_non_streamed_request_stops_its_generation(server, client, route, body):
    with httpx.Client(base_url=server.url) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(route, json=body, timeout=httpx.Timeout(60, read=4))
    # 1,500 tokens take minutes here; the engine must let go within seconds of the hang-up
    assert wait_for(lambda: engine_requests(client).get("running") == 0, 8), engine_requests(client)
    assert wait_for(lambda: in_flight(client) == 0, 5), in_flight(client)
    assert client.post("/generate", json={"prompt": "Hi", "max_tokens": 4, "temperature": 0}).status_code == 200


def kv_cache_usage(client: httpx.Client) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(s.value for f in families if f.name == "see_engine_kv_cache_usage_ratio" for s in f.samples)


def test_readouts_finished_or_abandoned_give_their_kv_cache_back(server, client):
    """A forced readout is one streaming-input request that holds its KV blocks between steps (server.engine.
    StreamingDigitReader): finished, it must end the request; abandoned by its client mid-readout, abort it.
    Either way nothing stays in the engine: after a later request the KV cache in use is back to zero."""
    response = " ".join(
        f"Step {i}: the keeper climbs the stairs, trims the wick and watches the sea." for i in range(90)
    )
    body = {"messages": LONG, "response": response}
    assert client.post("/v1/score", json=body).status_code == 200  # finished readouts
    body["response"] = response.replace("keeper", "lighthouse keeper")  # nothing cached: a slow first step
    with httpx.Client(base_url=server.url) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/score", json=body, timeout=httpx.Timeout(60, read=1.0))
    assert wait_for(lambda: in_flight(client) == 0, 15), in_flight(client)
    assert client.post("/generate", json={"prompt": "Hi", "max_tokens": 4, "temperature": 0}).status_code == 200
    assert wait_for(lambda: kv_cache_usage(client) == 0.0, 5), kv_cache_usage(client)
