"""Masked SFT (loss on the five score tokens) against a plain transformers Trainer (loss on every token).

Both train the same model on the same rows (HelpSteer2 reference answers with their doubled human scores in
the canonical block, as `training/distill.py` builds them), the same batches, optimiser and number of steps;
only the loss differs. Runs alternate (plain, masked, plain, masked, ...) after one discarded warm-up step
each, and the report gives tokens/s of each and their ratio per round, so machine noise shows.

    python -m bench.bench_sft                      # the default model on CPU
    python -m bench.bench_sft --random-init        # a small random-initialised model, default tokenizer (GPU)

Results: bench/results/sft-<stamp>.json and sft-latest.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, machine, small_random_model, stamp


def load_rows(count: int, max_tokens: int, tokenizer):
    from training.data import default_dataset, load_groups
    from training.distill import DistillError, build_row, masked_example

    examples = []
    for group in load_groups(default_dataset(), kitware_file="train.json"):
        for reference in group.references:
            row = build_row(group.index, group.prompt + "\n", reference.response, reference.scores, None)
            try:
                examples.append(masked_example(row, tokenizer, max_tokens))
            except DistillError:
                continue  # longer than max_tokens
            if len(examples) == count:
                return examples
    return examples


def plain_collate(features, pad_id):
    from training.distill import pad_batch

    batch = pad_batch(features, pad_id)
    batch.pop("score_mask")
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"].eq(0), -100)
    return batch


def build_model(model_dir: Path, random_init: bool, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    if random_init:
        return small_random_model(model_dir).to(device)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)


def train_once(kind: str, examples, tokenizer, args_ns, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from training.distill import _masked_trainer_class, pad_batch

    on_gpu = torch.cuda.is_available()
    model = build_model(args_ns.model, args_ns.random_init, "cuda" if on_gpu else "cpu")
    model.config.use_cache = False
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    arguments = TrainingArguments(
        output_dir=str(args_ns.scratch / kind), learning_rate=2e-6, lr_scheduler_type="cosine", max_steps=steps,
        per_device_train_batch_size=args_ns.batch, max_grad_norm=1.0, use_cpu=not on_gpu, bf16=on_gpu,
        save_strategy="no", logging_steps=steps, report_to=[], disable_tqdm=True, remove_unused_columns=False,
        seed=0, data_seed=0, dataloader_drop_last=True,
    )  # fmt: skip
    trainer_class, collate = (
        (_masked_trainer_class(), lambda f: pad_batch(f, pad_id))
        if kind == "masked"
        else (Trainer, lambda f: plain_collate(f, pad_id))
    )
    trainer = trainer_class(
        model=model, args=arguments, train_dataset=Dataset.from_list(examples), data_collator=collate
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    tokens = sum(len(e["input_ids"]) for e in examples[: steps * args_ns.batch])
    return {"kind": kind, "steps": result.global_step, "seconds": seconds, "tokens": tokens, "tok_s": tokens / seconds,
            "loss": float(result.training_loss)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the default model)")
    parser.add_argument("--random-init", action="store_true", help="small random-initialised model, same tokenizer")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=384, help="skip rows longer than this")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from selfeval.models import prepare_default_model

    args.model = args.model or prepare_default_model()
    args.scratch = Path(tempfile.mkdtemp(prefix="see-bench-sft-"))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = load_rows(args.rows, args.max_tokens, tokenizer)
    if len(examples) < args.batch * args.steps:
        raise SystemExit(
            f"only {len(examples)} rows fit --max-tokens {args.max_tokens}; need {args.batch * args.steps}"
        )
    for kind in ("plain", "masked"):  # warm-up: thread pools, allocator, first-step overheads
        train_once(kind, examples, tokenizer, args, 1)
    runs = []
    for round_index in range(args.rounds):
        for kind in ("plain", "masked"):
            run = train_once(kind, examples, tokenizer, args, args.steps) | {"round": round_index}
            runs.append(run)
            print(f"round {round_index} {kind:6s} {run['tok_s']:8.1f} tok/s ({run['seconds']:.1f} s)", flush=True)
    ratios = [m["tok_s"] / p["tok_s"] for p, m in zip(runs[0::2], runs[1::2], strict=True)]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else machine()
    model_label = "random-init small (default tokenizer)" if args.random_init else str(Path(args.model).name)
    result = {
        "benchmark": "masked SFT vs plain Trainer", "stamp": stamp(), "device": device, "model": model_label,
        "rows": len(examples), "batch": args.batch, "steps": args.steps, "runs": runs,
        "ratio_masked_over_plain": ratios, "ratio_median": statistics.median(ratios),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sft-{result['stamp']}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Masked SFT vs plain Trainer ({result['stamp']}, {device}, {model_label}; batch {args.batch}, "
        f"{args.steps} steps per run, {len(examples)} rows of <= {args.max_tokens} tokens):",
        "",
        "| round | plain tok/s | masked tok/s | masked / plain |",
        "|---|---|---|---|",
    ]
    for index, ratio in enumerate(ratios):
        plain, masked = runs[2 * index], runs[2 * index + 1]
        lines.append(f"| {index} | {plain['tok_s']:.1f} | {masked['tok_s']:.1f} | {ratio:.3f} |")
    (RESULTS / "sft-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
