"""Benchmark: what the self-evaluation readout costs, against a stock vLLM server on the same model, in one run.

Two workloads, each measured on both servers in interleaved rounds (sidecar, stock, sidecar, stock, ...; each
server started fresh per round, one at a time: two engines on a 2-core machine would share the cores):

- chat: 16 Arena-Hard prompts (the first 16 of at most --max-prompt-chars), streamed `/v1/chat/completions`,
  greedy, `--max-tokens` (64) answers, `--concurrency` (8). Sidecar with scoring on and with `score: false`;
  stock vLLM gets the same SEE system instruction in the request and stops at `[/SELF_EVAL]` too. Every server
  first answers each prompt once with one token, so every configuration runs on warm prompt prefixes (else the
  first configuration measured pays the prompts' prefill for the others). Answer tokens/s over the wall time of
  the batch, and latency p50 (request sent -> stream ended, readout included).
- stock vLLM runs twice per round: with vLLM's defaults, and with the sidecar's KV block size (32 tokens on
  CPU, server.engine.CPU_KV_BLOCK_SIZE; vLLM's CPU default is 128), so the readout's cost is also measured
  against an engine configured alike.
- score: 48 HelpSteer2 (train half) question/answer pairs. The sidecar's `/v1/score` reads all five attributes
  (five dependent digit steps); stock vLLM's `/generative_scoring` reads one position (the first digit, the ten
  digit ids as labels) after the same prompt, answer and block text. Items/s at the same concurrency, on a cold
  prefix cache (first pass after start) and a warm one (the same pairs again).

With the chat workload the sidecar's /metrics give the readout profile: engine steps per readout, context tokens
the engine already held vs computed, where a step's time goes (to the engine, in it, back), readout wall time;
and the floor: the tokens a readout has to compute at least (the block after the answer) in five dependent steps.
`--shapes` measures vLLM's own server with the endpoint plugin (server/vllm_plugin.py) the same way, and
`--per-step` the sidecar with SEE_READOUT_REQUESTS=per_step (a request per readout step, the path before the
continued request): one more server per round each.

    python -m bench.bench_readout [--rounds 2] [--max-tokens 64] [--concurrency 8] [--shapes] [--per-step]

Results: bench/results/readout-<stamp>.json and readout-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_chat_stream import chat_body, one_stream
from bench.common import (
    RESULTS,
    STOCK_MODEL_NAME,
    machine,
    plugin_vllm_server,
    sidecar_server,
    stamp,
    stock_engine_flags,
    stock_vllm_server,
)
from evaluation.prompt_sets import load_prompt_set
from selfeval.block import CLOSE_TAG, forced_token_layout
from selfeval.card import load_card
from selfeval.models import prepare_default_model
from selfeval.prompts import render_prompt
from training.data import default_dataset, load_groups

GOALS = {"chat_tok_s_on_vs_stock": 0.85, "chat_p50_on_vs_stock": 1.15, "score_warm_vs_generative": 0.5}


def chat_prompts(count: int, max_chars: int) -> list[str]:
    items = load_prompt_set("arena-hard-v2").items
    prompts = [i.conversation[0]["content"] for i in items if len(i.conversation[0]["content"]) <= max_chars]
    return prompts[:count]


def score_pairs(count: int, max_chars: int) -> list[tuple[str, str]]:
    groups = load_groups(default_dataset(), kitware_file="train.json")
    pairs = []
    for group in groups:
        if len(group.conversation) != 1:
            continue
        question = group.conversation[0]["content"]
        for reference in group.references[:1]:
            if len(question) + len(reference.response) <= max_chars:
                pairs.append((question, reference.response))
    return pairs[:count]


async def run_batch(base_url: str, path: str, bodies: list[dict], concurrency: int, streamed: bool) -> dict:
    """Send `bodies` with at most `concurrency` in flight; latencies, tokens and wall time."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies, tokens = [], []
    async with httpx.AsyncClient(base_url=base_url, timeout=1800) as client:

        async def one(body: dict) -> None:
            async with semaphore:
                started = time.perf_counter()
                if streamed:
                    _, _, completion_tokens, _ = await one_stream(client, body)
                else:
                    response = await client.post(path, json=body)
                    response.raise_for_status()
                    completion_tokens = 0
                latencies.append(time.perf_counter() - started)
                tokens.append(completion_tokens)

        started = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        wall = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "wall_s": wall,
        "latency_p50_s": statistics.median(latencies),
        "answer_tokens": sum(tokens),
        "tokens_per_s": sum(tokens) / wall,
        "items_per_s": len(bodies) / wall,
    }


