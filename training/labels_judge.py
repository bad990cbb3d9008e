"""Human labels as a judge: the scores a labelled dataset gives a (conversation, response) pair, or an error.

A labelled set (HelpSteer2 schema: five 0-4 human labels per response, doubled onto 0-9 as in the method) is
indexed by the exact conversation (parsed into messages as training parses prompts) and the stripped response.
A pair that is not in the set is refused with `UnknownPairError`: the judge never guesses, never falls back to a
neighbour, and never answers for a pair whose conversation it knows with another response. A pair whose
labels differ between two rows of the set is refused too (the set would not say what the judge thinks).
Lookups cost nothing and are counted, so a run's manifest can say how many labels it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfeval.delta import sha256_of
from selfeval.judge import JudgeError
from selfeval.rubric import validate_scores
from training.data import PromptGroup, load_groups


class UnknownPairError(JudgeError):
    """The pair is not in the labelled set (or its labels there disagree): no score exists for it."""


def pair_key(conversation: Sequence[Mapping[str, str]], response: str) -> str:
    """A stable key for a (conversation, response) pair: exact message roles and texts, stripped response."""
    messages = [[m["role"], m["content"]] for m in conversation]
    return json.dumps([messages, response.strip()], ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class LabelledPair:
    group_index: int
    conversation: list[dict[str, str]]
    response: str
    scores: dict[str, int]  # 0-9 (doubled human labels)


class LabelsJudge:
    """Returns the human scores of known pairs; refuses every other pair."""

    name = "human-labels"

    def __init__(self, groups: Sequence[PromptGroup], source: str) -> None:
        self.source = source
        self._pairs: dict[str, LabelledPair] = {}
        self._conflicts: set[str] = set()
        for group in groups:
            for reference in group.references:
                key = pair_key(group.conversation, reference.response)
                known = self._pairs.get(key)
                if known is not None and known.scores != reference.scores:
                    self._conflicts.add(key)
                pair = LabelledPair(group.index, group.conversation, reference.response.strip(), reference.scores)
                self._pairs.setdefault(key, pair)
        self.lookups = 0

    @classmethod
    def from_file(cls, path: Path, kitware_file: str | None = None) -> LabelsJudge:
        """A judge over one HelpSteer2 jsonl(.gz), optionally one half of the shipped subset."""
        half = f" ({kitware_file})" if kitware_file else ""
        return cls(load_groups(path, kitware_file), f"{path.name}{half} sha256={sha256_of(path)}")

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[LabelledPair]:
        return iter(self._pairs.values())

    def score(self, conversation: Sequence[Mapping[str, str]], response: str) -> dict[str, int]:
        """The five 0-9 human scores of this exact pair; UnknownPairError for any other pair."""
        key = pair_key(conversation, response)
        pair = self._pairs.get(key)
        if pair is None:
            raise UnknownPairError(
                f"the labels judge ({self.source}) has no human labels for this conversation and response; "
                "it only scores pairs present in its labelled set"
            )
        if key in self._conflicts:
            raise UnknownPairError(f"the labelled set ({self.source}) gives this pair two different label sets")
        self.lookups += 1
        return validate_scores(pair.scores)
