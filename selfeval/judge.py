"""The external judge: its prompts, a strict reading of its answer, and an async client with a disk cache.

Used by training's reward, by evaluation and by the server's shadow judging, so the judge contract lives here
once. The judge is any OpenAI-compatible chat endpoint. Choices (docs/method.md §2):
- Prompts: the paper's system prompt and user message with HelpSteer2 reference responses as calibration
  anchors (`references`), or a reference-free variant for prompt sets without anchors (`references=None`).
- Strict: the reply must be pure JSON with exactly the five keys and ints 0-9; anything else is a judge format
  failure and counts as a failed attempt. Attempts run out -> `JudgeExhaustedError`; never a made-up score.
- Attempts are shared by API and format failures; backoff `min(base * 2^(k-1), max) * U(0.5, 1)` is slept
  *outside* the concurrency slot (the reference held the slot while sleeping).
- Request parameters are configurable for APIs that reject `temperature` or want `max_completion_tokens`.
- A persistent cache keyed by (judge model, messages) so a resumed run never pays twice for the same call: one
  JSON line per judged answer, flushed and fsynced before the score is used; a torn last line is ignored.
- A pairwise prompt (`compare`: which of two answers is better, "A" / "B" / "tie") for response win rates in
  evaluation, with the same strictness, retries and cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from selfeval.journal import append_record
from selfeval.rubric import ATTRIBUTE_DEFINITIONS, ATTRIBUTES, SCALE_MAX, ScoreError, validate_scores

log = logging.getLogger(__name__)

TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens", "")
MAX_RESPONSE_BYTES = 1_000_000  # a judge's reply is a few hundred bytes; more is a broken or hostile endpoint

_DIMENSIONS = "\n".join(f"- {a} (0-{SCALE_MAX}): {ATTRIBUTE_DEFINITIONS[a]}" for a in ATTRIBUTES)
_OUTPUT_TEMPLATE = "{" + ", ".join(f'"{a}": <int>' for a in ATTRIBUTES) + "}"

JUDGE_SYSTEM_PROMPT = f"""You are an expert evaluator of AI assistant responses. Rate the response on five \
dimensions, each with an integer score from 0 to {SCALE_MAX}.

Dimensions:
{_DIMENSIONS}

Rating guidance:
- Higher is not always better for every attribute: complexity and verbosity are descriptive properties of the \
response, not targets to maximize.
- Missing important facts lowers correctness even without an explicit false statement.
- Judge verbosity relative to what the user asked for, not as overall goodness.
- In a multi-turn conversation, judge the final answer against the latest user turn, with the earlier turns \
as context.
- Reference labels, when given, are on a resized 0-{SCALE_MAX} scale obtained by doubling the original 0-4 \
human annotations.
- When reference responses with human scores are provided, use them as calibration anchors for the scale on \
this specific prompt and compare the target response against them.

Output only a JSON object with the five integer scores and nothing else."""

REFERENCES_INTRO = (
    "Below are reference responses to the same prompt, each with human-annotated scores. "
    "Use them as calibration anchors."
)
RESPONSE_HEADER = "[AI Assistant's Response to Evaluate]"
RATE_INSTRUCTION = f"Rate the response on the resized 0-{SCALE_MAX} scale. Output ONLY JSON:\n{_OUTPUT_TEMPLATE}"


class JudgeError(RuntimeError):
    """Base of the judge's failures."""


class JudgeFormatError(JudgeError):
    """The judge replied, but not with pure JSON holding exactly the five integer scores."""


