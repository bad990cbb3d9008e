"""Benchmark: the cost of the self-evaluation readout, and each shape of SEE against a stock vLLM server.

(a) sidecar `/generate` with scoring on vs off, (b) sidecar with scoring off vs a stock vLLM OpenAI server
(`python -m vllm.entrypoints.openai.api_server`) on the same model, engine settings and prompt token ids,
(c) with `--shapes`, the two other shapes: the same vLLM server with the see_sidecar endpoint plugin (its
`/generate` with scoring on and off, and vLLM's own `/v1/completions` on it: does the plugin slow the routes it
leaves alone?), and the sidecar in remote engine mode in front of the stock server (`/generate` on and off).
Each at concurrency 1 and 8, greedy, `max_tokens` 128. The servers run one after the other on this machine,
so the ratios come from one run; results go to bench/results/ as JSON and a Markdown table.

    python -m bench.bench_generate [--requests 8] [--max-tokens 128] [--shapes]
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
    machine,
    percentile,
    plugin_vllm_server,
    sidecar_server,
    stamp,
    stock_vllm_server,
)
from selfeval.models import prepare_default_model
from selfeval.prompts import build_chat_messages


async def run_load(send, requests: int, concurrency: int) -> dict:
    """Send `requests` requests with at most `concurrency` in flight; latency and token throughput."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens: list[int] = []

    async def one(index: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            tokens.append(await send(PROMPTS[index % len(PROMPTS)]))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - started
    return {
        "requests": requests,
        "concurrency": concurrency,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 95),
        "mean_completion_tokens": statistics.mean(tokens),
        "throughput_tok_s": sum(tokens) / wall,
        "wall_s": wall,
    }


