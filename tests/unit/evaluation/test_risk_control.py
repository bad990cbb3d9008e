import numpy as np
import pytest

from evaluation.risk_control import (
    certify,
    fit_scores,
    minimum_passing,
    realised,
    refusal,
    split_study,
)
from selfeval import binomial


def synthetic(n: int, seed: int, signal: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores on [0, 1]; P(bad | score) = 0.55 - signal * score; two answers per prompt."""
    rng = np.random.default_rng(seed)
    scores = rng.random(n)
    bad = rng.random(n) < 0.55 - signal * scores
    return scores, bad, np.arange(n) // 2


def test_vectorised_cdf_equals_the_scalar_one():
    bad, n = np.array([0, 3, 16, 40]), np.array([10, 30, 100, 40])
    expected = [binomial.binomial_cdf(int(b), int(m), 0.2) for b, m in zip(bad, n, strict=True)]
    assert binomial.cdf(bad, n, 0.2) == pytest.approx(expected, rel=1e-9)


def test_a_certified_threshold_keeps_its_promise_on_the_calibration_data():
    scores, bad, groups = synthetic(1200, 0)
    fitted = certify(scores, bad, 0.2, 0.05, groups)
    assert fitted is not None and fitted.bound <= 0.2 and fitted.n >= minimum_passing(0.2, 0.05)
    assert binomial.upper_bound(fitted.bad, fitted.n, 0.05) == pytest.approx(fitted.bound)
    passing = scores >= fitted.threshold
    assert bad[passing].mean() < 0.2 < bad.mean()


def test_a_score_without_signal_certifies_nothing_below_the_base_rate():
    scores, bad, groups = synthetic(1200, 1, signal=0.0)  # bad rate 0.55 everywhere
    assert certify(scores, bad, 0.3, 0.05, groups) is None
    message = refusal({"noise": scores}, bad, 0.3, 0.05)
    assert "no score reaches a bad rate below 0.3" in message


def test_a_refusal_says_how_many_labels_would_do():
    scores, bad, groups = synthetic(120, 2, signal=0.5)
    assert certify(scores, bad, 0.12, 0.05, groups) is None
    message = refusal({"score": scores}, bad, 0.12, 0.05)
    needed = int(message.split("about ")[1].split(" ")[0])
    assert needed > 120


def test_the_guarantee_holds_in_at_least_95_percent_of_random_splits():
    """The LTT promise, simulated: over many calibration draws, certifying a threshold whose bad rate on
    fresh answers is above the target happens in at most delta of them (fresh answers: 20,000 of them)."""
    target, delta, violations, certified = 0.25, 0.05, 0, 0
    fresh_scores, fresh_bad, _ = synthetic(20_000, 99)
    for seed in range(200):
        scores, bad, groups = synthetic(400, 1000 + seed)
        fitted = certify(scores, bad, target, delta, groups, seed)
        if fitted is None:
            continue
        certified += 1
        violations += fresh_bad[fresh_scores >= fitted.threshold].mean() > target
    assert certified >= 100, "the procedure should certify this easy target most of the time"
    assert violations / 200 <= delta


def test_fit_scores_prefers_the_score_that_accepts_more_and_splits_delta():
    scores, bad, groups = synthetic(1200, 3)
    noise = np.random.default_rng(4).random(1200)
    fitted = fit_scores({"noise": noise, "signal": scores}, bad, 0.25, 0.05, review_risk=0.4, groups=groups)
    assert [f.name for f in fitted] == ["signal", "noise"]
    best = fitted[0]
    assert best.accept is not None and best.escalate_below is not None
    assert best.escalate_below.threshold <= best.accept.threshold
    assert best.coverage == pytest.approx((scores >= best.accept.threshold).mean())
    alone = certify(scores, bad, 0.25, 0.025, groups)  # delta / 2 candidates
    assert alone.threshold == best.accept.threshold


def test_realised_reports_rates_with_intervals():
    cell = realised(np.array([0.9, 0.8, 0.7, 0.1]), np.array([False, True, False, True]), 0.75)
    assert cell["passing"] == 2 and cell["bad"] == 1 and cell["risk"] == 0.5 and cell["coverage"] == 0.5
    low, high = cell["risk_interval"]
    assert low < 0.5 < high
    assert realised(np.array([0.1]), np.array([True]), 0.5)["risk"] is None


def test_split_study_counts_violations_over_all_splits():
    scores, bad, groups = synthetic(400, 5)
    study = split_study({"signal": scores}, bad, groups, 0.25, 0.05, splits=20)
    summary = study["signal"]
    assert summary["splits"] == 20 and 0 <= summary["violations"] <= summary["certified"] <= 20
    assert summary["violation_share"] == summary["violations"] / 20


def test_the_vectorised_bounds_equal_the_scalar_ones():
    bad, n = np.array([0, 16, 7, 300]), np.array([10, 100, 7, 5000])
    expected = [binomial.upper_bound(int(b), int(m), 0.025) for b, m in zip(bad, n, strict=True)]
    assert binomial.upper_bounds(bad, n, 0.025) == pytest.approx(expected, abs=1e-9)
