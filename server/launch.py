"""Starting a server process on a free port and waiting until it is ready: for evaluation, benchmarks, tests.

The child writes to a log file (its own copy of the descriptor); readiness is an HTTP 200 from `ready_url`;
an early exit or a missed deadline raises `ServerStartError` naming the log. The process is terminated (then
killed after 60 s) when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServerStartError(RuntimeError):
    """The server exited while loading or was not ready in time; the message names its log."""


@contextmanager
def served(
    command: list[str], env: dict, log_path: Path, ready_url: str, timeout: float = 600, cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    """Run `command` until the block ends; yields once `ready_url` answers 200."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise ServerStartError(f"{' '.join(command[:3])} exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"server not ready after {timeout} s; see {log_path}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
