"""Scores for the responses of a human-labelled set: from sidecars (`/v1/score`) and from cheap baselines.

Every number here reads existing responses; nothing is generated. Each source writes a journal (one JSON line
per response, appended durably), so an interrupted run resumes where it stopped and never re-asks a server.
- sidecar: the teacher-forced readout of the five distributions, the predicted quality and the decision of
  the served policy, through the SDK's `/v1/score` (exactly what production serves). A 4xx (a response that
  does not fit the context) is journaled as skipped with the server's message.
- baselines, on a stock vLLM OpenAI server with the untrained model (what a user would run instead):
  mean token log-probability of the response under the model (`prompt_logprobs` of the plain chat prompt +
  response), and P(True): P("Yes") / (P("Yes") + P("No")) for the first answer token to a question whether
  the response is helpful and correct, read with `logprob_token_ids` (both tokens, whatever their rank).
  Response length in tokens comes with it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfeval.journal import append_record, read_records
from selfeval.rubric import ATTRIBUTES
from server.launch import ServerStartError, cpu_engine_env, free_port, served, stock_vllm_command
from training.labels_judge import LabelsJudge

READY_TIMEOUT_S = 900
BASELINE_SERVED_NAME = "baseline"
P_TRUE_QUESTION = (
    "Here is a conversation between a user and an AI assistant, and the assistant's final response.\n\n"
    "[Conversation]\n{conversation}\n\n[Response]\n{response}\n\n"
    "Is the response helpful and correct? Answer with Yes or No only."
)


class LabelledEvalError(RuntimeError):
    """A server that could not be started or stopped answering; the journals keep what was done."""


@dataclass(frozen=True)
class LabelledItem:
    id: str
    group: int
    conversation: list[dict[str, str]]
    response: str
    human: dict[str, int]  # 0-9 (doubled human labels)


def labelled_items(path: Path, half: str | None, limit: int | None = None, seed: int = 0) -> list[LabelledItem]:
    """Every labelled pair of one half of the set (or a seeded sample of about `limit` responses), in file
    order; ids are stable (group and position)."""
    judge = LabelsJudge.from_file(path, half)
    items, seen = [], {}
    for pair in judge:
        position = seen[pair.group_index] = seen.get(pair.group_index, -1) + 1
        scores = judge.score(pair.conversation, pair.response)  # the human judgment, through the labels judge
        items.append(
            LabelledItem(f"p{pair.group_index}r{position}", pair.group_index, pair.conversation, pair.response, scores)
        )
    if limit is not None and limit < len(items):
        # a seeded random sample of whole prompts (both responses), in file order: the bootstrap stays paired
        # and the sample does not inherit whatever order the file has
        groups = sorted({item.group for item in items})
        chosen = set(random.Random(seed).sample(groups, max(1, min(len(groups), -(-limit // 2)))))
        items = [item for item in items if item.group in chosen][:limit]
    return items


def _pending(items: list[LabelledItem], journal: Path) -> list[LabelledItem]:
    done = {record["id"] for record in read_records(journal)} if journal.exists() else set()
    return [item for item in items if item.id not in done]


async def _run_bounded(items, work: Callable, concurrency: int, advance: Callable[[], None]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(item) -> None:
        async with gate:
            await work(item)
            advance()

    await asyncio.gather(*(one(item) for item in items))


def score_with_sidecar(
    url: str, items: list[LabelledItem], journal: Path, concurrency: int, advance: Callable[[], None]
) -> None:
    """Journal `/v1/score` of every pending item: five distributions, digit mass, decision, readout source."""
    from see_client import AsyncSeeClient
    from see_client.errors import SeeError

    async def run() -> None:
        async with AsyncSeeClient(url, timeout=900.0) as client:

            async def work(item: LabelledItem) -> None:
                try:
                    result = await client.score(item.conversation, item.response)
                except SeeError as exc:
                    status = getattr(exc, "status_code", None)
                    if status is None or not 400 <= status < 500:
                        raise
                    append_record(journal, {"id": item.id, "skipped": str(exc)})
                    return
                evaluation = result.self_evaluation
                append_record(
                    journal,
                    {
                        "id": item.id,
                        "probs": [evaluation.scores[a].probs for a in ATTRIBUTES],
                        "mass": [evaluation.scores[a].label_mass for a in ATTRIBUTES],
                        "predicted_quality": evaluation.predicted_quality,
                        "decision": result.decision.action,
                        "source": evaluation.source,
                        "prompt_tokens": result.usage.prompt_tokens,
                    },
                )

            await _run_bounded(_pending(items, journal), work, concurrency, advance)

    asyncio.run(run())


def _conversation_text(conversation: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in conversation)


def score_baselines(
    url: str, model_dir: Path, items: list[LabelledItem], journal: Path, concurrency: int, advance: Callable[[], None]
) -> None:
    """Journal length, mean token log-probability and P(True) of every pending item from a stock vLLM server."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    yes, no = (tokenizer.encode(word, add_special_tokens=False) for word in ("Yes", "No"))
    if len(yes) != 1 or len(no) != 1:
        raise LabelledEvalError("P(True) needs 'Yes' and 'No' to be single tokens in this tokenizer")

    def chat_ids(messages: list[dict[str, str]]) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=900.0) as http:

            async def complete(body: dict) -> dict:
                response = await http.post(
                    "/v1/completions", json={"model": BASELINE_SERVED_NAME, "temperature": 0, **body}
                )
                if response.status_code != 200:
                    raise LabelledEvalError(f"the baseline server answered {response.status_code}: {response.text}")
                return response.json()["choices"][0]

            async def work(item: LabelledItem) -> None:
                prompt = chat_ids(item.conversation)
                answer = tokenizer.encode(item.response, add_special_tokens=False)
                ids = prompt + answer
                read = await complete({"prompt": ids, "max_tokens": 1, "prompt_logprobs": 0})
                logprobs = [
                    entry[str(token)]["logprob"]
                    for entry, token in zip(read["prompt_logprobs"][len(prompt) :], answer, strict=True)
                ]
                question = P_TRUE_QUESTION.format(
                    conversation=_conversation_text(item.conversation), response=item.response
                )
                asked = await complete(
                    {
                        "prompt": chat_ids([{"role": "user", "content": question}]),
                        "max_tokens": 1,
                        "logprobs": 2,
                        "logprob_token_ids": [yes[0], no[0]],
                    }
                )
                top = asked["logprobs"]["top_logprobs"][0]
                p_yes, p_no = (2.718281828459045 ** top[word] for word in ("Yes", "No"))
                append_record(
                    journal,
                    {
                        "id": item.id,
                        "length_tokens": len(answer),
                        "mean_logprob": sum(logprobs) / len(logprobs),
                        "p_true": p_yes / (p_yes + p_no),
                    },
                )

            await _run_bounded(_pending(items, journal), work, concurrency, advance)

    asyncio.run(run())


@contextmanager
def stock_vllm_server(model_dir: Path, log_path: Path, max_model_len: int = 4096) -> Iterator[str]:
    """vLLM's own OpenAI server on `model_dir` (loopback, free port) until the block ends; yields its URL."""
    port = free_port()
    flags = ["--max-model-len", str(max_model_len), "--disable-log-stats"]
    import torch

    if not torch.cuda.is_available():
        flags += ["--dtype", "float32", "--enforce-eager"]
    command = stock_vllm_command(model_dir, port, BASELINE_SERVED_NAME, *flags)
    env = cpu_engine_env()
    try:
        with served(command, env, log_path, f"http://127.0.0.1:{port}/health", READY_TIMEOUT_S):
            yield f"http://127.0.0.1:{port}"
    except ServerStartError as exc:
        raise LabelledEvalError(f"the stock vLLM server did not start: {exc}") from None
