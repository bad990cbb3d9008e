"""The narrow engine interface the service talks to, and its vLLM `AsyncLLM` adapter (CPU and GPU).

The service only needs two calls: generate an answer from prompt token ids (optionally with the log-
probabilities of the ten digit tokens at every position), and a digit reader for a forced readout: each of its
steps appends tokens to a context and reads the digit log-probabilities of the next position. Plus `is_dead`,
whether the engine can never serve again. Keeping it this small leaves room for a second adapter, e.g. a remote
vLLM server over HTTP, without touching the service.

On the in-process engine a readout is one vLLM streaming-input request: each step's tokens continue the request,
whose KV cache stays put, so a step computes only its own tokens. Engines that cannot continue a request
(`RequestPerStepReader`) send the whole context each step and let prefix caching skip the full KV blocks it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from selfeval.block import CLOSE_TAG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSpec:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    stop: Sequence[str] = ()
    read_digits: bool = True


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str | None
    digit_logprobs: list[dict[int, float]] | None = None  # one mapping per generated token


@dataclass
class StreamDelta:
    text: str
    generation: Generation | None = None  # set on the last delta only


@dataclass(frozen=True)
class StepTimes:
    """Where one readout step's time went, from vLLM's request stats (one clock for both processes)."""

    to_engine_s: float  # sent here -> queued in the EngineCore, which takes new input between passes only
    in_engine_s: float  # queued -> its token computed: the queue, then the pass that computed it
    back_s: float  # computed -> returned here


@dataclass(frozen=True)
class DigitStep:
    """One forced-readout step: the digit log-probabilities after a context, and what the step cost."""

    logprobs: dict[int, float]
    context_tokens: int
    cached_tokens: int  # already held (prefix cache, or the request's own KV); this step computed the rest
    times: StepTimes | None = None  # None where the engine does not report them

    @property
    def computed_tokens(self) -> int:
        return self.context_tokens - self.cached_tokens


class DigitReader(Protocol):
    """The steps of one forced readout: `read` appends `tokens` to the context (the first call: the whole context)
    and returns the digit log-probabilities of the position after it."""

    async def read(self, tokens: list[int]) -> DigitStep: ...


class RequestPerStepReader:
    """A `DigitReader` for engines that cannot continue a request: every step is a new one-token request with the
    whole context, `{request_id}-r{step}`; prefix caching skips the full KV blocks the engine still holds."""

    def __init__(self, next_digit_logprobs: Callable[[list[int], str], Awaitable[DigitStep]], request_id: str):
        self._next = next_digit_logprobs
        self._request_id = request_id
        self._context: list[int] = []
        self._steps = 0

    async def read(self, tokens: list[int]) -> DigitStep:
        self._context = self._context + list(tokens)
        step = await self._next(self._context, f"{self._request_id}-r{self._steps}")
        self._steps += 1
        return step

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, next_digit_logprobs, request_id: str) -> AsyncIterator[RequestPerStepReader]:
        yield cls(next_digit_logprobs, request_id)


@dataclass(frozen=True)
class SchedulerSnapshot:
    """The engine scheduler's state after a step: what the queue-depth and prefix-cache metrics show."""

    waiting: int
    running: int
    kv_cache_usage: float  # fraction of the KV cache in use, 0-1
    prefix_cache_queried_tokens: int = 0  # prompt tokens looked up in the prefix cache during the step
    prefix_cache_hit_tokens: int = 0  # of which found there


SchedulerObserver = Callable[[SchedulerSnapshot], None]


def text_with_tag(text: str, stop_reason: object) -> str:
    """The output text with the closing tag that stopped it (vLLM leaves stop strings out unless asked)."""
    if stop_reason == CLOSE_TAG and not text.endswith(CLOSE_TAG):
        return text + CLOSE_TAG
    return text