def sidecar_sender(client: httpx.AsyncClient, max_tokens: int, score: bool):
    async def send(prompt: str) -> int:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "score": score}
        response = await client.post("/generate", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    return send


def stock_sender(client: httpx.AsyncClient, max_tokens: int, prompt_ids: dict[str, list[int]]):
    async def send(prompt: str) -> int:
        body = {
            "model": "stock",
            "prompt": prompt_ids[prompt],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stop": ["[/SELF_EVAL]"],
            "include_stop_str_in_output": True,
        }
        response = await client.post("/v1/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    return send


async def measure(base_url: str, senders: dict, requests: int, concurrencies: list[int]) -> dict:
    results: dict = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=900) as client:
        for concurrency in concurrencies:
            for name, make in senders.items():  # alternate configurations inside one server's lifetime
                send = make(client)
                await send(PROMPTS[0])  # warm this path
                results[f"{name}@c{concurrency}"] = await run_load(send, requests, concurrency)
                print(name, concurrency, json.dumps(results[f"{name}@c{concurrency}"]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--shapes", action="store_true", help="also measure the endpoint plugin and remote mode")
    args = parser.parse_args()

    model_dir = prepare_default_model(report=print)
    RESULTS.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"

    with sidecar_server(model_dir, args.port, RESULTS / "sidecar.log.tmp"):
        sidecar_results = asyncio.run(
            measure(
                url,
                {
                    "sidecar_scoring_on": lambda c: sidecar_sender(c, args.max_tokens, True),
                    "sidecar_scoring_off": lambda c: sidecar_sender(c, args.max_tokens, False),
                },
                args.requests,
                args.concurrency,
            )
        )

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompt_ids = {
        p: tokenizer.encode(
            tokenizer.apply_chat_template(
                build_chat_messages([{"role": "user", "content": p}]), tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )
        for p in PROMPTS
    }
    with stock_vllm_server(model_dir, args.port, RESULTS / "stock.log.tmp"):
        stock_results = asyncio.run(
            measure(
                url,
                {"stock_vllm": lambda c: stock_sender(c, args.max_tokens, prompt_ids)},
                args.requests,
                args.concurrency,
            )
        )
        if args.shapes:  # the sidecar in remote engine mode, in front of this same stock server
            remote_port = args.port + 1
            with sidecar_server(model_dir, remote_port, RESULTS / "remote.log.tmp", engine_url=url):
                stock_results |= asyncio.run(
                    measure(
                        f"http://127.0.0.1:{remote_port}",
                        {
                            "remote_scoring_on": lambda c: sidecar_sender(c, args.max_tokens, True),
                            "remote_scoring_off": lambda c: sidecar_sender(c, args.max_tokens, False),
                        },
                        args.requests,
                        args.concurrency,
                    )
                )

    plugin_results = {}
    if args.shapes:
        with plugin_vllm_server(model_dir, args.port, RESULTS / "plugin.log.tmp"):
            plugin_results = asyncio.run(
                measure(
                    url,
                    {
                        "plugin_scoring_on": lambda c: sidecar_sender(c, args.max_tokens, True),
                        "plugin_scoring_off": lambda c: sidecar_sender(c, args.max_tokens, False),
                        "plugin_vllm_completions": lambda c: stock_sender(c, args.max_tokens, prompt_ids),
                    },
                    args.requests,
                    args.concurrency,
                )
            )

    results = {**sidecar_results, **stock_results, **plugin_results}
    ratios = {}
    for c in args.concurrency:
        on, off, base = (results[f"{n}@c{c}"] for n in ("sidecar_scoring_on", "sidecar_scoring_off", "stock_vllm"))
        ratios[f"c{c}"] = {
            "scoring_p50_latency_overhead": on["p50_s"] / off["p50_s"] - 1,
            "scoring_p95_latency_overhead": on["p95_s"] / off["p95_s"] - 1,
            "scoring_throughput_ratio": on["throughput_tok_s"] / off["throughput_tok_s"],
            "sidecar_off_vs_stock_throughput_ratio": off["throughput_tok_s"] / base["throughput_tok_s"],
            "sidecar_on_vs_stock_throughput_ratio": on["throughput_tok_s"] / base["throughput_tok_s"],
        }
        if args.shapes:
            names = ("plugin_scoring_on", "plugin_scoring_off", "plugin_vllm_completions", "remote_scoring_on",
                     "remote_scoring_off")  # fmt: skip
            p_on, p_off, p_stock_route, r_on, r_off = (results[f"{n}@c{c}"] for n in names)
            ratios[f"c{c}"] |= {
                "plugin_off_vs_stock_throughput_ratio": p_off["throughput_tok_s"] / base["throughput_tok_s"],
                "plugin_on_vs_stock_throughput_ratio": p_on["throughput_tok_s"] / base["throughput_tok_s"],
                "plugin_completions_vs_stock_throughput_ratio": p_stock_route["throughput_tok_s"]
                / base["throughput_tok_s"],
                "remote_off_vs_in_process_throughput_ratio": r_off["throughput_tok_s"] / off["throughput_tok_s"],
                "remote_on_vs_in_process_throughput_ratio": r_on["throughput_tok_s"] / on["throughput_tok_s"],
            }
    when = stamp()
    record = {
        "benchmark": "generate",
        "when": when,
        "machine": machine(),
        "model": str(model_dir.name),
        "max_tokens": args.max_tokens,
        "requests_per_config": args.requests,
        "results": results,
        "ratios": ratios,
        "goals": {
            "scoring_p50_latency_overhead": "<= 0.10",
            "sidecar_off_vs_stock_throughput_ratio": ">= 0.95",
            "plugin_off_vs_stock_throughput_ratio": ">= 0.98",
        },
    }
    (RESULTS / f"generate-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# /generate benchmark ({when}, {record['machine']}, {record['model']}, max_tokens {args.max_tokens})",
        "",
        "| config | concurrency | p50 s | p95 s | mean tokens | tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        name = key.split("@")[0]
        lines.append(
            f"| {name} | {r['concurrency']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
            f"{r['mean_completion_tokens']:.0f} | {r['throughput_tok_s']:.1f} |"
        )
    lines += [
        "",
        "| concurrency | scoring p50 overhead | scoring p95 overhead | sidecar(off)/stock tok/s | "
        "sidecar(on)/stock tok/s |",
        "|---|---|---|---|---|",
    ]
    for c, r in ratios.items():
        lines.append(
            f"| {c[1:]} | {r['scoring_p50_latency_overhead']:+.1%} | {r['scoring_p95_latency_overhead']:+.1%} | "
            f"{r['sidecar_off_vs_stock_throughput_ratio']:.3f} | {r['sidecar_on_vs_stock_throughput_ratio']:.3f} |"
        )
    if args.shapes:
        lines += [
            "",
            "| concurrency | plugin(off)/stock tok/s | plugin(on)/stock tok/s | "
            "vLLM /v1/completions on the plugin server / stock | remote(off)/in-process(off) | "
            "remote(on)/in-process(on) |",
            "|---|---|---|---|---|---|",
        ]
        for c, r in ratios.items():
            lines.append(
                f"| {c[1:]} | {r['plugin_off_vs_stock_throughput_ratio']:.3f} | "
                f"{r['plugin_on_vs_stock_throughput_ratio']:.3f} | "
                f"{r['plugin_completions_vs_stock_throughput_ratio']:.3f} | "
                f"{r['remote_off_vs_in_process_throughput_ratio']:.3f} | "
                f"{r['remote_on_vs_in_process_throughput_ratio']:.3f} |"
            )
    (RESULTS / "generate-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
