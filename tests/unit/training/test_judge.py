"""The judge client against the rule-based judge on real loopback HTTP: retries, exhaustion, cache, strictness."""

import asyncio
import time

import pytest

from selfeval.judge import (
    JudgeClient,
    JudgeExhaustedError,
    JudgeFormatError,
    JudgeSettings,
    Reference,
    judge_messages,
    parse_judge_reply,
)
from training.testing.rule_judge import RULE_JUDGE_MODEL, rule_scores, running_rule_judge, split_judge_prompt

CONVERSATION = [{"role": "user", "content": "Give two tips for keeping houseplants alive."}]
ANSWER = "Water them only when the soil is dry, and give them bright indirect light."
REFERENCES = [
    Reference("Water weekly.", {"helpfulness": 4, "correctness": 6, "coherence": 8, "complexity": 2, "verbosity": 2})
]


def settings(url: str, tmp_path, **overrides) -> JudgeSettings:
    values = dict(
        base_url=url,
        model=RULE_JUDGE_MODEL,
        api_key_env="",
        max_attempts=4,
        backoff_base_s=0.0,
        backoff_max_s=0.0,
        timeout_s=1.0,
        concurrency=4,
        cache_path=str(tmp_path / "cache.jsonl"),
    )
    return JudgeSettings(**{**values, **overrides})


def test_reply_must_be_pure_json_with_the_five_int_keys():
    good = '{"helpfulness": 7, "correctness": 6, "coherence": 8, "complexity": 3, "verbosity": 2}'
    assert parse_judge_reply(good)["coherence"] == 8
    for bad in (
        f"```json\n{good}\n```",
        "Scores: " + good,
        good.replace("7", "7.0"),
        good.replace("2}", "12}"),
        good.replace('"verbosity": 2', '"verbosity": true'),
        '{"helpfulness": 7}',
    ):
        with pytest.raises(JudgeFormatError):
            parse_judge_reply(bad)


def test_judge_prompt_carries_references_and_the_answer():
    system, user = judge_messages(CONVERSATION, ANSWER + "  \n", REFERENCES)
    assert system["role"] == "system" and "0 to 9" in system["content"]
    assert user["content"].startswith("[User]\nGive two tips")
    assert (
        "--- Reference Response 1 ---\nWater weekly.\nHuman-Annotated Scores on resized 0-9 scale: " in user["content"]
    )
    assert f"[AI Assistant's Response to Evaluate]\n{ANSWER}\n\nRate the response" in user["content"]
    reference_free = judge_messages(CONVERSATION, ANSWER, None)[1]["content"]
    assert "Reference Response" not in reference_free
    assert split_judge_prompt(user["content"]) == (CONVERSATION[0]["content"], ANSWER)


def test_retries_through_500_invalid_json_and_timeouts_then_caches(tmp_path):
    with running_rule_judge(script=["500", "invalid", "hang"]) as (url, state):
        client = JudgeClient(settings(url, tmp_path))
        result = asyncio.run(client.judge(CONVERSATION, ANSWER, REFERENCES))
        assert result.attempts == 4 and not result.cached
        assert result.scores == rule_scores(CONVERSATION[0]["content"], ANSWER)
        assert client.counters.api_failures == 2 and client.counters.format_failures == 1
        assert state.requests == 4
        rerun = JudgeClient(settings(url, tmp_path))  # a resumed run: new client, same cache file
        assert asyncio.run(rerun.judge(CONVERSATION, ANSWER, REFERENCES)).cached
        assert state.requests == 4 and rerun.counters.cache_hits == 1


def test_exhaustion_is_a_typed_error_and_nothing_is_cached(tmp_path):
    with running_rule_judge(script=["500", "invalid"]) as (url, state):
        client = JudgeClient(settings(url, tmp_path, max_attempts=2))
        with pytest.raises(JudgeExhaustedError) as failure:
            asyncio.run(client.judge(CONVERSATION, ANSWER, REFERENCES))
        assert failure.value.attempts == 2 and "not pure JSON" in failure.value.last_error
        assert client.counters.exhausted == 1 and len(client.cache) == 0


def test_streaming_replies_and_request_parameters(tmp_path):
    with running_rule_judge() as (url, _):
        client = JudgeClient(
            settings(url, tmp_path, stream=True, temperature=None, token_limit_param="max_completion_tokens")
        )
        body = client.request_body([{"role": "user", "content": "x"}])
        assert "temperature" not in body and body["max_completion_tokens"] == 128 and body["stream"] is True
        assert asyncio.run(client.judge(CONVERSATION, ANSWER, None)).scores


def test_backoff_grows_and_is_capped(tmp_path):
    slept = []

    async def record(seconds):
        slept.append(seconds)

    with running_rule_judge(script=["500"] * 5) as (url, _):
        client = JudgeClient(
            settings(url, tmp_path, max_attempts=6, backoff_base_s=1.0, backoff_max_s=4.0), sleep=record
        )
        asyncio.run(client.judge(CONVERSATION, ANSWER, None))
    assert len(slept) == 5
    for attempt, seconds in enumerate(slept, start=1):
        ceiling = min(2 ** (attempt - 1), 4.0)
        assert ceiling * 0.5 <= seconds <= ceiling