class Engine(Protocol):
    model_dir: Path
    max_model_len: int
    digit_token_ids: tuple[int, ...]
    kv_cache_tokens: int  # tokens the engine's KV cache holds
    longest_token_chars: int  # no token stands for more characters: a text of C chars is >= C / this tokens

    control_strings: tuple[str, ...]  # the tokenizer's special-token strings (<|im_start|>, ...)

    def encode(self, text: str) -> list[int]: ...
    def encode_literal(self, text: str) -> list[int]: ...
    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...
    async def generate(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> Generation: ...
    def stream(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> AsyncIterator[StreamDelta]: ...
    def digit_reader(self, request_id: str) -> contextlib.AbstractAsyncContextManager[DigitReader]: ...
    def is_dead(self) -> bool: ...
    def shutdown(self) -> None: ...


# Prefix caching reuses whole KV blocks only: each forced-readout step recomputes the context past the last
# full block. vLLM's CPU default (128) makes that ~90 tokens a step; the CPU kernels take multiples of 32.
CPU_KV_BLOCK_SIZE = 32


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _configure_cpu_environment(kv_cache_gib: float, threads_bind: str) -> None:
    """vLLM-on-CPU settings (ENVIRONMENT.md); values the operator already exported win."""
    cores = os.cpu_count() or 1
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}" if threads_bind == "auto" else threads_bind)
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class LocalTokenizer:
    """The tokenizer side every engine adapter shares: prompts are rendered and tokenised in this process with
    the checkpoint's own tokenizer, whether the engine runs here or behind HTTP."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        # a vocabulary entry's string is at least as long as the text it decodes to (byte-level BPE writes a
        # byte a character, SentencePiece a byte as <0xNN>), so this bounds the characters per token from above
        self.longest_token_chars = max(len(token) for token in tokenizer.get_vocab())
        self.control_strings = tuple(
            token.content for token in tokenizer.added_tokens_decoder.values() if token.special and token.content
        )

    def encode(self, text: str) -> list[int]:
        """Template text: special-token strings in it become the special tokens."""
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode_literal(self, text: str) -> list[int]:
        """Caller text: special-token strings in it are tokenised as the characters they are."""
        return list(self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class VllmEngine(LocalTokenizer):
    """`Engine` on an in-process vLLM AsyncLLM. Build it with `VllmEngine.create` (blocking, ~20 s on CPU)."""

    def __init__(
        self, llm, tokenizer, model_dir: Path, digit_token_ids: tuple[int, ...], readout_requests: str = "one"
    ) -> None:
        super().__init__(tokenizer)
        self.readout_requests = readout_requests  # Settings.readout_requests
        self._llm = llm
        self.model_dir = model_dir
        self.digit_token_ids = digit_token_ids
        self.max_model_len = int(llm.model_config.max_model_len)
        cache = llm.vllm_config.cache_config
        self.kv_cache_tokens = int(cache.num_gpu_blocks or 0) * int(cache.block_size) or self.max_model_len

    @classmethod
    def create(
        cls,
        settings,
        model_dir: Path,
        digit_token_ids: tuple[int, ...],
        observe_scheduler: SchedulerObserver | None = None,
    ) -> VllmEngine:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        on_cpu = settings.device == "cpu" or (settings.device == "auto" and not _has_cuda())
        if on_cpu:
            _configure_cpu_environment(settings.cpu_kv_cache_gib, settings.cpu_threads_bind)
            if settings.kv_block_size and settings.kv_block_size % 32:
                raise ValueError(
                    f"SEE_KV_BLOCK_SIZE={settings.kv_block_size}: vLLM's CPU attention takes KV blocks of a multiple "
                    f"of 32 tokens; use {CPU_KV_BLOCK_SIZE} (the CPU default) or another multiple of 32"
                )
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=("float32" if on_cpu else "auto") if settings.dtype == "auto" else settings.dtype,
            enforce_eager=on_cpu if settings.enforce_eager is None else settings.enforce_eager,
            enable_prefix_caching=settings.enable_prefix_caching,
            block_size=settings.kv_block_size or (CPU_KV_BLOCK_SIZE if on_cpu else None),
            max_model_len=settings.max_model_len or _default_context(model_dir),
            tensor_parallel_size=1 if on_cpu else settings.tensor_parallel_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            disable_log_stats=True,
        )
        log.info("starting vLLM on %s: %s", "CPU" if on_cpu else "GPU", model_dir)
        stat_loggers = [_scheduler_stat_logger(observe_scheduler)] if observe_scheduler else None
        llm = AsyncLLM.from_engine_args(args, stat_loggers=stat_loggers)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return cls(llm, tokenizer, model_dir, digit_token_ids, settings.readout_requests)

    def _params(self, spec: SamplingSpec, output_kind: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # vLLM holds back the last len(longest stop string) - 1 characters of a stream unless stop strings
        # are kept in the output; for the 12-character closing tag that delays the first token by ~4 tokens.
        # So without caller stop strings the tag is kept (and the block is never streamed: AnswerStream cuts
        # at the opening tag); with them, vLLM strips stops as OpenAI specifies and `text_with_tag` puts the
        # closing tag back so the block can be parsed.
        return SamplingParams(
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=spec.seed,
            stop=[*spec.stop, CLOSE_TAG],
            include_stop_str_in_output=not spec.stop,
            logprob_token_ids=list(self.digit_token_ids) if spec.read_digits else None,
            output_kind=getattr(RequestOutputKind, output_kind),
        )

    def _digit_logprobs(self, positions) -> list[dict[int, float]]:
        wanted = set(self.digit_token_ids)
        return [
            {token: entry.logprob for token, entry in position.items() if token in wanted} for position in positions
        ]

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> Generation:
        final = None
        params = self._params(spec, "FINAL_ONLY")
        async for output in self._llm.generate({"prompt_token_ids": prompt_ids}, params, request_id=request_id):
            final = output
        completion = final.outputs[0]
        return Generation(
            token_ids=list(completion.token_ids),
            text=text_with_tag(completion.text, completion.stop_reason),
            finish_reason=completion.finish_reason,
            digit_logprobs=self._digit_logprobs(completion.logprobs)
            if spec.read_digits and completion.logprobs
            else None,
        )

    async def stream(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> AsyncIterator[StreamDelta]:
        """Yield text deltas as they are generated; the last delta has `finished` and the whole Generation."""
        params = self._params(spec, "DELTA")
        token_ids: list[int] = []
        text = ""
        digit_logprobs: list[dict[int, float]] = []
        async for output in self._llm.generate({"prompt_token_ids": prompt_ids}, params, request_id=request_id):
            completion = output.outputs[0]
            token_ids.extend(completion.token_ids)
            text += completion.text
            if spec.read_digits and completion.logprobs:
                digit_logprobs.extend(self._digit_logprobs(completion.logprobs))
            if completion.finish_reason is None:
                yield StreamDelta(text=completion.text)
                continue
            full = text_with_tag(text, completion.stop_reason)
            yield StreamDelta(
                text=full[len(text) - len(completion.text) :],
                generation=Generation(
                    token_ids=token_ids,
                    text=full,
                    finish_reason=completion.finish_reason,
                    digit_logprobs=digit_logprobs if spec.read_digits else None,
                ),
            )

    def _digit_params(self, output_kind: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=list(self.digit_token_ids),
            output_kind=getattr(RequestOutputKind, output_kind),
        )

    def _digit_step(self, output, context_tokens: int, cached_tokens: int, sent: float) -> DigitStep:
        position = output.outputs[0].logprobs[-1]
        return DigitStep(
            logprobs={token: position[token].logprob for token in self.digit_token_ids if token in position},
            context_tokens=context_tokens,
            cached_tokens=cached_tokens,
            times=_step_times(output.metrics, sent),
        )

    async def next_digit_logprobs(self, context_ids: list[int], request_id: str) -> DigitStep:
        """One readout step as its own request (the whole context; prefix caching skips the full blocks held)."""
        sent, final = time.monotonic(), None
        params = self._digit_params("FINAL_ONLY")
        async for output in self._llm.generate({"prompt_token_ids": context_ids}, params, request_id=request_id):
            final = output
        return self._digit_step(final, len(context_ids), int(final.num_cached_tokens or 0), sent)

    def digit_reader(self, request_id: str) -> contextlib.AbstractAsyncContextManager[DigitReader]:
        if self.readout_requests == "per_step":
            return RequestPerStepReader.open(self.next_digit_logprobs, request_id)
        return self._streaming_reader(request_id)

    @contextlib.asynccontextmanager
    async def _streaming_reader(self, request_id: str) -> AsyncIterator[DigitReader]:
        """A readout as one streaming-input request: each step continues it (its KV cache kept between steps)."""
        reader = StreamingDigitReader(self, request_id)
        try:
            yield reader
        except BaseException:
            await reader.abort()
            raise
        await reader.finish()

    def is_dead(self) -> bool:
        """True once the engine cannot serve again: vLLM's monitor saw the EngineCore process exit, or its
        output handler stopped. Nothing in this process brings it back; the process must be restarted."""
        return bool(self._llm.errored)

    def shutdown(self) -> None:
        self._llm.shutdown()


def _step_times(stats, sent: float) -> StepTimes | None:
    """A step's phases from vLLM's request stats (monotonic timestamps; None when stats are off)."""
    if stats is None or not stats.queued_ts or not stats.last_token_ts:
        return None
    returned = time.monotonic()
    return StepTimes(
        to_engine_s=max(stats.queued_ts - sent, 0.0),
        in_engine_s=max(stats.last_token_ts - stats.queued_ts, 0.0),
        back_s=max(returned - stats.last_token_ts, 0.0),
    )


class StreamingDigitReader:
    """One forced readout as one vLLM streaming-input request (`AsyncLLM.generate` over an input stream).

    Each `read` sends its tokens as the next input chunk, one greedy token with the digits' log-probabilities.
    Between chunks vLLM keeps the request's KV cache and drops the token it sampled (never computed), so the next
    chunk starts with the digit the readout chose and the step computes exactly its own tokens: no recomputation
    back to a KV block boundary, no prefix-cache lookup, nothing evicted in between.
    """

    def __init__(self, engine: VllmEngine, request_id: str) -> None:
        self._engine = engine
        self._request_id = request_id
        self._chunks: asyncio.Queue[list[int] | None] = asyncio.Queue()
        self._outputs: AsyncIterator | None = None
        self._context_tokens = 0

    async def _input_stream(self):
        from vllm.engine.protocol import StreamingInput

        while (chunk := await self._chunks.get()) is not None:
            yield StreamingInput(prompt={"prompt_token_ids": chunk})

    async def read(self, tokens: list[int]) -> DigitStep:
        if not tokens:
            raise ValueError("a readout step must append at least one token")
        sent = time.monotonic()
        self._chunks.put_nowait(list(tokens))
        first = self._outputs is None
        if first:
            params = self._engine._digit_params("DELTA")
            self._outputs = aiter(self._engine._llm.generate(self._input_stream(), params, request_id=self._request_id))
        self._context_tokens += len(tokens)
        async for output in self._outputs:
            if output.outputs[0].logprobs:
                cached = int(output.num_cached_tokens or 0) if first else self._context_tokens - len(tokens)
                return self._engine._digit_step(output, self._context_tokens, cached, sent)
            if output.finished:
                break
        raise RuntimeError(f"readout {self._request_id}: the engine ended the request before reading a digit")

    async def finish(self) -> None:
        """End the input stream; the engine then finishes the request and frees its KV blocks."""
        if self._outputs is None:
            return
        self._chunks.put_nowait(None)
        async for _ in self._outputs:
            pass

    async def abort(self) -> None:
        """Give up mid-readout (an error, a cancelled request): closing the output stream aborts the request."""
        if self._outputs is not None:
            with contextlib.suppress(Exception):
                await self._outputs.aclose()


def _scheduler_stat_logger(observe: SchedulerObserver):
    """A vLLM stat-logger class that hands each step's scheduler state to `observe` (queue-depth metrics).

    vLLM calls `record` on its output-handler task after every engine step that produced outputs. Passing a
    custom logger turns on vLLM's step statistics; its own console logger stays off.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class SchedulerStatLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
            if scheduler_stats is None:
                return
            prefix_cache = scheduler_stats.prefix_cache_stats
            observe(
                SchedulerSnapshot(
                    waiting=scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                    running=scheduler_stats.num_running_reqs,
                    kv_cache_usage=float(scheduler_stats.kv_cache_usage),
                    prefix_cache_queried_tokens=int(prefix_cache.queries) if prefix_cache else 0,
                    prefix_cache_hit_tokens=int(prefix_cache.hits) if prefix_cache else 0,
                )
            )

        def log_engine_initialized(self) -> None:
            pass

    return SchedulerStatLogger


def _default_context(model_dir: Path, cap: int = 8192) -> int:
    """The model's own context length, capped so a CPU KV cache still holds a few full requests."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    return min(int(config.get("max_position_embeddings") or cap), cap)


def new_request_id(prefix: str = "gen") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def stop_engine_processes(grace_s: float = 5.0) -> list[int]:
    """Terminate (then kill) every process this one started and that is still running; returns their pids.

    The engine's own shutdown stops its processes, but only once it has been handed an engine: one still
    loading when the server is stopped (SIGTERM during the ~20 s load) lives on in a worker thread, and its
    EngineCore and workers would outlive the server as orphans holding gigabytes. The server starts no other
    processes, so at exit every child is the engine's."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if children:
        log.info("stopped %d engine process(es) left at exit: %s", len(children), [c.pid for c in children])
    return [child.pid for child in children]


async def build_engine_in_thread(
    settings, model_dir: Path, digit_token_ids: tuple[int, ...], observe_scheduler: SchedulerObserver | None = None
) -> VllmEngine:
    """Build the engine off the event loop, so /health keeps answering during the load."""
    return await asyncio.to_thread(VllmEngine.create, settings, model_dir, digit_token_ids, observe_scheduler)
