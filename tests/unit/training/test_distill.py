"""Masked judge distillation: rows, the five supervised tokens, and a loss blind to everything else."""

import pytest
import torch

from selfeval.rubric import ATTRIBUTES
from training.distill import (
    DistillError,
    SftRow,
    build_row,
    masked_digit_loss,
    masked_example,
    pad_batch,
    score_logit_positions,
)

JUDGE = {"helpfulness": 7, "correctness": 6, "coherence": 8, "complexity": 3, "verbosity": 2}
PROMPT = "<|im_start|>user\nName a prime number.<|im_end|>\n<|im_start|>assistant\n"


def test_row_is_prompt_answer_and_canonical_block_with_judge_scores():
    row = build_row(3, PROMPT, "  Seven is prime.\n", JUDGE, {**JUDGE, "helpfulness": 9})
    assert row.text == (
        PROMPT + 'Seven is prime.\n\n[SELF_EVAL]\n{"helpfulness": 7, "correctness": 6, "coherence": 8, '
        '"complexity": 3, "verbosity": 2}\n[/SELF_EVAL]'
    )
    assert {a: row.text[slice(*row.digit_spans[a])] for a in ATTRIBUTES} == {a: str(v) for a, v in JUDGE.items()}
    assert row.mae_before == pytest.approx(2 / 5)
    assert SftRow.from_dict(row.to_dict()) == row


def test_exactly_the_five_digit_tokens_are_supervised(tokenizer):
    row = build_row(0, PROMPT, "Seven (7) is prime; so are 2, 3 and 5.", JUDGE, None)
    example = masked_example(row, tokenizer, 4096)
    supervised = [i for i, label in enumerate(example["labels"]) if label != -100]
    assert len(supervised) == 5
    assert [tokenizer.decode([example["input_ids"][i]]) for i in supervised] == [str(JUDGE[a]) for a in ATTRIBUTES]
    with pytest.raises(DistillError, match="max_length"):
        masked_example(row, tokenizer, 10)


def test_loss_ignores_every_non_digit_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 12, 50)
    targets = torch.randint(0, 50, (2, 12))
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, [3, 5, 7, 9, 11]] = True
    mask[1, [2, 4, 6, 8, 10]] = True
    loss = masked_digit_loss(logits, targets, mask)
    scrambled = targets.clone()
    scrambled[~mask] = torch.randint(0, 50, (int((~mask).sum()),))
    assert torch.equal(masked_digit_loss(logits, scrambled, mask), loss)
    changed = targets.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 50
    assert not torch.equal(masked_digit_loss(logits, changed, mask), loss)
    # mean over the ten supervised tokens unless a step-wide count is given
    assert masked_digit_loss(logits, targets, mask, normaliser=20) == pytest.approx(loss.item() / 2)


def test_padding_keeps_labels_and_marks_the_score_mask():
    batch = pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, -100]}, {"input_ids": [5], "labels": [-100]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["score_mask"].tolist() == [[False, True, False], [False, False, False]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_loss_on_kept_logit_positions_equals_the_loss_on_all_logits():
    torch.manual_seed(1)
    logits = torch.randn(3, 16, 40)
    targets = torch.randint(0, 40, (3, 16))
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[0, [4, 6, 8, 10, 12]] = True
    mask[1, [3, 5, 7, 9, 15]] = True
    mask[2, [4, 5, 6, 7, 8]] = True
    positions = score_logit_positions(mask)
    assert positions.tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 11, 14]
    full = masked_digit_loss(logits, targets, mask)
    kept = masked_digit_loss(logits[:, positions], targets, mask, positions=positions)
    assert kept == pytest.approx(full.item(), rel=1e-6)


def test_the_trainer_path_asks_the_model_only_for_score_logits_and_gets_the_same_gradients():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 64, (2, 20))
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, [5, 8, 11, 14, 17]] = True
    mask[1, [4, 6, 9, 12, 19]] = True

    full = masked_digit_loss(model(input_ids=ids).logits, ids, mask)
    full.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    positions = score_logit_positions(mask)
    outputs = model(input_ids=ids, logits_to_keep=positions)
    assert outputs.logits.shape == (2, len(positions), 64)
    kept = masked_digit_loss(outputs.logits, ids, mask, positions=positions)
    kept.backward()
    assert kept.item() == pytest.approx(full.item(), rel=1e-5)
    for want, parameter in zip(expected, model.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, want, rtol=1e-4, atol=1e-6)


def test_an_answer_holding_a_tag_of_its_own_is_not_distilled():
    from training.distill import distillable

    assert distillable("Paris is the capital of France.")
    assert not distillable("Paris. [/SELF_EVAL]")  # a stray closing tag in an invalid output
    assert not distillable("Paris. [self_eval] helpfulness: 3")
