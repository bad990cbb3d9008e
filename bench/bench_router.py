"""Benchmark: SEE in front of two vLLM replicas behind a real fleet router (`vllm-router` from PyPI).

Two stock vLLM replicas of the default model (one CPU core each), the Rust `vllm-router` in front of them, and
the sidecar in remote engine mode pointed at the router. A mixed workload (`/generate`, chat with n=2, a chat
stream, `/v1/score`) runs through it under the router's `cache_aware` policy, then `round_robin`, then with the
sidecar pointed at one replica alone. Reported per run: errors (anything but a 200, or a stream without its
scored final chunk), completion tokens/s, and where the forced readouts' context came from (the sidecar's
`see_readout_context_tokens_total`: cached on the replica that got the step, or computed again) next to the
replicas' own prefix-cache counters. Results go to bench/results/ (JSON and router-latest.md).

    pip install -e .[fleet]   # vllm-router
    python -m bench.bench_router [--requests 16] [--concurrency 4] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.common import ENGINE_FLAGS, PROMPTS, RESULTS, engine_env, machine, served, sidecar_server, stamp
from selfeval.models import prepare_default_model
from server.engine import CPU_KV_BLOCK_SIZE
from server.launch import free_port, stock_vllm_command

REPLICA_FLAGS = [*ENGINE_FLAGS, "--block-size", str(CPU_KV_BLOCK_SIZE), "--enable-prompt-tokens-details"]


def replica(model_dir: Path, port: int, core: int, log: Path):
    env = {**engine_env(), "VLLM_CPU_OMP_THREADS_BIND": str(core)}
    command = stock_vllm_command(model_dir, port, "replica", *REPLICA_FLAGS)
    return served(command, env, log, f"http://127.0.0.1:{port}/health")


def router(port: int, workers: list[str], policy: str, log: Path):
    try:
        import vllm_router  # noqa: F401
    except ImportError:
        sys.exit("vllm-router is not installed: pip install -e .[fleet]")
    command = [sys.executable, "-m", "vllm_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
               "--worker-urls", *workers, "--policy", policy]  # fmt: skip
    return served(command, engine_env(), log, f"http://127.0.0.1:{port}/health")


def counters(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of each named Prometheus counter's samples (labels ignored unless given in the name)."""
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        for name in names:
            series, _, labels = name.partition("|")
            if line.startswith(series) and (not labels or labels in line) and not line.startswith("#"):
                totals[name] += float(line.rsplit(" ", 1)[-1])
    return totals


SIDECAR_COUNTERS = tuple(f'see_readout_context_tokens_total|kind="{kind}"' for kind in ("cached", "computed"))
REPLICA_COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")


async def workload(url: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    """Mixed requests; counts errors, completion tokens and wall time."""
    semaphore = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, index: int, model: str) -> None:
        nonlocal tokens
        prompt = PROMPTS[index % len(PROMPTS)]
        messages = [{"role": "user", "content": prompt}]
        kind = index % 4
        async with semaphore:
            if kind == 0:
                response = await client.post("/generate", json={"prompt": prompt, "max_tokens": max_tokens})
                ok = response.status_code == 200 and response.json()["self_evaluation"]["scores"] is not None
                tokens += response.json()["usage"]["completion_tokens"] if ok else 0
            elif kind == 1:
                body = {"model": model, "messages": messages, "max_tokens": max_tokens, "n": 2}
                response = await client.post("/v1/chat/completions", json=body)
                ok = response.status_code == 200 and all(c["self_evaluation"] for c in response.json()["choices"])
                tokens += response.json()["usage"]["completion_tokens"] if ok else 0
            elif kind == 2:
                body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
                response = await client.post("/v1/chat/completions", json=body)
                finals = [line for line in response.text.splitlines() if '"self_evaluation": {' in line]
                ok = response.status_code == 200 and len(finals) == 1 and response.text.endswith("data: [DONE]\n\n")
                tokens += max_tokens if ok else 0  # the stream reports no usage unless asked
            else:
                body = {"messages": messages, "response": f"Here is a short answer about: {prompt.lower()}"}
                response = await client.post("/v1/score", json=body)
                ok = response.status_code == 200
            if not ok:
                errors.append(f"{kind}: {response.status_code} {response.text[:200]}")

    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]  # the sidecar's name, not the replicas'
        started = time.perf_counter()
        await asyncio.gather(*(one(client, i, model) for i in range(requests)))
        wall = time.perf_counter() - started
    return {"requests": requests, "errors": len(errors), "error_samples": errors[:3], "wall_s": wall,
            "completion_tokens": tokens, "throughput_tok_s": tokens / wall}  # fmt: skip