class JudgeExhaustedError(JudgeError):
    """Every attempt failed; carries how many were made and the last failure."""

    def __init__(self, attempts: int, last_error: str) -> None:
        super().__init__(f"judge failed {attempts} attempt(s); last error: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


@dataclass(frozen=True)
class Reference:
    """A reference response with its scores on the 0-9 scale (HelpSteer2 labels already doubled)."""

    response: str
    scores: dict[str, int]


@dataclass(frozen=True)
class JudgeSettings:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-5.4"
    api_key_env: str = "OPENAI_API_KEY"  # name of the env variable holding the key; "" sends no key
    temperature: float | None = 0.1  # None: not sent (APIs that only accept their default)
    max_tokens: int = 128
    token_limit_param: str = "max_tokens"  # or "max_completion_tokens", or "" to send no limit
    stream: bool = False
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 120.0
    timeout_s: float = 90.0
    concurrency: int = 24
    cache_path: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.base_url.startswith(("http://", "https://")):
            problems.append(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            problems.append("model is required")
        if self.token_limit_param not in TOKEN_LIMIT_PARAMS:
            problems.append(f"token_limit_param must be one of {list(TOKEN_LIMIT_PARAMS)}")
        if self.max_attempts < 1 or self.concurrency < 1 or self.max_tokens < 1:
            problems.append("max_attempts, concurrency and max_tokens must be >= 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            problems.append("need 0 <= backoff_base_s <= backoff_max_s")
        if self.timeout_s < 1:
            problems.append("timeout_s must be >= 1")
        if problems:
            raise ValueError("judge settings: " + "; ".join(problems))


def judge_messages(
    conversation: Sequence[Mapping[str, str]], answer: str, references: Sequence[Reference] | None
) -> list[dict[str, str]]:
    """System + user message for one judgement (docs/method.md §2.2); `references=None` is reference-free."""
    turns = "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in conversation)
    parts = [turns]
    if references is not None:
        if not references:
            raise ValueError("the reference judge prompt needs at least one reference response")
        anchors = [REFERENCES_INTRO]
        for number, reference in enumerate(references, start=1):
            scores = json.dumps(validate_scores(reference.scores))
            anchors.append(
                f"--- Reference Response {number} ---\n{reference.response}\n"
                f"Human-Annotated Scores on resized 0-{SCALE_MAX} scale: {scores}"
            )
        parts.append("\n\n".join(anchors))
    parts.append(f"{RESPONSE_HEADER}\n{answer.strip()}")
    parts.append(RATE_INSTRUCTION)
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_judge_reply(content: str) -> dict[str, int]:
    """The five scores from a judge reply that must be pure JSON (no fences, no prose)."""
    text = (content or "").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise JudgeFormatError(f"judge reply is not pure JSON: {text[:120]!r}") from None
    if not isinstance(data, dict) or set(data) != set(ATTRIBUTES):
        raise JudgeFormatError(f"judge reply must be an object with exactly the keys {list(ATTRIBUTES)}")
    try:
        return validate_scores(data)
    except ScoreError as exc:
        raise JudgeFormatError(str(exc)) from None


PAIRWISE_SYSTEM_PROMPT = """You are an impartial judge comparing two AI assistant responses to the same \
conversation. Decide which response better serves the user's latest request: helpful, correct and complete, \
clear. Do not let the order of the responses, their length or the assistants' names influence you. Answer \
"tie" only when neither response is better.

Output only a JSON object with one key, "winner", whose value is "A", "B" or "tie"."""
PAIR_HEADER_A = "[Response A]"
PAIR_HEADER_B = "[Response B]"
PAIRWISE_INSTRUCTION = 'Which response is better? Output ONLY JSON: {"winner": "A" | "B" | "tie"}'
VERDICTS = ("A", "B", "tie")


def pairwise_messages(conversation: Sequence[Mapping[str, str]], answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """System + user message asking which of two answers to one conversation is better."""
    turns = "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in conversation)
    user = "\n\n".join(
        [turns, f"{PAIR_HEADER_A}\n{answer_a.strip()}", f"{PAIR_HEADER_B}\n{answer_b.strip()}", PAIRWISE_INSTRUCTION]
    )
    return [{"role": "system", "content": PAIRWISE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_pairwise_reply(content: str) -> str:
    """ "A", "B" or "tie" from a reply that must be pure JSON {"winner": ...}."""
    text = (content or "").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise JudgeFormatError(f"judge reply is not pure JSON: {text[:120]!r}") from None
    return _check_verdict(data)


def _check_verdict(data: object) -> str:
    if not isinstance(data, dict) or set(data) != {"winner"} or data["winner"] not in VERDICTS:
        raise JudgeFormatError(f'pairwise reply must be {{"winner": one of {list(VERDICTS)}}}')
    return data["winner"]


_VALIDATORS = {"scores": validate_scores, "verdict": lambda value: _check_verdict({"winner": value})}


def cache_key(model: str, messages: Sequence[Mapping[str, str]]) -> str:
    payload = json.dumps([model, list(messages)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Append-only JSONL of judge replies, keyed by `cache_key`; every write is fsynced before it counts.

    A record holds either `scores` (a judged answer) or `verdict` (a pairwise comparison); the key already
    separates the two (different prompts), and a value that no longer validates is treated as a miss.
    Several processes may share one file (the ranks of a training run): a miss first reads whatever the others
    appended since, so a verdict one rank paid for is a hit for all of them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._read_up_to = 0  # bytes of the file taken in so far (complete lines only)
        self._catch_up()

    def __len__(self) -> int:
        return len(self._entries)

    def _catch_up(self) -> None:
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                return
            if size <= self._read_up_to:
                return
            with self.path.open("rb") as handle:
                handle.seek(self._read_up_to)
                chunk = handle.read(size - self._read_up_to)
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
            for line in chunk[:complete].splitlines():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a line torn by a kill mid-write
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    self._entries[record["key"]] = record
            self._read_up_to += complete

    def get(self, key: str, kind: str = "scores") -> object | None:
        record = self._entries.get(key)
        if record is None:
            self._catch_up()
            record = self._entries.get(key)
        if record is None or kind not in record:
            return None
        try:
            return _VALIDATORS[kind](record[kind])
        except (JudgeFormatError, ScoreError, TypeError, AttributeError):
            return None

    def put(self, key: str, value: object, kind: str = "scores") -> None:
        with self._lock:
            record = {"key": key, kind: value}
            append_record(self.path, record)
            self._entries[key] = record


@dataclass
class JudgeCounters:
    requests: int = 0  # HTTP requests sent (attempts)
    judged: int = 0  # answers scored by a call
    cache_hits: int = 0
    api_failures: int = 0
    format_failures: int = 0
    exhausted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Judgement:
    scores: dict[str, int]
    cached: bool
    attempts: int = 0


@dataclass
class JudgeClient:
    """Async, cached, retrying judge client. Safe to use from several event loops (one HTTP pool per loop)."""

    settings: JudgeSettings
    counters: JudgeCounters = field(default_factory=JudgeCounters)
    sleep: object = None  # injectable for tests: async callable(seconds)

    def __post_init__(self) -> None:
        self.cache = JudgeCache(self.settings.cache_path) if self.settings.cache_path else None
        self._pools: dict[int, tuple[httpx.AsyncClient, asyncio.Semaphore]] = {}
        self._sleep = self.sleep or asyncio.sleep

    @property
    def name(self) -> str:
        return self.settings.model

    def _pool(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._pools:
            limit = self.settings.concurrency
            client = httpx.AsyncClient(
                base_url=self.settings.base_url.rstrip("/"),
                timeout=self.settings.timeout_s,
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                headers=self._headers(),
            )
            self._pools[loop_id] = (client, asyncio.Semaphore(limit))
        return self._pools[loop_id]

    def _headers(self) -> dict[str, str]:
        if not self.settings.api_key_env:
            return {}
        key = os.environ.get(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request_body(self, messages: list[dict[str, str]]) -> dict:
        body: dict = {"model": self.settings.model, "messages": messages, "stream": self.settings.stream}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if self.settings.token_limit_param:
            body[self.settings.token_limit_param] = self.settings.max_tokens
        return body

    async def judge(
        self, conversation: Sequence[Mapping[str, str]], answer: str, references: Sequence[Reference] | None
    ) -> Judgement:
        """Scores for one answer: from the cache, else from the judge (raises JudgeExhaustedError)."""
        messages = judge_messages(conversation, answer, references)
        scores, cached, attempts = await self._ask(messages, parse_judge_reply, "scores")
        return Judgement(scores=scores, cached=cached, attempts=attempts)

    async def compare(self, conversation: Sequence[Mapping[str, str]], answer_a: str, answer_b: str) -> str:
        """The judge's verdict "A", "B" or "tie" on two answers, cached like scores."""
        verdict, _, _ = await self._ask(
            pairwise_messages(conversation, answer_a, answer_b), parse_pairwise_reply, "verdict"
        )
        return verdict

    async def _ask(self, messages: list[dict[str, str]], parse, kind: str) -> tuple:
        key = cache_key(self.settings.model, messages)
        if self.cache is not None and (hit := self.cache.get(key, kind)) is not None:
            self.counters.cache_hits += 1
            return hit, True, 0
        body = self.request_body(messages)
        last_error = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                value = parse(await self._call(body))
            except JudgeFormatError as exc:
                self.counters.format_failures += 1
                last_error = str(exc)
            except (httpx.HTTPError, JudgeError) as exc:
                self.counters.api_failures += 1
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                self.counters.judged += 1
                if self.cache is not None:
                    self.cache.put(key, value, kind)
                return value, False, attempt
            if attempt < self.settings.max_attempts:
                delay = min(self.settings.backoff_base_s * 2 ** (attempt - 1), self.settings.backoff_max_s)
                await self._sleep(delay * random.uniform(0.5, 1.0))
        self.counters.exhausted += 1
        raise JudgeExhaustedError(self.settings.max_attempts, last_error)

    async def _call(self, body: dict) -> str:
        """One judge call, bounded in time as a whole (httpx's timeout is per read: a judge trickling a byte a
        second would hold the caller for ever) and in size."""
        client, slot = self._pool()
        async with slot:
            self.counters.requests += 1
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    return _completion_content(await self._exchange(client, body))
            except TimeoutError:
                raise JudgeError(f"the judge did not answer within {self.settings.timeout_s:g} s") from None

    async def _exchange(self, client: httpx.AsyncClient, body: dict) -> bytes | str:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                detail = (await _read_capped(response, 4096))[:200].decode("utf-8", "replace")
                raise JudgeError(f"HTTP {response.status_code}: {detail}")
            if "text/event-stream" in response.headers.get("content-type", ""):
                return await _read_sse_content(response)
            return await _read_capped(response, MAX_RESPONSE_BYTES)

    async def aclose(self) -> None:
        for client, _ in self._pools.values():
            await client.aclose()
        self._pools.clear()


def _completion_content(raw: bytes | str) -> str:
    """The content of a chat completion body (a streamed reply arrives as its joined content already)."""
    if isinstance(raw, str):
        return raw
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"not a chat completion body: {raw[:120]!r}") from None
    if not content or not isinstance(content, str):
        raise JudgeError("empty judge content")
    return content


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, refusing one larger than `limit` bytes (a judge answers five digits, not megabytes)."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise JudgeError(f"the judge's response is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_sse_content(response: httpx.Response) -> str:
    pieces, size = [], 0
    async for line in response.aiter_lines():
        size += len(line)
        if size > MAX_RESPONSE_BYTES:
            raise JudgeError(f"the judge's stream is larger than {MAX_RESPONSE_BYTES} bytes")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise JudgeError(f"malformed stream chunk: {data[:120]!r}") from None
        for choice in chunk.get("choices") or []:
            pieces.append((choice.get("delta") or {}).get("content") or "")
    content = "".join(pieces)
    if not content:
        raise JudgeError("empty judge content")
    return content
