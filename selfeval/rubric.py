"""The five HelpSteer2 attributes, their fixed order and the 0-9 scale (docs/method.md §1.1).

The order matters everywhere (parsing, rendering, readout), so it lives here once. HelpSteer2's human
labels are 0-4 and map to the 0-9 scale by literal doubling, so anchors derived from them are always even.
Validation is strict: bools (a subclass of int in Python), floats and out-of-range values are refused.
"""

from __future__ import annotations

from collections.abc import Mapping

ATTRIBUTES: tuple[str, ...] = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
QUALITY_ATTRIBUTES: tuple[str, ...] = ATTRIBUTES[:3]
SCALE_MAX = 9
HELPSTEER2_MAX = 4
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(SCALE_MAX + 1))

ATTRIBUTE_DEFINITIONS: dict[str, str] = {
    "helpfulness": "overall helpfulness of the response to the prompt",
    "correctness": "inclusion of all pertinent facts without errors",
    "coherence": "consistency and clarity of expression",
    "complexity": (
        "intellectual depth required to write the response (basic language competency vs deep domain expertise)"
    ),
    "verbosity": "amount of detail included in the response, relative to what is asked for in the prompt",
}


class ScoreError(ValueError):
    """A score or score set that breaks the rubric (wrong type, range, keys or key order)."""


def _check_int(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScoreError(f"{what} must be an integer in [{low}, {high}], got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ScoreError(f"{what} must be an integer in [{low}, {high}], got {value}")
    return value


def validate_score(value: object, attribute: str = "score") -> int:
    """Return `value` if it is an int on the 0-9 scale, else raise ScoreError."""
    return _check_int(value, 0, SCALE_MAX, attribute)


def validate_scores(scores: Mapping[str, object], *, require_order: bool = False) -> dict[str, int]:
    """Check that `scores` holds exactly the five attributes with 0-9 ints; return them in canonical order."""
    keys = list(scores.keys())
    if set(keys) != set(ATTRIBUTES) or len(keys) != len(ATTRIBUTES):
        missing = [a for a in ATTRIBUTES if a not in scores]
        extra = [k for k in keys if k not in ATTRIBUTES]
        raise ScoreError(f"scores must have exactly the keys {list(ATTRIBUTES)}; missing {missing}, unexpected {extra}")
    if require_order and tuple(keys) != ATTRIBUTES:
        raise ScoreError(f"score keys must appear in the order {list(ATTRIBUTES)}, got {keys}")
    return {a: validate_score(scores[a], a) for a in ATTRIBUTES}


def double_helpsteer_score(value: object) -> int:
    """Map a HelpSteer2 0-4 label to the 0-9 scale by doubling (0,1,2,3,4 -> 0,2,4,6,8)."""
    return 2 * _check_int(value, 0, HELPSTEER2_MAX, "HelpSteer2 label")


def double_helpsteer_scores(labels: Mapping[str, object]) -> dict[str, int]:
    """Double all five HelpSteer2 labels of one response; keys must be exactly the five attributes."""
    if set(labels) != set(ATTRIBUTES):
        raise ScoreError(f"HelpSteer2 labels must have exactly the keys {list(ATTRIBUTES)}, got {sorted(labels)}")
    return {a: double_helpsteer_score(labels[a]) for a in ATTRIBUTES}


def quality_of(scores: Mapping[str, float]) -> float:
    """Quality on [0, 1]: mean of the three quality attributes divided by the scale maximum."""
    return sum(float(scores[a]) for a in QUALITY_ATTRIBUTES) / (len(QUALITY_ATTRIBUTES) * SCALE_MAX)
