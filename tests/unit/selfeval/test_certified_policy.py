import math

import pytest

from selfeval.certified_policy import (
    CertifiedPolicy,
    CertifiedThreshold,
    PolicyError,
    load_policy,
    policy_score,
    write_policy,
)
from selfeval.readout import distribution_from_logprobs
from selfeval.rubric import ATTRIBUTES


def at(score: int, sharpness: float = 0.9):
    rest = (1 - sharpness) / 9
    return distribution_from_logprobs([math.log(sharpness if k == score else rest) for k in range(10)])


def all_at(score: int):
    return {a: at(score) for a in ATTRIBUTES}


def policy(**changes) -> CertifiedPolicy:
    fields = dict(
        score="quality",
        bad_at_or_below=4,
        delta=0.05,
        accept=CertifiedThreshold(0.7, 0.2, 0.18, 150, 20),
        escalate_below=CertifiedThreshold(0.4, 0.3, 0.29, 400, 100),
        card_fingerprint="card",
        model_name="m",
        calibration_version=None,
        source="test",
        fitted_on=600,
        created_at="2026-11-30T00:00:00+00:00",
    )
    return CertifiedPolicy(**(fields | changes))


def test_scores_read_the_distributions():
    assert policy_score("quality", all_at(9), 4) > policy_score("quality", all_at(2), 4)
    assert policy_score("helpfulness_above", all_at(8), 4) == pytest.approx(0.9 + 4 * 0.1 / 9)
    with pytest.raises(PolicyError):
        policy_score("length", all_at(8), 4)


def test_each_band_gets_its_action_and_cites_the_guarantee():
    certified = policy()
    action, reason = certified.decide(all_at(8))
    assert action == "accept" and certified.version in reason and "P(bad | accept) <= 0.2 at 95 %" in reason
    action, reason = certified.decide(all_at(5))
    assert action == "review" and "P(bad | not escalated) <= 0.3" in reason
    action, reason = certified.decide(all_at(1))
    assert action == "escalate" and "0.400" in reason
    no_escalate = policy(escalate_below=None)
    assert no_escalate.decide(all_at(1))[0] == "review"


def test_round_trip_and_tamper_detection(tmp_path):
    path = write_policy(tmp_path / "see_policy.json", policy())
    assert load_policy(path) == policy()
    path.write_text(path.read_text().replace('"threshold": 0.7', '"threshold": 0.75'))
    with pytest.raises(PolicyError, match="edited"):
        load_policy(path)
    path.write_text("{}")
    with pytest.raises(PolicyError, match="not a see-certified-policy"):
        load_policy(path)


def test_a_policy_refuses_another_checkpoint_or_other_scores():
    certified = policy()
    certified.check_for("card", None)
    with pytest.raises(PolicyError, match="fitted for card card"):
        certified.check_for("other", None)
    certified.check_for("card", "vector-abc")  # fitted on raw scores: applies beside any map
    on_map = policy(calibration_version="vector-abc")
    on_map.check_for("card", "vector-abc")
    with pytest.raises(PolicyError, match="calibrated by map vector-abc, but the server has no calibration map"):
        on_map.check_for("card", None)
    with pytest.raises(PolicyError, match="has map vector-new"):
        on_map.check_for("card", "vector-new")


def test_an_escalate_threshold_above_accept_is_refused():
    with pytest.raises(PolicyError):
        policy(escalate_below=CertifiedThreshold(0.9, 0.3, 0.29, 400, 100))
