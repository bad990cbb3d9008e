import math

import pytest

from selfeval.readout import distribution_from_logprobs
from selfeval.rubric import ATTRIBUTES
from server.policy import PolicyThresholds, decide


def at(score: int, sharpness: float = 0.99):
    rest = (1 - sharpness) / 9
    return distribution_from_logprobs([math.log(sharpness if k == score else rest) for k in range(10)])


def uniform():
    return distribution_from_logprobs([math.log(0.1)] * 10)


def all_at(score):
    return {a: at(score) for a in ATTRIBUTES}


DEFAULT = PolicyThresholds()


def test_confident_high_scores_are_accepted():
    decision = decide(all_at(8), DEFAULT)
    assert decision.action == "accept" and decision.reasons


def test_confident_low_scores_escalate_with_reasons():
    decision = decide(all_at(1), DEFAULT)
    assert decision.action == "escalate"
    assert any("predicted quality" in r for r in decision.reasons)
    assert any("P(helpfulness <= 3)" in r for r in decision.reasons)


def test_middling_quality_is_reviewed():
    decision = decide(all_at(5), DEFAULT)  # quality 5/9 = 0.556 -> just above review floor; no low mass
    assert decision.action == "accept"
    decision = decide(all_at(4), DEFAULT)  # 4/9 = 0.44 -> review
    assert decision.action == "review"


def test_an_uncertain_distribution_is_reviewed_even_with_good_quality():
    dists = {**all_at(8), "verbosity": uniform()}
    decision = decide(dists, DEFAULT)
    assert decision.action == "review" and any("verbosity entropy" in r for r in decision.reasons)


def test_low_label_mass_is_reviewed():
    logprobs = [math.log(0.9 * 0.1)] + [math.log(0.01 * 0.1)] * 8 + [math.log(0.99 * 0.1)]
    weak = distribution_from_logprobs(logprobs)
    assert weak.label_mass < 0.5
    decision = decide({**all_at(8), "complexity": weak}, DEFAULT)
    assert any("label mass" in r for r in decision.reasons)


def test_no_readout_is_never_accepted():
    assert decide(None, DEFAULT).action == "escalate"
    assert decide(None, DEFAULT.merged({"unavailable_action": "review"})).action == "review"


def test_per_request_overrides_change_the_outcome():
    assert decide(all_at(6), DEFAULT).action == "accept"
    assert decide(all_at(6), DEFAULT.merged({"review_below_quality": 0.8})).action == "review"


def test_unknown_override_fields_are_refused():
    with pytest.raises(ValueError):
        DEFAULT.merged({"nope": 1})


def test_flags_send_an_otherwise_accepted_answer_to_review_or_as_configured():
    confident = all_at(8)
    assert decide(confident, PolicyThresholds()).action == "accept"
    flagged = decide(confident, PolicyThresholds(), ["history_block_removed"])
    assert flagged.action == "review" and "history_block_removed" in flagged.reasons[0]
    assert decide(confident, PolicyThresholds(flagged_action="escalate"), ["x"]).action == "escalate"
    assert decide(confident, PolicyThresholds(flagged_action="none"), ["x"]).action == "accept"


@pytest.mark.parametrize(
    ("override", "looser"),
    [
        ({"review_below_quality": 0.9}, False),
        ({"review_below_quality": 0.1}, True),
        ({"escalate_low_score_prob": 0.2}, False),
        ({"escalate_low_score_prob": 0.9}, True),
        ({"review_above_entropy": 3.0}, True),
        ({"low_score": 5}, False),
        ({"low_score": 0}, True),
        ({"review_below_label_mass": 0.0}, True),
        ({"unavailable_action": "review"}, True),
        ({"flagged_action": "escalate"}, False),
        ({"flagged_action": "none"}, True),
    ],
)
def test_an_override_is_looser_exactly_when_it_would_accept_more(override, looser):
    server = PolicyThresholds()
    found = server.loosened_by(server.merged(override))
    assert bool(found) is looser and (not found or found[0][0] == next(iter(override)))


def test_a_certified_policy_decides_and_flags_still_apply_on_top():
    from server.policy import decide_certified
    from tests.unit.selfeval.test_certified_policy import policy

    certified = policy()
    accepted = decide_certified(all_at(8), certified, DEFAULT)
    assert accepted.action == "accept" and accepted.policy == certified.version
    assert accepted.to_dict()["policy"] == certified.version
    flagged = decide_certified(all_at(8), certified, DEFAULT, flags=["history_block_removed"])
    assert flagged.action == "review" and "history_block_removed" in flagged.reasons[0]
    assert decide_certified(None, certified, DEFAULT).action == DEFAULT.unavailable_action
    # per-request thresholds add the hand-set rules on top: they can only make it stricter
    tighter = decide_certified(all_at(8), certified, DEFAULT.merged({"escalate_below_quality": 0.95}), with_rules=True)
    assert tighter.action == "escalate" and any(r.startswith("per-request thresholds") for r in tighter.reasons)
    assert decide(all_at(8), DEFAULT).policy is None
