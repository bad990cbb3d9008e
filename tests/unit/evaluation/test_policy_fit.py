import numpy as np
import pytest

from evaluation.policy_fit import JudgedScores, PolicyRequest, distributions_of, fit_policy, in_test_part
from evaluation.risk_control import RiskControlError


def judged(n: int, seed: int, signal: float = 1.0) -> JudgedScores:
    """Answers whose helpfulness distribution is centred on a latent quality; the judge agrees with it
    (plus noise) when `signal` is 1 and ignores it when 0."""
    rng = np.random.default_rng(seed)
    latent = rng.uniform(1, 8.5, n)
    digits = np.arange(10)
    distributions, helpfulness = [], []
    for value in latent:
        probs = np.exp(-0.5 * ((digits - value) / 1.2) ** 2)
        probs = list(probs / probs.sum())
        distributions.append(distributions_of([probs] * 5))
        judge = value if signal else rng.uniform(1, 8.5)
        helpfulness.append(int(np.clip(round(judge + rng.normal(0, 1.5)), 0, 9)))
    return JudgedScores([f"a{i}" for i in range(n)], np.arange(n) // 2, distributions, np.array(helpfulness))


def test_fit_on_calibration_check_on_test():
    request = PolicyRequest(target_risk=0.15, delta=0.05, bad_at_or_below=4, review_risk=0.35)
    policy, rows = fit_policy(
        judged(600, 0), judged(400, 1), request, card_fingerprint="card", model_name="m", calibration=None,
        source="synthetic",
    )  # fmt: skip
    assert policy.accept.bound <= 0.15 and policy.escalate_below is not None
    assert {row["score"] for row in rows} == {"quality", "helpfulness_above"}
    test = policy.test["test_accept"]
    assert test["passing"] > 0 and test["risk"] <= 0.2 and policy.fitted_on == 600 and policy.test["answers"] == 400
    assert policy.decide(judged(1, 2).distributions[0])[0] in ("accept", "review", "escalate")


def test_an_uninformative_model_is_refused_with_advice():
    request = PolicyRequest(target_risk=0.1, delta=0.05, bad_at_or_below=4)
    with pytest.raises(RiskControlError, match="no threshold certifies"):
        fit_policy(judged(300, 3, signal=0.0), judged(100, 4), request, card_fingerprint="c", model_name="m",
                   calibration=None, source="synthetic")  # fmt: skip


def test_the_ledger_split_is_deterministic_and_near_its_share():
    groups = np.array([f"r{i}/0" for i in range(2000)])
    mask = in_test_part(groups, 0.4, seed=0)
    assert (mask == in_test_part(groups, 0.4, seed=0)).all() and abs(mask.mean() - 0.4) < 0.04
    assert (mask != in_test_part(groups, 0.4, seed=1)).any()


def test_too_few_answers_are_refused_before_fitting():
    request = PolicyRequest(target_risk=0.1, delta=0.05, bad_at_or_below=4)
    empty = judged(0, 5)
    with pytest.raises(RiskControlError, match="only 0 judged answers"):
        fit_policy(empty, empty, request, card_fingerprint="c", model_name="m", calibration=None, source="none")
