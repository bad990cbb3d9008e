import pytest

from selfeval.rubric import (
    ATTRIBUTES,
    QUALITY_ATTRIBUTES,
    ScoreError,
    double_helpsteer_score,
    double_helpsteer_scores,
    quality_of,
    validate_score,
    validate_scores,
)


def test_attribute_order_is_the_papers():
    assert ATTRIBUTES == ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    assert QUALITY_ATTRIBUTES == ("helpfulness", "correctness", "coherence")


@pytest.mark.parametrize(("label", "scaled"), [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)])
def test_helpsteer_labels_double(label, scaled):
    assert double_helpsteer_score(label) == scaled


@pytest.mark.parametrize("bad", [True, False, 2.0, "3", None, -1, 5])
def test_helpsteer_doubling_rejects_bools_floats_strings_and_out_of_range(bad):
    with pytest.raises(ScoreError):
        double_helpsteer_score(bad)


@pytest.mark.parametrize("bad", [True, 8.0, "8", -1, 10, None])
def test_score_validation_is_strict(bad):
    with pytest.raises(ScoreError):
        validate_score(bad)


def test_validate_scores_returns_canonical_order_and_checks_keys():
    shuffled = {"verbosity": 1, "helpfulness": 9, "coherence": 0, "correctness": 4, "complexity": 3}
    assert list(validate_scores(shuffled)) == list(ATTRIBUTES)
    with pytest.raises(ScoreError, match="order"):
        validate_scores(shuffled, require_order=True)
    with pytest.raises(ScoreError, match="missing"):
        validate_scores({"helpfulness": 1})


def test_double_all_five_labels():
    labels = dict(zip(ATTRIBUTES, [4, 3, 2, 1, 0], strict=True))
    assert double_helpsteer_scores(labels) == dict(zip(ATTRIBUTES, [8, 6, 4, 2, 0], strict=True))


def test_quality_is_mean_of_three_quality_attributes_over_nine():
    assert quality_of(
        {"helpfulness": 9, "correctness": 6, "coherence": 3, "complexity": 0, "verbosity": 0}
    ) == pytest.approx(18 / 27)
