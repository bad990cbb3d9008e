"""Read the five score distributions for one finished answer: `generated` or `forced`.

generated: the model wrote a valid block; each score's distribution is read at the position of the digit
  it wrote (the digit logprobs came with the generation at no extra cost).
forced: otherwise, the canonical block is teacher-forced after the stripped answer and each digit is read in
  turn, the previous digits filled with their argmax (what greedy decoding would write). The context is the
  canonical re-rendering (as in masked distillation, see-method.md s.5.2), so the same answer always gets the
  same readout; prefix caching keeps the five one-token steps cheap.
Scores are never invented: if neither works the result says `unavailable` and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfeval.block import BlockParseError, answer_before_block, forced_token_layout, parse_output
from selfeval.readout import (
    ReadoutError,
    ScoreDistribution,
    distribution_from_token_logprobs,
    predicted_quality,
)
from selfeval.rubric import ATTRIBUTES
from server.engine import Engine, Generation


@dataclass(frozen=True)
class Readout:
    answer: str
    source: str  # generated | forced | unavailable
    distributions: dict[str, ScoreDistribution] | None
    reason: str | None = None
    readout_tokens: int = 0
    flags: tuple[str, ...] = ()  # selfeval.integrity flags of the request this readout answers

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


async def forced_readout(
    engine: Engine, prompt_ids: list[int], answer: str, request_id: str
) -> tuple[dict[str, ScoreDistribution] | None, str | None, int]:
    """Teacher-force the canonical block after `answer`.

    Returns (distributions or None, why not, readout tokens = answer + block tokens fed after the prompt).
    """
    # the digits are filled in as they are read; what precedes digit i never depends on the digits after it
    # literal: control strings in an answer (a scored response's, say) are its text, never turn boundaries
    layout, positions = forced_token_layout(
        engine.encode_literal, answer, [engine.digit_token_ids[0]] * len(ATTRIBUTES)
    )
    needed = len(prompt_ids) + len(layout)
    if needed > engine.max_model_len:
        return None, f"prompt + answer + block need {needed} tokens; the context is {engine.max_model_len}", 0
    distributions: dict[str, ScoreDistribution] = {}
    for index, attribute in enumerate(ATTRIBUTES):
        logprobs = await engine.next_digit_logprobs(prompt_ids + layout[: positions[index]], f"{request_id}-r{index}")
        try:
            distribution = distribution_from_token_logprobs(logprobs, engine.digit_token_ids)
        except ReadoutError as exc:
            return None, f"forced readout of {attribute} failed: {exc}", positions[index]
        distributions[attribute] = distribution
        layout[positions[index]] = engine.digit_token_ids[distribution.argmax]
    return distributions, None, positions[-1]


async def read_self_evaluation(
    engine: Engine, prompt_ids: list[int], generation: Generation, request_id: str
) -> Readout:
    answer, distributions, why_not = generated_readout(generation, engine.digit_token_ids)
    if distributions is not None:
        return Readout(answer=answer, source="generated", distributions=distributions)
    if not answer:
        return Readout(answer="", source="unavailable", distributions=None, reason="the answer is empty")
    forced, failure, processed = await forced_readout(engine, prompt_ids, answer, request_id)
    if forced is None:
        return Readout(answer, "unavailable", None, reason=f"{why_not}; {failure}", readout_tokens=processed)
    return Readout(answer, "forced", forced, reason=why_not, readout_tokens=processed)
