"""Masked judge distillation: rollouts -> judge-relabelled rows -> balanced selection -> SFT on five digit tokens.

Choices (docs/method.md §5.2-6, §12):
- A row is prompt + stripped answer + the canonical block carrying the JUDGE's scores; only the five score
  digits are supervised (character spans from `selfeval.block`, token overlap via the tokenizer's offsets;
  exactly five supervised tokens per row, each one digit, or the row is refused with an error).
- Balanced selection: 25 buckets (attribute x judge-score bin), shuffled, round-robin under a per-prompt cap,
  seeded, then a random fill; `largest_mae` is the reference's alternative.
- Quirks of the reference fixed on purpose (§6, §12 item 9): the loss is the mean over every supervised token of
  an optimiser step (transformers' `num_items_in_batch`), so a short final accumulation group is not
  under-weighted; and on GPU the weights stay fp32 under bf16 autocast, so lr 2e-6 updates are not rounded away.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from selfeval.block import BlockParseError, parse_output, render_output
from selfeval.rubric import ATTRIBUTES, DIGITS, validate_scores
from training.config import SFTConfig
from training.progress import Progress

SCORE_BINS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


class DistillError(ValueError):
    """A row that cannot be supervised on exactly its five digit tokens, or too few usable rows."""


@dataclass(frozen=True)
class SftRow:
    prompt_index: int
    text: str
    digit_spans: dict[str, tuple[int, int]]
    judge_scores: dict[str, int]
    self_scores: dict[str, int] | None
    mae_before: float | None

    def to_dict(self) -> dict:
        return {
            "prompt_index": self.prompt_index,
            "text": self.text,
            "digit_spans": {a: list(span) for a, span in self.digit_spans.items()},
            "judge_scores": self.judge_scores,
            "self_scores": self.self_scores,
            "mae_before": self.mae_before,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SftRow:
        spans = {a: tuple(span) for a, span in data["digit_spans"].items()}
        return cls(
            data["prompt_index"], data["text"], spans, data["judge_scores"], data["self_scores"], data["mae_before"]
        )


def build_row(prompt_index: int, prompt: str, answer: str, judge_scores: dict, self_scores: dict | None) -> SftRow:
    """prompt + answer + canonical block with the judge's scores, and where its five digits sit in the text."""
    judged = validate_scores(judge_scores)
    output = render_output(answer.strip(), judged)
    parsed = parse_output(output)
    offset = len(prompt)
    spans = {a: (start + offset, end + offset) for a, (start, end) in parsed.digit_spans.items()}
    mae = None
    if self_scores is not None:
        own = validate_scores(self_scores)
        mae = sum(abs(own[a] - judged[a]) for a in ATTRIBUTES) / len(ATTRIBUTES)
    return SftRow(prompt_index, prompt + output, spans, judged, self_scores, mae)


def distillable(answer: str) -> bool:
    """Whether `answer` can carry the canonical block: it must not hold a tag of its own (a stray
    `[/SELF_EVAL]` in an invalid output would otherwise be taught as part of the answer)."""
    try:
        parse_output(render_output(answer.strip(), dict.fromkeys(ATTRIBUTES, 0)))
    except BlockParseError:
        return False
    return True


def bin_of(score: int) -> int:
    return next(i for i, (low, high) in enumerate(SCORE_BINS) if low <= score <= high)


def select_rows(rows: list[SftRow], config: SFTConfig, seed: int) -> list[SftRow]:
    """At most `max_samples` rows, each prompt at most `per_prompt_cap` times (docs/method.md §5.3)."""
    if len(rows) <= config.max_samples:
        return list(rows)
    rng = random.Random(seed)
    chosen: list[int] = []
    taken: set[int] = set()
    per_prompt: dict[int, int] = defaultdict(int)

    def take(i: int) -> bool:
        if i in taken or per_prompt[rows[i].prompt_index] >= config.per_prompt_cap:
            return False
        taken.add(i)
        chosen.append(i)
        per_prompt[rows[i].prompt_index] += 1
        return True

    if config.selection == "largest_mae":
        order = list(range(len(rows)))
        rng.shuffle(order)
        order.sort(key=lambda i: -(rows[i].mae_before or 0.0))
        for i in order:
            if len(chosen) < config.max_samples:
                take(i)
    else:
        buckets: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            for attribute in ATTRIBUTES:
                buckets[(attribute, bin_of(row.judge_scores[attribute]))].append(i)
        keys = sorted(buckets)
        for key in keys:
            rng.shuffle(buckets[key])
        progressed = True
        while progressed and len(chosen) < config.max_samples:
            progressed = False
            rng.shuffle(keys)
            for key in keys:
                bucket = buckets[key]
                while bucket and len(chosen) < config.max_samples:
                    if take(bucket.pop()):
                        progressed = True
                        break
        rest = [i for i in range(len(rows)) if i not in taken]
        rng.shuffle(rest)
        for i in rest:
            if len(chosen) < config.max_samples:
                take(i)
    return [rows[i] for i in chosen]


