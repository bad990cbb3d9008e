"""Benchmark: judge-client throughput against the ideal (calls x latency / concurrency).

The rule-based judge serves on loopback with an injected latency per request; the client judges N distinct
answers at a given concurrency, cold (every call goes out) and then warm (every call is a cache hit). The ideal
wall time is calls x latency / concurrency; efficiency = ideal / measured. Results go to
bench/results/judge-*.json and judge-latest.md.

    python -m bench.bench_judge [--calls 192] [--latency 0.25] [--concurrency 1 8 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, machine, stamp
from selfeval.judge import JudgeClient, JudgeSettings
from training.testing.rule_judge import RULE_JUDGE_MODEL, running_rule_judge

CONVERSATION = [{"role": "user", "content": "Explain briefly why the sky is blue."}]


async def judge_all(client: JudgeClient, calls: int) -> float:
    started = time.perf_counter()
    answers = [f"Rayleigh scattering favours short wavelengths (answer {i})." for i in range(calls)]
    await asyncio.gather(*(client.judge(CONVERSATION, answer, None) for answer in answers))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=192)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 24])
    args = parser.parse_args()
    results = []
    with running_rule_judge(latency_s=args.latency) as (url, _), tempfile.TemporaryDirectory() as scratch:
        for concurrency in args.concurrency:
            settings = JudgeSettings(
                base_url=url,
                model=RULE_JUDGE_MODEL,
                api_key_env="",
                concurrency=concurrency,
                cache_path=str(Path(scratch) / f"cache-{concurrency}.jsonl"),
            )
            calls = args.calls if concurrency > 1 else max(8, args.calls // 8)
            cold = asyncio.run(judge_all(JudgeClient(settings), calls))
            warm = asyncio.run(judge_all(JudgeClient(settings), calls))  # new client, same cache: a resumed run
            ideal = calls * args.latency / concurrency
            results.append(
                {
                    "concurrency": concurrency,
                    "calls": calls,
                    "cold_s": cold,
                    "warm_s": warm,
                    "ideal_s": ideal,
                    "efficiency": ideal / cold,
                    "calls_per_s": calls / cold,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    when = stamp()
    lines = [
        f"# Judge client benchmark ({when}, {machine()}, injected latency {args.latency} s)",
        "",
        "| concurrency | calls | cold s | ideal s | efficiency | calls/s | warm (cached) s |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['concurrency']} | {r['calls']} | {r['cold_s']:.2f} | {r['ideal_s']:.2f} | {r['efficiency']:.2f} | "
            f"{r['calls_per_s']:.1f} | {r['warm_s']:.3f} |"
            for r in results
        ),
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "judge", "when": when, "machine": machine(), "latency_s": args.latency, "results": results}
    (RESULTS / f"judge-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "judge-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
