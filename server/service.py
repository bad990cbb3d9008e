"""The generation service: conversation -> prompt -> engine -> answer + self-evaluation.

Owns the request-level rules that need the model: the prompt mode from the card, the context budget
(prompt + answer + room for a forced readout must fit), the sampling defaults, and recording metrics.
Routes call it; it never sees HTTP.
"""

from __future__ import annotations

import logging

from selfeval.block import answer_before_block, render_output
from selfeval.card import ModelCard
from selfeval.prompts import PromptError, build_chat_messages, build_see_base_prompt, validate_messages
from selfeval.rubric import ATTRIBUTES, SCALE_MAX
from server.engine import Engine, SamplingSpec, new_request_id
from server.errors import EngineError, InvalidRequestError
from server.metrics import ServiceMetrics
from server.protocol import AttributeScore, GenerateRequest, GenerateResponse, SelfEvaluation, Usage
from server.scoring import Readout, read_self_evaluation
from server.settings import Settings

log = logging.getLogger(__name__)


class GenerationService:
    def __init__(self, engine: Engine, card: ModelCard, settings: Settings, metrics: ServiceMetrics, model_name: str):
        self.engine = engine
        self.card = card
        self.settings = settings
        self.metrics = metrics
        self.model_name = model_name
        # Room kept free after the answer so a forced readout of the full block always fits.
        widest_block = render_output("", {a: SCALE_MAX for a in ATTRIBUTES})
        self.readout_reserve = len(engine.encode(widest_block)) + 4

    def prompt_ids(self, conversation: list[dict[str, str]]) -> list[int]:
        try:
            if self.card.prompt_mode == "see-base":
                text = build_see_base_prompt(conversation)
            else:
                text = self.engine.apply_chat_template(build_chat_messages(conversation))
        except PromptError as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        return self.engine.encode(text)

    def answer_budget(self, prompt_tokens: int, requested: int | None) -> int:
        context = self.engine.max_model_len
        room = context - prompt_tokens - self.readout_reserve
        if room < 1:
            raise InvalidRequestError(
                f"the prompt is {prompt_tokens} tokens; this model's context is {context} tokens, of which "
                f"{self.readout_reserve} are kept for the self-evaluation. Shorten the conversation.",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is None:
            return min(self.settings.default_max_tokens, room)
        if requested > room:
            raise InvalidRequestError(
                f"max_tokens={requested} does not fit: the prompt is {prompt_tokens} tokens and the context "
                f"{context} ({self.readout_reserve} kept for the self-evaluation), so max_tokens can be at most {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested

    async def generate(self, request: GenerateRequest, *, record_metrics: bool = True) -> GenerateResponse:
        try:
            conversation = validate_messages(request.conversation())
        except PromptError as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        prompt_ids = self.prompt_ids(conversation)
        spec = SamplingSpec(
            max_tokens=self.answer_budget(len(prompt_ids), request.max_tokens),
            temperature=self.settings.default_temperature if request.temperature is None else request.temperature,
            top_p=self.settings.default_top_p if request.top_p is None else request.top_p,
            seed=request.seed,
            stop=tuple(request.stop_list()),
            read_digits=request.score,
        )
        request_id = new_request_id()
        try:
            generation = await self.engine.generate(prompt_ids, spec, request_id)
            readout = (
                await read_self_evaluation(self.engine, prompt_ids, generation, request_id) if request.score else None
            )
        except Exception as exc:  # the engine is the one dependency that can fail in ways we cannot validate away
            log.exception("engine failure on %s", request_id)
            raise EngineError(f"generation failed ({type(exc).__name__}); the request was not completed") from None
        if record_metrics:
            self.metrics.observe_tokens(len(prompt_ids), len(generation.token_ids))
            if readout is not None:
                self.metrics.observe_readout(readout.source, readout.distributions)
        answer = readout.answer if readout is not None else answer_before_block(generation.text)
        return GenerateResponse(
            id=request_id,
            model=self.model_name,
            answer=answer,
            finish_reason=generation.finish_reason,
            self_evaluation=to_wire(readout) if readout is not None else None,
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=len(generation.token_ids),
                total_tokens=len(prompt_ids) + len(generation.token_ids),
                readout_tokens=readout.readout_tokens if readout is not None else 0,
            ),
        )

    async def warmup(self) -> None:
        """One short request through every code path, so the first real request is not the slow one."""
        await self.generate(GenerateRequest(prompt="Say hello.", max_tokens=8, temperature=0.0), record_metrics=False)


def to_wire(readout: Readout) -> SelfEvaluation:
    scores = None
    if readout.distributions is not None:
        scores = {a: AttributeScore(**readout.distributions[a].to_dict()) for a in ATTRIBUTES}
    return SelfEvaluation(
        source=readout.source, scores=scores, predicted_quality=readout.predicted_quality, reason=readout.reason
    )
