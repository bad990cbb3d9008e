"""Balanced selection of SFT rows: per-prompt cap, bucket coverage, determinism by seed."""

import random
from collections import Counter

from selfeval.rubric import ATTRIBUTES
from training.config import SFTConfig
from training.distill import SftRow, bin_of, select_rows


def make_rows(n: int, prompts: int, seed: int = 0) -> list[SftRow]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        # mostly high scores, a few rare low ones: the balanced strategy must surface the rare bins
        scores = {
            a: (rng.choice([0, 1, 2, 3]) if rng.random() < 0.05 else rng.choice([6, 7, 8, 9])) for a in ATTRIBUTES
        }
        rows.append(SftRow(i % prompts, f"row {i}", {}, scores, None, float(rng.random() * 3)))
    return rows


def test_cap_and_size_are_respected():
    rows = make_rows(1280, 160)
    selected = select_rows(rows, SFTConfig(max_samples=400, per_prompt_cap=4), seed=43)
    assert len(selected) == 400
    assert max(Counter(r.prompt_index for r in selected).values()) <= 4
    assert len({id(r) for r in selected}) == 400


def test_balanced_covers_rare_bins_more_than_random():
    rows = make_rows(1280, 160)
    selected = select_rows(rows, SFTConfig(max_samples=400, per_prompt_cap=4), seed=43)
    low_selected = sum(any(bin_of(r.judge_scores[a]) <= 1 for a in ATTRIBUTES) for r in selected) / len(selected)
    low_all = sum(any(bin_of(r.judge_scores[a]) <= 1 for a in ATTRIBUTES) for r in rows) / len(rows)
    assert low_selected > 1.5 * low_all
    present = {(a, bin_of(r.judge_scores[a])) for r in rows for a in ATTRIBUTES}
    covered = {(a, bin_of(r.judge_scores[a])) for r in selected for a in ATTRIBUTES}
    assert covered == present


def test_same_seed_same_rows_other_seed_other_rows():
    rows = make_rows(600, 100)
    config = SFTConfig(max_samples=200, per_prompt_cap=4)
    first = [r.text for r in select_rows(rows, config, seed=7)]
    assert first == [r.text for r in select_rows(rows, config, seed=7)]
    assert first != [r.text for r in select_rows(rows, config, seed=8)]


def test_all_rows_when_under_the_limit():
    rows = make_rows(10, 3)
    assert select_rows(rows, SFTConfig(max_samples=400), seed=1) == rows


def test_largest_mae_takes_the_worst_calibrated_first():
    rows = make_rows(300, 100)
    selected = select_rows(rows, SFTConfig(max_samples=50, per_prompt_cap=4, selection="largest_mae"), seed=1)
    cutoff = sorted((r.mae_before for r in rows), reverse=True)[49]
    assert min(r.mae_before for r in selected) >= cutoff
