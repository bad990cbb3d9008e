"""The judge calls one phase paid for, over every run of it: each rank keeps its counters in a file of the phase.

A phase killed part-way and run again (from a checkpoint, or from its start) would otherwise report only the
calls of its last run. Each rank starts from the counts its file already holds, adds the judge client's counters
since, and rewrites the file when it starts and after every judge call; the phase's total is the sum over the
files of every rank that ever ran it. A call cut off by the kill itself (sent, its answer never read) is the only
one it can miss.
"""

from __future__ import annotations

import json
from pathlib import Path

from selfeval.jsonfile import write_json_atomic
from selfeval.judge import JudgeClient

PREFIX = "judge_counters.rank"


class JudgeTally:
    def __init__(self, judge: JudgeClient, phase_dir: Path, rank: int) -> None:
        self.judge = judge
        phase_dir.mkdir(parents=True, exist_ok=True)
        self.path = phase_dir / f"{PREFIX}{rank}.json"
        self.carried = _read_counts(self.path)
        self.start = judge.counters.as_dict()
        self.save()  # the rank's file exists from its first run on, calls or none

    def counts(self) -> dict[str, int]:
        """This rank's calls in the phase: those of earlier runs plus this run's so far."""
        now = self.judge.counters.as_dict()
        return {key: self.carried.get(key, 0) + now[key] - self.start.get(key, 0) for key in now}

    def save(self) -> None:
        write_json_atomic(self.path, self.counts())


def phase_totals(phase_dir: Path) -> dict[str, int]:
    """The phase's calls summed over every rank's file (call once every rank has saved)."""
    total: dict[str, int] = {}
    for path in sorted(phase_dir.glob(f"{PREFIX}*.json")):
        for key, value in _read_counts(path).items():
            total[key] = total.get(key, 0) + value
    return total


def _read_counts(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet: the phase's first run on this rank (writes are atomic renames, never torn)
    return {key: int(value) for key, value in data.items()} if isinstance(data, dict) else {}