def chat_bodies(model: str, prompts: list[str], max_tokens: int, extra: dict, add_instruction: bool) -> list[dict]:
    make = chat_body(model, max_tokens, extra, add_instruction=add_instruction)
    return [make(prompt) for prompt in prompts]


STEP_PHASES = {  # see_readout_step_seconds phases, as the report names them
    "to_engine": "to the engine (it takes input between passes)",
    "in_engine": "queued + computed",
    "back": "back to the server",
}


# vLLM's own prefix-cache counters: what the plugin shape exports (the sidecar's see_engine_prefix_cache_tokens
# comes from its own engine's stat logger)
VLLM_PREFIX_CACHE = {"vllm:prefix_cache_queries": "queried", "vllm:prefix_cache_hits": "hit"}


def readout_counters(base_url: str) -> dict[str, float]:
    """The sidecar's readout and prefix-cache counters (server.metrics), summed over labels but `kind`."""
    values: dict[str, float] = defaultdict(float)
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == "see_readout_engine_steps" and sample.name.endswith("_total"):
                values["steps"] += sample.value
            elif family.name == "see_readout_context_tokens" and sample.name.endswith("_total"):
                values[f"{sample.labels['kind']}_tokens"] += sample.value
            elif family.name == "see_readout_step_seconds" and sample.name.endswith("_total"):
                values[f"{sample.labels['phase']}_s"] += sample.value
            elif family.name == "see_readout_duration_seconds" and sample.name.endswith("_sum"):
                values["readout_s"] += sample.value
            elif family.name == "see_readout_duration_seconds" and sample.name.endswith("_count"):
                values["readouts"] += sample.value
            elif family.name == "see_engine_prefix_cache_tokens" and sample.name.endswith("_total"):
                values[f"prefix_cache_{sample.labels['kind']}_tokens"] += sample.value
            elif (vllm_kind := VLLM_PREFIX_CACHE.get(sample.name.removesuffix("_total"))) is not None:
                values[f"prefix_cache_{vllm_kind}_tokens"] += sample.value  # the plugin: vLLM's own counters
    return dict(values)


def profile_of(before: dict, after: dict) -> dict:
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    readouts = max(delta.get("readouts", 0.0), 1.0)
    steps = max(delta.get("steps", 0.0), 1.0)
    return {
        "readouts": delta.get("readouts", 0.0),
        "engine_steps_per_readout": delta.get("steps", 0.0) / readouts,
        "computed_tokens_per_readout": delta.get("computed_tokens", 0.0) / readouts,
        "cached_tokens_per_readout": delta.get("cached_tokens", 0.0) / readouts,
        **{f"{phase}_s_per_step": delta.get(f"{phase}_s", 0.0) / steps for phase in STEP_PHASES},
        "readout_wall_s_mean": delta.get("readout_s", 0.0) / readouts,
        "prefix_cache_hit_rate_all_requests": delta.get("prefix_cache_hit_tokens", 0.0)
        / max(delta.get("prefix_cache_queried_tokens", 0.0), 1.0),
    }


