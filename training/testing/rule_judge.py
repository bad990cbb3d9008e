"""A deterministic rule-based judge behind the OpenAI chat API, for CPU runs, tests and benchmarks.

It is NOT a quality judge: it scores the answer in the judge prompt with fixed text rules (coverage of the
user's words, length, repetition, word length), so that training and evaluation can run end to end over real
HTTP without a paid API, and give the same scores every time. It speaks the same wire format as any judge
(`POST /v1/chat/completions`, plain JSON or SSE), and can inject latency and faults for tests and benchmarks:
`script` is a list of behaviours ("500", "invalid", "hang", "ok") used by the first requests, in order.
`rule-based-judge-v1-strict` is a second judge with different rules (cut-off answers and short ones score lower),
so that cross-judge checks have two judges that disagree on something. Pairwise judge messages
(`selfeval.judge.pairwise_messages`) get the answer with the higher rule quality.
`GET /stats` reports how many requests it served and how often each judge prompt came back (to prove that a
resumed run never pays twice for one call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from selfeval.judge import (
    PAIR_HEADER_A,
    PAIR_HEADER_B,
    PAIRWISE_INSTRUCTION,
    RATE_INSTRUCTION,
    RESPONSE_HEADER,
    cache_key,
)
from selfeval.rubric import ATTRIBUTES, SCALE_MAX, quality_of

RULE_JUDGE_MODEL = "rule-based-judge-v1"
STRICT_RULE_JUDGE_MODEL = "rule-based-judge-v1-strict"  # a second, different judge for cross-judge checks
RULE_JUDGES = (RULE_JUDGE_MODEL, STRICT_RULE_JUDGE_MODEL)
_FINISHED = (".", "!", "?", '"', "'", ")", "`", "*")
_WORD = re.compile(r"[A-Za-z0-9']+")


def _clamp(value: float) -> int:
    return max(0, min(SCALE_MAX, round(value)))


def rule_scores(user_request: str, answer: str) -> dict[str, int]:
    """The five scores the rule-based judge gives `answer` to `user_request` (pure, deterministic)."""
    words = _WORD.findall(answer.lower())
    if not words:
        return dict.fromkeys(ATTRIBUTES, 0)
    asked = {w for w in _WORD.findall(user_request.lower()) if len(w) > 3}
    coverage = len(asked & set(words)) / len(asked) if asked else 0.5
    repetition = 1 - len(set(words)) / len(words)
    length_credit = min(len(words), 80) / 40  # 0-2
    mean_word = sum(map(len, words)) / len(words)
    verbosity = 1 + sum(len(words) > limit for limit in (10, 30, 60, 120, 250, 500))
    helpfulness = _clamp(2 + 4 * coverage + length_credit - 4 * max(0.0, repetition - 0.5))
    return {
        "helpfulness": helpfulness,
        "correctness": _clamp(helpfulness - 1 + 2 * coverage),
        "coherence": _clamp(8 - 8 * max(0.0, repetition - 0.4)),
        "complexity": _clamp(mean_word - 2.5),
        "verbosity": _clamp(verbosity),
    }


def strict_rule_scores(user_request: str, answer: str) -> dict[str, int]:
    """The strict variant: the v1 scores, with helpfulness and correctness 2 lower for an answer that stops
    mid-sentence (cut off by its token budget) and complexity 1 lower for answers under 40 words."""
    scores = rule_scores(user_request, answer)
    if not answer.rstrip().endswith(_FINISHED):
        scores["helpfulness"] = _clamp(scores["helpfulness"] - 2)
        scores["correctness"] = _clamp(scores["correctness"] - 2)
    if len(_WORD.findall(answer)) < 40:
        scores["complexity"] = _clamp(scores["complexity"] - 1)
    return scores


_SCORERS = {RULE_JUDGE_MODEL: rule_scores, STRICT_RULE_JUDGE_MODEL: strict_rule_scores}


def rule_verdict(user_request: str, answer_a: str, answer_b: str, scorer=rule_scores) -> str:
    """Who wins ("A", "B" or "tie"): the answer with the higher rule-based quality."""
    quality_a = quality_of(scorer(user_request, answer_a))
    quality_b = quality_of(scorer(user_request, answer_b))
    return "tie" if quality_a == quality_b else ("A" if quality_a > quality_b else "B")


def _last_user_turn(head: str) -> str:
    turns = re.findall(
        r"\[User\]\n(.*?)(?=\n\n\[(?:User|Assistant|System)\]\n|\n\nBelow are reference|\n\n\[Response A\]|\Z)",
        head,
        re.S,
    )
    return turns[-1] if turns else head


def split_judge_prompt(user_message: str) -> tuple[str, str]:
    """(last user request, answer) out of a judge user message built by `selfeval.judge.judge_messages`."""
    head, _, tail = user_message.rpartition(f"{RESPONSE_HEADER}\n")
    return _last_user_turn(head), tail.removesuffix(f"\n\n{RATE_INSTRUCTION}")


def split_pairwise_prompt(user_message: str) -> tuple[str, str, str]:
    """(last user request, answer A, answer B) out of a message built by `selfeval.judge.pairwise_messages`."""
    head, _, rest = user_message.partition(f"\n\n{PAIR_HEADER_A}\n")
    answer_a, _, tail = rest.partition(f"\n\n{PAIR_HEADER_B}\n")
    return _last_user_turn(head), answer_a, tail.removesuffix(f"\n\n{PAIRWISE_INSTRUCTION}")


def rule_reply(user_message: str, model: str = RULE_JUDGE_MODEL) -> str:
    """The judge's JSON reply to a scoring or a pairwise judge message."""
    scorer = _SCORERS[model]
    if user_message.endswith(PAIRWISE_INSTRUCTION):
        return json.dumps({"winner": rule_verdict(*split_pairwise_prompt(user_message), scorer=scorer)})
    return json.dumps(scorer(*split_judge_prompt(user_message)))


