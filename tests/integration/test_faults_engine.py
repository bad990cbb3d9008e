"""Fault injection on real processes: the vLLM EngineCore process is killed (SIGKILL) under the sidecar.

A dead engine never comes back, so the replica must say so (`/health` 503 `engine_dead`, requests 503, a
stream's error chunk) and exit non-zero so that its orchestrator restarts it, rather than staying up and
answering every request with a 500. Each test runs its own server: the fault ends it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from selfeval.models import DEFAULT_MODEL_NAME
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration

EXIT_WITHIN_S = 90


def processes_named(server_pid: int, marker: str) -> list[psutil.Process]:
    """The server's descendant processes whose command line or name holds `marker`, oldest first."""
    found = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if marker in " ".join(child.cmdline()) + " " + child.name():
                found.append((child.create_time(), child))
        except psutil.Error:
            continue
    return [child for _, child in sorted(found, key=lambda pair: pair[0])]


def kill_engine_core(server_pid: int) -> int:
    """SIGKILL the EngineCore process vLLM started under the server; returns its pid."""
    cores = processes_named(server_pid, "EngineCore")
    if not cores:
        pytest.fail("no EngineCore process under the server")
    os.kill(cores[0].pid, signal.SIGKILL)
    return cores[0].pid


def health_after_death(url: str, process, seconds: float) -> list[object]:
    """/health answers from the kill until the process exits: 503 bodies' codes, or 'gone' once it is down."""
    seen: list[object] = []
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            seen.append(response.json()["error"]["code"] if response.status_code == 503 else response.status_code)
        except httpx.HTTPError:
            seen.append("gone")
        time.sleep(0.1)
    return seen


def test_an_engine_killed_mid_stream_ends_the_stream_health_and_the_process(model_dir, tmp_path):
    """One server for both halves (each kill ends a server, and CI time is finite): the stream in flight gets an
    error chunk, then /health stops saying 200 and the process exits 1. Killing an idle engine takes the same
    path (vLLM's monitor sets the flag the watchdog polls); it had a server of its own until CI time ran short."""
    with running_server(model_dir, tmp_path) as server:
        body = {
            "model": DEFAULT_MODEL_NAME,
            "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
            "max_tokens": 2000,
            "temperature": 0,
            "stream": True,
        }
        events: list[str] = []
        killed = threading.Event()
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 5 and not killed.is_set():
                    kill_engine_core(server.process.pid)
                    killed.set()
        assert killed.is_set(), events
        errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
        assert errors and errors[0]["code"] == "engine_dead", events[-3:]
        finished = [e for e in events if e != "[DONE]" and "choices" in json.loads(e)]
        reasons = [json.loads(e)["choices"][0]["finish_reason"] for e in finished]
        assert reasons == [None] * len(reasons), "a cut answer must not look complete"
        seen = health_after_death(server.url, server.process, EXIT_WITHIN_S)
        try:
            server.process.wait(timeout=30)
        except Exception:
            pytest.fail(f"the server kept running after its engine died; /health said {seen[-5:]}")
        assert 200 not in seen, seen
        assert server.process.returncode == 1, server.log_tail()
        assert "the inference engine died" in server.log_tail(20_000)


def engine_processes(server_pid: int) -> list[psutil.Process]:
    return processes_named(server_pid, "VLLM")


def ready_status(url: str, seconds: float = 20) -> int | None:
    """GET /ready, waiting out the moment before the socket is bound."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{url}/ready", timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    return None


def test_a_server_stopped_while_its_engine_loads_leaves_no_engine_behind(model_dir, tmp_path):
    """SIGTERM during the engine's load: the engine lives in a worker thread, not yet handed to shutdown; its
    EngineCore used to outlive the server as an orphan holding gigabytes."""
    with running_server(model_dir, tmp_path, wait_ready=False) as server:
        deadline = time.monotonic() + 120
        while not (engine := engine_processes(server.process.pid)) and time.monotonic() < deadline:
            assert server.process.poll() is None, server.log_tail()
            time.sleep(0.2)
        assert engine, f"no vLLM process appeared under the server:\n{server.log_tail()}"
        assert ready_status(server.url) == 503  # still loading
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=EXIT_WITHIN_S)
        gone, alive = psutil.wait_procs(engine, timeout=30)
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
