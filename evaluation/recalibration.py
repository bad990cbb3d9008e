"""Fitting a calibration map (`selfeval.calibration`) from judge feedback, and checking it on held-out data.

Per attribute, the map's parameters (slope, ten biases; slope only for `temperature`) minimise the negative
log-likelihood of the judge's digit under the transformed distribution, plus a small L2 pull towards the
identity (`l2`: slope towards 1, biases towards 0) so that a digit the judge never used in the fitting data
does not get an infinite penalty. The problem is convex in those parameters (a multinomial logistic
regression on the fixed features log p_k and one-hot k), so Newton's method with a backtracking line search
finds the optimum in a few dozen steps, with numpy only.

`split_holdout` shuffles with a seed and keeps a share aside; `compare` measures the map on that share:
digit ECE (top label), MAE of the expected score and NLL, before and after, per attribute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfeval.calibration import LOG_FLOOR, AttributeMap, CalibrationMap
from selfeval.calibration_error import digit_ece
from selfeval.rubric import ATTRIBUTES, SCALE_MAX

DIGITS = SCALE_MAX + 1


def transform(probs: np.ndarray, slope: float, biases: np.ndarray) -> np.ndarray:
    """The map on (n, 10) probabilities; the same formula as `AttributeMap.apply`."""
    logits = slope * np.log(np.maximum(probs, LOG_FLOOR)) + biases
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def _objective(theta, log_p, judge, l2, with_biases):
    slope, biases = theta[0], (theta[1:] if with_biases else np.zeros(DIGITS))
    logits = slope * log_p + biases
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    nll = -(logits[np.arange(len(judge)), judge] - log_norm).sum()
    penalty = 0.5 * l2 * ((slope - 1.0) ** 2 + (biases**2).sum())
    return nll + penalty


def fit_attribute(probs: np.ndarray, judge: np.ndarray, method: str = "vector", l2: float = 1.0) -> AttributeMap:
    """Newton's method on the penalised NLL of the judge digits; returns the fitted map for one attribute."""
    with_biases = method == "vector"
    log_p = np.log(np.maximum(np.asarray(probs, float), LOG_FLOOR))
    judge = np.asarray(judge, int)
    n = len(judge)
    size = 1 + (DIGITS if with_biases else 0)
    # features of class k for example i: [log p_ik, onehot(k)]; theta = [slope, biases]
    theta = np.zeros(size)
    theta[0] = 1.0
    onehot = np.eye(DIGITS)
    for _ in range(100):
        slope, biases = theta[0], (theta[1:] if with_biases else np.zeros(DIGITS))
        q = _softmax(slope * log_p + biases)
        # gradient: sum_i (E_q[phi] - phi_y) + penalty
        grad = np.empty(size)
        grad[0] = (q * log_p).sum() - log_p[np.arange(n), judge].sum() + l2 * (slope - 1.0)
        if with_biases:
            grad[1:] = q.sum(axis=0) - onehot[judge].sum(axis=0) + l2 * biases
        # Hessian: sum_i Cov_q[phi] + l2 I
        hess = np.empty((size, size))
        mean_lp = (q * log_p).sum(axis=1)
        hess[0, 0] = ((q * log_p**2).sum(axis=1) - mean_lp**2).sum()
        if with_biases:
            hess[0, 1:] = hess[1:, 0] = (q * log_p).sum(axis=0) - (q * mean_lp[:, None]).sum(axis=0)
            hess[1:, 1:] = np.diag(q.sum(axis=0)) - q.T @ q
        hess += l2 * np.eye(size)
        step = np.linalg.solve(hess, grad)
        current = _objective(theta, log_p, judge, l2, with_biases)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            if candidate[0] > 0 and _objective(candidate, log_p, judge, l2, with_biases) <= current:
                break
            scale /= 2
        else:
            break
        theta = candidate
        if np.abs(scale * step).max() < 1e-7:
            break
    biases = tuple(float(b) for b in theta[1:]) if with_biases else (0.0,) * DIGITS
    return AttributeMap(slope=float(theta[0]), biases=biases)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def split_holdout(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = n - max(1, round(n * holdout))
    return order[:cut], order[cut:]


def attribute_metrics(probs: np.ndarray, judge: np.ndarray) -> dict[str, float]:
    expected = probs @ np.arange(DIGITS)
    return {
        "ece": digit_ece(probs, judge),
        "mae": float(np.abs(expected - judge).mean()),
        "nll": float(-np.log(np.maximum(probs[np.arange(len(judge)), judge], LOG_FLOOR)).mean()),
    }


def compare(
    calibration: CalibrationMap, probs: dict[str, np.ndarray], judge: dict[str, np.ndarray]
) -> dict[str, dict[str, dict[str, float]]]:
    """{attribute: {"before": metrics, "after": metrics}} on the given (held-out) data."""
    out = {}
    for attribute in ATTRIBUTES:
        m = calibration.attributes[attribute]
        after = transform(probs[attribute], m.slope, np.asarray(m.biases))
        out[attribute] = {
            "before": attribute_metrics(probs[attribute], judge[attribute]),
            "after": attribute_metrics(after, judge[attribute]),
        }
    return out


def as_arrays(pairs: Sequence) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """ScoredPair-like rows (`.distributions`, `.scores`) -> per-attribute (n, 10) probs and (n,) judge digits."""
    probs = {a: np.array([p.distributions[a] for p in pairs], dtype=float) for a in ATTRIBUTES}
    judge = {a: np.array([p.scores[a] for p in pairs], dtype=int) for a in ATTRIBUTES}
    return probs, judge


def fit_map(
    pairs: Sequence,
    *,
    method: str,
    card_fingerprint: str,
    model_name: str,
    judge: str | None,
    holdout: float = 0.3,
    seed: int = 0,
    l2: float = 1.0,
) -> CalibrationMap:
    """Fit on (1 - holdout) of the pairs, measure before/after on the rest, return the map with that record."""
    fit_idx, held_idx = split_holdout(len(pairs), holdout, seed)
    probs, digits = as_arrays(pairs)
    attributes = {a: fit_attribute(probs[a][fit_idx], digits[a][fit_idx], method=method, l2=l2) for a in ATTRIBUTES}
    fitted = CalibrationMap(
        method=method,
        card_fingerprint=card_fingerprint,
        model_name=model_name,
        attributes=attributes,
        fitted_on=len(fit_idx),
        evaluated_on=len(held_idx),
        judge=judge,
    )
    heldout = compare(fitted, {a: probs[a][held_idx] for a in ATTRIBUTES}, {a: digits[a][held_idx] for a in ATTRIBUTES})
    return CalibrationMap(**{**fitted.__dict__, "heldout_metrics": heldout})
