"""Evaluation prompt sets: named benchmarks and user files -> items with an id, a conversation, judge anchors.

- `helpsteer2-heldout`: the `eval.json` half of the shipped HelpSteer2 subset (training uses the other half; no
  prompt is shared), with every HelpSteer2 response as a reference anchor for the judge (labels doubled).
- `mt-bench` (80, first turn only: the second turn is a follow-up to the model's own first answer),
  `arena-hard-v2` (750): shipped in `data/` (Apache-2.0), judged with the reference-free prompt.
- `alpacaeval` (805): its licence (CC BY-NC 4.0) keeps it out of the repository; point `--data-dir` (or
  SEE_EVAL_DATA_DIR) at a folder holding `alpaca_eval/alpaca_eval_gpt4_1106_preview_outputs.json`.
- FILE: JSONL with `prompt` (one user turn) or `messages`, optional `id`, optional `references`
  (a list of {response, scores 0-9}) to use the anchored judge prompt.
Item ids are stable across runs (dataset ids, else the position), so runs pair up for win rates.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

from selfeval.judge import Reference
from selfeval.prompts import PromptError, validate_messages
from selfeval.rubric import ScoreError, validate_scores
from training.data import DEFAULT_DATA, DataError, default_dataset, load_groups
from training.data import data_dir as shipped_data_dir

DATA_DIR_ENV = "SEE_EVAL_DATA_DIR"
NAMED_SETS = ("helpsteer2-heldout", "mt-bench", "arena-hard-v2", "alpacaeval")


class PromptSetError(ValueError):
    """A prompt set that cannot be found or read; the message says what to fix."""


@dataclass(frozen=True)
class EvalItem:
    id: str
    conversation: list[dict[str, str]]
    references: list[Reference] | None = None
    category: str | None = None

    def to_dict(self) -> dict:
        refs = (
            None if self.references is None else [{"response": r.response, "scores": r.scores} for r in self.references]
        )
        return {"id": self.id, "conversation": self.conversation, "references": refs, "category": self.category}

    @classmethod
    def from_dict(cls, data: dict) -> EvalItem:
        refs = data.get("references")
        return cls(
            id=str(data["id"]),
            conversation=data["conversation"],
            references=None if refs is None else [Reference(r["response"], r["scores"]) for r in refs],
            category=data.get("category"),
        )


@dataclass(frozen=True)
class PromptSet:
    name: str
    items: list[EvalItem]
    source: str
    anchored: bool  # True: the judge sees HelpSteer2 reference responses


def _lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): prompts hold U+2028
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PromptSetError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return rows


def _find(relative: str, directory: Path | None, how_to_get: str) -> Path:
    candidates = [d / relative for d in (directory, _env_dir(), shipped_data_dir()) if d is not None]
    for path in candidates:
        if path.is_file():
            return path
    raise PromptSetError(
        f"{relative} not found (looked in {', '.join(str(c.parent) for c in candidates)}); {how_to_get}"
    )


def _env_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def helpsteer2_heldout() -> PromptSet:
    path = default_dataset()
    try:
        groups = load_groups(path, kitware_file="eval.json")
    except DataError as exc:
        raise PromptSetError(str(exc)) from None
    items = [EvalItem(f"hs2-{g.index}", g.conversation, g.references) for g in groups]
    return PromptSet("helpsteer2-heldout", items, f"{DEFAULT_DATA} (kitware_file=eval.json)", anchored=True)


def mt_bench(data_dir: Path | None) -> PromptSet:
    path = _find("mt_bench/question.jsonl", data_dir, "it ships in data/mt_bench")
    items = [
        EvalItem(f"mtb-{row['question_id']}", [{"role": "user", "content": row["turns"][0]}], None, row.get("category"))
        for row in _lines(path)
    ]
    return PromptSet("mt-bench", items, f"{path.name} (first turns)", anchored=False)


def arena_hard(data_dir: Path | None) -> PromptSet:
    relative = "arena_hard/arena-hard-v2.0_question.jsonl"
    try:
        path = _find(relative + ".gz", data_dir, "")
    except PromptSetError:
        path = _find(relative, data_dir, "it ships gzipped in data/arena_hard")
    items = [
        EvalItem(f"ah2-{row['uid']}", [{"role": "user", "content": row["prompt"]}], None, row.get("category"))
        for row in _lines(path)
    ]
    return PromptSet("arena-hard-v2", items, path.name, anchored=False)


def alpacaeval(data_dir: Path | None) -> PromptSet:
    path = _find(
        "alpaca_eval/alpaca_eval_gpt4_1106_preview_outputs.json",
        data_dir,
        f"AlpacaEval 2.0 is CC BY-NC 4.0 and not shipped: download tatsu-lab/alpaca_eval "
        f"results/gpt4_1106_preview/model_outputs.json into DIR/alpaca_eval/ and pass --data-dir DIR "
        f"(or set {DATA_DIR_ENV})",
    )
    rows = json.loads(path.read_text(encoding="utf-8"))
    items = [
        EvalItem(f"ae2-{i}", [{"role": "user", "content": row["instruction"]}], None, row.get("dataset"))
        for i, row in enumerate(rows)
    ]
    return PromptSet("alpacaeval", items, path.name, anchored=False)


def from_file(path: Path) -> PromptSet:
    items, ids = [], set()
    for number, row in enumerate(_lines(path), start=1):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
            raise PromptSetError(f"{where}: each line needs exactly one of 'prompt' (a string) or 'messages'")
        try:
            if "prompt" in row:
                if not isinstance(row["prompt"], str) or not row["prompt"].strip():
                    raise PromptError("'prompt' must be a non-empty string")
                conversation = [{"role": "user", "content": row["prompt"]}]
            else:
                conversation = validate_messages(row["messages"])
            refs = row.get("references")
            references = (
                None if refs is None else [Reference(r["response"], validate_scores(r["scores"])) for r in refs]
            )
        except (PromptError, ScoreError, KeyError, TypeError) as exc:
            raise PromptSetError(f"{where}: {exc}") from None
        item_id = str(row.get("id", number))
        if item_id in ids:
            raise PromptSetError(f"{where}: duplicate id {item_id!r}")
        ids.add(item_id)
        items.append(EvalItem(item_id, conversation, references or None, row.get("category")))
    if not items:
        raise PromptSetError(f"{path} holds no prompts")
    return PromptSet(path.stem, items, str(path), anchored=any(i.references for i in items))


def load_prompt_set(name: str, data_dir: Path | None = None, limit: int | None = None) -> PromptSet:
    """A named set or a JSONL file, optionally cut to its first `limit` items (a stable prefix)."""
    loaders = {
        "helpsteer2-heldout": helpsteer2_heldout,
        "mt-bench": lambda: mt_bench(data_dir),
        "arena-hard-v2": lambda: arena_hard(data_dir),
        "alpacaeval": lambda: alpacaeval(data_dir),
    }
    if name in loaders:
        prompt_set = loaders[name]()
    elif Path(name).is_file():
        prompt_set = from_file(Path(name))
    else:
        raise PromptSetError(f"unknown prompt set {name!r}: use one of {list(NAMED_SETS)} or a JSONL file path")
    if limit is not None:
        if limit < 1:
            raise PromptSetError("--limit must be >= 1")
        prompt_set = PromptSet(prompt_set.name, prompt_set.items[:limit], prompt_set.source, prompt_set.anchored)
    return prompt_set
