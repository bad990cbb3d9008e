"""Typed results: the sidecar's response objects as pydantic models.

They mirror the server's wire models field for field (a contract test in the sidecar's repository keeps
them in step) and accept unknown fields, so a newer server does not break an older client.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
Action = Literal["accept", "review", "escalate"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AttributeScore(_Open):
    expected: float
    argmax: int
    probs: list[float]
    std: float
    entropy: float
    label_mass: float
    emitted: int | None = None

    def probability_at_most(self, score: int) -> float:
        """P(score <= `score`), e.g. the chance the judge calls this answer low."""
        return sum(self.probs[: score + 1])


class CalibratedEvaluation(_Open):
    """The scores after the server's calibration map (fitted from judge feedback), with the map's version."""

    version: str
    method: str
    scores: dict[str, AttributeScore]
    predicted_quality: float


class SelfEvaluation(_Open):
    source: Literal["generated", "forced", "unavailable"]
    scale_max: int = 9
    scores: dict[str, AttributeScore] | None  # the model's raw distributions
    predicted_quality: float | None
    reason: str | None = None
    calibrated: CalibratedEvaluation | None = None  # set when the server serves a calibration map
    flags: list[str] = []  # what the request tried that could steer its own scores (history blocks, ...)

    @property
    def available(self) -> bool:
        return self.scores is not None

    def expected(self) -> dict[str, float]:
        """The expected score of each attribute ({} when no readout was possible)."""
        return {name: score.expected for name, score in (self.scores or {}).items()}


class Decision(_Open):
    action: Action
    reasons: list[str]
    policy: str | None = None  # the certified policy that decided (its guarantee is in reasons); None = hand-set


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int = 0
    readout_tokens: int = 0


class GenerateResult(_Open):
    """`POST /generate`."""

    id: str
    model: str
    answer: str
    finish_reason: str | None
    self_evaluation: SelfEvaluation | None
    decision: Decision | None = None
    usage: Usage


class ScoreResult(_Open):
    """`POST /v1/score`."""

    id: str
    model: str
    self_evaluation: SelfEvaluation
    decision: Decision
    usage: Usage


class AssistantMessage(_Open):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    # SEE extensions: absent when the endpoint is a plain OpenAI-compatible server (e.g. an escalation target)
    self_evaluation: SelfEvaluation | None = None
    decision: Decision | None = None


class ChatResult(_Open):
    """`POST /v1/chat/completions`; `content`, `self_evaluation` and `decision` are the first choice's."""

    id: str
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None

    @property
    def content(self) -> str:
        return self.choices[0].message.content or ""

    @property
    def self_evaluation(self) -> SelfEvaluation | None:
        return self.choices[0].self_evaluation

    @property
    def decision(self) -> Decision | None:
        return self.choices[0].decision


class StreamEvent(_Open):
    """One streamed piece of a chat choice: text, or (last, per choice) the finish with the scores."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    self_evaluation: SelfEvaluation | None = None
    decision: Decision | None = None
    usage: Usage | None = None

    @property
    def is_final(self) -> bool:
        return self.finish_reason is not None


class FeedbackResult(_Open):
    """`POST /v1/feedback`: `created` (stored now) or `duplicate` (the same verdict was already stored)."""

    id: str
    choice: int
    judge: str
    status: Literal["created", "duplicate"]
    absolute_error: dict[str, float]
