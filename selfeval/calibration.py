"""A post-hoc calibration map for the five score distributions, stored beside the model card.

The map is fitted from ledger feedback (`see calibrate fit`, fitting code in `evaluation/recalibration.py`)
and applied by the server, which then returns the raw distributions and the calibrated ones side by side,
labelled with the map's version. One transform, vector scaling of the log-probabilities, per attribute:

    p'_k  proportional to  exp(slope * log p_k + bias_k),   k = 0..9

`slope` alone is temperature scaling (slope = 1/T: sharpens or flattens an over/under-confident model);
the ten biases move mass between scores (a model that consistently scores too low or too high). slope = 1,
biases = 0 is the identity. Probabilities below `LOG_FLOOR` are floored before the log so that a digit the
model gave zero mass can still receive some after calibration.

The map is tied to one checkpoint: it records the card fingerprint it was fitted for, and the server refuses a
map fitted for another checkpoint. Pure Python: the server applies it per request without numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfeval.card import ModelCard
from selfeval.jsonfile import read_json_object, write_json_atomic
from selfeval.readout import ScoreDistribution
from selfeval.rubric import ATTRIBUTES, SCALE_MAX

CALIBRATION_FILENAME = "see_calibration.json"
CALIBRATION_FORMAT = "see-calibration"
CALIBRATION_FORMAT_VERSION = 1
METHODS = ("temperature", "vector")
LOG_FLOOR = 1e-12


class CalibrationError(ValueError):
    """A missing, malformed or mismatched calibration map, with what to do about it."""


def card_fingerprint(card: ModelCard) -> str:
    """A short stable id of a checkpoint's card (model name, digits, prompt mode, lineage, creation time)."""
    body = json.dumps(card.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(body).hexdigest()[:16]


@dataclass(frozen=True)
class AttributeMap:
    slope: float = 1.0
    biases: tuple[float, ...] = (0.0,) * (SCALE_MAX + 1)

    def __post_init__(self) -> None:
        if len(self.biases) != SCALE_MAX + 1 or not all(math.isfinite(b) for b in self.biases):
            raise CalibrationError(f"biases must be {SCALE_MAX + 1} finite numbers, got {list(self.biases)}")
        if not math.isfinite(self.slope) or self.slope <= 0:
            raise CalibrationError(f"slope must be a positive finite number, got {self.slope}")

    def apply(self, probs: Sequence[float]) -> tuple[float, ...]:
        logits = [self.slope * math.log(max(p, LOG_FLOOR)) + b for p, b in zip(probs, self.biases, strict=True)]
        peak = max(logits)
        weights = [math.exp(v - peak) for v in logits]
        total = sum(weights)
        return tuple(w / total for w in weights)


@dataclass(frozen=True)
class CalibrationMap:
    method: str
    card_fingerprint: str
    model_name: str
    attributes: dict[str, AttributeMap]
    fitted_on: int  # feedback records used to fit
    evaluated_on: int  # held-out feedback records of the before/after check
    judge: str | None = None  # feedback of this judge only; None = all judges
    heldout_metrics: dict[str, Any] = field(default_factory=dict)  # before/after, per attribute
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if set(self.attributes) != set(ATTRIBUTES):
            raise CalibrationError(f"a map needs exactly the attributes {list(ATTRIBUTES)}")

    @property
    def version(self) -> str:
        """Content hash: two maps with the same parameters and provenance share a version."""
        params = {a: asdict(m) for a, m in sorted(self.attributes.items())}
        body = json.dumps([self.method, self.card_fingerprint, params, self.created_at], sort_keys=True)
        return f"{self.method}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"

    def apply(self, distributions: Mapping[str, ScoreDistribution]) -> dict[str, ScoreDistribution]:
        """Calibrated distributions; label mass and the emitted digit are carried over from the raw ones."""
        return {
            a: ScoreDistribution(probs=self.attributes[a].apply(d.probs), label_mass=d.label_mass, emitted=d.emitted)
            for a, d in distributions.items()
        }

    def check_for(self, card: ModelCard) -> None:
        if self.card_fingerprint != card_fingerprint(card):
            raise CalibrationError(
                f"this calibration was fitted for card {self.card_fingerprint} ({self.model_name}), but the served "
                f"checkpoint's card is {card_fingerprint(card)}; refit it with `see calibrate fit` or remove it"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attributes"] = {a: {"slope": m.slope, "biases": list(m.biases)} for a, m in self.attributes.items()}
        return {
            "format": CALIBRATION_FORMAT,
            "format_version": CALIBRATION_FORMAT_VERSION,
            "version": self.version,
            **data,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationMap:
        if data.get("format") != CALIBRATION_FORMAT or data.get("format_version") != CALIBRATION_FORMAT_VERSION:
            raise CalibrationError(f"not a {CALIBRATION_FORMAT} v{CALIBRATION_FORMAT_VERSION} file")
        try:
            attributes = {
                a: AttributeMap(slope=float(m["slope"]), biases=tuple(float(b) for b in m["biases"]))
                for a, m in data["attributes"].items()
            }
            loaded = cls(
                method=data["method"],
                card_fingerprint=data["card_fingerprint"],
                model_name=data["model_name"],
                attributes=attributes,
                fitted_on=int(data["fitted_on"]),
                evaluated_on=int(data["evaluated_on"]),
                judge=data.get("judge"),
                heldout_metrics=data.get("heldout_metrics") or {},
                created_at=data["created_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed calibration file: {exc}") from None
        if data.get("version") not in (None, loaded.version):
            raise CalibrationError("calibration file was edited: its version does not match its parameters")
        return loaded


def calibration_path(model_dir: str | os.PathLike[str]) -> Path:
    return Path(model_dir) / CALIBRATION_FILENAME


def load_calibration(path: str | os.PathLike[str]) -> CalibrationMap:
    return CalibrationMap.from_dict(read_json_object(path, CalibrationError))


def write_calibration(path: str | os.PathLike[str], calibration: CalibrationMap) -> Path:
    """Write atomically (temp file + rename): a server starting meanwhile never reads half a map."""
    return write_json_atomic(path, calibration.to_dict())
