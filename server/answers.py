"""What the one answer path takes and gives, whatever the wire shape.

`AnswerRequest`: answer a conversation (n choices, sampling, scoring on or off, per-request thresholds).
`PreparedAnswers`: that request validated, tokenised once for its n choices and admitted. `ScoredAnswer`: one
finished choice, its answer, readout, wire self-evaluation and decision, already put in the metrics and the
ledger. `Answers`: the n of them. `ChoiceText`: a streamed piece of one choice's answer (never the block).

`server.service.GenerationService` produces these (`prepare_answers`, then `answers` or its streaming twin
`stream_answers`; `score` for a response someone else wrote); each route only maps them to its wire format.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

from server.engine import SamplingSpec
from server.policy import Decision
from server.protocol import SEED_MAX, SelfEvaluation
from server.scoring import Readout

T = TypeVar("T")
Endpoint = Literal["generate", "chat", "score"]
ID_PREFIX: dict[Endpoint, str] = {"generate": "gen", "chat": "chatcmpl", "score": "score"}


@dataclass(frozen=True)
class AnswerRequest:
    """A conversation to answer, in the terms every shape shares; `messages` are validated by the service."""

    messages: list[dict[str, str]]
    endpoint: Endpoint
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    score: bool = True
    thresholds: dict | None = None

    def seed_for(self, index: int) -> int | None:
        """Choice i samples with seed + i (mod 2^63): n seeded choices differ, and each is reproducible."""
        return None if self.seed is None else (self.seed + index) % (SEED_MAX + 1)


@dataclass(frozen=True)
class PreparedAnswers:
    request: AnswerRequest
    id: str
    prompt_ids: list[int]
    specs: tuple[SamplingSpec, ...]  # one per choice (their seeds differ)
    flags: tuple[str, ...]  # integrity flags of the request, carried by every readout


@dataclass(frozen=True)
class ScoredAnswer:
    index: int
    answer: str
    finish_reason: str | None
    completion_tokens: int
    readout: Readout | None
    self_evaluation: SelfEvaluation | None  # None when scoring was off
    decision: Decision | None  # None when scoring was off

    @property
    def readout_tokens(self) -> int:
        return self.readout.readout_tokens if self.readout is not None else 0

    def wire_decision(self) -> dict | None:
        return self.decision.to_dict() if self.decision is not None else None


@dataclass(frozen=True)
class Answers:
    id: str
    prompt_tokens: int
    choices: list[ScoredAnswer]

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


@dataclass(frozen=True)
class ChoiceText:
    index: int
    text: str


async def all_or_nothing(works: Iterable[Awaitable[T]]) -> list[T]:
    """The n choices of one request succeed together: the first failure cancels the others (no engine time or
    ledger rows spent on a response nobody receives) and is what the caller sees."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
