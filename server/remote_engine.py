"""`Engine` over HTTP: a vLLM OpenAI-compatible server, or a router in front of several (`SEE_ENGINE_URL`).

The sidecar keeps the checkpoint's card and tokenizer (prompts are built and tokenised here, exactly as in
process) and sends token ids to the remote `/v1/completions`: vLLM accepts a prompt of token ids, returns the
generated token ids (`return_token_ids`) and, with `logprob_token_ids`, the log-probability of each digit token
at every generated position (`return_tokens_as_token_ids` keys them by id). A forced-readout step is one
completion of one token. The remote must serve the same checkpoint (checked: the served model's
`max_model_len` and the checkpoint's tokenizer size are compared at start) and should run with prefix caching
and `--enable-prompt-tokens-details` (the readout's cached-token counts; without it they read 0).

A remote that cannot be reached or answers 5xx is a 503 `engine_unavailable` for that request, never a dead
engine: the remote restarts on its own, so this process keeps running (`is_dead` is always False).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from server.engine import (
    DigitReader,
    DigitStep,
    Generation,
    LocalTokenizer,
    RequestPerStepReader,
    SamplingSpec,
    StreamDelta,
    text_with_tag,
)
from server.errors import NotReadyError

log = logging.getLogger(__name__)
CACHE_INFO = re.compile(r"^vllm:cache_config_info\{([^}]*)\}", re.MULTILINE)
TOKEN_ID_KEY = "token_id:"


class RemoteEngineError(NotReadyError):
    """503: the remote engine did not answer; the request can be retried."""


class RemoteEngine(LocalTokenizer):
    def __init__(self, url: str, served_model: str, max_model_len: int, kv_cache_tokens: int, tokenizer,
                 model_dir: Path, digit_token_ids: tuple[int, ...], timeout_s: float) -> None:  # fmt: skip
        super().__init__(tokenizer)
        self.url = url.rstrip("/")
        self.served_model = served_model
        self.max_model_len = max_model_len
        self.kv_cache_tokens = kv_cache_tokens
        self.model_dir = model_dir
        self.digit_token_ids = digit_token_ids
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    @classmethod
    async def create(cls, settings, model_dir: Path, digit_token_ids: tuple[int, ...], observe_scheduler=None):
        """Ask the remote which model it serves and how much KV cache it has; refuse one that serves another."""
        from transformers import AutoTokenizer

        url = settings.engine_url.rstrip("/")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            try:
                models = (await client.get("/v1/models")).raise_for_status().json()["data"]
                metrics = (await client.get("/metrics")).text
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                raise RuntimeError(f"the engine at {url} did not answer /v1/models and /metrics: {exc}") from None
        if len(models) != 1:
            raise RuntimeError(f"the engine at {url} serves {len(models)} models; point SEE_ENGINE_URL at one model")
        served = models[0]
        max_model_len = int(served.get("max_model_len") or 0)
        if settings.max_model_len and max_model_len and settings.max_model_len != max_model_len:
            raise RuntimeError(
                f"SEE_MAX_MODEL_LEN={settings.max_model_len} but the engine at {url} serves {max_model_len} tokens"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        kv_cache_tokens = _kv_cache_tokens(metrics) or max_model_len
        log.info("remote engine %s serves %r: context %d, KV cache %d tokens", url, served["id"], max_model_len,
                 kv_cache_tokens)  # fmt: skip
        return cls(url, served["id"], max_model_len, kv_cache_tokens, tokenizer, model_dir, digit_token_ids,
                   settings.request_timeout_s)  # fmt: skip

    def _body(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str, stream: bool) -> dict:
        from selfeval.block import CLOSE_TAG

        body = {
            "model": self.served_model,
            "prompt": prompt_ids,
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "seed": spec.seed,
            "stop": [*spec.stop, CLOSE_TAG],
            "include_stop_str_in_output": not spec.stop,  # as in process (server.engine.VllmEngine._params)
            "return_token_ids": True,
            "request_id": request_id,
            "stream": stream,
        }
        if spec.read_digits:
            body |= {"logprobs": 1, "logprob_token_ids": list(self.digit_token_ids), "return_tokens_as_token_ids": True}
        return body

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> Generation:
        choice = (await self._post(self._body(prompt_ids, spec, request_id, stream=False)))["choices"][0]
        return Generation(
            token_ids=list(choice.get("token_ids") or []),
            text=text_with_tag(choice["text"], choice.get("stop_reason")),
            finish_reason=choice.get("finish_reason"),
            digit_logprobs=self._digit_logprobs(choice) if spec.read_digits else None,
        )

    async def stream(self, prompt_ids: list[int], spec: SamplingSpec, request_id: str) -> AsyncIterator[StreamDelta]:
        body = self._body(prompt_ids, spec, request_id, stream=True)
        token_ids: list[int] = []
        digit_logprobs: list[dict[int, float]] = []
        text = ""
        try:
            async with self._client.stream("POST", "/v1/completions", json=body) as response:
                await self._check(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: ") :])
                    if "error" in chunk:
                        raise RemoteEngineError(f"the engine failed: {chunk['error'].get('message')}",
                                                code="engine_unavailable")  # fmt: skip
                    choice = chunk["choices"][0]
                    token_ids.extend(choice.get("token_ids") or [])
                    if spec.read_digits:
                        digit_logprobs.extend(self._digit_logprobs(choice))
                    text += choice["text"]
                    if choice.get("finish_reason") is None:
                        yield StreamDelta(text=choice["text"])
                        continue
                    full = text_with_tag(text, choice.get("stop_reason"))
                    generation = Generation(token_ids, full, choice["finish_reason"],
                                            digit_logprobs if spec.read_digits else None)  # fmt: skip
                    yield StreamDelta(text=full[len(text) - len(choice["text"]) :], generation=generation)
                    return
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        raise RemoteEngineError("the engine's stream ended without a finished answer", code="engine_unavailable")

    def digit_reader(self, request_id: str) -> contextlib.AbstractAsyncContextManager[DigitReader]:
        """Each step a new completions request with the whole context: vLLM's HTTP API cannot continue one."""
        return RequestPerStepReader.open(self.next_digit_logprobs, request_id)

    async def next_digit_logprobs(self, context_ids: list[int], request_id: str) -> DigitStep:
        body = {
            "model": self.served_model,
            "prompt": context_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": 1,
            "logprob_token_ids": list(self.digit_token_ids),
            "return_tokens_as_token_ids": True,
            "request_id": request_id,
        }
        answer = await self._post(body)
        details = (answer.get("usage") or {}).get("prompt_tokens_details") or {}
        return DigitStep(
            logprobs=self._digit_logprobs(answer["choices"][0])[0],
            context_tokens=len(context_ids),
            cached_tokens=int(details.get("cached_tokens") or 0),
        )

    def _digit_logprobs(self, choice: dict) -> list[dict[int, float]]:
        wanted = set(self.digit_token_ids)
        positions = (choice.get("logprobs") or {}).get("top_logprobs") or []
        return [
            {token: logprob for key, logprob in (position or {}).items() if (token := _token_id(key)) in wanted}
            for position in positions
        ]

    async def _post(self, body: dict) -> dict:
        try:
            response = await self._client.post("/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        await self._check(response)
        return response.json()

    async def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        await response.aread()
        message = response.text[:500]
        if response.status_code >= 500 or response.status_code == 429:
            raise RemoteEngineError(f"the engine at {self.url} answered {response.status_code}: {message}",
                                    code="engine_unavailable")  # fmt: skip
        raise RuntimeError(f"the engine at {self.url} refused a request ({response.status_code}): {message}")

    def _unavailable(self, exc: Exception) -> RemoteEngineError:
        return RemoteEngineError(
            f"the engine at {self.url} could not be reached ({type(exc).__name__}); retry the request",
            code="engine_unavailable",
        )

    def is_dead(self) -> bool:
        return False  # the remote restarts on its own; this process has nothing to restart

    def shutdown(self) -> None:
        pass  # the client closes with the process; the remote engine is not ours to stop


def _token_id(key: str) -> int | None:
    return int(key[len(TOKEN_ID_KEY) :]) if key.startswith(TOKEN_ID_KEY) else None


def _kv_cache_tokens(metrics_text: str) -> int | None:
    """num_gpu_blocks x block_size from vLLM's `vllm:cache_config_info` gauge (its engine's KV cache)."""
    match = CACHE_INFO.search(metrics_text)
    if not match:
        return None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    try:
        return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    except (KeyError, ValueError):
        return None
