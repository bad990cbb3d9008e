"""Split mode: one model writes the answers, the served checkpoint reads their self-evaluation.

The distilled delta's layers run for every token, so a checkpoint trained to read scores also writes different
answers than the model it was built from (experiments/hs2-distill: none of 12 greedy answers identical). In
split mode (`SEE_ANSWER_MODEL` or `SEE_ANSWER_ENGINE_URL`) the answers come from the answer engine (e.g. the
untrained base) exactly as it alone would write them, and every score is the served checkpoint's forced readout
of that answer, the same readout `/v1/score` gives. The price: the readout engine holds none of the answer's
KV cache, so its first readout step computes the whole prompt and answer
(`see_readout_context_tokens_total{kind="computed"}` shows it).

`SplitEngine` is an `Engine` like the others, so the service does not know which mode it runs in.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from server.engine import DigitReader, Engine, Generation, SamplingSpec, SchedulerObserver, StreamDelta

# a text whose tokens differ between unrelated tokenizers: the two models must tokenise it identically
TOKENIZER_PROBE = "The capital of France is Paris. Ça coûte 12,50 € — 東京 🙂 [SELF_EVAL] helpfulness: 7\n"

EngineFactory = Callable[[], Awaitable[Engine]]


class TokenizerMismatchError(RuntimeError):
    """The answer model tokenises text differently from the served checkpoint: its token ids mean nothing there."""


class SplitEngine:
    """Answers (text and tokens) from `answers`, every readout step from `readout`; the tokenizer, card digits
    and identity are the readout's (the served checkpoint's)."""

    def __init__(self, answers: Engine, readout: Engine) -> None:
        check_same_tokenizer(answers, readout)
        self.answers = answers
        self.readout = readout
        self.model_dir: Path = readout.model_dir
        self.digit_token_ids = readout.digit_token_ids
        self.max_model_len = min(answers.max_model_len, readout.max_model_len)
        self.kv_cache_tokens = min(answers.kv_cache_tokens, readout.kv_cache_tokens)
        self.longest_token_chars = readout.longest_token_chars
        self.control_strings = readout.control_strings

    def encode(self, text: str) -> list[int]:
        return self.readout.encode(text)

    def encode_literal(self, text: str) -> list[int]:
        return self.readout.encode_literal(text)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.readout.apply_chat_template(messages)

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> Generation:
        # the answer model's digit log-probabilities are not the served checkpoint's: never read them, so a
        # block the answer model writes itself is re-read by the readout engine (a forced readout)
        return await self.answers.generate(prompt_ids, replace(spec, read_digits=False), request_id)

    async def stream(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> AsyncIterator[StreamDelta]:
        deltas = self.answers.stream(prompt_ids, replace(spec, read_digits=False), request_id)
        try:
            async for delta in deltas:
                yield delta
        finally:
            await deltas.aclose()

    def digit_reader(self, request_id: str) -> contextlib.AbstractAsyncContextManager[DigitReader]:
        return self.readout.digit_reader(request_id)

    def is_dead(self) -> bool:
        return self.answers.is_dead() or self.readout.is_dead()

    def shutdown(self) -> None:
        try:
            self.answers.shutdown()
        finally:
            self.readout.shutdown()


def check_same_tokenizer(answers: Engine, readout: Engine) -> None:
    """Refuse an answer model whose token ids would mean something else to the readout (TokenizerMismatchError)."""
    if answers.encode(TOKENIZER_PROBE) != readout.encode(TOKENIZER_PROBE) or set(answers.control_strings) != set(
        readout.control_strings
    ):
        raise TokenizerMismatchError(
            f"the answer model ({answers.model_dir.name}) does not tokenise text like the served checkpoint "
            f"({readout.model_dir.name}); split mode needs both to share one tokenizer (e.g. the checkpoint's "
            "base model)"
        )


async def build_split_engine(
    readout: EngineFactory, answers: Callable[[SchedulerObserver | None], Awaitable[Engine]], observe: SchedulerObserver
) -> SplitEngine:
    """Start the readout engine, then the answer engine (which feeds the queue metrics: answers are where
    requests wait); a failure of either stops whatever already started."""
    readout_engine = await readout()
    try:
        answer_engine = await answers(observe)
    except BaseException:
        readout_engine.shutdown()
        raise
    try:
        return SplitEngine(answer_engine, readout_engine)
    except BaseException:
        with contextlib.suppress(Exception):
            answer_engine.shutdown()
        readout_engine.shutdown()
        raise
