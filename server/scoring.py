"""Read the five score distributions for one finished answer: `generated` or `forced`.

generated: the model wrote a valid block; each score's distribution is read at the position of the digit
  it wrote (the digit logprobs came with the generation at no extra cost).
forced: otherwise, the canonical block is teacher-forced after the stripped answer and each digit is read in
  turn, the previous digits filled with their argmax (what greedy decoding would write). The context is the
  canonical re-rendering (as in masked distillation, docs/method.md §5.2), so the same answer always gets the
  same readout (to the last float digits: the engine may split the context into other chunks). The five steps
  go through the engine's digit reader: the first sends prompt + answer + block up to the first digit (prefix
  caching skips what the engine holds), each later one only the chosen digit and the block text up to the next.
Scores are never invented: if neither works the result says `unavailable` and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from selfeval.block import BlockParseError, answer_before_block, forced_token_layout, parse_output
from selfeval.readout import (
    ReadoutError,
    ScoreDistribution,
    distribution_from_token_logprobs,
    predicted_quality,
)
from selfeval.rubric import ATTRIBUTES
from server.engine import DigitStep, Engine, Generation


@dataclass(frozen=True)
class ReadoutCost:
    """What a forced readout cost the engine: its steps (one engine pass each), the context tokens the engine
    already held or computed, and where the steps' time went (server.engine.StepTimes, summed)."""

    steps: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    to_engine_s: float = 0.0
    in_engine_s: float = 0.0
    back_s: float = 0.0
    wall_s: float = 0.0

    def add(self, step: DigitStep) -> ReadoutCost:
        times = step.times
        return replace(
            self,
            steps=self.steps + 1,
            cached_tokens=self.cached_tokens + step.cached_tokens,
            computed_tokens=self.computed_tokens + step.computed_tokens,
            to_engine_s=self.to_engine_s + (times.to_engine_s if times else 0.0),
            in_engine_s=self.in_engine_s + (times.in_engine_s if times else 0.0),
            back_s=self.back_s + (times.back_s if times else 0.0),
        )


@dataclass(frozen=True)
class ForcedReadout:
    distributions: dict[str, ScoreDistribution] | None
    failure: str | None  # why there are no distributions
    readout_tokens: int  # answer + block tokens fed after the prompt
    cost: ReadoutCost


@dataclass(frozen=True)
class Readout:
    answer: str
    source: str  # generated | forced | unavailable
    distributions: dict[str, ScoreDistribution] | None
    reason: str | None = None
    readout_tokens: int = 0
    flags: tuple[str, ...] = ()  # selfeval.integrity flags of the request this readout answers
    cost: ReadoutCost | None = None  # forced readouts only

    @property
    def predicted_quality(self) -> float | None:
        return predicted_quality(self.distributions) if self.distributions else None


def generated_readout(generation: Generation, digit_token_ids: tuple[int, ...]) -> tuple[str, dict | None, str | None]:
    """(answer, distributions or None, why not) from the model's own block."""
    try:
        parsed = parse_output(generation.text)
    except BlockParseError as exc:
        return answer_before_block(generation.text), None, f"no valid self-evaluation block ({exc.rule})"
    if not generation.digit_logprobs:
        return parsed.answer, None, "the engine returned no digit log-probabilities"
    digit_of = {token: digit for digit, token in enumerate(digit_token_ids)}
    positions = [i for i, token in enumerate(generation.token_ids) if token in digit_of]
    if len(positions) < len(ATTRIBUTES):
        return parsed.answer, None, "the block's digits are not single digit tokens"
    positions = positions[-len(ATTRIBUTES) :]
    written = [digit_of[generation.token_ids[i]] for i in positions]
    if written != [parsed.scores[a] for a in ATTRIBUTES]:
        return parsed.answer, None, "the block's digit tokens do not line up with its text"
    try:
        distributions = {
            attribute: distribution_from_token_logprobs(generation.digit_logprobs[i], digit_token_ids, emitted=digit)
            for attribute, i, digit in zip(ATTRIBUTES, positions, written, strict=True)
        }
    except (ReadoutError, IndexError) as exc:
        return parsed.answer, None, f"digit log-probabilities unusable: {exc}"
    return parsed.answer, distributions, None


async def forced_readout(engine: Engine, prompt_ids: list[int], answer: str, request_id: str) -> ForcedReadout:
    """Teacher-force the canonical block after `answer`, one engine step per digit."""
    # the digits are filled in as they are read; what precedes digit i never depends on the digits after it
    # literal: control strings in an answer (a scored response's, say) are its text, never turn boundaries
    layout, positions = forced_token_layout(
        engine.encode_literal, answer, [engine.digit_token_ids[0]] * len(ATTRIBUTES)
    )
    needed = len(prompt_ids) + len(layout)
    cost = ReadoutCost()
    if needed > engine.max_model_len:
        failure = f"prompt + answer + block need {needed} tokens; the context is {engine.max_model_len}"
        return ForcedReadout(None, failure, 0, cost)
    started = time.perf_counter()
    distributions: dict[str, ScoreDistribution] = {}
    context = prompt_ids + layout
    sent = 0
    async with engine.digit_reader(request_id) as reader:
        for index, attribute in enumerate(ATTRIBUTES):
            digit_at = len(prompt_ids) + positions[index]
            step = await reader.read(context[sent:digit_at])
            sent = digit_at
            cost = cost.add(step)
            try:
                distribution = distribution_from_token_logprobs(step.logprobs, engine.digit_token_ids)
            except ReadoutError as exc:
                failure = f"forced readout of {attribute} failed: {exc}"
                wall = time.perf_counter() - started
                return ForcedReadout(None, failure, positions[index], replace(cost, wall_s=wall))
            distributions[attribute] = distribution
            context[digit_at] = engine.digit_token_ids[distribution.argmax]
    return ForcedReadout(distributions, None, positions[-1], replace(cost, wall_s=time.perf_counter() - started))


async def read_self_evaluation(
    engine: Engine, prompt_ids: list[int], generation: Generation, request_id: str
) -> Readout:
    answer, distributions, why_not = generated_readout(generation, engine.digit_token_ids)
    if distributions is not None:
        return Readout(answer=answer, source="generated", distributions=distributions)
    if not answer:
        return Readout(answer="", source="unavailable", distributions=None, reason="the answer is empty")
    forced = await forced_readout(engine, prompt_ids, answer, request_id)
    if forced.distributions is None:
        reason = f"{why_not}; {forced.failure}"
        return Readout(answer, "unavailable", None, reason, forced.readout_tokens, cost=forced.cost)
    return Readout(answer, "forced", forced.distributions, why_not, forced.readout_tokens, cost=forced.cost)
