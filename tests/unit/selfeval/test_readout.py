import math

import pytest

from selfeval.readout import (
    ReadoutError,
    distribution_from_logprobs,
    distribution_from_token_logprobs,
    predicted_quality,
)
from selfeval.rubric import ATTRIBUTES


def test_two_point_distribution_statistics_by_hand():
    # P(3) = 0.5, P(7) = 0.25 before renormalising; digit mass 0.75 -> renormalised 2/3, 1/3
    logprobs = [-math.inf] * 10
    logprobs[3], logprobs[7] = math.log(0.5), math.log(0.25)
    dist = distribution_from_logprobs(logprobs)
    assert dist.probs[3] == pytest.approx(2 / 3) and dist.probs[7] == pytest.approx(1 / 3)
    assert sum(dist.probs) == pytest.approx(1.0)
    assert dist.label_mass == pytest.approx(0.75)
    assert dist.expected == pytest.approx(3 * 2 / 3 + 7 / 3)  # 13/3
    assert dist.argmax == 3
    # variance = 2/3 (3 - 13/3)^2 + 1/3 (7 - 13/3)^2 = 2/3 * 16/9 + 1/3 * 64/9 = 96/27
    assert dist.std == pytest.approx(math.sqrt(96 / 27))
    assert dist.entropy == pytest.approx(-(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3))
    assert dist.top_k(2) == [(3, pytest.approx(2 / 3)), (7, pytest.approx(1 / 3))]


def test_uniform_distribution():
    dist = distribution_from_logprobs([math.log(0.1)] * 10)
    assert dist.expected == pytest.approx(4.5)
    assert dist.entropy == pytest.approx(math.log(10))
    assert dist.label_mass == pytest.approx(1.0)
    assert dist.argmax == 0  # ties resolve to the lowest score
    assert dist.std == pytest.approx(math.sqrt(8.25))


def test_certain_distribution_has_zero_spread():
    logprobs = [-math.inf] * 10
    logprobs[9] = 0.0
    dist = distribution_from_logprobs(logprobs, emitted=9)
    assert (dist.expected, dist.argmax, dist.std, dist.entropy, dist.emitted) == (9.0, 9, 0.0, 0.0, 9)


def test_tiny_digit_mass_still_renormalises_without_underflow():
    dist = distribution_from_logprobs([-900.0] * 9 + [-901.0])
    assert sum(dist.probs) == pytest.approx(1.0)
    assert dist.label_mass < 1e-300


@pytest.mark.parametrize("bad", [[0.0] * 9, [-math.inf] * 10, [math.nan] + [0.0] * 9, [math.inf] + [0.0] * 9])
def test_unusable_logprobs_raise(bad):
    with pytest.raises(ReadoutError):
        distribution_from_logprobs(bad)


def test_token_mapping_is_read_in_digit_order_and_missing_ids_raise():
    ids = list(range(32, 42))
    mapping = {token: math.log(0.1) for token in ids} | {99: -0.1}
    assert distribution_from_token_logprobs(mapping, ids).expected == pytest.approx(4.5)
    del mapping[35]
    with pytest.raises(ReadoutError, match="35"):
        distribution_from_token_logprobs(mapping, ids)


def test_predicted_quality_uses_the_three_quality_attributes():
    def certain(score):
        logprobs = [-math.inf] * 10
        logprobs[score] = 0.0
        return distribution_from_logprobs(logprobs)

    dists = dict(zip(ATTRIBUTES, [certain(9), certain(6), certain(3), certain(0), certain(0)], strict=True))
    assert predicted_quality(dists) == pytest.approx(18 / 27)
