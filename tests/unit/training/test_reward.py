"""The SEE and RLCR-style rewards against values computed by hand."""

import pytest

from training.config import ConfigError, RewardConfig, load_config
from training.reward import format_failure, score_reward

SELF = {"helpfulness": 8, "correctness": 8, "coherence": 8, "complexity": 2, "verbosity": 2}
JUDGE = {"helpfulness": 6, "correctness": 8, "coherence": 7, "complexity": 4, "verbosity": 2}
# errors 2, 0, 1, 2, 0 -> MAE 1.0; linear 1 - 1/9 = 8/9; quality (6 + 8 + 7) / 27 = 21/27


def test_see_reward_matches_hand_computation():
    result = score_reward(SELF, JUDGE, RewardConfig())
    assert result.mae == pytest.approx(1.0)
    assert result.calibration_linear == pytest.approx(8 / 9)
    assert result.calibration == pytest.approx((8 / 9) ** 2)  # 0.790
    assert result.quality == pytest.approx(21 / 27)
    assert result.reward == pytest.approx(0.7 * 21 / 27 + 0.3 * (8 / 9) ** 2)  # 0.7815
    assert result.abs_errors == {"helpfulness": 2, "correctness": 0, "coherence": 1, "complexity": 2, "verbosity": 0}
    assert result.format_ok


def test_perfect_self_scores_get_full_calibration():
    result = score_reward(JUDGE, JUDGE, RewardConfig())
    assert result.calibration == 1.0 and result.mae == 0.0
    assert result.reward == pytest.approx(0.7 * 21 / 27 + 0.3)


def test_gamma_amplifies_errors_as_documented():
    # docs/method.md §3: a mean error of 2 points gives calibration 0.605 with gamma 2
    judge = dict.fromkeys(SELF, 4)
    own = dict.fromkeys(SELF, 6)
    assert score_reward(own, judge, RewardConfig()).calibration == pytest.approx((7 / 9) ** 2)
    assert round((7 / 9) ** 2, 3) == 0.605


def test_format_failure_is_the_penalty_with_zero_components():
    result = format_failure(RewardConfig())
    assert result.reward == -1.0 and not result.format_ok
    assert result.quality == result.calibration == result.mae == 0.0


def test_rlcr_variant_is_quality_minus_brier():
    result = score_reward(SELF, JUDGE, RewardConfig(kind="rlcr"))
    brier = (4 + 0 + 1 + 4 + 0) / 81 / 5
    assert result.reward == pytest.approx(21 / 27 - brier)


def test_rewards_refuse_invalid_scores():
    with pytest.raises(ValueError):
        score_reward({**SELF, "verbosity": 10}, JUDGE, RewardConfig())
    with pytest.raises(ValueError):
        score_reward({**SELF, "verbosity": True}, JUDGE, RewardConfig())


def test_config_refuses_gamma_not_above_one():
    with pytest.raises(ConfigError, match="calibration_gamma"):
        load_config("cpu-smoke", ["reward.calibration_gamma=1.0"])
