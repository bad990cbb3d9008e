"""Durable JSON-lines files: append a record so that a kill never costs more than the line being written.

Shared by the judge cache and the training rollout log. An append takes an exclusive flock (several training
processes may write one file), starts on a fresh line when the file ends in a line torn by an earlier kill,
and is flushed and fsynced before it returns. Reading skips torn lines.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


def append_record(path: Path, record: dict) -> None:
    line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
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