class ScoreInputs:
    """The same (prompt, answer) pairs for both servers: `/v1/score` bodies, and for `/generative_scoring` the
    sidecar's prompt tokens as the query and the answer + block text up to the first digit as the item."""

    def __init__(self, model_dir: Path, pairs: list[tuple[str, str]]) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        card = load_card(model_dir)
        self.digit_ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]

        def template(messages):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        def encode_literal(text):
            return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

        self.sidecar, self.stock, self.floor_tokens = [], [], []
        for question, answer in pairs:
            messages = [{"role": "user", "content": question}]
            query = tokenizer.encode(render_prompt(messages, card.prompt_mode, template), add_special_tokens=False)
            layout, positions = forced_token_layout(encode_literal, answer, [self.digit_ids[0]] * 5)
            self.sidecar.append({"messages": messages, "response": answer})
            self.stock.append(
                {
                    "model": STOCK_MODEL_NAME,
                    "query": query,
                    "items": [layout[: positions[0]]],
                    "label_token_ids": self.digit_ids,
                }
            )
            answer_tokens = len(encode_literal(answer))
            self.floor_tokens.append(positions[-1] + 1 - answer_tokens)  # block tokens after the answer


def measure_scored(url: str, prompts, inputs: ScoreInputs, args, on_first: bool) -> dict:
    """A server that scores (the sidecar, or vLLM with the endpoint plugin): chat with scoring on and off,
    `/v1/score` cold and warm, and the readout profile from its /metrics."""
    model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
    out = {}
    warm = chat_bodies(model, prompts, 1, {"score": False}, add_instruction=False)
    asyncio.run(run_batch(url, "/v1/chat/completions", warm, args.concurrency, streamed=True))
    for scoring in ("on", "off") if on_first else ("off", "on"):  # alternate the order between rounds
        extra = {} if scoring == "on" else {"score": False}
        bodies = chat_bodies(model, prompts, args.max_tokens, extra, add_instruction=False)
        before = readout_counters(url)
        out[f"chat_scoring_{scoring}"] = asyncio.run(
            run_batch(url, "/v1/chat/completions", bodies, args.concurrency, streamed=True)
        )
        if scoring == "on":
            out["readout_profile"] = profile_of(before, readout_counters(url))
    for cache in ("cold", "warm"):
        before = readout_counters(url)
        out[f"score_{cache}"] = asyncio.run(run_batch(url, "/v1/score", inputs.sidecar, args.concurrency, False))
        out[f"score_{cache}_profile"] = profile_of(before, readout_counters(url))
    return out


def measure_stock(url: str, prompts, inputs: ScoreInputs, args) -> dict:
    out = {}
    extra = {"stop": [CLOSE_TAG], "include_stop_str_in_output": True}
    warm = chat_bodies(STOCK_MODEL_NAME, prompts, 1, extra, add_instruction=True)
    asyncio.run(run_batch(url, "/v1/chat/completions", warm, args.concurrency, streamed=True))
    bodies = chat_bodies(STOCK_MODEL_NAME, prompts, args.max_tokens, extra, add_instruction=True)
    out["chat"] = asyncio.run(run_batch(url, "/v1/chat/completions", bodies, args.concurrency, streamed=True))
    for cache in ("cold", "warm"):
        out[f"generative_scoring_{cache}"] = asyncio.run(
            run_batch(url, "/generative_scoring", inputs.stock, args.concurrency, False)
        )
    return out


def mean_of(rounds: list[dict], key: str, field: str) -> float:
    return statistics.mean(r[key][field] for r in rounds)


