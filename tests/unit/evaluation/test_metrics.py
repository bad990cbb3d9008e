"""Every evaluation metric against values computed by hand on tiny fixtures, edge cases included."""

import math

import numpy as np
import pytest

from evaluation.metrics import (
    LOG_FLOOR,
    Arrays,
    Bootstrap,
    Example,
    compare_to_baseline,
    compute_metrics,
    ece,
    pairwise_win_rate,
    spearman,
    topk_digits,
    topk_vocab_bounds,
    win_scores,
)

UNIFORM = [0.1] * 10


def onehot(digit: int) -> list[float]:
    return [1.0 if d == digit else 0.0 for d in range(10)]


def example(id_, digits_or_probs, judge, mass=(1.0,) * 5, valid=True) -> Example:
    probs = [onehot(x) if isinstance(x, int) else x for x in digits_or_probs]
    return Example(id=id_, probs=probs, label_mass=list(mass), judge=list(judge), valid_block=valid)


# Hand computation for SHARP: self 7,7,8,3,4 vs judge 6,8,8,3,2 -> errors 1,1,0,0,2, MAE 0.8,
# linear 1 - 0.8/9 = 0.911111, squared 0.830123; judge quality (6+8+8)/27 = 0.814815.
SHARP = example("a", [7, 7, 8, 3, 4], [6, 8, 8, 3, 2])
# FLAT: uniform everywhere -> argmax 0 (ties go to the lower score); judge 9,0,4,4,4 -> errors 9,0,4,4,4, MAE 4.2,
# linear 1 - 4.2/9 = 0.533333, squared 0.284444; judge quality 13/27 = 0.481481; expected score 4.5 everywhere.
FLAT = example("b", [UNIFORM] * 5, [9, 0, 4, 4, 4], valid=False)


def test_quality_and_both_calibrations_match_hand_values():
    m = compute_metrics([SHARP, FLAT], Bootstrap(resamples=50))
    assert m["quality"]["value"] == pytest.approx((22 / 27 + 13 / 27) / 2)
    assert m["calibration_linear"]["value"] == pytest.approx((1 - 0.8 / 9 + 1 - 4.2 / 9) / 2)
    assert m["calibration"]["value"] == pytest.approx(((1 - 0.8 / 9) ** 2 + (1 - 4.2 / 9) ** 2) / 2)
    assert m["mae"]["value"] == pytest.approx((0.8 + 4.2) / 2)
    assert m["valid_block_rate"]["value"] == 0.5
    assert m["calibration_valid_blocks_only"]["value"] == pytest.approx((1 - 0.8 / 9) ** 2)
    assert m["predicted_quality"]["value"] == pytest.approx(((7 + 7 + 8) / 27 + 4.5 / 9) / 2)
    helpfulness = m["per_attribute"]["helpfulness"]
    assert helpfulness["mae"]["value"] == pytest.approx((1 + 9) / 2)  # argmax 0 vs judge 9
    assert helpfulness["mae_expected"]["value"] == pytest.approx((1 + 4.5) / 2)


def test_brier_and_log_loss_including_zero_mass_on_the_judges_digit():
    m = compute_metrics([SHARP], Bootstrap(resamples=10))
    correctness = m["per_attribute"]["correctness"]  # one-hot on 7, judge 8: zero mass on the judge's digit
    assert correctness["brier"]["value"] == pytest.approx(2.0)
    assert correctness["log_loss"]["value"] == pytest.approx(-math.log(LOG_FLOOR))
    assert m["per_attribute"]["coherence"]["brier"]["value"] == 0.0  # one-hot on the judge's digit
    assert m["per_attribute"]["coherence"]["log_loss"]["value"] == pytest.approx(0.0, abs=1e-12)
    flat = compute_metrics([FLAT], Bootstrap(resamples=10))
    assert flat["brier"]["value"] == pytest.approx(0.9 * 0.9 + 9 * 0.01)  # (0.1-1)^2 + nine (0.1)^2
    assert flat["log_loss"]["value"] == pytest.approx(math.log(10))


def test_topk_among_digits_breaks_ties_fairly():
    flat = Arrays.of([FLAT])
    for k in (1, 3, 5):
        assert topk_digits(flat, k) == pytest.approx(np.full((1, 5), k / 10))
    sharp = Arrays.of([SHARP])
    assert topk_digits(sharp, 1)[0].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    # judge digit with zero mass ties with 8 other zero digits behind the one-hot digit: top-3 has 2 of 9 slots
    assert topk_digits(sharp, 3)[0, 0] == pytest.approx(2 / 9)
    ranked = example("c", [[0.5, 0.3, 0.2] + [0.0] * 7] * 5, [1, 1, 1, 1, 1])
    assert topk_digits(Arrays.of([ranked]), 1)[0, 0] == 0.0
    assert topk_digits(Arrays.of([ranked]), 3)[0, 0] == 1.0


