"""Benchmark: sustained mixed load at the admission limit. Latency per route, 5xx, and memory over time.

One sidecar (the default model, a SQLite ledger) with `SEE_MAX_PENDING_REQUESTS` = the concurrency; as many
workers as the limit, each sending requests back to back for `--minutes`, the route drawn in turn from the mix:
`/generate`, chat, streamed chat, chat `n=4`, `/v1/score`, and `/v1/feedback` on an answer served earlier.
Every `--sample-s` seconds it records the resident memory of the server process (the API and its tokeniser;
the EngineCore's is listed apart: its KV cache is allocated once) and how many requests have finished. The
memory slope is a least-squares line through (requests finished, server RSS) after the first fifth of the run
(allocator and cache warm-up), in MB per 1,000 requests. Results: bench/results/soak-*.json and soak-latest.md.

    python -m bench.bench_soak [--minutes 10] [--concurrency 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import PROMPTS, RESULTS, engine_env, machine, percentile, served, stamp
from selfeval.models import prepare_default_model
from server import launch

ROUTES = ("generate", "chat", "chat_stream", "chat_n4", "score", "feedback")


class Load:
    """Sends the mix and keeps every outcome: (route, status, seconds)."""

    def __init__(self, client: httpx.AsyncClient, max_tokens: int) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.outcomes: list[tuple[str, int, float]] = []
        self.served_ids: list[str] = []
        self.rng = random.Random(0)
        self.model: str | None = None  # the served model's name, for the chat routes (from /v1/models)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.rng.choice(PROMPTS)}]

    async def one(self, route: str) -> None:
        started = time.monotonic()
        try:
            status = await getattr(self, route)()
        except httpx.HTTPError:
            status = 0  # no answer at all (connection refused, reset, client timeout)
        self.outcomes.append((route, status, time.monotonic() - started))

    async def generate(self) -> int:
        body = {"messages": self.messages(), "max_tokens": self.max_tokens, "temperature": 0.7}
        response = await self.client.post("/generate", json=body)
        if response.status_code == 200:
            self.served_ids.append(response.json()["id"])
        return response.status_code

    async def chat(self, n: int = 1) -> int:
        body = {"model": self.model, "messages": self.messages(), "max_tokens": self.max_tokens, "n": n,
                "temperature": 0.7}  # fmt: skip
        return (await self.client.post("/v1/chat/completions", json=body)).status_code

    async def chat_n4(self) -> int:
        return await self.chat(n=4)

    async def chat_stream(self) -> int:
        body = {"model": self.model, "messages": self.messages(), "max_tokens": self.max_tokens, "stream": True,
                "temperature": 0.7}  # fmt: skip
        async with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
        if response.status_code == 200 and (lines[-1:] != ["data: [DONE]"] or any('"error":' in x for x in lines)):
            return 599  # a 200 stream that ended in an error chunk counts as a server error
        return response.status_code

    async def score(self) -> int:
        body = {"messages": self.messages(), "response": "Here is a short answer that covers the main points."}
        return (await self.client.post("/v1/score", json=body)).status_code

    async def feedback(self) -> int:
        if not self.served_ids:
            return await self.generate()
        scores = {a: self.rng.randint(0, 9) for a in ("helpfulness", "correctness", "coherence", "complexity",
                                                      "verbosity")}  # fmt: skip
        body = {"id": self.served_ids.pop(), "judge": "soak", "judge_scores": scores}
        return (await self.client.post("/v1/feedback", json=body)).status_code


def rss_mb(process: psutil.Process) -> tuple[float, float]:
    """(server process, engine processes) resident memory in MB."""
    engine = 0.0
    for child in process.children(recursive=True):
        try:
            engine += child.memory_info().rss
        except psutil.Error:
            continue
    return process.memory_info().rss / 2**20, engine / 2**20


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per 1,000 finished requests."""
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else float("nan")


def slopes_by_third(samples: list[dict], key: str) -> list[float]:
    """MB per 1,000 requests in each third of the run: falling thirds mean memory levelling off, not a leak."""
    third = len(samples) // 3
    parts = [samples[i * third : (i + 1) * third if i < 2 else len(samples)] for i in range(3)]
    return [round(slope_per_1000([(s["requests"], s[key]) for s in part]), 1) for part in parts]


