"""The SEE reward (docs/method.md §3) and the adapted-RLCR baseline reward (§11), pure functions.

SEE: reward = w_q * quality + w_c * (1 - MAE/9)^gamma over a valid output, with quality the judge's mean of
the three quality attributes / 9 and MAE over all five self-vs-judge scores. An invalid output gets the format
penalty with every component 0 and is never sent to the judge. RLCR-style (unconfirmed port, §11):
reward = quality - mean_d ((s_d - j_d) / 9)^2, the Brier-like term replacing calibration^gamma.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from selfeval.rubric import ATTRIBUTES, SCALE_MAX, quality_of, validate_scores
from training.config import RewardConfig


@dataclass(frozen=True)
class RewardBreakdown:
    reward: float
    quality: float
    calibration: float  # (1 - MAE/9)^gamma, the form the paper reports as "calibration"
    calibration_linear: float
    mae: float
    format_ok: bool
    abs_errors: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def format_failure(config: RewardConfig) -> RewardBreakdown:
    return RewardBreakdown(
        reward=config.format_penalty,
        quality=0.0,
        calibration=0.0,
        calibration_linear=0.0,
        mae=0.0,
        format_ok=False,
        abs_errors=dict.fromkeys(ATTRIBUTES, 0),
    )


def score_reward(
    self_scores: Mapping[str, int], judge_scores: Mapping[str, int], config: RewardConfig
) -> RewardBreakdown:
    """The reward of a valid output given its self-scores and the judge's scores (both validated)."""
    own, judged = validate_scores(self_scores), validate_scores(judge_scores)
    errors = {a: abs(own[a] - judged[a]) for a in ATTRIBUTES}
    mae = sum(errors.values()) / len(ATTRIBUTES)
    linear = 1.0 - mae / SCALE_MAX
    if not 0.0 <= linear <= 1.0:  # cannot happen for validated scores; a guard against a broken rubric
        raise AssertionError(f"linear calibration {linear} outside [0, 1]")
    quality = quality_of(judged)
    calibration = linear**config.calibration_gamma
    if config.kind == "rlcr":
        brier = sum(((own[a] - judged[a]) / SCALE_MAX) ** 2 for a in ATTRIBUTES) / len(ATTRIBUTES)
        reward = quality - brier
    else:
        reward = config.w_quality * quality + config.w_calibration * calibration
    return RewardBreakdown(
        reward=reward,
        quality=quality,
        calibration=calibration,
        calibration_linear=linear,
        mae=mae,
        format_ok=True,
        abs_errors=errors,
    )