def test_topk_over_the_vocabulary_is_bounded_by_the_digit_mass():
    full = example("d", [[0.6, 0.4] + [0.0] * 8] * 5, [0] * 5, mass=(1.0,) * 5)
    lower, upper = topk_vocab_bounds(Arrays.of([full]), 1)
    assert lower.tolist() == upper.tolist() == [[1.0] * 5]
    # digits hold half the mass; the judge's digit has 0.6 * 0.5 = 0.3 of the vocabulary, the other 0.5 could be
    # one token above it (floor(0.5 / 0.3) = 1): top-1 is then uncertain, top-3 certain
    half = example("e", [[0.6, 0.4] + [0.0] * 8] * 5, [0] * 5, mass=(0.5,) * 5)
    lower1, upper1 = topk_vocab_bounds(Arrays.of([half]), 1)
    assert lower1[0, 0] == 0.0 and upper1[0, 0] == 1.0
    lower3, _ = topk_vocab_bounds(Arrays.of([half]), 3)
    assert lower3[0, 0] == 1.0


def test_spearman_against_a_hand_value_and_undefined_for_constants():
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(0.8)
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 2, 3])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([5, 5, 5])) is None  # a constant judge
    assert spearman(np.array([4.5, 4.5]), np.array([1, 2])) is None  # all ties


def test_ece_by_hand():
    confidence = np.array([0.9, 0.9, 0.6, 0.6])
    outcome = np.array([1.0, 0.0, 1.0, 1.0])
    # bin 0.9: |0.5 - 0.9| x 1/2; bin 0.6: |1 - 0.6| x 1/2
    assert ece(confidence, outcome) == pytest.approx(0.4)
    assert ece(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0  # confidence 1.0 lands in the last bin


def test_constant_judge_gives_undefined_spearman_and_still_every_other_metric():
    examples = [example(str(i), [i % 10] * 5, [5] * 5) for i in range(6)]
    m = compute_metrics(examples, Bootstrap(resamples=20))
    assert m["per_attribute"]["helpfulness"]["spearman"]["value"] is None
    assert m["quality_spearman"]["value"] is None
    assert m["quality"]["value"] == pytest.approx(5 / 9)
    assert m["per_attribute"]["helpfulness"]["top1_digits"]["value"] == pytest.approx(1 / 6)


def test_win_rates_count_ties_as_half_and_a_run_against_itself_is_even():
    assert win_scores(np.array([1.0, 0.5, 0.2]), np.array([0.5, 0.5, 0.9])).tolist() == [1.0, 0.5, 0.0]
    vs_self = compare_to_baseline([SHARP, FLAT], [SHARP, FLAT], Bootstrap(resamples=20))
    assert vs_self["quality_win_rate"]["value"] == 0.5
    assert vs_self["calibration_win_rate"]["value"] == 0.5
    better = example("b", [9, 0, 4, 4, 4], [9, 0, 4, 4, 4])  # same prompt id as FLAT, perfectly calibrated
    vs_flat = compare_to_baseline([SHARP, better], [SHARP, FLAT], Bootstrap(resamples=20))
    assert vs_flat["calibration_win_rate"]["value"] == pytest.approx(0.75)  # tie on "a", win on "b"
    assert vs_flat["paired_prompts"] == 2
    with pytest.raises(ValueError, match="shares no prompt"):
        compare_to_baseline([SHARP], [FLAT])


def test_pairwise_win_rate_cancels_position_bias():
    assert pairwise_win_rate([("A", "B")])["value"] == 1.0  # ours won in both positions
    biased = pairwise_win_rate([("A", "A")])  # the judge always prefers the first response
    assert biased["value"] == 0.5 and biased["position_consistency"] == 0.0
    ties = pairwise_win_rate([("tie", "tie"), ("B", "A")])
    assert ties["value"] == pytest.approx(0.25) and ties["position_consistency"] == 1.0


def test_bootstrap_intervals_contain_the_value_and_collapse_for_constants():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    stat = Bootstrap(resamples=500, seed=3).mean(values)
    assert stat["low"] < stat["value"] < stat["high"]
    assert stat == Bootstrap(resamples=500, seed=3).mean(values)  # seeded
    constant = Bootstrap(resamples=100).mean(np.full(10, 0.7))
    assert constant["low"] == pytest.approx(0.7) and constant["high"] == pytest.approx(0.7)


def test_reliability_bins_cover_every_item():
    examples = [example(str(i), [[0.7, 0.3] + [0.0] * 8] * 5, [i % 2] * 5) for i in range(10)]
    m = compute_metrics(examples, Bootstrap(resamples=10))
    rows = m["reliability"]["helpfulness"]
    assert sum(r["count"] for r in rows) == 10
    assert rows[0]["confidence"] == pytest.approx(0.7) and rows[0]["outcome"] == pytest.approx(0.5)
    assert m["per_attribute"]["helpfulness"]["ece"]["value"] == pytest.approx(0.2)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no examples"):
        compute_metrics([])
    with pytest.raises(ValueError, match="5 x 10"):
        Arrays.of([Example("x", [[1.0] * 9] * 5, [1.0] * 5, [0] * 5, True)])
