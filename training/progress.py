"""Progress reporting for long training work: named tasks (rollouts, judge, rl_steps, sft_steps) with totals.

The loop only calls `start`, `advance` and `finish`; `RichProgress` draws rich progress bars on a terminal,
`LogProgress` writes a log line per task every so often (a run under nohup, CI or a Kubernetes Job, where
rich draws nothing until the end), `NullProgress` nothing (tests, ranks other than 0). `progress_for` picks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("progress")
LOG_EVERY_S = 30.0


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


class LogProgress:
    """A log line per task at most every `every_s` seconds and when it finishes: done/total, rate, time left."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        log.setLevel(logging.INFO)  # progress is the point, even under a CLI that logs warnings only
        self.every_s = every_s
        self._tasks: dict[str, dict] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, task: str, description: str, total: int | None) -> None:
        with self._lock:
            now = time.monotonic()
            self._tasks[task] = {"description": description, "total": total, "done": 0, "started": now, "said": now}

    def advance(self, task: str, amount: int = 1) -> None:
        with self._lock:
            state = self._tasks.get(task)
            if state is None:
                return
            state["done"] += amount
            if time.monotonic() - state["said"] >= self.every_s:
                self._say(state)

    def finish(self, task: str) -> None:
        with self._lock:
            if (state := self._tasks.pop(task, None)) is not None:
                self._say(state, finished=True)

    def _say(self, state: dict, finished: bool = False) -> None:
        now = time.monotonic()
        state["said"] = now
        elapsed = now - state["started"]
        done, total = state["done"], state["total"]
        line = f"{state['description']}: {done}" + (f"/{total}" if total else "") + f" in {elapsed:.0f} s"
        if not finished and total and 0 < done < total:
            line += f", ~{elapsed * (total - done) / done:.0f} s left"
        log.info(line + (" (done)" if finished else ""))


def progress_for(console) -> RichProgress | LogProgress:
    """Bars on a terminal, log lines anywhere else."""
    return RichProgress(console) if console.is_terminal else LogProgress()
