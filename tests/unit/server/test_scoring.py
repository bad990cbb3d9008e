"""Readout selection logic on a scripted engine; the same paths run on the real engine in integration."""

import asyncio
import math

from selfeval.block import render_output
from selfeval.rubric import ATTRIBUTES
from server.engine import DigitStep, Generation, RequestPerStepReader
from server.scoring import generated_readout, read_self_evaluation

DIGIT_IDS = tuple(range(1000, 1010))  # outside the code points the fake uses for text
SCORES = {"helpfulness": 7, "correctness": 6, "coherence": 9, "complexity": 2, "verbosity": 3}


def peaked(digit: int) -> dict[int, float]:
    return {token: (math.log(0.91) if d == digit else math.log(0.01)) for d, token in enumerate(DIGIT_IDS)}


class ScriptedEngine:
    """Tokenises one character per token (digits -> DIGIT_IDS) and answers forced steps with a peaked digit."""

    max_model_len = 10_000
    digit_token_ids = DIGIT_IDS

    def __init__(self, forced_digit: int = 4):
        self.forced_digit = forced_digit
        self.contexts: list[list[int]] = []

    def encode(self, text):
        return [DIGIT_IDS[int(c)] if c.isdigit() else ord(c) for c in text]

    encode_literal = encode  # no special tokens in this alphabet

    async def next_digit_logprobs(self, context_ids, request_id):
        self.contexts.append(list(context_ids))
        return DigitStep(peaked(self.forced_digit), len(context_ids), cached_tokens=len(context_ids) // 2)

    def digit_reader(self, request_id):
        return RequestPerStepReader.open(self.next_digit_logprobs, request_id)


def generation_of(text: str, engine: ScriptedEngine) -> Generation:
    ids = engine.encode(text)
    logprobs = [peaked(DIGIT_IDS.index(t)) if t in DIGIT_IDS else peaked(0) for t in ids]
    return Generation(token_ids=ids, text=text, finish_reason="stop", digit_logprobs=logprobs)


def test_a_valid_block_is_read_at_the_digits_the_model_wrote():
    engine = ScriptedEngine()
    text = render_output("Answer with 2 digits 42.", SCORES)
    answer, dists, why_not = generated_readout(generation_of(text, engine), DIGIT_IDS)
    assert why_not is None
    assert answer == "Answer with 2 digits 42."
    assert {a: d.emitted for a, d in dists.items()} == SCORES
    assert {a: d.argmax for a, d in dists.items()} == SCORES


def test_digit_tokens_that_do_not_match_the_text_are_not_trusted():
    engine = ScriptedEngine()
    text = render_output("Fine.", SCORES)
    generation = generation_of(text, engine)
    generation.token_ids[-20] = DIGIT_IDS[0]  # corrupt the token stream so it no longer lines up with the text
    _, dists, why_not = generated_readout(generation, DIGIT_IDS)
    assert dists is None and "line up" in why_not


def test_no_block_falls_back_to_a_forced_readout_of_five_steps():
    engine = ScriptedEngine(forced_digit=4)
    prompt = engine.encode("PROMPT:")
    readout = asyncio.run(read_self_evaluation(engine, prompt, generation_of("Just an answer.", engine), "r"))
    assert readout.source == "forced"
    assert "tag_count" in readout.reason
    assert readout.answer == "Just an answer."
    assert all(d.argmax == 4 and d.emitted is None for d in readout.distributions.values())
    assert len(engine.contexts) == 5
    # the last step sees the canonical block with the earlier argmax digits filled in
    expected_tail = (
        '\n\n[SELF_EVAL]\n{"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 4, "verbosity": '
    )
    assert engine.contexts[-1] == prompt + engine.encode("Just an answer." + expected_tail)
    # its cost is the sum of the five steps' (the scripted engine finds half of each context cached)
    contexts = [len(c) for c in engine.contexts]
    assert readout.cost.steps == 5
    assert readout.cost.cached_tokens == sum(n // 2 for n in contexts)
    assert readout.cost.computed_tokens == sum(n - n // 2 for n in contexts)


def test_a_malformed_block_is_stripped_from_the_answer_and_forced():
    engine = ScriptedEngine()
    text = 'Answer.\n\n[SELF_EVAL]\n{"helpfulness": 8, "correctness": 8}\n[/SELF_EVAL]'
    readout = asyncio.run(read_self_evaluation(engine, [], generation_of(text, engine), "r"))
    assert readout.source == "forced" and readout.answer == "Answer." and "keys" in readout.reason


def test_an_empty_answer_is_unavailable_not_invented():
    engine = ScriptedEngine()
    readout = asyncio.run(read_self_evaluation(engine, [], generation_of("   ", engine), "r"))
    assert readout.source == "unavailable" and readout.distributions is None and readout.predicted_quality is None
    assert engine.contexts == []


def test_a_readout_that_cannot_fit_the_context_is_unavailable():
    engine = ScriptedEngine()
    engine.max_model_len = 40
    readout = asyncio.run(read_self_evaluation(engine, [1] * 30, generation_of("An answer.", engine), "r"))
    assert readout.source == "unavailable" and "context" in readout.reason


def test_every_attribute_is_present_in_order():
    engine = ScriptedEngine()
    readout = asyncio.run(read_self_evaluation(engine, [], generation_of("x", engine), "r"))
    assert tuple(readout.distributions) == ATTRIBUTES
