"""Masked SFT on the real default model: digit distributions move towards the judge's digits while the model's
predictions at answer positions barely move."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.config import SFTConfig
from training.distill import build_row, masked_example, run_sft
from training.progress import NullProgress

JUDGE = {"helpfulness": 3, "correctness": 2, "coherence": 5, "complexity": 1, "verbosity": 6}
QUESTIONS = ["Name a primary colour.", "What is 3 + 4?", "Give a synonym for happy.", "Name a planet."]
ANSWERS = ["Red is a primary colour.", "3 + 4 = 7.", "Joyful.", "Mars is a planet."]


def _measure(model_dir, rows, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    digit_probs, answer_logprobs, digit_logprobs = [], [], []
    for row in rows:
        example = masked_example(row, tokenizer, 4096)
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logprobs = model(ids).logits.log_softmax(-1)[0]
        digits = [i for i, label in enumerate(example["labels"]) if label != -100]
        digit_probs += [logprobs[i - 1, ids[0, i]].exp().item() for i in digits]
        answer_logprobs.append(logprobs[: digits[0] - 30])  # prompt and answer, well before the block
        digit_logprobs.append(logprobs[[i - 1 for i in digits]])
    return digit_probs, answer_logprobs, digit_logprobs


@pytest.mark.trains
def test_digits_move_towards_the_judge_while_answers_stay(tmp_path, model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for index, (question, answer) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        rows.append(build_row(index, prompt, answer, JUDGE, None))
    before_digits, before_answer, before_at_digits = _measure(model_dir, rows, tokenizer)
    config = SFTConfig(learning_rate=5e-5, per_device_batch=4, grad_accum=1, epochs=8, warmup_ratio=0.0)
    metrics = run_sft(rows, model_dir, tmp_path / "sft", config, seed=1, progress=NullProgress(), on_gpu=False)
    assert metrics["supervised_tokens"] == 5 * len(rows) and metrics["update_steps"] == 8
    after_digits, after_answer, after_at_digits = _measure(tmp_path / "sft", rows, tokenizer)

    gain = sum(after_digits) / len(after_digits) - sum(before_digits) / len(before_digits)
    assert gain > 0.2, (before_digits, after_digits)
    assert sum(a > b for a, b in zip(after_digits, before_digits, strict=True)) >= 0.9 * len(after_digits)

    # the distributions at answer positions move far less than those at the score positions (KL(before||after))
    def kl(befores, afters):
        values = [
            torch.nn.functional.kl_div(a, b, log_target=True, reduction="batchmean").item()
            for b, a in zip(befores, afters, strict=True)
        ]
        return sum(values) / len(values)

    at_answers, at_digits = kl(before_answer, after_answer), kl(before_at_digits, after_at_digits)
    assert at_answers < 0.2 * at_digits, (at_answers, at_digits)
