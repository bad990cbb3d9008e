"""Answers with self-evaluations for evaluation items, from a sidecar (running, or started here on a checkpoint).

Evaluation goes through the sidecar's own `/generate` (via the `see_client` SDK), so the numbers measure
exactly what production serves: the prompt mode from the model card, the generated or forced readout, the
engine's raw digit log-probabilities. `--model DIR` starts `python -m server` on a free loopback port for the
run's duration; `--model URL` uses a running sidecar. A request the server refuses (4xx: a prompt longer than
its limit) is recorded as skipped with the server's message and never retried; connection errors, 429 and 503
are retried by the SDK; anything else stops the run, which resumes from the answers already journaled.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evaluation.prompt_sets import EvalItem
from server.launch import ServerStartError, free_port, served

READY_TIMEOUT_S = 900


class AnswerError(RuntimeError):
    """The sidecar could not be started or stopped answering."""


@dataclass(frozen=True)
class AnswerSettings:
    max_tokens: int = 256
    temperature: float = 0.0  # greedy: the point self-score is then the digit the model wrote
    top_p: float = 1.0
    seed: int = 0
    concurrency: int = 4
    timeout_s: float = 900.0
    api_key_env: str = "SEE_API_KEY"

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.concurrency < 1:
            raise ValueError("max_tokens and concurrency must be >= 1")
        if not 0.0 <= self.temperature <= 2.0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature must be in [0, 2] and top_p in (0, 1]")


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


@contextmanager
def local_sidecar(model_dir: Path, log_path: Path, max_model_len: int | None = None) -> Iterator[str]:
    """Serve `model_dir` with `python -m server` on loopback until the block ends; yields its base URL."""
    if not (model_dir / "see_card.json").is_file():
        raise AnswerError(f"{model_dir} is not a SEE checkpoint (no see_card.json); give a checkpoint DIR or a URL")
    port = free_port()
    env = {**os.environ, "SEE_MODEL": str(model_dir), "SEE_PORT": str(port), "SEE_HOST": "127.0.0.1"}
    if max_model_len:
        env["SEE_MAX_MODEL_LEN"] = str(max_model_len)
    try:
        with served(
            [sys.executable, "-m", "server"],
            env,
            log_path,
            f"http://127.0.0.1:{port}/ready",
            READY_TIMEOUT_S,
        ):
            yield f"http://127.0.0.1:{port}"
    except ServerStartError as exc:
        raise AnswerError(f"the sidecar did not start: {exc}") from None


class SidecarAnswerer:
    """Asks a sidecar's /generate for one item's answer and self-evaluation; returns a journal record."""

    def __init__(self, url: str, settings: AnswerSettings) -> None:
        try:
            from see_client import AsyncSeeClient
        except ImportError:
            raise AnswerError("evaluation needs the SDK: pip install -e clients/python (make setup does)") from None
        self.settings = settings
        self.client = AsyncSeeClient(
            url, api_key=os.environ.get(settings.api_key_env) or None, timeout=settings.timeout_s
        )

    async def served_model(self) -> str:
        return await self.client.served_model()

    async def answer(self, item: EvalItem) -> dict:
        from see_client.errors import APIStatusError

        started = time.monotonic()
        try:
            result = await self.client.generate(
                messages=item.conversation,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
                seed=self.settings.seed,
            )
        except APIStatusError as exc:
            if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
                return {"id": item.id, "skipped": f"HTTP {exc.status_code}: {exc}"}
            raise AnswerError(f"item {item.id}: the sidecar answered HTTP {exc.status_code}: {exc}") from exc
        evaluation = result.self_evaluation
        if evaluation is None or not evaluation.available or evaluation.scores is None:
            reason = evaluation.reason if evaluation else "no self_evaluation"
            return {"id": item.id, "skipped": f"no readout: {reason}", "answer": result.answer}
        return {
            "id": item.id,
            "model": result.model,
            "answer": result.answer,
            "finish_reason": result.finish_reason,
            "source": evaluation.source,
            "scores": {name: score.model_dump() for name, score in evaluation.scores.items()},
            "predicted_quality": evaluation.predicted_quality,
            "usage": result.usage.model_dump(),
            "latency_s": round(time.monotonic() - started, 3),
        }

    async def aclose(self) -> None:
        await self.client.close()
