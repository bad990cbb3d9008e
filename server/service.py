"""The generation service: the one answer path, conversation -> prompt -> engine -> scored answers.

Every scored answer, whatever its wire shape, goes through the same steps here: validate and tokenise once
(`prepare_answers`, which also claims the request's work from admission), generate the n choices together and
read each one's self-evaluation (`answers`, or its streaming twin `stream_answers`), then calibrate, decide,
record in the ledger and the metrics. `score` does the same for a response someone else wrote. It also owns
the request-level rules that need the model: the prompt mode from the card, the context budget (prompt +
answer + room for a forced readout must fit), the sampling defaults and streaming without the block. Routes
map its results (server.answers) to their wire formats; it never sees HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from jinja2 import TemplateError
from pydantic import ValidationError

from selfeval.block import AnswerStream, answer_before_block, render_output
from selfeval.calibration import CalibrationMap
from selfeval.card import ModelCard
from selfeval.certified_policy import CertifiedPolicy
from selfeval.integrity import (
    CONTROL_TEXT_IN_REQUEST,
    encode_with_literal_messages,
    remove_history_blocks,
    request_flags,
)
from selfeval.prompts import PromptError, render_prompt, validate_messages
from selfeval.readout import ScoreDistribution, predicted_quality
from selfeval.rubric import ATTRIBUTES, SCALE_MAX
from server.answers import (
    ID_PREFIX,
    AnswerRequest,
    Answers,
    ChoiceText,
    PreparedAnswers,
    ScoredAnswer,
    all_or_nothing,
)
from server.calibration.feedback_loop import FeedbackLoop
from server.engine import Engine, Generation, SamplingSpec, new_request_id
from server.errors import (
    EngineDeadError,
    EngineError,
    InvalidRequestError,
    RequestTimeoutError,
    ServiceError,
    describe_validation_errors,
)
from server.metrics import ServiceMetrics
from server.policy import Decision, PolicyThresholds, decide, decide_certified
from server.protocol import AttributeScore, CalibratedEvaluation, SelfEvaluation
from server.scoring import Readout, forced_readout, read_self_evaluation
from server.settings import Settings

log = logging.getLogger(__name__)
WARMUP_TIMEOUT_S = 600.0
Claim = Callable[[int], None]  # takes a request's tokens of work from the admission budget (server.work)


def no_claim(tokens: int) -> None:
    """Work outside admission (the warm-up, tests of the service alone)."""


class Prepared(NamedTuple):
    """A validated request ready for the engine: prompt ids, sampling spec, integrity flags."""

    prompt_ids: list[int]
    spec: SamplingSpec
    flags: list[str]


class GenerationService:
    def __init__(
        self,
        engine: Engine,
        card: ModelCard,
        settings: Settings,
        metrics: ServiceMetrics,
        model_name: str,
        *,
        calibration: CalibrationMap | None = None,
        certified_policy: CertifiedPolicy | None = None,
        feedback_loop: FeedbackLoop | None = None,
    ):
        self.engine = engine
        self.card = card
        self.settings = settings
        self.metrics = metrics
        self.model_name = model_name
        self.calibration = calibration
        self.certified_policy = certified_policy
        self.feedback_loop = feedback_loop
        # Room kept free after the answer so a forced readout of the full block always fits.
        widest_block = render_output("", {a: SCALE_MAX for a in ATTRIBUTES})
        self.readout_reserve = len(engine.encode(widest_block)) + 4

    def prompt_ids(self, conversation: list[dict[str, str]], literal_controls: bool = False) -> list[int]:
        """The prompt's token ids; with `literal_controls`, messages holding control strings read as text."""

        def render(messages: list[dict[str, str]]) -> str:
            return render_prompt(messages, self.card.prompt_mode, self.engine.apply_chat_template)

        try:
            if not literal_controls:
                return self.engine.encode(render(conversation))
            return encode_with_literal_messages(
                conversation, render, self.engine.encode, self.engine.encode_literal, self.engine.control_strings
            )
        except PromptError as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        except TemplateError as exc:  # the model's chat template refused this conversation (raise_exception)
            raise InvalidRequestError(
                f"the model's chat template refused this conversation: {exc}", param="messages", code="chat_template"
            ) from None

    def work(self, prepared: Prepared, n: int = 1) -> int:
        """Engine room a request may take: its prompt once (prefix caching shares it), then per choice the
        answer budget and the readout room."""
        return len(prepared.prompt_ids) + n * (prepared.spec.max_tokens + self.readout_reserve)

    def refuse_certainly_too_long(self, conversation: list[dict[str, str]], answer_chars: int = 0) -> None:
        """400 before tokenising when the text alone cannot fit: C characters are at least
        C / longest_token_chars tokens, so a megabyte of prompt is refused without a megabyte of tokenising."""
        chars = sum(len(message["content"]) for message in conversation)
        at_least = -(-(chars + answer_chars) // self.engine.longest_token_chars)
        limit = self.engine.max_model_len - self.readout_reserve
        if self.settings.max_prompt_tokens is not None and not answer_chars:
            limit = min(limit, self.settings.max_prompt_tokens)
        if at_least > limit:
            raise InvalidRequestError(
                f"the request holds {chars + answer_chars} characters, at least {at_least} tokens; this server "
                f"accepts at most {limit} (the model's context less the self-evaluation, or SEE_MAX_PROMPT_TOKENS). "
                "Shorten the conversation.",
                param="messages",
                code="prompt_too_long",
            )

    def answer_budget(self, prompt_tokens: int, requested: int | None) -> int:
        limit = self.settings.max_prompt_tokens
        if limit is not None and prompt_tokens > limit:
            raise InvalidRequestError(
                f"the prompt is {prompt_tokens} tokens; this server accepts at most {limit} (SEE_MAX_PROMPT_TOKENS). "
                "Shorten the conversation.",
                param="messages",
                code="prompt_too_long",
            )
        cap = self.settings.max_answer_tokens
        if requested is not None and requested > cap:
            raise InvalidRequestError(
                f"max_tokens={requested} is above this server's cap of {cap} (SEE_MAX_ANSWER_TOKENS)",
                param="max_tokens",
                code="max_tokens_too_large",
            )
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
            return min(self.settings.default_max_tokens, cap, room)
        if requested > room:
            raise InvalidRequestError(
                f"max_tokens={requested} does not fit: the prompt is {prompt_tokens} tokens and the context "
                f"{context} ({self.readout_reserve} kept for the self-evaluation), so max_tokens can be at most {room}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested

    def conversation_and_flags(self, messages: object, other_texts: tuple[str, ...] = ()) -> tuple[list, list[str]]:
        """The validated conversation with history blocks removed, and the request's integrity flags."""
        try:
            conversation, removed = remove_history_blocks(validate_messages(messages))
        except PromptError as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        if not conversation:
            raise InvalidRequestError(
                "nothing is left once the [SELF_EVAL] blocks are removed from the assistant turns", param="messages"
            )
        if removed and conversation[-1]["role"] == "assistant":  # a forged final turn: nothing for the model to do
            raise InvalidRequestError(
                "the conversation ends with an assistant turn that carried a [SELF_EVAL] block; end it with the "
                "turn to answer (blocks in history are removed: this server never returns one)",
                param="messages",
            )
        return conversation, request_flags(conversation, other_texts, self.engine.control_strings, removed)

    async def prepare(
        self,
        messages: object,
        *,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        seed: int | None,
        stop: list[str],
        read_digits: bool = True,
        other_texts: tuple[str, ...] = (),
        answer_chars: int = 0,
    ) -> Prepared:
        """Validate a conversation and build its prompt ids, sampling spec and flags (raises InvalidRequestError).

        Tokenising runs on a worker thread: a megabyte of prompt must not stall every stream and /health; one
        that certainly cannot fit is refused before it is tokenised at all."""
        conversation, flags = self.conversation_and_flags(messages, other_texts)
        self.refuse_certainly_too_long(conversation, answer_chars)
        literal = CONTROL_TEXT_IN_REQUEST in flags
        prompt_ids = await asyncio.to_thread(self.prompt_ids, conversation, literal)
        spec = SamplingSpec(
            max_tokens=self.answer_budget(len(prompt_ids), max_tokens),
            temperature=self.settings.default_temperature if temperature is None else temperature,
            top_p=self.settings.default_top_p if top_p is None else top_p,
            seed=seed,
            stop=tuple(stop),
            read_digits=read_digits,
        )
        return Prepared(prompt_ids, spec, flags)

    async def prepare_answers(self, request: AnswerRequest, claim: Claim = no_claim) -> PreparedAnswers:
        """Validate and tokenise a request once for its n choices and claim its work from admission; every
        refusal (a 4xx) happens here, before any engine work or any streamed byte."""
        self.thresholds(request.thresholds)
        base = await self.prepare(
            request.messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=None,
            stop=list(request.stop),
            read_digits=request.score,
        )
        claim(self.work(base, request.n))
        specs = tuple(replace(base.spec, seed=request.seed_for(i)) for i in range(request.n))
        request_id = new_request_id(ID_PREFIX[request.endpoint])
        return PreparedAnswers(request, request_id, base.prompt_ids, specs, tuple(base.flags))

    async def answers(
        self, prepared: PreparedAnswers, *, record: bool = True, timeout_s: float | None = None
    ) -> Answers:
        """The n scored answers. They succeed or fail together, and only a full set is decided and recorded:
        no ledger rows for a response nobody receives. The n records wait together, not one after another."""
        generated = await all_or_nothing(
            self._complete(prepared, index, record_metrics=record, timeout_s=timeout_s)
            for index in range(len(prepared.specs))
        )
        choices = await asyncio.gather(
            *(self._finish(prepared, index, *result, record=record) for index, result in enumerate(generated))
        )
        return Answers(prepared.id, len(prepared.prompt_ids), list(choices))

    async def stream_answers(self, prepared: PreparedAnswers) -> AsyncIterator[ChoiceText | ScoredAnswer]:
        """The streaming twin of `answers`: each choice's text as it comes (never the block), then that
        choice's ScoredAnswer, already decided and recorded. The first failing choice cancels the others and
        its error is raised here; closing the iterator (a client gone) cancels every choice's engine work."""
        queue: asyncio.Queue[ChoiceText | ScoredAnswer | Exception | None] = asyncio.Queue()

        async def run_choice(index: int) -> None:
            async for item in self._stream_choice(prepared, index):
                if isinstance(item, str):
                    await queue.put(ChoiceText(index, item))
                else:
                    await queue.put(await self._finish(prepared, index, *item, record=True))

        async def run_all() -> None:
            try:
                await all_or_nothing(run_choice(index) for index in range(len(prepared.specs)))
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)
            finally:
                await queue.put(None)

        producer = asyncio.create_task(run_all())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            producer.cancel()  # the consumer is gone (or done): stop generating
            await asyncio.gather(producer, return_exceptions=True)

    async def score(
        self, messages: list[dict[str, str]], response: str, thresholds: dict | None, claim: Claim = no_claim
    ) -> Answers:
        """Teacher-forced readout of any model's `response` to the conversation, decided and recorded."""
        self.thresholds(thresholds)  # a bad override is refused before any work
        answer = answer_before_block(response)
        if not answer:
            raise InvalidRequestError("response is empty; give the answer text to score", param="response")
        prepared = await self.prepare(
            messages,
            max_tokens=None,
            temperature=None,
            top_p=None,
            seed=None,
            stop=[],
            other_texts=(response,),
            answer_chars=len(answer),
        )
        prompt_ids = prepared.prompt_ids
        # the answer's tokens are not known before the readout encodes it; its characters bound them well
        # enough for admission (a token is a character or more, bar rare multi-token characters)
        claim(len(prompt_ids) + len(answer) + self.readout_reserve)
        request_id = new_request_id(ID_PREFIX["score"])
        async with self._engine_errors(request_id), asyncio.timeout(self.settings.request_timeout_s):
            forced = await forced_readout(self.engine, prompt_ids, answer, request_id)
        if forced.distributions is None:
            raise InvalidRequestError(
                f"cannot score this response: {forced.failure}", param="response", code="context_length_exceeded"
            )
        readout = Readout(
            answer,
            "forced",
            forced.distributions,
            reason="teacher-forced on the given response",
            readout_tokens=forced.readout_tokens,
            flags=tuple(prepared.flags),
            cost=forced.cost,
        )
        self.metrics.observe_readout(readout.source, readout.distributions, readout.cost)
        decision = self.decide(readout, thresholds)
        await self.record(request_id, 0, "score", messages, readout.answer, readout, decision)
        scored = ScoredAnswer(0, readout.answer, None, 0, readout, self.wire(readout), decision)
        return Answers(request_id, len(prompt_ids), [scored])

    async def _complete(
        self, prepared: PreparedAnswers, index: int, *, record_metrics: bool, timeout_s: float | None
    ) -> tuple[Generation, Readout | None]:
        """Generate one choice and read its self-evaluation (when scoring), carrying the request's flags."""
        request_id, spec, prompt_ids = f"{prepared.id}-{index}", prepared.specs[index], prepared.prompt_ids
        async with self._engine_errors(request_id), asyncio.timeout(timeout_s or self.settings.request_timeout_s):
            generation = await self.engine.generate(prompt_ids, spec, request_id)
            readout = await self._read(prompt_ids, generation, request_id, prepared.flags) if spec.read_digits else None
        if record_metrics:
            self._record(len(prompt_ids), generation, readout)
        return generation, readout

    async def _stream_choice(
        self, prepared: PreparedAnswers, index: int
    ) -> AsyncIterator[str | tuple[Generation, Readout | None]]:
        """Yield answer text deltas (never the block), then one (generation, readout) tuple."""
        request_id, spec, prompt_ids = f"{prepared.id}-{index}", prepared.specs[index], prepared.prompt_ids
        answer_stream = AnswerStream()
        started = time.monotonic()
        deadline = started + self.settings.request_timeout_s
        deltas = aiter(self.engine.stream(prompt_ids, spec, request_id))
        generation = None
        first_text = True
        try:
            while generation is None:
                # the deadline bounds each engine await; a yield never sits inside a timeout scope
                delta = await asyncio.wait_for(anext(deltas), max(0.0, deadline - time.monotonic()))
                if delta.text and first_text:
                    self.metrics.time_to_first_token.labels(self.model_name).observe(time.monotonic() - started)
                    first_text = False
                if piece := answer_stream.feed(delta.text):
                    yield piece
                generation = delta.generation
            readout = None
            if spec.read_digits:
                remaining = max(0.0, deadline - time.monotonic())
                reading = self._read(prompt_ids, generation, request_id, prepared.flags)
                readout = await asyncio.wait_for(reading, remaining)
        except TimeoutError:
            raise self._timed_out(request_id) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._engine_failure(request_id, exc) from None
        finally:
            await deltas.aclose()
        self._record(len(prompt_ids), generation, readout)
        yield generation, readout

    async def _finish(
        self, prepared: PreparedAnswers, index: int, generation: Generation, readout: Readout | None, *, record: bool
    ) -> ScoredAnswer:
        """One generated choice, scored: wire self-evaluation, decision, ledger record (unless `record` is off:
        the warm-up is nobody's answer)."""
        request = prepared.request
        answer = answer_text(generation, readout)
        evaluation = decision = None
        if request.score and readout is not None:
            evaluation = self.wire(readout)
            decision = self.decide(readout, request.thresholds, count=record)
        if record:
            await self.record(prepared.id, index, request.endpoint, request.messages, answer, readout, decision)
        return ScoredAnswer(
            index, answer, generation.finish_reason, len(generation.token_ids), readout, evaluation, decision
        )

    def thresholds(self, overrides: dict | None) -> PolicyThresholds:
        """Settings' thresholds with per-request overrides applied; a bad override is a 400, and so is one
        that loosens the operator's policy unless SEE_ALLOW_LOOSER_THRESHOLDS is on."""
        try:
            merged = self.settings.policy.merged(overrides)
        except ValidationError as exc:
            message, param = describe_validation_errors(list(exc.errors()))
            raise InvalidRequestError(f"decision_thresholds: {message}", param=f"decision_thresholds.{param}") from None
        if not self.settings.allow_looser_thresholds and (looser := self.settings.policy.loosened_by(merged)):
            name, why = looser[0]
            raise InvalidRequestError(
                f"decision_thresholds.{name} {why}: per-request thresholds may only tighten this server's policy "
                "(the operator can allow loosening with SEE_ALLOW_LOOSER_THRESHOLDS=true)",
                param=f"decision_thresholds.{name}",
                code="threshold_loosens_policy",
            )
        return merged

    def calibrated(self, readout: Readout | None) -> dict[str, ScoreDistribution] | None:
        if self.calibration is None or readout is None or readout.distributions is None:
            return None
        return self.calibration.apply(readout.distributions)

    def decide(self, readout: Readout | None, overrides: dict | None, *, count: bool = True) -> Decision:
        """The policy on the calibrated scores when a map is loaded (and allowed), else on the raw ones: the
        certified policy when one is loaded (per-request thresholds add to it, or replace it where the operator
        lets them loosen the policy), else the hand-set rules."""
        raw = readout.distributions if readout else None
        calibrated = self.calibrated(readout)
        distributions = calibrated if self.settings.decide_on_calibrated and calibrated is not None else raw
        flags = readout.flags if readout else ()
        thresholds = self.thresholds(overrides)
        if self.certified_policy is None or (overrides and self.settings.allow_looser_thresholds):
            decision = decide(distributions, thresholds, flags)
        else:  # on the scores it was fitted on: raw, or those of the map it names (checked at start)
            certified_on = calibrated if self.certified_policy.calibration_version is not None else raw
            decision = decide_certified(certified_on, self.certified_policy, thresholds, flags, bool(overrides))
        if count:
            self.metrics.decisions.labels(self.model_name, decision.action).inc()
        return decision

    def wire(self, readout: Readout) -> SelfEvaluation:
        """The wire form of a readout: raw scores, plus calibrated ones when a calibration map is loaded."""
        evaluation = to_wire(readout)
        if (calibrated := self.calibrated(readout)) is not None and self.calibration is not None:
            evaluation.calibrated = CalibratedEvaluation(
                version=self.calibration.version,
                method=self.calibration.method,
                scores={a: AttributeScore(**calibrated[a].to_dict()) for a in ATTRIBUTES},
                predicted_quality=predicted_quality(calibrated),
            )
        return evaluation

    async def record(
        self,
        response_id: str,
        choice: int,
        endpoint: str,
        conversation: list[dict[str, str]],
        answer: str,
        readout: Readout | None,
        decision: Decision | None,
    ) -> None:
        """Put a scored response in the ledger (and maybe in front of the shadow judge); unscored ones are skipped."""
        if self.feedback_loop is None or readout is None:
            return
        await self.feedback_loop.record(
            response_id=response_id,
            choice=choice,
            endpoint=endpoint,
            conversation=conversation,
            answer=answer,
            source=readout.source,
            distributions=readout.distributions,
            predicted_quality=readout.predicted_quality,
            decision=decision.action if decision is not None else None,
            calibration_version=self.calibration.version if self.calibration is not None else None,
        )

    @contextlib.asynccontextmanager
    async def _engine_errors(self, request_id: str) -> AsyncIterator[None]:
        """Engine work's failures as service errors: over time 504, a dead engine 503, anything else 500.
        The engine is the one dependency that can fail in ways we cannot validate away."""
        try:
            yield
        except TimeoutError:
            raise self._timed_out(request_id) from None
        except (asyncio.CancelledError, ServiceError):
            raise
        except Exception as exc:
            raise self._engine_failure(request_id, exc) from None

    def _engine_failure(self, request_id: str, exc: Exception) -> EngineError | EngineDeadError:
        """A dead engine is a 503 (the replica is exiting; retry elsewhere); any other failure a 500."""
        if self.engine.is_dead():
            log.error("request %s failed: the engine is dead (%s)", request_id, type(exc).__name__)
            return EngineDeadError(
                "the inference engine of this replica died; it is restarting, retry the request",
                code="engine_dead",
            )
        log.exception("engine failure on %s", request_id)
        return EngineError(f"generation failed ({type(exc).__name__}); the request was not completed")

    def _timed_out(self, request_id: str) -> RequestTimeoutError:
        log.warning("request %s exceeded %.0f s and was aborted", request_id, self.settings.request_timeout_s)
        return RequestTimeoutError(
            f"the request took longer than {self.settings.request_timeout_s:g} s and was aborted; "
            "ask for fewer tokens or raise SEE_REQUEST_TIMEOUT_S"
        )

    async def _read(
        self, prompt_ids: list[int], generation: Generation, request_id: str, flags: Sequence[str]
    ) -> Readout:
        readout = await read_self_evaluation(self.engine, prompt_ids, generation, request_id)
        return replace(readout, flags=tuple(flags))

    def _record(self, prompt_tokens: int, generation: Generation, readout: Readout | None) -> None:
        if self.settings.log_text:  # off by default: prompts and answers can hold personal data
            log.info("answer (%d prompt tokens): %r", prompt_tokens, generation.text)
        self.metrics.observe_tokens(prompt_tokens, len(generation.token_ids))
        if readout is not None:
            self.metrics.observe_readout(readout.source, readout.distributions, readout.cost)

    async def warmup(self) -> None:
        """One short request through every code path, so the first real request is not the slow one.

        Not bound by the client request timeout: on a busy host the first pass can take longer than a small
        SEE_REQUEST_TIMEOUT_S, and that must not stop the server from loading. Nothing of it is recorded."""
        warm = AnswerRequest([{"role": "user", "content": "Say hello."}], "generate", max_tokens=8, temperature=0.0)
        await self.answers(await self.prepare_answers(warm), record=False, timeout_s=WARMUP_TIMEOUT_S)


def answer_text(generation: Generation, readout: Readout | None) -> str:
    """The answer without the block: the readout's split when there is one, else cut before the open tag."""
    return readout.answer if readout is not None else answer_before_block(generation.text)


def to_wire(readout: Readout) -> SelfEvaluation:
    scores = None
    if readout.distributions is not None:
        scores = {a: AttributeScore(**readout.distributions[a].to_dict()) for a in ATTRIBUTES}
    return SelfEvaluation(
        source=readout.source,
        scores=scores,
        predicted_quality=readout.predicted_quality,
        reason=readout.reason,
        flags=list(readout.flags),
    )
