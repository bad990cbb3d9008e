"""The [SELF_EVAL] block: canonical rendering, strict parsing and digit character spans.

Canonical bytes (docs/method.md §1.2): answer, two newlines, `[SELF_EVAL]`, newline, Python-default JSON of
the five scores in fixed order, newline, `[/SELF_EVAL]`, nothing after. Parsing follows §1.5 exactly and
raises `BlockParseError` naming the rule that failed, so callers can count failure kinds. One deliberate
tightening: a score must be written as one digit (the reference parser would accept `-0`), because the
readout needs each score to live at exactly one digit position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from selfeval.rubric import ATTRIBUTES, SCALE_MAX, ScoreError, validate_scores

OPEN_TAG = "[SELF_EVAL]"
CLOSE_TAG = "[/SELF_EVAL]"
ANSWER_SEPARATOR = "\n\n"

_LAYOUT = re.compile(
    r"^(?P<answer>.*?)\s*\[SELF_EVAL\]\s*(?P<json>\{[^{}]*\})\s*\[/SELF_EVAL\]\s*$",
    re.DOTALL | re.IGNORECASE,
)
_OPEN_RE = re.compile(re.escape(OPEN_TAG), re.IGNORECASE)
_CLOSE_RE = re.compile(re.escape(CLOSE_TAG), re.IGNORECASE)


class BlockParseError(ValueError):
    """A policy output that is not a valid answer + self-evaluation block.

    `rule` is one of: tag_count, layout, empty_answer, json, keys, values.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


@dataclass(frozen=True)
class ParsedOutput:
    """A valid output: the stripped answer, the five self-scores and where each digit sits in the text."""

    answer: str
    scores: dict[str, int]
    digit_spans: dict[str, tuple[int, int]]
    block_start: int


def render_block(scores: dict[str, int]) -> str:
    """The canonical block for five scores (validated; keys in canonical order)."""
    ordered = validate_scores(scores)
    return f"{OPEN_TAG}\n{json.dumps(ordered)}\n{CLOSE_TAG}"


def render_output(answer: str, scores: dict[str, int]) -> str:
    """Answer followed by its canonical block, exactly as the few-shot examples and SFT targets show it."""
    return f"{answer}{ANSWER_SEPARATOR}{render_block(scores)}"


def forced_segments() -> list[str]:
    """Text segments for a teacher-forced readout: segment i is followed by the digit of attribute i.

    Joining segment 0, digit 0, segment 1, digit 1, ..., digit 4 and `block_suffix()` reproduces the
    canonical block after an answer.
    """
    segments = []
    for index, attribute in enumerate(ATTRIBUTES):
        lead = f"{ANSWER_SEPARATOR}{OPEN_TAG}\n{{" if index == 0 else ", "
        segments.append(f'{lead}"{attribute}": ')
    return segments


def block_suffix() -> str:
    return f"}}\n{CLOSE_TAG}"


def forced_token_layout(encode, answer: str, digit_token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The tokens a forced readout feeds after the prompt when its five digits are `digit_token_ids`.

    `encode(answer + segment 0)`, digit 0, `encode(segment 1)`, digit 1, ..., digit 4: exactly the context the
    server's forced readout builds step by step, so masked distillation on it trains the readout users get.
    Returns (token ids, index of each digit token in them).
    """
    segments = forced_segments()
    ids = list(encode(answer + segments[0]))
    positions = []
    for index, digit in enumerate(digit_token_ids):
        if index:
            ids.extend(encode(segments[index]))
        positions.append(len(ids))
        ids.append(digit)
    return ids, positions


def parse_output(text: str) -> ParsedOutput:
    """Strictly parse answer + block (docs/method.md §1.5); raise BlockParseError naming the failed rule."""
    if not isinstance(text, str):
        raise BlockParseError("layout", f"output must be a string, got {type(text).__name__}")
    opens, closes = len(_OPEN_RE.findall(text)), len(_CLOSE_RE.findall(text))
    if opens != 1 or closes != 1:
        raise BlockParseError(
            "tag_count", f"need exactly one {OPEN_TAG} and one {CLOSE_TAG}, found {opens} and {closes}"
        )
    match = _LAYOUT.match(text)
    if match is None:
        raise BlockParseError(
            "layout", "expected answer, then [SELF_EVAL], one flat JSON object, [/SELF_EVAL], nothing after"
        )
    answer = match.group("answer").strip()
    if not answer:
        raise BlockParseError("empty_answer", "the answer before [SELF_EVAL] is empty")
    raw_json = match.group("json")
    try:
        pairs = json.loads(raw_json, object_pairs_hook=list)
    except json.JSONDecodeError as exc:
        raise BlockParseError("json", f"block body is not valid JSON ({exc.msg})") from None
    if not isinstance(pairs, list):
        raise BlockParseError("json", "block body must be a JSON object")
    keys = [key for key, _ in pairs]
    if tuple(keys) != ATTRIBUTES:
        raise BlockParseError("keys", f"keys must be exactly {list(ATTRIBUTES)} in this order, got {keys}")
    try:
        scores = validate_scores(dict(pairs), require_order=True)
    except ScoreError as exc:
        raise BlockParseError("values", str(exc)) from None
    json_start = match.start("json")
    spans = _digit_spans(raw_json, json_start)
    return ParsedOutput(answer=answer, scores=scores, digit_spans=spans, block_start=match.end("answer"))


def _digit_spans(raw_json: str, offset: int) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    position = 0
    for attribute in ATTRIBUTES:
        found = re.compile(rf'"{attribute}"\s*:\s*(-?\d+)').search(raw_json, position)
        if found is None or len(found.group(1)) != 1:
            raise BlockParseError("values", f"{attribute} must be written as a single digit 0-{SCALE_MAX}")
        spans[attribute] = (offset + found.start(1), offset + found.end(1))
        position = found.end(1)
    return spans


def answer_before_block(text: str) -> str:
    """The answer part of any output, valid or not: text before the first tag (or a cut-off tag), stripped."""
    found = _OPEN_RE.search(text)
    if found is not None:
        return text[: found.start()].strip()
    return text[: len(text) - partial_tag_suffix_length(text)].strip()


def partial_tag_suffix_length(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of the opening tag (case-insensitive).

    Streaming holds back this many characters, since they could still become `[SELF_EVAL]`.
    """
    upper_tail = text[-(len(OPEN_TAG) - 1) :].upper()
    for length in range(min(len(upper_tail), len(OPEN_TAG) - 1), 0, -1):
        if OPEN_TAG.startswith(upper_tail[-length:]):
            return length
    return 0


class AnswerStream:
    """Turns growing model text into answer deltas that never include the block.

    Everything emitted is a prefix of `answer_before_block(text)` of the text so far, which only grows as text
    is added: leading and trailing whitespace and a suffix that could still become `[SELF_EVAL]` are held
    back, and nothing is emitted once the tag appears. So the concatenated deltas equal the final answer.
    """

    def __init__(self) -> None:
        self._text = ""
        self._emitted = ""
        self.closed = False

    def feed(self, delta: str) -> str:
        if self.closed:
            return ""
        self._text += delta
        answer = answer_before_block(self._text)
        if _OPEN_RE.search(self._text):
            self.closed = True
        if not answer.startswith(self._emitted):  # cannot happen for append-only text; never emit a contradiction
            return ""
        out, self._emitted = answer[len(self._emitted) :], answer
        return out

    @property
    def answer(self) -> str:
        return self._emitted
