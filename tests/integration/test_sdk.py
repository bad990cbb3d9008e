"""The see_client SDK against the real sidecar: typed results, streaming, errors, routing, retry while starting."""

from __future__ import annotations

import asyncio

import pytest

from see_client import (
    ATTRIBUTES,
    NO_RETRIES,
    AsyncSeeClient,
    BadRequestError,
    Escalator,
    FallbackEndpoint,
    NotFoundError,
    RetryPolicy,
    SeeClient,
)
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ALWAYS_ACCEPT = {
    "escalate_below_quality": 0,
    "review_below_quality": 0,
    "low_score": 0,
    "escalate_low_score_prob": 1,
    "review_low_score_prob": 1,
    "review_above_entropy": 5,
    "review_below_label_mass": 0,
}
ALWAYS_ESCALATE = {"escalate_below_quality": 1}


@pytest.fixture(scope="module")
def see(server):
    with SeeClient(server.url, retry=NO_RETRIES) as client:
        yield client


def test_generate_score_and_chat_return_typed_results(see):
    generated = see.generate(messages=QUESTION, max_tokens=32, temperature=0)
    assert "Paris" in generated.answer and generated.decision.action in ("accept", "review", "escalate")
    assert tuple(generated.self_evaluation.scores) == ATTRIBUTES

    scored = see.score(QUESTION, "Paris is the capital of France.")
    assert scored.self_evaluation.source == "forced" and scored.usage.readout_tokens > 0
    assert 0 <= scored.self_evaluation.scores["correctness"].probability_at_most(3) <= 1

    chat = see.chat(QUESTION, max_tokens=32, temperature=0)
    assert chat.model == see.served_model() and chat.content == generated.answer
    assert chat.self_evaluation.predicted_quality == pytest.approx(generated.self_evaluation.predicted_quality)


def test_streamed_chat_equals_the_non_streamed_answer(see):
    events = list(see.stream_chat(QUESTION, max_tokens=32, temperature=0))
    final = [event for event in events if event.is_final]
    assert len(final) == 1 and final[0].decision is not None and final[0].self_evaluation.available
    assert "".join(event.text for event in events) == see.chat(QUESTION, max_tokens=32, temperature=0).content


def test_async_client_runs_requests_concurrently(server):
    async def run():
        async with AsyncSeeClient(server.url) as client:
            good, garbage = await asyncio.gather(
                client.score(QUESTION, "Paris is the capital of France."),
                client.score(QUESTION, "banana banana banana"),
            )
            streamed = [event async for event in client.stream_chat(QUESTION, max_tokens=16, temperature=0)]
            return good, garbage, streamed

    good, garbage, streamed = asyncio.run(run())
    assert good.self_evaluation.scores["correctness"].probs != garbage.self_evaluation.scores["correctness"].probs
    assert streamed[-1].is_final


def test_server_errors_arrive_typed_with_the_field_to_fix(see):
    with pytest.raises(BadRequestError) as caught:
        see.chat(QUESTION, max_tokens=0)
    assert caught.value.param == "max_tokens" and caught.value.status_code == 400
    with pytest.raises(NotFoundError) as missing:
        SeeClient(see.base_url, model="no-such-model", retry=NO_RETRIES).chat(QUESTION, max_tokens=4)
    assert missing.value.code == "model_not_found"


def test_escalator_keeps_accepted_answers_and_escalates_the_rest(server, see):
    fallback = FallbackEndpoint(base_url=f"{server.url}/v1", model=see.served_model(), retry=NO_RETRIES)
    router = Escalator(see, fallback)
    kept = router.chat(QUESTION, max_tokens=24, temperature=0, decision_thresholds=ALWAYS_ACCEPT)
    assert kept.action == "accept" and kept.answered_by == "sidecar" and kept.fallback is None
    escalated = router.chat(QUESTION, max_tokens=24, temperature=0, decision_thresholds=ALWAYS_ESCALATE)
    assert escalated.action == "escalate" and escalated.answered_by == "fallback"
    assert escalated.content == escalated.fallback.content and escalated.reasons[0].startswith("predicted quality")
    router.close()


def test_a_client_started_before_the_server_retries_until_it_is_ready(model_dir, tmp_path):
    events = []
    retry = RetryPolicy(max_retries=400, backoff_base_s=0.5, backoff_max_s=1.0, on_retry=events.append)
    with (
        running_server(model_dir, tmp_path, wait_ready=False) as starting,
        SeeClient(starting.url, retry=retry) as client,
    ):
        result = client.generate("Hi", max_tokens=4, temperature=0)
    assert result.self_evaluation is not None
    reasons = {event.reason for event in events}
    assert "ConnectError" in reasons and "503" in reasons, reasons
