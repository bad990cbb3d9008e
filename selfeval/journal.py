"""Durable JSON-lines files: append a record so that a kill never costs more than the line being written.

Shared by the judge cache and the training step journals (rollouts, step metrics). An append takes an
exclusive flock (several training processes may write one file), starts on a fresh line when the file ends in
a line torn by an earlier kill, and is flushed and fsynced before it returns. Reading skips torn lines. A
rewrite (a resumed phase dropping the steps it will redo) replaces the file atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


def _line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


def append_record(path: Path, record: dict) -> None:
    line = _line(record)
    with path.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                torn = handle.read(1) != "\n"
                handle.seek(size)
                line = "\n" + line if torn else line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write
        if isinstance(record, dict):
            records.append(record)
    return records


def rewrite_records(path: Path, records: list[dict]) -> None:
    """Replace the file with `records`, atomically: a kill leaves the old file or the new one, never a mix.
    Only while nothing appends (an appender holding the old file would write past the replacement)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(_line(r) for r in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
