"""Benchmark: what split mode costs (`SEE_ANSWER_MODEL`: the base writes, the served checkpoint reads).

Two sidecars on the default checkpoint, one after the other on this machine: `single` (the checkpoint writes
its own answers and reads them, sharing the KV cache) and `split` (the untrained base writes in a second
engine, the checkpoint reads: its first readout step computes prompt + answer). For each, `/generate` with
scoring on and off at concurrency 1 and 8, greedy, `max_tokens` 128, every prompt unique (no request finds an
earlier one's prompt or answer in a prefix cache); from the server's own metrics the readout
context tokens computed vs cached and the readout wall time per answer; the server's memory (RSS of its process
tree). Ratios split / single come from one run; results go to bench/results/ as JSON and a Markdown table.

    python -m bench.bench_split [--requests 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_generate import run_load
from bench.common import PROMPTS, RESULTS, machine, sidecar_server, stamp
from selfeval.models import BASE_MODEL_NAME, prepare_base_model, prepare_default_model

MODES = {"single": {}, "split": {"answer_model": BASE_MODEL_NAME}}


def readout_counters(metrics_text: str) -> dict[str, float]:
    """Cumulative readout counters from a /metrics page: context tokens computed and cached, readouts timed."""
    found = {"computed": 0.0, "cached": 0.0, "readout_s": 0.0, "readouts": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "see_readout_context_tokens_total":
                found[sample.labels["kind"]] += sample.value
            elif sample.name == "see_readout_duration_seconds_sum":
                found["readout_s"] += sample.value
            elif sample.name == "see_readout_duration_seconds_count":
                found["readouts"] += sample.value
    return found


def cold_sender(client: httpx.AsyncClient, max_tokens: int, score: bool, tag: str):
    """`/generate` on the bench prompts, each request's prompt made unique (`tag` and a counter in front), so no
    request finds an earlier one's prompt or answer in either engine's prefix cache: every readout is cold."""
    sent = 0

    async def send(prompt: str) -> int:
        nonlocal sent
        sent += 1
        body = {"prompt": f"({tag} {sent}) {prompt}", "max_tokens": max_tokens, "temperature": 0, "score": score}
        response = await client.post("/generate", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    return send


def tree_rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


async def measure_mode(url: str, pid: int, requests: int, concurrencies: list[int], max_tokens: int) -> dict:
    results: dict = {}
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        for concurrency in concurrencies:
            for score in (True, False):
                send = cold_sender(client, max_tokens, score, f"c{concurrency}-{'on' if score else 'off'}")
                await send(PROMPTS[0])  # warm this path
                before = readout_counters((await client.get("/metrics")).text)
                result = await run_load(send, requests, concurrency)
                after = readout_counters((await client.get("/metrics")).text)
                readouts = after["readouts"] - before["readouts"]
                if score and readouts:
                    result |= {
                        "readout_s_per_answer": (after["readout_s"] - before["readout_s"]) / readouts,
                        "readout_computed_tokens_per_answer": (after["computed"] - before["computed"]) / readouts,
                        "readout_cached_tokens_per_answer": (after["cached"] - before["cached"]) / readouts,
                    }
                key = f"scoring_{'on' if score else 'off'}@c{concurrency}"
                results[key] = result
                print(key, json.dumps(result), flush=True)
        results["rss_mib"] = tree_rss_mib(pid)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()

    model_dir = prepare_default_model(report=print)
    prepare_base_model(report=print)
    RESULTS.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    results: dict[str, dict] = {}
    for mode, settings in MODES.items():
        with sidecar_server(model_dir, args.port, RESULTS / f"split-{mode}.log.tmp", **settings) as process:
            results[mode] = asyncio.run(
                measure_mode(url, process.pid, args.requests, args.concurrency, args.max_tokens)
            )

    ratios = {}
    for c in args.concurrency:
        single_on, split_on = results["single"][f"scoring_on@c{c}"], results["split"][f"scoring_on@c{c}"]
        single_off, split_off = results["single"][f"scoring_off@c{c}"], results["split"][f"scoring_off@c{c}"]
        ratios[f"c{c}"] = {
            "split_vs_single_throughput_on": split_on["throughput_tok_s"] / single_on["throughput_tok_s"],
            "split_vs_single_p50_on": split_on["p50_s"] / single_on["p50_s"],
            "split_vs_single_throughput_off": split_off["throughput_tok_s"] / single_off["throughput_tok_s"],
            "split_vs_single_readout_s": split_on["readout_s_per_answer"] / single_on["readout_s_per_answer"],
        }
    ratios["rss"] = results["split"]["rss_mib"] / results["single"]["rss_mib"]
    when = stamp()
    record = {
        "benchmark": "split",
        "when": when,
        "machine": machine(),
        "model": model_dir.name,
        "answer_model": BASE_MODEL_NAME,
        "max_tokens": args.max_tokens,
        "requests_per_config": args.requests,
        "results": results,
        "ratios": ratios,
    }
    (RESULTS / f"split-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# Split mode benchmark ({when}, {record['machine']}, reads {record['model']}, answers "
        f"{BASE_MODEL_NAME}, max_tokens {args.max_tokens}, {args.requests} requests a config)",
        "",
        "| mode | scoring | concurrency | p50 s | tok/s | readout s / answer | readout tokens computed / cached |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, by_config in results.items():
        for key, r in by_config.items():
            if key == "rss_mib":
                continue
            scoring = key.split("@")[0].removeprefix("scoring_")
            readout = (
                f"{r['readout_s_per_answer']:.3f} | {r['readout_computed_tokens_per_answer']:.0f} / "
                f"{r['readout_cached_tokens_per_answer']:.0f}"
                if "readout_s_per_answer" in r
                else "- | -"
            )
            speed = f"{r['p50_s']:.2f} | {r['throughput_tok_s']:.1f}"
            lines.append(f"| {mode} | {scoring} | {r['concurrency']} | {speed} | {readout} |")
    lines += [
        "",
        "| concurrency | split/single tok/s (scoring on) | split/single p50 (on) | split/single tok/s (off) | "
        "split/single readout s |",
        "|---|---|---|---|---|",
    ]
    for c in args.concurrency:
        r = ratios[f"c{c}"]
        lines.append(
            f"| {c} | {r['split_vs_single_throughput_on']:.3f} | {r['split_vs_single_p50_on']:.3f} | "
            f"{r['split_vs_single_throughput_off']:.3f} | {r['split_vs_single_readout_s']:.3f} |"
        )
    lines += [
        "",
        f"Server memory (RSS of the process tree after the load): single {results['single']['rss_mib']:.0f} MiB, "
        f"split {results['split']['rss_mib']:.0f} MiB (x{ratios['rss']:.2f}).",
    ]
    (RESULTS / "split-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
