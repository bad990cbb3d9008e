"""Metrics against human labels: AUROC, paired bootstrap over prompts, predictors of three kinds."""

import numpy as np
import pytest

from evaluation.labelled_metrics import (
    Predictor,
    auroc,
    constant_distribution,
    decision_mix,
    evaluate,
    goals,
    prompt_resamples,
)
from selfeval.rubric import ATTRIBUTES


def test_auroc_counts_ties_half_and_needs_both_classes():
    positive = np.array([1, 1, 0, 0], bool)
    assert auroc(np.array([3.0, 4.0, 1.0, 2.0]), positive) == 1.0
    assert auroc(np.array([1.0, 2.0, 3.0, 4.0]), positive) == 0.0
    assert auroc(np.array([1.0, 1.0, 1.0, 1.0]), positive) == 0.5
    assert auroc(np.array([1.0, 2.0]), np.array([1, 1], bool)) is None


def test_resamples_keep_the_responses_of_a_prompt_together():
    groups = np.array([0, 0, 1, 1, 2, 2])
    for idx in prompt_resamples(groups, 20, seed=1):
        assert len(idx) == 6
        drawn = groups[idx]
        for g in np.unique(drawn):
            assert (drawn == g).sum() % 2 == 0


def _onehot(points):
    probs = np.full((len(points), len(ATTRIBUTES), 10), 1e-6)
    for i, row in enumerate(points):
        for k, digit in enumerate(row):
            probs[i, k, digit] = 1.0
    return probs / probs.sum(axis=2, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    human = 2 * rng.integers(0, 5, size=(60, len(ATTRIBUTES)))
    groups = np.repeat(np.arange(30), 2)
    noisy = np.clip(human + rng.integers(-3, 4, size=human.shape), 0, 9)
    return human, groups, noisy


def test_a_perfect_predictor_beats_a_noisy_one_with_an_interval_above_zero(data):
    human, groups, noisy = data
    predictors = [
        Predictor("perfect", "distribution", "", probs=_onehot(human)),
        Predictor("noisy", "distribution", "", probs=_onehot(noisy)),
        Predictor("scalar", "scalar", "", values=noisy[:, 0].astype(float)),
        Predictor("constant", "constant", "", probs=constant_distribution(human, len(human))),
    ]
    metrics = evaluate(human, groups, predictors, "perfect", resamples=200)
    row = metrics["targets"]["helpfulness"]
    assert row["perfect"]["spearman"]["value"] == pytest.approx(1.0)
    assert row["perfect"]["top1"]["value"] == pytest.approx(1.0)
    assert row["perfect"]["mae"]["value"] < 1e-3
    assert row["perfect"]["auroc_bad"]["value"] == pytest.approx(1.0)
    assert row["constant"]["spearman"]["value"] is None and row["constant"]["auroc_bad"]["value"] == 0.5
    assert set(row["scalar"]) == {"spearman", "auroc_bad"}  # no distribution, no MAE / ECE / top-k
    difference = metrics["paired_vs_baselines"]["helpfulness"]["noisy"]["spearman"]
    assert difference["value"] > 0 and difference["low"] > 0
    assert metrics["paired_vs_baselines"]["helpfulness"]["noisy"]["mae"]["high"] < 0  # lower MAE than noisy
    # quality is judged against human helpfulness; here correctness and coherence vary independently of it
    assert 0.2 < metrics["targets"]["quality"]["perfect"]["spearman"]["value"] < 1.0
    assert all(goals(metrics)["each_attribute_spearman_above_every_baseline_ci_above_0"].values())


def test_constant_distribution_is_the_training_label_frequency():
    train = np.array([[0, 2, 4, 6, 8], [2, 2, 4, 6, 8]])
    constant = constant_distribution(train, 3)
    assert constant.shape == (3, 5, 10)
    assert constant[0, 0, 0] == constant[0, 0, 2] == 0.5 and constant[2, 1, 2] == 1.0


def test_decision_mix_is_shares_of_each_action():
    assert decision_mix(["accept", "escalate", "escalate", "review"]) == {
        "accept": 0.25,
        "review": 0.25,
        "escalate": 0.5,
        "n": 4,
    }
