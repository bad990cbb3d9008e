"""HelpSteer2 rows -> prompt groups with their reference responses -> the fixed training window.

Choices (docs/method.md §7.1, §7.3, §8):
- Rows must have the HelpSteer2 keys with 0-4 integer labels (the subset's provenance keys are allowed);
  anything else is an error naming the line, never a silently skipped row.
- Multi-turn prompts use `<extra_id_1>` between turns: the text before the first marker is the first user
  turn, later segments start with `User` or `Assistant` (unlabelled ones are user turns), empty turns drop.
- Rows are grouped by identical prompt string in first-appearance order; every row of a group is a reference
  (response + doubled labels) for the judge.
- The window is sampled once per run with a seed, without replacement, AFTER dropping prompts too long for the
  model, so an RL phase always gets exactly `window_size` prompts (the reference could come up short).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from selfeval.judge import Reference
from selfeval.prompts import PromptError, validate_messages
from selfeval.rubric import ATTRIBUTES, ScoreError, double_helpsteer_scores

TURN_MARKER = "<extra_id_1>"
PROVENANCE_KEYS = frozenset({"kitware_file", "kitware_pair_index", "response_index"})
REQUIRED_KEYS = frozenset({"prompt", "response", *ATTRIBUTES})


DATA_DIR_ENV = "SEE_DATA_DIR"
# the shipped datasets, named as in the source tree; a relative `data/...` path means this directory's files
DEFAULT_DATA = "data/helpsteer2/helpsteer2_kitware_subset.jsonl.gz"
CHECKOUT_DATA = Path(__file__).resolve().parents[1] / "data"
INSTALLED_DATA = Path(sysconfig.get_path("data")) / "share" / "see-sidecar" / "data"  # where the wheel puts it


class DataError(ValueError):
    """A dataset that does not follow the HelpSteer2 schema, or a window that cannot be filled."""


def data_dir() -> Path:
    """The shipped datasets: env SEE_DATA_DIR, else the source checkout's data/, else the copy a wheel installs
    under <prefix>/share/see-sidecar/data."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return CHECKOUT_DATA if (CHECKOUT_DATA / "helpsteer2").is_dir() else INSTALLED_DATA


def resolve_data_path(path: str | Path) -> Path:
    """A dataset path as configs and the command line give it: absolute as is; `data/...` inside `data_dir()`;
    any other relative path from the current directory."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "data":
        return data_dir().joinpath(*path.parts[1:])
    return path.resolve()


def default_dataset() -> Path:
    """The shipped HelpSteer2 subset (both halves; `kitware_file` picks one)."""
    return resolve_data_path(DEFAULT_DATA)


@dataclass(frozen=True)
class PromptGroup:
    """One training prompt: its conversation and every HelpSteer2 response to it as a judge reference."""

    index: int
    prompt: str
    conversation: list[dict[str, str]]
    references: list[Reference]
    source_file: str | None = None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "prompt": self.prompt,
            "conversation": self.conversation,
            "references": [{"response": r.response, "scores": r.scores} for r in self.references],
            "source_file": self.source_file,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PromptGroup:
        return cls(
            index=data["index"],
            prompt=data["prompt"],
            conversation=data["conversation"],
            references=[Reference(r["response"], r["scores"]) for r in data["references"]],
            source_file=data.get("source_file"),
        )


def parse_conversation(prompt: str) -> list[dict[str, str]]:
    """A HelpSteer2 prompt string -> a validated list of {role, content}."""
    first, *rest = prompt.split(TURN_MARKER)
    turns = [{"role": "user", "content": first.strip()}]
    for segment in rest:
        text = segment.strip()
        role = "user"
        for label in ("User", "Assistant"):
            if text.startswith(label):
                role, text = label.lower(), text[len(label) :].strip()
                break
        turns.append({"role": role, "content": text})
    return validate_messages([t for t in turns if t["content"]])


def read_rows(path: Path) -> Iterable[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
    except FileNotFoundError:
        raise DataError(
            f"no dataset at {path}; set data.path to a HelpSteer2 jsonl(.gz) (the shipped datasets are "
            f"looked up in {data_dir()}: set {DATA_DIR_ENV} to a copy of the repository's data/ to move them)"
        ) from None


def load_groups(path: Path, kitware_file: str | None = None) -> list[PromptGroup]:
    """Prompt groups (first-appearance order) from a HelpSteer2 jsonl, optionally one half of the subset."""
    groups: dict[str, PromptGroup] = {}
    for number, row in read_rows(path):
        where = f"{path.name}:{number}"
        if not isinstance(row, dict) or not set(row) >= REQUIRED_KEYS or set(row) - REQUIRED_KEYS - PROVENANCE_KEYS:
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{where}: expected the keys {sorted(REQUIRED_KEYS)}, got {keys}")
        if kitware_file is not None and row.get("kitware_file") != kitware_file:
            continue
        prompt, response = row["prompt"], row["response"]
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(response, str) or not response.strip():
            raise DataError(f"{where}: prompt and response must be non-empty strings")
        try:
            scores = double_helpsteer_scores({a: row[a] for a in ATTRIBUTES})
            group = groups.get(prompt)
            if group is None:
                group = groups[prompt] = PromptGroup(
                    len(groups), prompt, parse_conversation(prompt), [], row.get("kitware_file")
                )
        except (ScoreError, PromptError) as exc:
            raise DataError(f"{where}: {exc}") from None
        group.references.append(Reference(response, scores))
    if not groups:
        raise DataError(f"{path} has no rows" + (f" with kitware_file={kitware_file!r}" if kitware_file else ""))
    return list(groups.values())


@dataclass(frozen=True)
class Window:
    groups: list[PromptGroup]
    summary: dict


def sample_window(
    groups: list[PromptGroup], size: int, seed: int, prompt_tokens: Callable[[PromptGroup], int], max_tokens: int
) -> Window:
    """Seeded sample without replacement of `size` prompts that fit `max_tokens`, in dataset order."""
    fitting = [g for g in groups if prompt_tokens(g) <= max_tokens]
    if len(fitting) < size:
        raise DataError(
            f"only {len(fitting)} of {len(groups)} prompts fit in {max_tokens} prompt tokens; the window needs "
            f"{size}. Raise data.max_prompt_tokens or lower the window (rl.steps x rl.prompts_per_step)."
        )
    chosen = sorted(random.Random(seed).sample(range(len(fitting)), size))
    window = [fitting[i] for i in chosen]
    summary = {
        "rows": size,
        "seed": seed,
        "method": "seeded_random_without_replacement_after_length_filter",
        "available_prompts": len(groups),
        "fitting_prompts": len(fitting),
        "max_prompt_tokens": max_tokens,
        "first_indices": [g.index for g in window[:10]],
    }
    return Window(window, summary)


def write_window(window: Window, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for group in window.groups:
            handle.write(json.dumps(group.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    path.with_name(path.stem + "_summary.json").write_text(json.dumps(window.summary, indent=2) + "\n")


def read_window(path: Path) -> list[PromptGroup]:
    return [PromptGroup.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]