def test_torn_cache_line_is_ignored(tmp_path):
    from selfeval.judge import JudgeCache

    cache = JudgeCache(tmp_path / "c.jsonl")
    cache.put("k", {"helpfulness": 1, "correctness": 2, "coherence": 3, "complexity": 4, "verbosity": 5})
    with open(tmp_path / "c.jsonl", "a") as handle:
        handle.write('{"key": "torn", "sco')
    reopened = JudgeCache(tmp_path / "c.jsonl")
    assert len(reopened) == 1
    reopened.put("k2", {"helpfulness": 1, "correctness": 2, "coherence": 3, "complexity": 4, "verbosity": 5})
    assert len(JudgeCache(tmp_path / "c.jsonl")) == 2


def test_pairwise_reply_is_strict():
    from selfeval.judge import parse_pairwise_reply

    assert parse_pairwise_reply(' {"winner": "tie"} ') == "tie"
    for bad in ('{"winner": "C"}', '{"winner": "A", "why": "x"}', "A", '```json\n{"winner": "A"}\n```'):
        with pytest.raises(JudgeFormatError):
            parse_pairwise_reply(bad)


def test_pairwise_verdicts_over_http_follow_the_rules_in_both_orders_and_are_cached(tmp_path):
    from training.testing.rule_judge import STRICT_RULE_JUDGE_MODEL, rule_verdict, split_pairwise_prompt

    good = "Water houseplants when the soil is dry and keep them in bright indirect light; tips that work."
    bad = "plants plants plants plants"
    assert rule_verdict(CONVERSATION[0]["content"], good, bad) == "A"
    from selfeval.judge import pairwise_messages

    user = pairwise_messages(CONVERSATION, good, bad)[1]["content"]
    assert split_pairwise_prompt(user) == (CONVERSATION[0]["content"], good, bad)
    with running_rule_judge() as (url, state):
        client = JudgeClient(settings(url, tmp_path))

        async def both():
            return await client.compare(CONVERSATION, good, bad), await client.compare(CONVERSATION, bad, good)

        assert asyncio.run(both()) == ("A", "B")
        assert state.requests == 2
        rerun = JudgeClient(settings(url, tmp_path))
        assert asyncio.run(rerun.compare(CONVERSATION, good, bad)) == "A"
        assert state.requests == 2 and rerun.counters.cache_hits == 1
    with running_rule_judge(model=STRICT_RULE_JUDGE_MODEL) as (url, _):
        strict = JudgeClient(settings(url, tmp_path, model=STRICT_RULE_JUDGE_MODEL, cache_path=None))
        cut_off = "Water them only when the soil is dry, and give them bright indirect"
        scores = asyncio.run(strict.judge(CONVERSATION, cut_off, None)).scores
        lenient = rule_scores(CONVERSATION[0]["content"], cut_off)
        assert scores["helpfulness"] == max(0, lenient["helpfulness"] - 2)


def test_a_verdict_written_by_another_process_is_a_hit_without_reopening(tmp_path):
    from selfeval.judge import JudgeCache

    scores = {"helpfulness": 1, "correctness": 2, "coherence": 3, "complexity": 4, "verbosity": 5}
    mine, theirs = JudgeCache(tmp_path / "c.jsonl"), JudgeCache(tmp_path / "c.jsonl")  # two ranks, one file
    assert mine.get("k") is None
    theirs.put("k", scores)
    assert mine.get("k") == scores
    with open(tmp_path / "c.jsonl", "a") as handle:  # a line another process is still writing
        handle.write('{"key": "half", "scores": {"helpfulness": 1')
    assert mine.get("half") is None
    with open(tmp_path / "c.jsonl", "a") as handle:
        handle.write(', "correctness": 2, "coherence": 3, "complexity": 4, "verbosity": 5}}\n')
    assert mine.get("half") == scores  # read once it is complete, not lost for having been seen half-written


class HostileJudge:
    """A judge endpoint on loopback that misbehaves: `trickle` (a byte a second, never done), `hang` (headers,
    then nothing), `huge` (megabytes of JSON) or `garbage` (200 with a body that is no chat completion)."""

    def __init__(self, mode: str) -> None:
        import http.server
        import threading

        mode_of_server = mode

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                try:
                    if mode_of_server == "trickle":
                        for _ in range(60):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.5)
                    elif mode_of_server == "hang":
                        time.sleep(30)
                    elif mode_of_server == "huge":
                        self.wfile.write(b'{"choices": [{"message": {"content": "' + b"9" * 3_000_000 + b'"}}]}')
                    else:
                        self.wfile.write(b"<html>I am a teapot</html>")
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["trickle", "hang", "huge", "garbage"])
def test_a_hostile_judge_costs_at_most_the_timeout_per_attempt_and_ends_in_a_typed_error(tmp_path, mode):
    judge = HostileJudge(mode)
    try:
        client = JudgeClient(settings(judge.url, tmp_path, timeout_s=2.0, max_attempts=2, cache_path=None))
        started = time.monotonic()
        with pytest.raises(JudgeExhaustedError) as caught:
            asyncio.run(client.judge(CONVERSATION, ANSWER, None))
        elapsed = time.monotonic() - started
        asyncio.run(client.aclose())
    finally:
        judge.close()
    assert elapsed < 2 * 2.0 + 2, f"{mode}: {elapsed:.1f} s for two attempts of at most 2 s"
    assert client.counters.api_failures == 2
    expected = {"trickle": "did not answer within", "hang": "did not answer within", "huge": "larger than",
                "garbage": "not a chat completion"}[mode]  # fmt: skip
    assert expected in str(caught.value)