def summarise(shapes: dict[str, list[dict]], stocks: dict[str, list[dict]], inputs: ScoreInputs) -> dict:
    """Means over rounds of each scored shape ("sidecar", "plugin") and each stock configuration, and the
    shapes' ratios to every stock configuration."""
    tok_s, p50 = {}, {}
    for shape, rounds in shapes.items():
        for k in ("on", "off"):
            tok_s[f"{shape}_scoring_{k}"] = mean_of(rounds, f"chat_scoring_{k}", "tokens_per_s")
            p50[f"{shape}_scoring_{k}"] = mean_of(rounds, f"chat_scoring_{k}", "latency_p50_s")
    for name, rounds in stocks.items():
        tok_s[f"stock_{name}"] = mean_of(rounds, "chat", "tokens_per_s")
        p50[f"stock_{name}"] = mean_of(rounds, "chat", "latency_p50_s")
    ratios = {
        shape: {
            name: {
                f"{measure}_{k}_vs_stock": values[f"{shape}_scoring_{k}"] / values[f"stock_{name}"]
                for measure, values in (("tok_s", tok_s), ("p50", p50))
                for k in ("on", "off")
            }
            for name in stocks
        }
        for shape in shapes
    }
    profiles = {
        shape: {key: statistics.mean(r["readout_profile"][key] for r in rounds) for key in rounds[0]["readout_profile"]}
        for shape, rounds in shapes.items()
    }
    score = {}
    for cache in ("cold", "warm"):
        ours = {shape: mean_of(rounds, f"score_{cache}", "items_per_s") for shape, rounds in shapes.items()}
        theirs = {
            name: mean_of(rounds, f"generative_scoring_{cache}", "items_per_s") for name, rounds in stocks.items()
        }
        score[cache] = {"items_per_s": ours, "generative_scoring_items_per_s": theirs}
        score[cache]["ratio"] = {shape: {name: ours[shape] / v for name, v in theirs.items()} for shape in shapes}
    return {
        "chat": {"tokens_per_s": tok_s, "latency_p50_s": p50, "ratios": ratios},
        "score": score,
        "readout_profile_chat": profiles,
        "floor": {
            "block_tokens_after_answer_mean": statistics.mean(inputs.floor_tokens),
            "dependent_engine_steps": 5,
        },
    }


STOCK_LABELS = {"default": "stock vLLM, its defaults", "same_blocks": "stock vLLM, the sidecar's KV block size"}
SHAPE_LABELS = {
    "sidecar": "sidecar",
    "sidecar_per_step": "sidecar, a request per readout step",
    "plugin": "vLLM + endpoint plugin",
}


def report(summary: dict, args, when: str, rounds: int) -> list[str]:
    chat, score, profiles, floor = summary["chat"], summary["score"], summary["readout_profile_chat"], summary["floor"]
    shapes = list(chat["ratios"])
    stocks = list(chat["ratios"][shapes[0]])
    lines = [
        f"# Readout cost benchmark ({when}, {machine()}, {rounds} interleaved rounds)",
        "",
        f"Chat: {args.prompts} Arena-Hard prompts, streamed, greedy, max_tokens {args.max_tokens}, "
        f"concurrency {args.concurrency}, prompt prefixes warm everywhere. Means over rounds.",
        "",
        "| server | answer tok/s | latency p50 s | "
        + " | ".join(f"tok/s, p50 vs {STOCK_LABELS[n]}" for n in stocks)
        + " |",
        "|---|---|---|" + "---|" * len(stocks),
    ]
    for name in stocks:
        lines.append(
            f"| {STOCK_LABELS[name]} | {chat['tokens_per_s'][f'stock_{name}']:.1f} | "
            f"{chat['latency_p50_s'][f'stock_{name}']:.2f} |" + " |" * len(stocks)
        )
    for shape in shapes:
        for label, key in (("score: false", "off"), ("scoring on", "on")):
            config, ratios = f"{shape}_scoring_{key}", chat["ratios"][shape]
            cells = [
                f"{ratios[n][f'tok_s_{key}_vs_stock']:.2f}, {ratios[n][f'p50_{key}_vs_stock']:.2f}" for n in stocks
            ]
            lines.append(
                f"| {SHAPE_LABELS[shape]}, {label} | {chat['tokens_per_s'][config]:.1f} | "
                f"{chat['latency_p50_s'][config]:.2f} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        f"Score: {args.pairs} HelpSteer2 pairs (train half), concurrency {args.concurrency}. `/v1/score` reads five "
        "attributes (five dependent steps), `/generative_scoring` one position.",
        "",
        "| prefix cache | server | /v1/score items/s | "
        + " | ".join(f"/generative_scoring items/s ({STOCK_LABELS[n]}), ratio" for n in stocks)
        + " |",
        "|---|---|---|" + "---|" * len(stocks),
    ]
    for cache, row in score.items():
        for shape in shapes:
            cells = [f"{row['generative_scoring_items_per_s'][n]:.2f}, {row['ratio'][shape][n]:.2f}" for n in stocks]
            lines.append(
                f"| {cache} | {SHAPE_LABELS[shape]} | {row['items_per_s'][shape]:.2f} | " + " | ".join(cells) + " |"
            )
    for shape in shapes:
        profile = profiles[shape]
        lines += [
            "",
            f"Readout profile (chat, scoring on, from the {SHAPE_LABELS[shape]}'s /metrics):",
            "",
            f"- engine steps per readout: {profile['engine_steps_per_readout']:.2f} (floor: "
            f"{floor['dependent_engine_steps']} dependent steps)",
            f"- context tokens per readout computed: {profile['computed_tokens_per_readout']:.1f}, already held: "
            f"{profile['cached_tokens_per_readout']:.1f} (floor: the {floor['block_tokens_after_answer_mean']:.1f} "
            "block tokens after the answer, mean over the score pairs)",
            "- per step: "
            + ", ".join(f"{STEP_PHASES[phase]} {profile[f'{phase}_s_per_step']:.3f} s" for phase in STEP_PHASES)
            + f"; readout wall time: {profile['readout_wall_s_mean']:.2f} s",
            f"- prefix cache hit rate, all engine requests: {profile['prefix_cache_hit_rate_all_requests']:.1%}",
        ]
    lines += [
        "",
        f"Goals: chat tok/s on/stock >= {GOALS['chat_tok_s_on_vs_stock']}, p50 on/stock <= "
        f"{GOALS['chat_p50_on_vs_stock']}; /v1/score warm >= {GOALS['score_warm_vs_generative']}x "
        "/generative_scoring.",
    ]
    return lines


