"""Where a forced readout's time goes on this machine, and whether reading the five digits otherwise helps.

In process, on the default checkpoint's vLLM engine (the sidecar's engine settings), alone and with 7 greedy
64-token decodes running beside it (the load of concurrency 8):
- session (what the sidecar does): five dependent one-token steps in one vLLM streaming-input request
  (server.engine.StreamingDigitReader): later steps compute only their own tokens.
- per-request (the sidecar before 2026-12-01; a remote engine's path): five one-token requests, each with the
  whole context, recomputing back to the last full KV block.
  For both, per step from vLLM's request stats (server.engine.StepTimes): `to_engine` (submitted here -> queued
  in the EngineCore), `in_engine` (queued -> its token computed), `back` (token -> returned here).
- speculative: all remaining steps at once with guessed digits (the previous readout's argmaxes), keeping the
  readings up to the first wrong guess and resubmitting the rest: exact (same contexts), fewer rounds, more
  engine requests.
Six answers, three passes each. The price the other requests pay shows as engine requests per readout (each
computes its context past the last full KV block); their tokens/s over the ~15 s of a run is too coarse here.

    python experiments/readout-steps/readout_steps.py      # ~6 min on 2 cores; writes results.json beside it
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import sys
import time
from pathlib import Path

from selfeval.block import forced_token_layout
from selfeval.card import load_card
from selfeval.models import prepare_default_model
from selfeval.prompts import render_prompt
from selfeval.readout import distribution_from_token_logprobs
from selfeval.rubric import ATTRIBUTES
from server.engine import SamplingSpec, VllmEngine
from server.scoring import forced_readout
from server.settings import Settings

ANSWERS = [
    "1. Establish a consistent sleep routine.\n2. Limit caffeine and alcohol.\n3. Maintain a healthy diet.",
    "Paris.",
    "I cannot help with that.",
    "A prime number is a number bigger than 1 that can only be divided evenly by 1 and itself, like 2, 3, 5 and 7.",
    "Sure! Here is a poem about the sea: the waves roll in, the waves roll out, and that is all it is about.",
    "The answer is 42 because the question was wrong.",
]
PASSES = 3
PHASES = ("to_engine", "in_engine", "back")


async def speculative_readout(engine, prompt_ids, answer, request_id, guess):
    ids = engine.digit_token_ids
    layout, positions = forced_token_layout(engine.encode_literal, answer, [ids[g] for g in guess])
    read, start, rounds, requests = {}, 0, 0, 0
    while start < len(ATTRIBUTES):
        steps = await asyncio.gather(
            *(
                engine.next_digit_logprobs(prompt_ids + layout[: positions[i]], f"{request_id}-s{rounds}-{i}")
                for i in range(start, len(ATTRIBUTES))
            )
        )
        rounds, requests = rounds + 1, requests + len(steps)
        found = [distribution_from_token_logprobs(step.logprobs, ids) for step in steps]
        next_start = len(ATTRIBUTES)
        for offset, distribution in enumerate(found):
            index = start + offset
            read[ATTRIBUTES[index]] = distribution  # exact: every digit before it is an argmax already read
            if layout[positions[index]] != ids[distribution.argmax]:  # wrong guess: later readings are void
                layout[positions[index]] = ids[distribution.argmax]
                for later, void in enumerate(found[offset + 1 :]):  # their argmaxes are the next guesses
                    layout[positions[index + 1 + later]] = ids[void.argmax]
                next_start = index + 1
                break
        start = next_start
    return read, rounds, requests


async def run(background: int, mode: str) -> dict:
    model_dir = prepare_default_model(report=lambda *_: None)
    card = load_card(model_dir)
    # an observer turns vLLM's request stats on, as in the sidecar (they carry the step timestamps)
    engine = VllmEngine.create(Settings(max_model_len=4096), model_dir, card.digit_token_ids, lambda _: None)
    per_request = copy.copy(engine)  # the same vLLM engine, read a request per step (SEE_READOUT_REQUESTS)
    per_request.readout_requests = "per_step"
    step_times: list[dict[str, float]] = []
    computed: list[int] = []
    messages = [{"role": "user", "content": "Give me an answer."}]
    prompt = engine.encode(render_prompt(messages, card.prompt_mode, engine.apply_chat_template))
    reference = {  # the per-request path alone, once per answer: what every other reading is compared with
        k: (await forced_readout(per_request, prompt, a, f"ref{k}")).distributions for k, a in enumerate(ANSWERS)
    }
    stop = asyncio.Event()

    async def decode(worker: int) -> None:
        spec = SamplingSpec(max_tokens=64, temperature=0.0, top_p=1.0, read_digits=False)
        while not stop.is_set():
            story = engine.encode(f"Write a long story, number {worker} at {time.time()}.")
            await engine.generate(story, spec, f"bg-{worker}-{time.time()}")

    workers = [asyncio.create_task(decode(i)) for i in range(background)]
    await asyncio.sleep(3 if background else 0)
    walls, rounds, requests, gaps = [], [], [], []
    guess = [reference[0][a].argmax for a in ATTRIBUTES]
    for repeat in range(PASSES):
        for k, answer in enumerate(ANSWERS):
            began = time.monotonic()
            if mode in ("session", "per-request"):
                forced = await forced_readout(
                    engine if mode == "session" else per_request, prompt, answer, f"m{repeat}-{k}"
                )
                read, used_rounds, used_requests = forced.distributions, 5, 5 if mode == "per-request" else 1
                step_times.append({phase: getattr(forced.cost, f"{phase}_s") / forced.cost.steps for phase in PHASES})
                computed.append(forced.cost.computed_tokens)
            else:
                spec_id = f"m{repeat}-{k}"
                read, used_rounds, used_requests = await speculative_readout(engine, prompt, answer, spec_id, guess)
                guess = [read[a].argmax for a in ATTRIBUTES]
            walls.append(time.monotonic() - began)
            rounds.append(used_rounds)
            requests.append(used_requests)
            pairs = (zip(read[a].probs, reference[k][a].probs, strict=True) for a in ATTRIBUTES)
            gaps.append(max(abs(p - q) for pair in pairs for p, q in pair))
    stop.set()
    await asyncio.gather(*workers)
    engine.shutdown()
    result = {"mode": mode, "background_decodes": background, "readout_wall_s_median": statistics.median(walls),
              "rounds_mean": statistics.mean(rounds), "engine_requests_mean": statistics.mean(requests),
              "max_prob_gap_vs_per_request_alone": max(gaps)}  # fmt: skip
    if step_times:
        result["step_s_median"] = {key: statistics.median(t[key] for t in step_times) for key in PHASES}
        result["computed_tokens_per_readout_median"] = statistics.median(computed)
    return result


def main() -> None:
    if len(sys.argv) == 3:  # one configuration, in its own process (one engine per process)
        print("RESULT " + json.dumps(asyncio.run(run(int(sys.argv[1]), sys.argv[2]))), flush=True)
        return
    import subprocess

    results = []
    for background in (0, 7):
        for mode in ("session", "per-request", "speculative"):
            done = subprocess.run([sys.executable, __file__, str(background), mode], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{mode} with {background} decodes failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(line[7:]))
            print(json.dumps(results[-1]), flush=True)
    (Path(__file__).parent / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
