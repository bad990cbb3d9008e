"""Evaluation prompt sets: the shipped benchmarks load with stable ids; user files are checked line by line."""

import json

import pytest

from evaluation.prompt_sets import PromptSetError, load_prompt_set
from training.data import default_dataset, load_groups


def test_helpsteer2_heldout_is_the_eval_half_with_doubled_reference_anchors():
    heldout = load_prompt_set("helpsteer2-heldout")
    assert heldout.anchored and len(heldout.items) == 500
    train_prompts = {g.prompt for g in load_groups(default_dataset(), kitware_file="train.json")}
    held_prompts = {g.prompt for g in load_groups(default_dataset(), kitware_file="eval.json")}
    assert not train_prompts & held_prompts  # never a training prompt
    first = heldout.items[0]
    assert first.id == "hs2-0" and first.references
    assert all(v % 2 == 0 for r in first.references for v in r.scores.values())


def test_shipped_open_ended_sets_and_a_stable_limit():
    mt = load_prompt_set("mt-bench")
    assert len(mt.items) == 80 and not mt.anchored
    assert mt.items[0].id == "mtb-81" and len(mt.items[0].conversation) == 1
    arena = load_prompt_set("arena-hard-v2", limit=7)
    assert len(arena.items) == 7 and arena.items[0].id.startswith("ah2-")
    assert [i.id for i in load_prompt_set("arena-hard-v2", limit=3).items] == [i.id for i in arena.items[:3]]


def test_alpacaeval_is_not_shipped_and_the_error_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SEE_EVAL_DATA_DIR", raising=False)
    with pytest.raises(PromptSetError, match="--data-dir"):
        load_prompt_set("alpacaeval", data_dir=tmp_path)
    (tmp_path / "alpaca_eval").mkdir()
    rows = [{"instruction": "Name a prime.", "output": "7", "dataset": "helpful_base"}]
    (tmp_path / "alpaca_eval" / "alpaca_eval_gpt4_1106_preview_outputs.json").write_text(json.dumps(rows))
    items = load_prompt_set("alpacaeval", data_dir=tmp_path).items
    assert items[0].conversation == [{"role": "user", "content": "Name a prime."}]
    assert items[0].category == "helpful_base"


def test_a_user_file_with_prompts_messages_and_references(tmp_path):
    path = tmp_path / "mine.jsonl"
    scores = {"helpfulness": 8, "correctness": 8, "coherence": 9, "complexity": 2, "verbosity": 3}
    lines = [
        {"id": "q1", "prompt": "Say hi"},
        {"messages": [{"role": "user", "content": "2+2?"}], "references": [{"response": "4", "scores": scores}]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    loaded = load_prompt_set(str(path))
    assert [i.id for i in loaded.items] == ["q1", "2"] and loaded.anchored
    assert loaded.items[0].references is None and loaded.items[1].references[0].scores == scores


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"text": "hi"}, "exactly one of 'prompt'"),
        ({"prompt": "a", "messages": []}, "exactly one of 'prompt'"),
        ({"prompt": "  "}, "non-empty"),
        ({"messages": [{"role": "robot", "content": "x"}]}, ":1:"),
        ({"prompt": "a", "references": [{"response": "r", "scores": {"helpfulness": 11}}]}, ":1:"),
    ],
)
def test_bad_user_files_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(str(path))


def test_unknown_set_and_bad_limit():
    with pytest.raises(PromptSetError, match="unknown prompt set"):
        load_prompt_set("wildbench")
    with pytest.raises(PromptSetError, match="limit"):
        load_prompt_set("mt-bench", limit=0)