def supervised_positions(row: SftRow, tokenizer, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, indices of the five supervised digit tokens) for one row; raises DistillError otherwise."""
    encoded = tokenizer(row.text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) > max_length:
        raise DistillError(f"row of prompt {row.prompt_index} is {len(ids)} tokens, above sft.max_length={max_length}")
    positions = []
    for attribute in ATTRIBUTES:
        start, end = row.digit_spans[attribute]
        hits = [t for t, (a, b) in enumerate(offsets) if a < end and start < b]
        if len(hits) != 1 or tokenizer.decode([ids[hits[0]]]) not in DIGITS:
            raise DistillError(
                f"{attribute} digit of prompt {row.prompt_index} is not exactly one digit token "
                f"({[tokenizer.decode([ids[t]]) for t in hits]}); this tokenizer cannot be distilled on score tokens"
            )
        positions.extend(hits)
    if len(positions) != len(ATTRIBUTES):
        raise DistillError(f"expected {len(ATTRIBUTES)} supervised tokens, got {len(positions)}")
    return ids, positions


def masked_example(row: SftRow, tokenizer, max_length: int) -> dict:
    ids, positions = supervised_positions(row, tokenizer, max_length)
    labels = [-100] * len(ids)
    for position in positions:
        labels[position] = ids[position]
    return {"input_ids": ids, "labels": labels}


def masked_digit_loss(logits, targets, score_mask, normaliser=None, positions=None):
    """Next-token cross-entropy (full vocabulary) summed over the `score_mask` positions only, divided by
    `normaliser` (the supervised tokens of the whole optimiser step) or by this batch's count.

    `logits` has one column per sequence position, or, with `positions` (sorted sequence indices), only the
    columns at those positions: the trainer asks the model for the logits that predict a score token and
    nothing else (`logits_to_keep`), which skips the LM head and its softmax on every other token."""
    import torch
    import torch.nn.functional as F

    rows, columns = score_mask[:, 1:].bool().nonzero(as_tuple=True)  # logit at t predicts the token at t + 1
    index = columns if positions is None else torch.searchsorted(positions, columns)
    total = F.cross_entropy(logits[rows, index].float(), targets[rows, columns + 1], reduction="sum")
    return total / (normaliser if normaliser is not None else max(len(rows), 1))


def score_logit_positions(score_mask):
    """The sorted sequence positions whose logits predict a supervised token, over the whole batch."""
    import torch

    return torch.unique(score_mask[:, 1:].bool().nonzero(as_tuple=True)[1])


def _masked_trainer_class():
    from transformers import Trainer

    class MaskedDigitTrainer(Trainer):
        """Trainer whose loss is `masked_digit_loss` over the five score tokens of each row."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = True  # so the Trainer counts supervised tokens per optimiser step

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            score_mask = inputs.pop("score_mask")
            inputs.pop("labels")  # kept in the batch so the Trainer counts supervised tokens per step
            positions = score_logit_positions(score_mask)
            outputs = model(**inputs, logits_to_keep=positions)
            loss = masked_digit_loss(outputs.logits, inputs["input_ids"], score_mask, num_items_in_batch, positions)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
            return (loss, outputs) if return_outputs else loss

    return MaskedDigitTrainer


def pad_batch(features: list[dict], pad_id: int) -> dict:
    import torch

    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    attention = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        input_ids[row, :n] = torch.tensor(feature["input_ids"])
        labels[row, :n] = torch.tensor(feature["labels"])
        attention[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "score_mask": labels.ne(-100)}


def run_sft(
    rows: list[SftRow],
    model_dir: Path,
    out_dir: Path,
    config: SFTConfig,
    seed: int,
    progress: Progress,
    on_gpu: bool,
    is_main: bool = True,
) -> dict:
    """Full-parameter SFT from `model_dir` with loss on the five digit tokens only, on every rank of the run;
    main saves to `out_dir`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = [masked_example(row, tokenizer, config.max_length) for row in rows]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses: list[float] = []

    class StepCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.advance("sft_steps")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=0.0,
        max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.per_device_batch,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        gradient_checkpointing=on_gpu,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = _masked_trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        data_collator=lambda features: pad_batch(features, pad_id),
        callbacks=[StepCallback()],
    )
    batches = -(-len(examples) // config.per_device_batch)
    progress.start("sft_steps", "masked SFT steps", max(1, -(-batches // config.grad_accum)) * config.epochs)
    result = trainer.train()
    progress.finish("sft_steps")
    trainer.save_model(str(out_dir))  # writes on main only
    if is_main:
        tokenizer.save_pretrained(out_dir)
    return {
        "examples": len(examples),
        "supervised_tokens": len(examples) * len(ATTRIBUTES),
        "update_steps": result.global_step,
        "mean_loss": float(result.training_loss),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
        "losses": losses,
        "loss_scope": "five self-eval score tokens only",
    }


def rows_path(cycle_dir: Path) -> Path:
    return cycle_dir / "sft_data" / "score_token_sft_train.jsonl"