def stock_configs() -> dict[str, bool]:
    """Stock vLLM as shipped, and (where the sidecar changes it: on CPU) with the sidecar's KV block size."""
    configs = {"default": False}
    if stock_engine_flags(like_sidecar=True) != stock_engine_flags(like_sidecar=False):
        configs["same_blocks"] = True
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-prompt-chars", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--port", type=int, default=18082)
    parser.add_argument("--shapes", action="store_true", help="also measure the vLLM endpoint plugin shape")
    parser.add_argument(
        "--per-step", action="store_true", help="also measure the sidecar with SEE_READOUT_REQUESTS=per_step"
    )
    args = parser.parse_args()

    model_dir = prepare_default_model(report=print)
    prompts = chat_prompts(args.prompts, args.max_prompt_chars)
    inputs = ScoreInputs(model_dir, score_pairs(args.pairs, 3000))
    RESULTS.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    configs = stock_configs()
    servers = {"sidecar": sidecar_server}
    if args.per_step:
        servers["sidecar_per_step"] = functools.partial(sidecar_server, readout_requests="per_step")
    if args.shapes:
        servers["plugin"] = plugin_vllm_server
    shape_rounds: dict[str, list[dict]] = {shape: [] for shape in servers}
    stock_rounds: dict[str, list[dict]] = {name: [] for name in configs}
    for round_index in range(args.rounds):
        for shape, server in servers.items():
            with server(model_dir, args.port, RESULTS / f"{shape}.log.tmp"):
                shape_rounds[shape].append(measure_scored(url, prompts, inputs, args, on_first=round_index % 2 == 0))
            print(f"round {round_index + 1} {shape}:", json.dumps(shape_rounds[shape][-1]), flush=True)
        for name, like_sidecar in configs.items():
            with stock_vllm_server(model_dir, args.port, RESULTS / "stock.log.tmp", like_sidecar):
                stock_rounds[name].append(measure_stock(url, prompts, inputs, args))
            print(f"round {round_index + 1} stock {name}:", json.dumps(stock_rounds[name][-1]), flush=True)

    when = stamp()
    summary = summarise(shape_rounds, stock_rounds, inputs)
    lines = report(summary, args, when, args.rounds)
    record = {
        "benchmark": "readout",
        "when": when,
        "machine": machine(),
        "model": model_dir.name,
        "args": vars(args),
        "summary": summary,
        "rounds": {**shape_rounds, "stock": stock_rounds},
        "goals": GOALS,
    }
    (RESULTS / f"readout-{when}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "readout-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
