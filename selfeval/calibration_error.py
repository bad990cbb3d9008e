"""Calibration error of predicted digit distributions: equal-width bins, ECE and top-label digit ECE.

Shared by the server's live calibration monitor and the offline evaluation (docs/method.md §9), so it lives in
the lowest layer; numpy only.
"""

from __future__ import annotations

import numpy as np

BINS = 10


def binned(confidence: np.ndarray, outcome: np.ndarray, bins: int = BINS) -> list[dict]:
    """Equal-width bins on [0, 1]: count, mean confidence and mean outcome per non-empty bin."""
    index = np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append(
                {
                    "bin": [b / bins, (b + 1) / bins],
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "outcome": float(outcome[mask].mean()),
                }
            )
    return rows


def ece(confidence: np.ndarray, outcome: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of (share of items) x |mean outcome - mean confidence|."""
    total = len(confidence)
    return float(
        sum(r["count"] / total * abs(r["outcome"] - r["confidence"]) for r in binned(confidence, outcome, bins))
    )


def digit_ece(probs: np.ndarray, judge: np.ndarray) -> float:
    """Top-label ECE of (m, 10) distributions against judge digits (m,)."""
    return ece(probs.max(axis=1), (probs.argmax(axis=1) == judge).astype(float))