class RuleJudgeState:
    def __init__(self, script: Sequence[str] = (), latency_s: float = 0.0) -> None:
        self.script = list(script)
        self.latency_s = latency_s
        self.requests = 0
        self.per_prompt: Counter[str] = Counter()
        self.lock = threading.Lock()

    def next_behaviour(self) -> str:
        with self.lock:
            self.requests += 1
            return self.script.pop(0) if self.script else "ok"

    def stats(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "distinct_prompts": len(self.per_prompt),
                "repeated_prompts": sum(1 for count in self.per_prompt.values() if count > 1),
                "max_repeats": max(self.per_prompt.values(), default=0),
            }


def create_app(script: Sequence[str] = (), latency_s: float = 0.0, model: str = RULE_JUDGE_MODEL) -> FastAPI:
    if model not in _SCORERS:
        raise ValueError(f"unknown rule-based judge {model!r}; choose one of {list(RULE_JUDGES)}")
    app = FastAPI(title="SEE rule-based judge")
    state = app.state.judge = RuleJudgeState(script, latency_s)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "see-sidecar"}]}

    @app.get("/stats")
    async def stats() -> dict:
        return state.stats()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        behaviour = state.next_behaviour()
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour == "500":
            return JSONResponse({"error": {"message": "injected failure", "type": "server_error"}}, status_code=500)
        messages = body.get("messages") or []
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        with state.lock:
            state.per_prompt[cache_key(str(body.get("model")), messages)] += 1
        content = "Scores: not JSON" if behaviour == "invalid" else rule_reply(user, model)
        created = int(time.time())
        if body.get("stream"):

            def events() -> Iterator[str]:
                chunk = {"object": "chat.completion.chunk", "created": created, "model": model}
                yield f"data: {json.dumps(chunk | {'choices': [{'index': 0, 'delta': {'content': content}}]})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {
            "id": f"judge-{state.requests}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }

    return app


@contextlib.contextmanager
def running_rule_judge(
    port: int = 0,
    script: Sequence[str] = (),
    latency_s: float = 0.0,
    host: str = "127.0.0.1",
    model: str = RULE_JUDGE_MODEL,
):
    """Serve the rule-based judge on loopback in a background thread; yields (base_url, state)."""
    import uvicorn

    app = create_app(script, latency_s, model)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the rule-based judge did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1", app.state.judge
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():  # a request still held (the `hang` script) keeps a graceful shutdown waiting forever
            server.force_exit = True
            thread.join(timeout=10)
