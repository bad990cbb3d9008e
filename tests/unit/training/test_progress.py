"""Progress off a terminal: log lines with counts and time left, not a silent run until the end."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from training.progress import LogProgress, RichProgress, progress_for


def test_log_progress_says_counts_time_left_and_done(caplog):
    progress = LogProgress(every_s=0.0)
    with caplog.at_level(logging.INFO, logger="progress"):
        progress.start("sft", "masked SFT", 4)
        progress.advance("sft")
        progress.advance("unknown")  # a task never started is ignored, not an error
        progress.finish("sft")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("masked SFT: 1/4 in ") and "left" in lines[0]
    assert lines[-1].startswith("masked SFT: 1/4") and lines[-1].endswith("(done)")


def test_bars_only_on_a_terminal():
    assert isinstance(progress_for(Console(file=io.StringIO(), force_terminal=True)), RichProgress)
    assert isinstance(progress_for(Console(file=io.StringIO(), force_terminal=False)), LogProgress)
