"""The labels judge: human scores for known pairs only; every other pair is refused, never guessed."""

import json

import pytest

from selfeval.rubric import ATTRIBUTES
from training.labels_judge import LabelsJudge, UnknownPairError

LABELS = {"helpfulness": 3, "correctness": 4, "coherence": 2, "complexity": 1, "verbosity": 0}


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _row(prompt, response, half="train.json", **labels):
    return {"prompt": prompt, "response": response, **(LABELS | labels), "kitware_file": half}


@pytest.fixture
def judge(tmp_path):
    rows = [
        _row("What is 2+2?", "4"),
        _row("What is 2+2?", "5", helpfulness=0, correctness=0),
        _row("Hi<extra_id_1>Assistant\nHello!<extra_id_1>User\nHow are you?", "Fine, thanks."),
        _row("Held-out prompt", "held-out answer", half="eval.json"),
    ]
    return LabelsJudge.from_file(_write(tmp_path / "hs2.jsonl", rows), "train.json")


def test_known_pairs_get_their_human_labels_doubled_onto_0_9(judge):
    user = [{"role": "user", "content": "What is 2+2?"}]
    assert judge.score(user, "4") == {a: 2 * LABELS[a] for a in ATTRIBUTES}
    assert judge.score(user, "  5\n")["helpfulness"] == 0  # the response is compared stripped
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert judge.score(turns, "Fine, thanks.")["correctness"] == 8
    assert judge.lookups == 3 and len(judge) == 3


@pytest.mark.parametrize(
    "conversation, response",
    [
        ([{"role": "user", "content": "What is 2+2?"}], "four"),  # known prompt, other response
        ([{"role": "user", "content": "What is 3+3?"}], "4"),  # known response, other prompt
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}], "4"),
        ([{"role": "user", "content": "Held-out prompt"}], "held-out answer"),  # the other half is not known
    ],
)
def test_any_other_pair_is_an_error_never_a_guess(judge, conversation, response):
    with pytest.raises(UnknownPairError, match="no human labels"):
        judge.score(conversation, response)
    assert judge.lookups == 0


def test_a_pair_labelled_twice_differently_is_refused(tmp_path):
    rows = [_row("Q", "A"), _row("Q", "A", helpfulness=0)]
    judge = LabelsJudge.from_file(_write(tmp_path / "twice.jsonl", rows))
    with pytest.raises(UnknownPairError, match="two different label sets"):
        judge.score([{"role": "user", "content": "Q"}], "A")
