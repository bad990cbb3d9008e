"""Exact binomial bounds (Clopper-Pearson) for "at most this share of these answers is bad" statements.

Used where a decision carries a guarantee: the certified policy's fit (`evaluation/risk_control.py`) and the
server's monitor of realised accept risk. Exact, not asymptotic: with k bad answers among n, the one-sided
(1 - delta) upper bound is the p at which P(Binomial(n, p) <= k) = delta, i.e. the largest bad rate still
consistent with seeing so few. Pure Python (log-space terms, bisection): the server imports it.
"""

from __future__ import annotations

import math

BISECTION_STEPS = 60  # 2**-60: far below any rate anyone reports


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    peak = max(terms)
    return min(1.0, math.exp(peak) * sum(math.exp(t - peak) for t in terms))


def _solve(decreasing, target: float) -> float:
    """The p in [0, 1] where a function decreasing in p crosses `target`."""
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if decreasing(middle) > target:
            low = middle
        else:
            high = middle
    return high


def upper_bound(bad: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound on the bad rate; 1 when nothing was seen."""
    _check(bad, n, delta)
    if bad >= n:
        return 1.0
    return _solve(lambda p: binomial_cdf(bad, n, p), delta)


def lower_bound(bad: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson lower bound on the bad rate; 0 when no bad answer was seen."""
    _check(bad, n, delta)
    if bad == 0:
        return 0.0
    return _solve(lambda p: binomial_cdf(bad - 1, n, p), 1.0 - delta)


def interval(bad: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval at `confidence`; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2
    return lower_bound(bad, n, tail), upper_bound(bad, n, tail)


def accepted_needed(bad_rate: float, target: float, delta: float, limit: int = 1_000_000) -> int | None:
    """The fewest accepted answers for which a bad share of `bad_rate` certifies `target` at 1 - delta;
    None when it never does (the rate is not below the target, or the count would pass `limit`)."""
    if not 0.0 <= bad_rate < target:
        return None

    def certifies(n: int) -> bool:
        return upper_bound(math.floor(bad_rate * n), n, delta) <= target

    high = 1
    while not certifies(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    while high - low > 1:  # certification is monotone in n up to floor() steps: close enough for advice
        middle = (low + high) // 2
        low, high = (low, middle) if certifies(middle) else (middle, high)
    return high


def _check(bad: int, n: int, delta: float) -> None:
    if not 0 <= bad <= n:
        raise ValueError(f"need 0 <= bad <= n, got bad={bad}, n={n}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
