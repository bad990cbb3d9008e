import asyncio

import numpy as np
import pytest

from selfeval.rubric import ATTRIBUTES
from server.calibration.ledger import Feedback, Ledger, ResponseRecord, ScoredPair
from server.calibration.monitor import CalibrationMonitor, drift_verdict, split_windows, verdict_errors
from server.metrics import ServiceMetrics
from server.settings import MonitorSettings

SETTINGS = MonitorSettings(window=200, min_count=50)


def pairs(n: int, rng: np.random.Generator, judge_shift: int = 0, start: int = 0) -> list[ScoredPair]:
    """The model's distributions are right about the judge (digits drawn from them), then shifted by `judge_shift`."""
    out = []
    for i in range(start, start + n):
        distributions, scores = {}, {}
        for attribute in ATTRIBUTES:
            centre = rng.uniform(2, 7)
            weights = np.exp(-0.5 * ((np.arange(10) - centre) / 1.3) ** 2)
            probs = weights / weights.sum()
            distributions[attribute] = list(probs)
            scores[attribute] = int(min(9, rng.choice(10, p=probs) + judge_shift))
        out.append(ScoredPair(f"r{i}", 0, float(i), "judge", scores, distributions))
    return out


def test_drift_fires_on_a_shift_in_the_judges_scores():
    rng = np.random.default_rng(0)
    reference, recent = pairs(200, rng), pairs(200, rng, judge_shift=2, start=200)
    verdict = drift_verdict(verdict_errors(reference), verdict_errors(recent), SETTINGS)
    assert verdict.drifting and verdict.delta > SETTINGS.drift_threshold and verdict.z > 10


@pytest.mark.parametrize("seed", range(20))
def test_drift_stays_quiet_on_noise(seed):
    rng = np.random.default_rng(seed)
    verdict = drift_verdict(verdict_errors(pairs(200, rng)), verdict_errors(pairs(200, rng, start=200)), SETTINGS)
    assert not verdict.drifting and abs(verdict.delta) < SETTINGS.drift_threshold


def test_a_large_but_unreliable_difference_in_a_small_window_is_not_drift():
    rng = np.random.default_rng(5)
    reference, recent = pairs(60, rng), pairs(60, rng, judge_shift=1, start=60)
    loose = MonitorSettings(window=200, min_count=50, drift_threshold=0.1, drift_z=50.0)
    assert not drift_verdict(verdict_errors(reference), verdict_errors(recent), loose).drifting


def test_too_few_verdicts_give_no_verdict():
    rng = np.random.default_rng(1)
    verdict = drift_verdict(verdict_errors(pairs(10, rng)), verdict_errors(pairs(10, rng, judge_shift=3)), SETTINGS)
    assert not verdict.drifting and verdict.delta is None and "need 50" in verdict.reason


def test_overlapping_windows_are_split_in_halves():
    rng = np.random.default_rng(2)
    everything = pairs(30, rng)
    reference, recent = split_windows(everything[:20], list(reversed(everything))[:20])
    assert len(reference) == 15 and len(recent) == 15
    assert not {p.response_id for p in reference} & {p.response_id for p in recent}


def gauge(metrics: ServiceMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, {"model_name": "m", **labels})


def test_the_monitor_reads_the_ledger_and_sets_the_gauges(ledger_url):
    rng = np.random.default_rng(3)
    ledger = Ledger(ledger_url)
    metrics = ServiceMetrics("m")
    monitor = CalibrationMonitor(ledger, "card", SETTINGS, metrics)
    try:

        def store(batch):
            for p in batch:
                row = ResponseRecord(p.response_id, 0, "m", "card", "generate", "forced", "p", "a", p.distributions,
                                     0.5, "accept")  # fmt: skip
                ledger.call(Ledger.insert_responses([row]))
                verdict = Feedback(p.response_id, 0, "judge", p.scores, created_at=p.created_at)
                ledger.call(Ledger.insert_feedback(verdict))

        store(pairs(200, rng))
        calm = asyncio.run(monitor.refresh())
        assert not calm.drifting and gauge(metrics, "see_calibration_drift") == 0
        assert gauge(metrics, "see_calibration_window_records", window="recent") == 100
        store(pairs(200, rng, judge_shift=3, start=200))
        shifted = asyncio.run(monitor.refresh())
        assert shifted.drifting and gauge(metrics, "see_calibration_drift") == 1
        assert gauge(metrics, "see_calibration_drift_delta") == pytest.approx(shifted.delta)
        assert gauge(metrics, "see_calibration_rolling_mae", attribute="helpfulness") > 2.0
        assert 0 <= gauge(metrics, "see_calibration_rolling_ece", attribute="verbosity") <= 1
    finally:
        ledger.close()


def test_the_certified_policys_realised_accept_risk_and_alarm_come_from_new_verdicts(ledger_url):
    from server.calibration.risk_monitor import AcceptRiskMonitor
    from tests.unit.selfeval.test_certified_policy import all_at, policy

    certified = policy()  # accepts predicted quality >= 0.7, promises P(bad | accept) <= 0.2
    metrics = ServiceMetrics("m")
    ledger = Ledger(ledger_url)
    monitor = CalibrationMonitor(ledger, "card", SETTINGS, metrics, AcceptRiskMonitor(certified, None, metrics))
    accepted = {a: list(d.probs) for a, d in all_at(8).items()}
    reviewed = {a: list(d.probs) for a, d in all_at(3).items()}
    try:

        def store(start: int, n: int, helpfulness: int, distributions: dict) -> None:
            for i in range(start, start + n):
                row = ResponseRecord(f"r{i}", 0, "m", "card", "score", "forced", "p", "a", distributions, 0.5,
                                     "accept")  # fmt: skip
                ledger.call(Ledger.insert_responses([row]))
                scores = {a: helpfulness for a in ATTRIBUTES}
                ledger.call(Ledger.insert_feedback(Feedback(f"r{i}", 0, "judge", scores, created_at=float(i))))

        store(0, 90, 8, accepted)  # good answers the rule accepts
        store(90, 10, 2, reviewed)  # bad ones it does not accept: no part of the accept risk
        asyncio.run(monitor.refresh())
        assert gauge(metrics, "see_certified_accept_risk_target") == 0.2
        assert gauge(metrics, "see_certified_accepted_verdicts") == 90
        assert gauge(metrics, "see_certified_accept_risk") == 0
        assert gauge(metrics, "see_certified_accept_risk_alarm") == 0
        store(100, 150, 2, accepted)  # the traffic drifts: accepted answers the judge now finds bad
        asyncio.run(monitor.refresh())
        risk = gauge(metrics, "see_certified_accept_risk")
        assert risk > 0.5 and gauge(metrics, "see_certified_accept_risk_bound", bound="lower") > 0.2
        assert gauge(metrics, "see_certified_accept_risk_alarm") == 1
        assert {p.decision for p in ledger.call(Ledger.scored_pairs(limit=5))} == {"accept"}
    finally:
        ledger.close()
