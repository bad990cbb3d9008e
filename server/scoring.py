"""Read the five score distributions for one finished answer: `generated` or `forced`.

generated: the model wrote a valid block; each score's distribution is read at the position of the digit
  it wrote (the digit logprobs came with the generation at no extra cost).
forced: otherwise, the canonical block is teacher-forced after the stripped answer and each digit is read in
  turn, the previous digits filled with their argmax (what greedy decoding would write). The context is the
  canonical re-rendering (as in masked distillation, docs/method.md §5.2), so the same answer always gets the
  same readout (to the last float digits: the prefix cache may split the context into other chunks); prefix
  caching keeps the five one-token steps cheap, each recomputing its context back to the last full KV block.
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
    """What a forced readout cost the engine: its steps (one engine request each), the context tokens they
    took from the prefix cache or computed, and the time they waited in the engine's queue."""

    steps: int = 0
    cached_tokens: int = 0
    computed_tokens: int = 0
    queued_s: float = 0.0
    wall_s: float = 0.0

    def add(self, step: DigitStep) -> ReadoutCost:
        return replace(
            self,
            steps=self.steps + 1,
            cached_tokens=self.cached_tokens + step.cached_tokens,
            computed_tokens=self.computed_tokens + step.computed_tokens,
            queued_s=self.queued_s + (step.queued_s or 0.0),
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
    for index, attribute in enumerate(ATTRIBUTES):
        step = await engine.next_digit_logprobs(prompt_ids + layout[: positions[index]], f"{request_id}-r{index}")
        cost = cost.add(step)
        try:
            distribution = distribution_from_token_logprobs(step.logprobs, engine.digit_token_ids)
        except ReadoutError as exc:
            failure = f"forced readout of {attribute} failed: {exc}"
            return ForcedReadout(None, failure, positions[index], replace(cost, wall_s=time.perf_counter() - started))
        distributions[attribute] = distribution
        layout[positions[index]] = engine.digit_token_ids[distribution.argmax]
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
