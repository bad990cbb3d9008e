"""Starting a server process on a free port and waiting until it is ready: for evaluation, benchmarks, tests.

The child writes to a log file (its own copy of the descriptor); readiness is an HTTP 200 from `ready_url`;
an early exit or a missed deadline raises `ServerStartError` naming the log. The process is terminated (then
killed after 60 s) when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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


def cpu_engine_env() -> dict[str, str]:
    """This environment plus vLLM-on-CPU settings (ENVIRONMENT.md) for a server process; exported values win."""
    cores = os.cpu_count() or 1
    defaults = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    return {**defaults, **os.environ}


def stock_vllm_command(model_dir: Path, port: int, served_name: str, *flags: str) -> list[str]:
    """vLLM's own OpenAI server on loopback: the baseline the sidecar is measured against."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]
