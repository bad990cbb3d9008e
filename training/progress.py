"""Progress reporting for long training work: named tasks (rollouts, judge, rl_steps, sft_steps) with totals.

The loop only calls `start`, `advance` and `finish`; `RichProgress` draws rich progress bars, `NullProgress`
draws nothing (tests, non-interactive runs that only want the log).
"""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    def start(self, task: str, description: str, total: int | None) -> None: ...
    def advance(self, task: str, amount: int = 1) -> None: ...
    def finish(self, task: str) -> None: ...


class NullProgress:
    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, task: str, description: str, total: int | None) -> None:
        pass

    def advance(self, task: str, amount: int = 1) -> None:
        pass

    def finish(self, task: str) -> None:
        pass


class RichProgress:
    """Rich bars, one per task; safe to advance from the reward's event-loop thread."""

    def __init__(self, console=None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bars = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, object] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def start(self, task: str, description: str, total: int | None) -> None:
        with self._lock:
            if task in self._tasks:
                self._bars.remove_task(self._tasks[task])
            self._tasks[task] = self._bars.add_task(description, total=total)

    def advance(self, task: str, amount: int = 1) -> None:
        with self._lock:
            if task in self._tasks:
                self._bars.advance(self._tasks[task], amount)

    def finish(self, task: str) -> None:
        with self._lock:
            if task in self._tasks:
                self._bars.remove_task(self._tasks.pop(task))
