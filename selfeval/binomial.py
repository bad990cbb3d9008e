"""Exact binomial bounds (Clopper-Pearson) for "at most this share of these answers is bad" statements.

Used where a decision carries a guarantee: the certified policy's fit (`evaluation/risk_control.py`) and the
server's monitor of realised accept risk. Exact, not asymptotic: with k bad answers among n, the one-sided
(1 - delta) upper bound is the p at which P(Binomial(n, p) <= k) = delta, i.e. the largest bad rate still
consistent with seeing so few. One implementation, vectorised with numpy (log-space terms, bisection), so a
fit can bound forty thresholds at once; the scalar functions are thin wrappers.
"""

from __future__ import annotations

import math

import numpy as np

BISECTION_STEPS = 60  # 2**-60: far below any rate anyone reports


def cdf(bad: np.ndarray, n: np.ndarray, p: float | np.ndarray) -> np.ndarray:
    """P(Binomial(n_j, p_j) <= bad_j) for every j (p one number or one per j)."""
    bad, n = np.asarray(bad, int), np.asarray(n, int)
    p = np.broadcast_to(np.asarray(p, float), n.shape)
    out = np.where(bad >= n, 1.0, np.where(bad < 0, 0.0, np.nan))
    inside = np.isnan(out)
    if inside.any():
        b, m, q = bad[inside], n[inside], p[inside]
        top = int(m.max())
        log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1)))])
        i = np.arange(top + 1)[None, :]
        valid = i <= b[:, None]
        safe_i = np.where(valid, i, 0)
        with np.errstate(divide="ignore"):  # p = 0 or 1: log 0 = -inf is the right term
            terms = (
                log_factorial[m[:, None]] - log_factorial[safe_i] - log_factorial[np.maximum(m[:, None] - safe_i, 0)]
                + safe_i * np.log(q[:, None]) + (m[:, None] - safe_i) * np.log1p(-q[:, None])
            )  # fmt: skip
        terms = np.where(valid, terms, -np.inf)
        peak = terms.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            sums = np.exp(peak[:, 0]) * np.exp(terms - peak).sum(axis=1)
        out[inside] = np.minimum(1.0, np.nan_to_num(sums, nan=0.0))
    return out


def upper_bounds(bad: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """One-sided (1 - delta) Clopper-Pearson upper bounds for every (bad, n); 1 where n = 0 or all are bad."""
    bad, n = np.asarray(bad, int), np.asarray(n, int)
    low, high = np.zeros(len(n)), np.ones(len(n))
    open_ = (n > 0) & (bad < n)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        above = np.zeros(len(n), dtype=bool)
        if open_.any():
            above[open_] = cdf(bad[open_], n[open_], middle[open_]) > delta
        low, high = np.where(above, middle, low), np.where(above, high, middle)
    return np.where(open_, high, 1.0)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return float(cdf(np.array([k]), np.array([n]), p)[0])


def upper_bound(bad: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound on the bad rate; 1 when nothing was seen."""
    _check(bad, n, delta)
    return float(upper_bounds(np.array([bad]), np.array([n]), delta)[0])


def lower_bound(bad: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson lower bound on the bad rate: 1 - the upper bound on the good rate."""
    _check(bad, n, delta)
    return 0.0 if bad == 0 else 1.0 - upper_bound(n - bad, n, delta)


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
