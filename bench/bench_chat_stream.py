"""Benchmark: time to first token and throughput of streamed chat completions, sidecar vs stock vLLM.

Three configurations on the same model, engine settings and prompt tokens (the sidecar gets the user turn
and adds the SEE system instruction itself; stock vLLM gets the same system instruction in the request;
the report checks that both counted the same prompt tokens): the sidecar's `/v1/chat/completions` with
scoring on and off (`score: false`), and a stock vLLM OpenAI server's; with `--shapes` also vLLM's server with
the see_sidecar endpoint plugin (its scored chat on and off: the plugin shape against the stock server it
extends). Streamed, greedy, `max_tokens` 128, stopping at `[/SELF_EVAL]` everywhere, at concurrency 1, 8 and
16. TTFT is the time from sending the request to the first chunk with non-empty content; tokens come from the
servers' usage chunks. Results go to bench/results/chat-stream-*.json and chat-stream-latest.md.

    python -m bench.bench_chat_stream [--max-tokens 128] [--concurrency 1 8 16] [--shapes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from bench.common import (
    PROMPTS,
    RESULTS,
    STOCK_MODEL_NAME,
    machine,
    percentile,
    plugin_vllm_server,
    sidecar_server,
    stamp,
    stock_vllm_server,
)
from selfeval.block import CLOSE_TAG
from selfeval.models import prepare_default_model
from selfeval.prompts import build_chat_messages

TTFT_GOAL = 0.10  # time to first token within 10 % of stock vLLM


async def one_stream(client: httpx.AsyncClient, body: dict) -> tuple[float, float, int, int]:
    """(time to first token, total latency, completion tokens, prompt tokens) of one streamed chat completion."""
    started = time.perf_counter()
    first = None
    tokens = prompt_tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            payload = json.loads(line[5:])
            if payload.get("usage"):
                tokens = payload["usage"]["completion_tokens"]
                prompt_tokens = payload["usage"]["prompt_tokens"]
            for choice in payload.get("choices") or []:
                if first is None and (choice.get("delta") or {}).get("content"):
                    first = time.perf_counter() - started
    return first if first is not None else float("nan"), time.perf_counter() - started, tokens, prompt_tokens


async def run_config(base_url: str, make_body, requests: int, concurrency: int) -> dict:
    semaphore = asyncio.Semaphore(concurrency)
    samples: list[tuple[float, float, int, int]] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=900) as client:
        await one_stream(client, make_body(PROMPTS[0]))  # warm this path

        async def one(index: int) -> None:
            async with semaphore:
                samples.append(await one_stream(client, make_body(PROMPTS[index % len(PROMPTS)])))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - started
    ttfts = [s[0] for s in samples]
    latencies = [s[1] for s in samples]
    return {
        "requests": requests,
        "concurrency": concurrency,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p95_s": percentile(ttfts, 95),
        "latency_p50_s": statistics.median(latencies),
        "mean_completion_tokens": statistics.mean(s[2] for s in samples),
        "mean_prompt_tokens": statistics.mean(s[3] for s in samples),
        "throughput_tok_s": sum(s[2] for s in samples) / wall,
        "wall_s": wall,
    }


def chat_body(model: str, max_tokens: int, extra: dict, *, add_instruction: bool):
    def make(prompt: str) -> dict:
        messages = [{"role": "user", "content": prompt}]
        return {
            "model": model,
            "messages": build_chat_messages(messages) if add_instruction else messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **extra,
        }

    return make


def measure(base_url: str, configs: dict, concurrencies: list[int], requests_for) -> dict:
    results = {}
    for concurrency in concurrencies:
        for name, make_body in configs.items():
            result = asyncio.run(run_config(base_url, make_body, requests_for(concurrency), concurrency))
            results[f"{name}@c{concurrency}"] = result
            print(name, concurrency, json.dumps(result), flush=True)
    return results


def shape_ratios(results: dict, shape: str, c: int) -> dict:
    on, off, stock = (results[f"{n}@c{c}"] for n in (f"{shape}_scoring_on", f"{shape}_scoring_off", "stock_vllm"))
    return {
        "ttft_on_vs_stock": on["ttft_p50_s"] / stock["ttft_p50_s"],
        "ttft_off_vs_stock": off["ttft_p50_s"] / stock["ttft_p50_s"],
        "throughput_on_vs_stock": on["throughput_tok_s"] / stock["throughput_tok_s"],
        "throughput_off_vs_stock": off["throughput_tok_s"] / stock["throughput_tok_s"],
    }


def report(results: dict, concurrencies: list[int], args, when: str) -> tuple[dict, list[str]]:
    shapes = [s for s in ("sidecar", "plugin") if f"{s}_scoring_on@c{concurrencies[0]}" in results]
    ratios = {shape: {f"c{c}": shape_ratios(results, shape, c) for c in concurrencies} for shape in shapes}
    lines = [
        f"# Streamed chat benchmark ({when}, {machine()}, max_tokens {args.max_tokens})",
        "",
        "| config | concurrency | requests | TTFT p50 s | TTFT p95 s | latency p50 s | mean answer tokens | tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        lines.append(
            f"| {key.split('@')[0]} | {r['concurrency']} | {r['requests']} | {r['ttft_p50_s']:.3f} | "
            f"{r['ttft_p95_s']:.3f} | {r['latency_p50_s']:.2f} | {r['mean_completion_tokens']:.0f} | "
            f"{r['throughput_tok_s']:.1f} |"
        )
    lines += [
        "",
        "| shape | concurrency | TTFT on/stock | TTFT off/stock | tok/s on/stock | tok/s off/stock |",
        "|---|---|---|---|---|---|",
    ]
    for shape, by_concurrency in ratios.items():
        for c, r in by_concurrency.items():
            lines.append(
                f"| {shape} | {c[1:]} | {r['ttft_on_vs_stock']:.3f} | {r['ttft_off_vs_stock']:.3f} | "
                f"{r['throughput_on_vs_stock']:.3f} | {r['throughput_off_vs_stock']:.3f} |"
            )
    prompt_tokens = {round(r["mean_prompt_tokens"], 1) for r in results.values()}
    lines += [
        "",
        f"Mean prompt tokens per request, all configs: {sorted(prompt_tokens)} (one value = same prompts).",
        f"Goal: TTFT p50 within {TTFT_GOAL:.0%} of stock vLLM (ratio <= {1 + TTFT_GOAL:.2f}).",
    ]
    return ratios, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--min-requests", type=int, default=8, help="requests per config: max(this, 2 x c)")
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--shapes", action="store_true", help="also vLLM's server with the endpoint plugin")
    args = parser.parse_args()

    def requests_for(concurrency: int) -> int:
        return max(args.min_requests, 2 * concurrency)

    model_dir = prepare_default_model(report=print)
    RESULTS.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    with sidecar_server(model_dir, args.port, RESULTS / "sidecar.log.tmp"):
        served_name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        configs = {
            "sidecar_scoring_on": chat_body(served_name, args.max_tokens, {}, add_instruction=False),
            "sidecar_scoring_off": chat_body(served_name, args.max_tokens, {"score": False}, add_instruction=False),
        }
        results = measure(url, configs, args.concurrency, requests_for)
    stock_extra = {"stop": [CLOSE_TAG], "include_stop_str_in_output": True}
    with stock_vllm_server(model_dir, args.port, RESULTS / "stock.log.tmp"):
        configs = {"stock_vllm": chat_body(STOCK_MODEL_NAME, args.max_tokens, stock_extra, add_instruction=True)}
        results |= measure(url, configs, args.concurrency, requests_for)
    if args.shapes:  # the plugin's chat is ours (it adds the SEE instruction itself), on vLLM's server
        with plugin_vllm_server(model_dir, args.port, RESULTS / "plugin.log.tmp"):
            configs = {
                "plugin_scoring_on": chat_body(STOCK_MODEL_NAME, args.max_tokens, {}, add_instruction=False),
                "plugin_scoring_off": chat_body(STOCK_MODEL_NAME, args.max_tokens, {"score": False},
                                                add_instruction=False),
            }  # fmt: skip
            results |= measure(url, configs, args.concurrency, requests_for)

    when = stamp()
    ratios, lines = report(results, args.concurrency, args, when)
    record = {
        "benchmark": "chat-stream",
        "when": when,
        "machine": machine(),
        "model": model_dir.name,
        "max_tokens": args.max_tokens,
        "results": results,
        "ratios": ratios,
        "goals": {"ttft_on_vs_stock": f"<= {1 + TTFT_GOAL:.2f}"},
    }
    (RESULTS / f"chat-stream-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "chat-stream-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