def measured_run(name: str, sidecar_url: str, replica_urls: list[str], args) -> dict:
    before = counters(httpx.get(f"{sidecar_url}/metrics").text, SIDECAR_COUNTERS)
    replicas_before = [counters(httpx.get(f"{u}/metrics").text, REPLICA_COUNTERS) for u in replica_urls]
    result = asyncio.run(workload(sidecar_url, args.requests, args.concurrency, args.max_tokens))
    after = counters(httpx.get(f"{sidecar_url}/metrics").text, SIDECAR_COUNTERS)
    cached, computed = (after[k] - before[k] for k in SIDECAR_COUNTERS)
    result["readout_context_cached_share"] = cached / (cached + computed) if cached + computed else None
    result["replica_prefix_cache_hit_rate"] = []
    for url, earlier in zip(replica_urls, replicas_before, strict=True):
        now = counters(httpx.get(f"{url}/metrics").text, REPLICA_COUNTERS)
        queries, hits = (now[k] - earlier[k] for k in REPLICA_COUNTERS)
        result["replica_prefix_cache_hit_rate"].append(hits / queries if queries else None)
    print(name, json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    model_dir = prepare_default_model(report=print)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(2)]
    replica_urls = [f"http://127.0.0.1:{p}" for p in ports]
    results: dict = {}
    with ExitStack() as replicas:
        for core, port in enumerate(ports):
            replicas.enter_context(replica(model_dir, port, core, RESULTS / f"replica{core}.log.tmp"))
        for policy in ("cache_aware", "round_robin"):
            router_port, sidecar_port = free_port(), free_port()
            with (
                router(router_port, replica_urls, policy, RESULTS / "router.log.tmp"),
                sidecar_server(model_dir, sidecar_port, RESULTS / "sidecar.log.tmp", f"http://127.0.0.1:{router_port}"),
            ):
                results[f"router_{policy}_2_replicas"] = measured_run(
                    policy, f"http://127.0.0.1:{sidecar_port}", replica_urls, args
                )
        sidecar_port = free_port()
        with sidecar_server(model_dir, sidecar_port, RESULTS / "sidecar.log.tmp", replica_urls[0]):
            results["one_replica"] = measured_run("one", f"http://127.0.0.1:{sidecar_port}", replica_urls[:1], args)

    when = stamp()
    one = results["one_replica"]["throughput_tok_s"]
    record = {"benchmark": "router", "when": when, "machine": machine(), "model": model_dir.name,
              "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
              "results": results,
              "two_vs_one_throughput": {k: r["throughput_tok_s"] / one for k, r in results.items()}}  # fmt: skip
    (RESULTS / f"router-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# SEE behind vllm-router ({when}, {record['machine']}, {record['model']}, {args.requests} mixed requests, "
        f"concurrency {args.concurrency}, max_tokens {args.max_tokens})",
        "",
        "| run | errors | tok/s | vs one replica | readout context from cache | replicas' prefix-cache hit rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        share = r["readout_context_cached_share"]
        rates = ", ".join("-" if x is None else f"{x:.2f}" for x in r["replica_prefix_cache_hit_rate"])
        lines.append(f"| {name} | {r['errors']} | {r['throughput_tok_s']:.1f} | "
                     f"{record['two_vs_one_throughput'][name]:.2f} | {'-' if share is None else f'{share:.2f}'} | "
                     f"{rates} |")  # fmt: skip
    (RESULTS / "router-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
