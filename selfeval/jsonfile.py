"""Small JSON documents on disk (model card, calibration map, run manifests): atomic writes, checked reads.

A write goes to a temp file beside the target and is renamed over it, so a reader (a server starting, a
resumed run) sees the old document or the new one, never half of one. The temp name carries the process id:
two processes writing the same document (ranks of one training run) never write into one temp file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: str | os.PathLike[str], data: dict) -> Path:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json_object(path: str | os.PathLike[str], error: type[Exception]) -> dict:
    """The JSON object in `path`; raises `error` with the path when it is unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data
