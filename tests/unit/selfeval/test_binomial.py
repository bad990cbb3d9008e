import math

import pytest

from selfeval import binomial


def test_the_cdf_matches_a_direct_sum():
    n, p = 30, 0.2
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(8))
    assert binomial.binomial_cdf(7, n, p) == pytest.approx(direct, rel=1e-12)
    assert binomial.binomial_cdf(-1, n, p) == 0 and binomial.binomial_cdf(n, n, p) == 1


def test_zero_bad_has_the_closed_form_upper_bound():
    for n in (1, 10, 59, 300):
        assert binomial.upper_bound(0, n, 0.05) == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-12)


def test_two_sided_interval_matches_published_clopper_pearson_values():
    # 16 of 100, 95 %: (0.0943, 0.2468) in every table of exact binomial intervals
    low, high = binomial.interval(16, 100)
    assert low == pytest.approx(0.0943, abs=1e-4) and high == pytest.approx(0.2468, abs=1e-4)
    assert binomial.interval(0, 0) == (0.0, 1.0)


def test_the_cdf_agrees_with_a_direct_sum_for_many_at_once():
    import numpy as np

    bad, n = np.array([0, 3, 16, 40, 5]), np.array([10, 30, 100, 40, 3])
    pairs = zip(bad.tolist(), n.tolist(), strict=True)
    direct = [sum(math.comb(m, i) * 0.2**i * 0.8 ** (m - i) for i in range(min(b, m) + 1)) for b, m in pairs]
    assert binomial.cdf(bad, n, 0.2) == pytest.approx(direct, rel=1e-9)


def test_bounds_bracket_the_observed_rate_and_tighten_with_data():
    assert binomial.lower_bound(10, 100, 0.05) < 0.1 < binomial.upper_bound(10, 100, 0.05)
    assert binomial.upper_bound(100, 1000, 0.05) < binomial.upper_bound(10, 100, 0.05)
    assert binomial.upper_bound(5, 5, 0.05) == 1.0 and binomial.lower_bound(0, 5, 0.05) == 0.0


def test_accepted_needed_is_the_smallest_count_that_certifies():
    needed = binomial.accepted_needed(0.0, 0.1, 0.05)
    assert needed == math.ceil(math.log(0.05) / math.log(0.9))  # 29: zero bad in 29 certifies 10 %
    rate_needed = binomial.accepted_needed(0.05, 0.1, 0.05)
    assert binomial.upper_bound(math.floor(0.05 * rate_needed), rate_needed, 0.05) <= 0.1
    assert binomial.accepted_needed(0.1, 0.1, 0.05) is None  # a rate at the target never certifies it


def test_nonsense_counts_are_refused():
    with pytest.raises(ValueError):
        binomial.upper_bound(5, 3, 0.05)
    with pytest.raises(ValueError):
        binomial.upper_bound(1, 3, 0.0)
