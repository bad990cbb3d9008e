"""HelpSteer2 rows -> prompt groups with references -> the fixed, length-filtered window."""

import json

import pytest

from training.config import load_config
from training.data import DataError, load_groups, parse_conversation, read_window, sample_window, write_window

DATA = load_config("cpu-smoke").data_path()


def test_multi_turn_prompts_become_conversations():
    prompt = "Hi there<extra_id_1>Assistant\nHello! How can I help?<extra_id_1>User\nTell me a joke<extra_id_1>\n"
    assert parse_conversation(prompt) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ]


def test_unlabelled_segments_are_user_turns():
    assert parse_conversation("a<extra_id_1>b")[1] == {"role": "user", "content": "b"}


def test_shipped_subset_groups_into_prompts_with_two_doubled_references():
    groups = load_groups(DATA, "train.json")
    assert len(groups) == 500
    assert all(len(g.references) == 2 for g in groups)
    assert all(v % 2 == 0 and 0 <= v <= 8 for g in groups for r in g.references for v in r.scores.values())
    assert sum(len(g.conversation) > 1 for g in groups) > 0
    assert not {g.prompt for g in groups} & {g.prompt for g in load_groups(DATA, "eval.json")}


def test_rows_with_wrong_keys_or_labels_are_refused(tmp_path):
    row = {"prompt": "p", "response": "r", "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 1}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**row, "verbosity": 2, "extra": 1}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_groups(path)
    path.write_text(json.dumps({**row, "verbosity": 5}) + "\n")
    with pytest.raises(DataError, match="HelpSteer2 label"):
        load_groups(path)
    with pytest.raises(DataError, match="no dataset"):
        load_groups(tmp_path / "missing.jsonl")


def test_window_is_seeded_length_filtered_and_round_trips(tmp_path):
    groups = load_groups(DATA, "train.json")
    length = {g.index: len(g.prompt) for g in groups}
    window = sample_window(groups, 16, 42, lambda g: length[g.index], 400)
    again = sample_window(groups, 16, 42, lambda g: length[g.index], 400)
    other = sample_window(groups, 16, 43, lambda g: length[g.index], 400)
    assert [g.index for g in window.groups] == [g.index for g in again.groups] != [g.index for g in other.groups]
    assert all(length[g.index] <= 400 for g in window.groups)
    assert [g.index for g in window.groups] == sorted(g.index for g in window.groups)
    write_window(window, tmp_path / "window.jsonl")
    assert read_window(tmp_path / "window.jsonl") == window.groups
    with pytest.raises(DataError, match="fit"):
        sample_window(groups, 16, 42, lambda g: length[g.index], 5)
