import math

import numpy as np
import pytest

from evaluation.recalibration import fit_attribute, fit_map, transform
from selfeval.calibration import (
    AttributeMap,
    CalibrationError,
    CalibrationMap,
    card_fingerprint,
    load_calibration,
    write_calibration,
)
from selfeval.card import Lineage, ModelCard
from selfeval.readout import distribution_from_logprobs
from selfeval.rubric import ATTRIBUTES
from server.calibration.ledger import ScoredPair

DIGITS = np.arange(10)


def discretised_normal(mean: float, sd: float) -> np.ndarray:
    weights = np.exp(-0.5 * ((DIGITS - mean) / sd) ** 2)
    return weights / weights.sum()


def miscalibrated_pairs(n: int, seed: int, shift: float = -2.5, sharpen: float = 3.0) -> list[ScoredPair]:
    """Judge digits drawn from a true distribution; the model reports it shifted down and overconfident."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        distributions, scores = {}, {}
        for attribute in ATTRIBUTES:
            mean = rng.uniform(2, 8)
            truth = discretised_normal(mean, 1.2)
            scores[attribute] = int(rng.choice(10, p=truth))
            reported = discretised_normal(mean + shift, 1.2) ** sharpen
            distributions[attribute] = list(reported / reported.sum())
        pairs.append(ScoredPair(f"r{i}", 0, float(i), "judge", scores, distributions))
    return pairs


def test_the_numpy_transform_and_the_servers_pure_python_map_agree():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=5)
    probs[0, 3] = 0.0  # a zero-mass digit goes through the log floor in both
    biases = rng.normal(size=10)
    mapping = AttributeMap(slope=0.7, biases=tuple(biases))
    expected = transform(probs, 0.7, biases)
    for row, want in zip(probs, expected, strict=True):
        assert mapping.apply(row) == pytest.approx(want, abs=1e-12)


def test_identity_map_leaves_distributions_unchanged():
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=3)
    for row in probs:
        assert AttributeMap().apply(row) == pytest.approx(row, abs=1e-12)


def test_temperature_fit_undoes_overconfidence():
    rng = np.random.default_rng(2)
    truth = rng.dirichlet(np.ones(10) * 0.7, size=4000)
    judge = np.array([rng.choice(10, p=t) for t in truth])
    overconfident = truth**3 / (truth**3).sum(axis=1, keepdims=True)
    fitted = fit_attribute(overconfident, judge, method="temperature", l2=1e-3)
    assert fitted.slope == pytest.approx(1 / 3, rel=0.1)
    assert fitted.biases == (0.0,) * 10


def test_recalibration_lowers_heldout_ece_of_a_deliberately_miscalibrated_model():
    pairs = miscalibrated_pairs(600, seed=3)
    fitted = fit_map(pairs, method="vector", card_fingerprint="c", model_name="m", judge=None, holdout=0.3, seed=0)
    assert fitted.fitted_on == 420 and fitted.evaluated_on == 180
    for attribute in ATTRIBUTES:
        before, after = fitted.heldout_metrics[attribute]["before"], fitted.heldout_metrics[attribute]["after"]
        assert after["ece"] < 0.5 * before["ece"], (attribute, before, after)
        assert after["mae"] < 0.6 * before["mae"], (attribute, before, after)
        assert after["nll"] < before["nll"]


def test_a_calibration_map_round_trips_and_refuses_edits_and_other_checkpoints(tmp_path):
    default_card = ModelCard("m", "chat", tuple(range(48, 58)), Lineage(base_model="base"))
    mapping = CalibrationMap(
        method="vector",
        card_fingerprint=card_fingerprint(default_card),
        model_name="m",
        attributes={a: AttributeMap(slope=0.5, biases=tuple(float(k) / 10 for k in range(10))) for a in ATTRIBUTES},
        fitted_on=10,
        evaluated_on=5,
    )
    path = write_calibration(tmp_path / "see_calibration.json", mapping)
    loaded = load_calibration(path)
    assert loaded == mapping and loaded.version == mapping.version
    loaded.check_for(default_card)
    raw = {a: distribution_from_logprobs([math.log(0.1)] * 10, emitted=4) for a in ATTRIBUTES}
    calibrated = loaded.apply(raw)
    assert calibrated["helpfulness"].emitted == 4 and calibrated["helpfulness"].argmax == 9

    other = CalibrationMap(**{**mapping.__dict__, "card_fingerprint": "0" * 16})
    with pytest.raises(CalibrationError, match="refit it"):
        other.check_for(default_card)
    edited = path.read_text().replace('"slope": 0.5', '"slope": 0.6')
    path.write_text(edited)
    with pytest.raises(CalibrationError, match="edited"):
        load_calibration(path)
