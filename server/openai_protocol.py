"""Wire models of the OpenAI-compatible endpoints and of `/v1/score`.

Request and response follow OpenAI's Chat Completions schema. SEE extensions are grouped and labelled:
on each choice `self_evaluation` (the same object as `/generate`) and `decision`; on the request the optional
`decision_thresholds` (per-request policy overrides). Unknown request fields are refused with a 400 that
names them, rather than silently ignored.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.protocol import SEED_MAX, ChatMessage, SelfEvaluation, Text, Thresholds


class DecisionOut(BaseModel):
    action: Literal["accept", "review", "escalate"] = Field(description="What an orchestrator should do")
    reasons: list[str] = Field(description="Every rule that fired (or why the answer was accepted)")
    policy: str | None = Field(
        None, description="The certified policy that decided (its guarantee is in reasons); null = the hand-set rules"
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="Deprecated OpenAI name of max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=8, description="Number of choices; every choice is scored")
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Choice i samples with seed + i (mod 2^63)")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = Field(None, description="Accepted for compatibility; not logged")
    # --- SEE extensions ---
    decision_thresholds: Thresholds | None = Field(
        None, description="SEE extension: per-request overrides of the decision policy thresholds"
    )
    score: bool = Field(
        True, description="SEE extension: false skips the readout (self_evaluation and decision are null)"
    )

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 8 or any(not s for s in stops):
            raise ValueError("stop takes at most 8 non-empty strings")
        if self.max_tokens and self.max_completion_tokens and self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree; send only max_completion_tokens")
        return self

    def budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None
    # --- SEE extensions ---
    self_evaluation: SelfEvaluation | None = Field(
        description="SEE extension: predicted judge-score distributions (null only when the request set score=false)"
    )
    decision: DecisionOut | None = Field(
        description="SEE extension: accept / review / escalate with reasons (null only when score=false)"
    )


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "see-sidecar"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation the response answers")
    response: Text = Field(description="Any model's answer to score (teacher-forced readout)")
    model: Text | None = None
    decision_thresholds: Thresholds | None = None


class ScoreUsage(BaseModel):
    prompt_tokens: int
    readout_tokens: int


class ScoreResponse(BaseModel):
    id: str
    object: Literal["see.score"] = "see.score"
    model: str
    self_evaluation: SelfEvaluation
    decision: DecisionOut
    usage: ScoreUsage
