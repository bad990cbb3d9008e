"""Wire models of the HTTP API. Field descriptions end up in the OpenAPI document.

`SelfEvaluation` is the one shape every endpoint uses for scores: where the readout came from, the 0-9
distribution of each attribute with its summaries, and the predicted quality. When no readout is possible
it says so (`source = "unavailable"` and a `reason`) instead of carrying invented numbers.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from selfeval.rubric import ATTRIBUTES, SCALE_MAX

ReadoutSource = Literal["generated", "forced", "unavailable"]
SEED_MAX = 2**63 - 1  # vLLM seeds a 64-bit generator; a larger seed is the caller's mistake, not an engine error


def _valid_unicode(value: str) -> str:
    """JSON may carry lone UTF-16 surrogates ("\\ud800") that no tokenizer or UTF-8 encoder accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"holds a lone UTF-16 surrogate at character {exc.start}; send valid Unicode (pair the surrogates)"
        ) from None
    return value


Text = Annotated[StrictStr, AfterValidator(_valid_unicode)]
Thresholds = dict[Text, float | int | Text]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Text


class GenerateRequest(BaseModel):
    # the schema says what the validator enforces: exactly one of messages / prompt (null is never a value)
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["messages"]}, {"required": ["prompt"]}]}
    )

    messages: list[ChatMessage] | SkipJsonSchema[None] = Field(
        None, description="The conversation; give this or `prompt`"
    )
    prompt: Text | SkipJsonSchema[None] = Field(None, description="Shorthand for a single user message")
    max_tokens: int | None = Field(None, ge=1, description="Answer budget in tokens (default: server setting)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 = greedy (default: server setting)")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Sampling seed for reproducible answers")
    stop: Text | list[Text] | None = Field(None, description="Up to 8 stop strings (not returned)")
    score: bool = Field(True, description="false skips the self-evaluation readout (benchmarks, warm-ups)")
    decision_thresholds: Thresholds | None = Field(
        None, description="Per-request overrides of the decision policy thresholds"
    )

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 8 or any(not s for s in stops):
            raise ValueError("stop takes at most 8 non-empty strings")
        return self

    def conversation(self) -> list[dict[str, str]]:
        if self.prompt is not None:
            return [{"role": "user", "content": self.prompt}]
        return [m.model_dump() for m in self.messages or []]

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class AttributeScore(BaseModel):
    expected: float = Field(description="Expected score, sum_k k * p_k")
    argmax: int = Field(description="Most likely score")
    probs: list[float] = Field(description=f"P(score = k) for k = 0..{SCALE_MAX}, renormalised over the digits")
    std: float = Field(description="Standard deviation of the distribution")
    entropy: float = Field(description="Entropy in nats (0 = certain, ln 10 = uniform)")
    label_mass: float = Field(description="Probability the model put on any digit before renormalising")
    emitted: int | None = Field(description="The digit the model wrote (generated readout), else null")


class CalibratedEvaluation(BaseModel):
    version: str = Field(description="The calibration map's version (see_calibration.json beside the model card)")
    method: str = Field(description="temperature or vector scaling of the digit log-probabilities")
    scores: dict[str, AttributeScore]
    predicted_quality: float


class SelfEvaluation(BaseModel):
    source: ReadoutSource = Field(
        description="generated: read at the digits the model wrote; forced: teacher-forced canonical block "
        "after the answer; unavailable: no readout possible (see reason)"
    )
    scale_max: int = SCALE_MAX
    scores: dict[str, AttributeScore] | None
    predicted_quality: float | None = Field(description="Mean expected helpfulness/correctness/coherence / 9")
    reason: str | None = Field(None, description="Why the readout is forced or unavailable")
    calibrated: CalibratedEvaluation | None = Field(
        None,
        description="The same scores after the served calibration map; null when none is loaded. "
        "`scores` above are always the model's raw distributions",
    )
    flags: list[str] = Field(
        default_factory=list,
        description="What the request tried that could steer its own scores: history_block_removed (blocks in "
        "assistant turns were removed before reading), block_text_in_request, template_control_text (read as "
        "plain text). The policy's flagged_action applies when any is set",
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    readout_tokens: int = Field(0, description="Tokens the engine processed for a forced readout")


class GenerateResponse(BaseModel):
    id: str
    model: str
    answer: str = Field(description="The answer, never containing the [SELF_EVAL] block")
    finish_reason: str | None
    self_evaluation: SelfEvaluation | None
    decision: dict | None = Field(None, description="accept / review / escalate with reasons (null when score=false)")
    usage: Usage


JudgeScores = create_model(
    "JudgeScores",
    __config__=ConfigDict(extra="forbid"),
    **{a: (StrictInt, Field(ge=0, le=SCALE_MAX, description=f"The judge's {a} score")) for a in ATTRIBUTES},
)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Text = Field(min_length=1, max_length=200, description="The `id` of a /generate, chat or score response")
    choice: StrictInt = Field(0, ge=0, le=127, description="Chat choice index (0 for /generate and /v1/score)")
    judge_scores: JudgeScores = Field(description="All five attributes, integers 0-9")  # type: ignore[valid-type]
    judge: Text = Field(min_length=1, max_length=200, description="Who judged: a model name, 'human', ...")
    outcome: Text | None = Field(None, max_length=200, description="Optional free-form outcome label")


class FeedbackResponse(BaseModel):
    id: str
    choice: int
    judge: str
    status: Literal["created", "duplicate"] = Field(
        description="created: stored now; duplicate: the same verdict was already stored (nothing changed)"
    )
    absolute_error: dict[str, float] = Field(
        description="|expected self-score - judge score| per attribute, from the response's raw scores"
    )