async def soak(url: str, server: psutil.Process, args) -> dict:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        load = Load(client, args.max_tokens)
        load.model = (await client.get("/v1/models")).json()["data"][0]["id"]
        started = time.monotonic()
        stop_at = started + args.minutes * 60
        turn = itertools.cycle(ROUTES)
        samples: list[dict] = []

        async def worker() -> None:
            while time.monotonic() < stop_at:
                await load.one(next(turn))

        async def sampler() -> None:
            while time.monotonic() < stop_at:
                api, engine = rss_mb(server)
                samples.append({"t_s": round(time.monotonic() - started, 1), "requests": len(load.outcomes),
                                "server_rss_mb": round(api, 1), "engine_rss_mb": round(engine, 1)})  # fmt: skip
                await asyncio.sleep(args.sample_s)

        await asyncio.gather(sampler(), *(worker() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
        after = await engine_after_load(client)
    return summarise(load.outcomes, samples, elapsed, args) | {"engine_after_load": after}


async def engine_after_load(client: httpx.AsyncClient) -> dict:
    """The engine's state once the load is over and one more small request has run: any request or KV block
    still held (a readout never finished or aborted, say) shows here."""
    await client.post("/generate", json={"prompt": "Hi", "max_tokens": 2, "temperature": 0, "score": False})
    state = {"kv_cache_usage": None, "running": None, "waiting": None}
    for family in text_string_to_metric_families((await client.get("/metrics")).text):
        for sample in family.samples:
            if family.name == "see_engine_kv_cache_usage_ratio":
                state["kv_cache_usage"] = sample.value
            elif family.name == "see_engine_requests":
                state[sample.labels["state"]] = sample.value
    return state


def summarise(outcomes, samples, elapsed: float, args) -> dict:
    routes = {}
    for route in ROUTES:
        mine = [(status, seconds) for r, status, seconds in outcomes if r == route]
        ok = [seconds for status, seconds in mine if status == 200]
        routes[route] = {
            "requests": len(mine),
            "statuses": {str(s): sum(1 for status, _ in mine if status == s) for s in sorted({s for s, _ in mine})},
            "p50_s": round(percentile(ok, 50), 3) if ok else None,
            "p95_s": round(percentile(ok, 95), 3) if ok else None,
        }
    settled = [s for s in samples if s["t_s"] >= elapsed / 5]
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "elapsed_s": round(elapsed, 1),
        "requests": len(outcomes),
        "server_errors": sum(1 for _, status, _ in outcomes if status >= 500 or status == 0),
        "rejected_429": sum(1 for _, status, _ in outcomes if status == 429),
        "routes": routes,
        "server_rss_slope_mb_per_1000": round(
            slope_per_1000([(s["requests"], s["server_rss_mb"]) for s in settled]), 3
        ),
        "engine_rss_slope_mb_per_1000": round(
            slope_per_1000([(s["requests"], s["engine_rss_mb"]) for s in settled]), 3
        ),
        "engine_rss_slope_by_third": slopes_by_third(samples, "engine_rss_mb"),
        "server_rss_mb": {"first": samples[0]["server_rss_mb"], "last": samples[-1]["server_rss_mb"]}
        if samples
        else {},
        "samples": samples,
    }


def markdown(result: dict, when: str) -> str:
    lines = [
        f"# Sustained mixed load ({when}, {machine()})",
        "",
        f"{result['minutes']} min at the admission limit ({result['concurrency']} workers = "
        f"SEE_MAX_PENDING_REQUESTS), max_tokens {result['max_tokens']}: {result['requests']} requests, "
        f"**{result['server_errors']} 5xx or no answer**, {result['rejected_429']} 429.",
        "",
        "| route | requests | statuses | p50 s | p95 s |",
        "|---|---|---|---|---|",
    ]
    for route, row in result["routes"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items())
        lines.append(f"| {route} | {row['requests']} | {statuses} | {row['p50_s']} | {row['p95_s']} |")
    rss, after = result["server_rss_mb"], result.get("engine_after_load", {})
    lines += [
        "",
        f"Server process RSS {rss.get('first')} -> {rss.get('last')} MB; slope after the first fifth "
        f"{result['server_rss_slope_mb_per_1000']} MB per 1,000 requests (engine processes: "
        f"{result['engine_rss_slope_mb_per_1000']} MB per 1,000; by thirds of the run "
        f"{' / '.join(str(x) for x in result.get('engine_rss_slope_by_third', []))}).",
        "",
        "Engine after the load (one more small request run): KV cache in use "
        f"{after.get('kv_cache_usage')}, requests running {after.get('running')}, waiting {after.get('waiting')}.",
        "",
        "Reproduce: `python -m bench.bench_soak "
        f"--minutes {result['minutes']} --concurrency {result['concurrency']} --max-tokens {result['max_tokens']}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4, help="workers, and SEE_MAX_PENDING_REQUESTS")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    args = parser.parse_args()
    model_dir = prepare_default_model(report=print)
    args.port = args.port or launch.free_port()
    when = stamp()
    work = Path(tempfile.mkdtemp(prefix="see-soak-"))  # the server's log and ledger; kept for a look afterwards
    env = {
        **engine_env(),
        "SEE_MODEL": str(model_dir),
        "SEE_PORT": str(args.port),
        "SEE_MAX_MODEL_LEN": "4096",
        "SEE_MAX_PENDING_REQUESTS": str(args.concurrency),
        "SEE_LEDGER__URL": str(work / "ledger.sqlite3"),
    }
    url = f"http://127.0.0.1:{args.port}"
    print(f"server log and ledger in {work}")
    with served([sys.executable, "-m", "server"], env, work / "server.log", f"{url}/ready") as process:
        result = asyncio.run(soak(url, psutil.Process(process.pid), args))
    (RESULTS / f"soak-{when}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "soak-latest.md").write_text(markdown(result, when))
    print(markdown(result, when))
    sys.exit(1 if result["server_errors"] else 0)


if __name__ == "__main__":
    main()
