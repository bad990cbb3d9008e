"""Split mode's routing on scripted engines (the real engines: tests/integration/test_split_mode.py): answers
from one, every readout step from the other, digits never read from the answer model, either death fatal."""

import asyncio
from pathlib import Path

import pytest

from selfeval.block import render_output
from selfeval.models import BASE_MODEL_NAME
from server.engine import Generation, SamplingSpec, StreamDelta
from server.scoring import read_self_evaluation
from server.settings import Settings
from server.split_engine import SplitEngine, TokenizerMismatchError, build_split_engine
from tests.unit.server.test_scoring import ScriptedEngine, generation_of


class AnsweringEngine(ScriptedEngine):
    """Writes a fixed text (digit log-probabilities when asked, as a real engine would) and records the specs."""

    control_strings = ("<|im_start|>", "<|im_end|>")
    longest_token_chars = 1
    kv_cache_tokens = 50_000

    def __init__(self, name: str, text: str = "An answer.", forced_digit: int = 4, alphabet_shift: int = 0):
        super().__init__(forced_digit)
        self.model_dir = Path(name)
        self.text = text
        self.specs: list[SamplingSpec] = []
        self.dead = False
        self.stopped = False
        self.alphabet_shift = alphabet_shift

    def encode(self, text):
        return [token + self.alphabet_shift for token in super().encode(text)]

    async def generate(self, prompt_ids, spec, request_id):
        self.specs.append(spec)
        generation = generation_of(self.text, self)
        digits = generation.digit_logprobs if spec.read_digits else None
        return Generation(generation.token_ids, generation.text, "stop", digits)

    async def stream(self, prompt_ids, spec, request_id):
        self.specs.append(spec)
        yield StreamDelta(self.text[:3])
        yield StreamDelta(self.text[3:], generation=await self.generate(prompt_ids, spec, request_id))

    def is_dead(self):
        return self.dead

    def shutdown(self):
        self.stopped = True


SPEC = SamplingSpec(max_tokens=16, temperature=0.0, top_p=1.0)


def test_answers_come_from_one_engine_and_every_readout_step_from_the_other():
    # the answer model writes a valid block of its own: its digits must not be read, the checkpoint re-reads
    scores = {"helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1, "verbosity": 1}
    answers = AnsweringEngine("base", text=render_output("An answer.", scores), forced_digit=1)
    readout = AnsweringEngine("checkpoint", forced_digit=7)
    split = SplitEngine(answers, readout)

    generation = asyncio.run(split.generate([1, 2], SPEC, "gen-1"))
    assert answers.specs == [SamplingSpec(max_tokens=16, temperature=0.0, top_p=1.0, read_digits=False)]
    assert readout.specs == [] and generation.digit_logprobs is None
    result = asyncio.run(read_self_evaluation(split, [1, 2], generation, "gen-1"))
    assert result.source == "forced" and result.answer == "An answer."
    assert {d.argmax for d in result.distributions.values()} == {7}  # the checkpoint's readout
    assert len(readout.contexts) == 5 and answers.contexts == []


def test_a_stream_is_the_answer_engines_and_never_reads_its_digits():
    answers, readout = AnsweringEngine("base"), AnsweringEngine("checkpoint")

    async def collect():
        return [delta async for delta in SplitEngine(answers, readout).stream([1], SPEC, "chat-1")]

    deltas = asyncio.run(collect())
    assert "".join(d.text for d in deltas) == "An answer." and deltas[-1].generation.digit_logprobs is None
    assert [s.read_digits for s in answers.specs] == [False, False]


def test_an_answer_model_with_another_tokenizer_is_refused():
    with pytest.raises(TokenizerMismatchError, match="share one tokenizer"):
        SplitEngine(AnsweringEngine("other", alphabet_shift=1), AnsweringEngine("checkpoint"))


def test_either_engine_dead_is_a_dead_engine_and_shutdown_stops_both():
    answers, readout = AnsweringEngine("base"), AnsweringEngine("checkpoint")
    split = SplitEngine(answers, readout)
    assert not split.is_dead()
    answers.dead = True
    assert split.is_dead()
    answers.dead, readout.dead = False, True
    assert split.is_dead()
    split.shutdown()
    assert answers.stopped and readout.stopped


def test_a_failed_answer_engine_stops_the_readout_engine_already_started():
    readout = AnsweringEngine("checkpoint")

    async def start_readout():
        return readout

    async def fail(observe):
        raise RuntimeError("answer model failed to load")

    with pytest.raises(RuntimeError, match="failed to load"):
        asyncio.run(build_split_engine(start_readout, fail, lambda snapshot: None))
    assert readout.stopped


def test_split_mode_settings_are_checked_before_anything_starts():
    assert Settings(answer_model=BASE_MODEL_NAME).answer_model.name == BASE_MODEL_NAME
    with pytest.raises(ValueError, match="answer_model directory"):
        Settings(answer_model="no-such-model")
    with pytest.raises(ValueError, match="not both"):
        Settings(answer_model=BASE_MODEL_NAME, answer_engine_url="http://vllm:8000")


def test_see_serve_maps_split_mode_flags_to_the_settings_and_refuses_both(monkeypatch):
    from typer.testing import CliRunner

    import server.__main__
    from seecli.main import app

    seen = []
    monkeypatch.setattr(server.__main__, "serve", lambda settings: seen.append(settings) or 0)
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--answer-model", BASE_MODEL_NAME]).exit_code == 0
    assert seen[-1].answer_model.name == BASE_MODEL_NAME and seen[-1].answer_engine_url is None
    assert runner.invoke(app, ["serve", "--answer-engine-url", "http://vllm-base:8000"]).exit_code == 0
    assert seen[-1].answer_engine_url == "http://vllm-base:8000"
    both = runner.invoke(app, ["serve", "--answer-model", BASE_MODEL_NAME, "--answer-engine-url", "http://v:8000"])
    assert both.exit_code == 2 and "not both" in both.output
    assert len(seen) == 2
