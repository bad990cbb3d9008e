"""How much the distillation moved the answers: greedy answers of the untrained and the distilled model to the
same held-out prompts (transformers, CPU), compared token by token. The delta is trained on score digits only,
but its layers run for every token, so this is checked rather than assumed.

Usage: python experiments/hs2-distill/answer_drift.py [N_PROMPTS] > experiments/hs2-distill/answer_drift.json
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfeval.models import prepare_base_model, prepare_default_model
from training.data import default_dataset, load_groups

MAX_NEW_TOKENS = 48


def answers(model_dir, conversations) -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    for conversation in conversations:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            generated = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        out.append(generated[0, ids.shape[1] :].tolist())
    return out


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    groups = load_groups(default_dataset(), "eval.json")[:count]
    conversations = [g.conversation for g in groups]
    base = answers(prepare_base_model(report=lambda _: None), conversations)
    tuned = answers(prepare_default_model(report=lambda _: None), conversations)
    same_prefix = []
    for a, b in zip(base, tuned, strict=True):
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        same_prefix.append(n / max(len(a), 1))
    report = {
        "prompts": count,
        "max_new_tokens": MAX_NEW_TOKENS,
        "identical_answers": sum(a == b for a, b in zip(base, tuned, strict=True)),
        "mean_share_of_answer_before_first_difference": round(sum(same_prefix) / count, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
