"""One real sidecar per test session: `python -m server` on the default model, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from selfeval.models import prepare_default_model
from server.launch import free_port

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 600


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    seen_alive_while_loading: bool = False  # /health 200 while /ready was still 503

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return prepare_default_model(report=print)


@contextmanager
def running_server(model_dir: Path, log_dir: Path, *, wait_ready: bool = True, **settings: str):
    """Start `python -m server` with SEE_* settings, wait for /ready (unless told not to), stop it afterwards."""
    port = free_port()
    log_path = log_dir / "server.log"
    env = {**os.environ, "SEE_MODEL": str(model_dir), "SEE_PORT": str(port), "SEE_MAX_MODEL_LEN": "4096"}
    env["SEE_LEDGER__URL"] = str(log_dir / "ledger.sqlite3")  # never the user's own ledger
    env.update({f"SEE_{name.upper()}": value for name, value in settings.items()})
    with open(log_path, "w") as log:
        process = subprocess.Popen(  # own process group: kill_hard() takes the engine's children too
            [sys.executable, "-m", "server"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while wait_ready:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode} before it was ready:\n{running.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{running.log_tail()}")
            try:
                if httpx.get(f"{running.url}/ready", timeout=5).status_code == 200:
                    break
                if httpx.get(f"{running.url}/health", timeout=5).status_code == 200:
                    running.seen_alive_while_loading = True
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_hard(running)


def certified_policy_for(model_dir: Path, directory: Path) -> Path:
    """A certified policy file for the served checkpoint, with the unit tests' thresholds (plumbing, not a
    fitted claim: the default ships no policy)."""
    from selfeval.calibration import card_fingerprint
    from selfeval.card import load_card
    from selfeval.certified_policy import write_policy
    from tests.unit.selfeval.test_certified_policy import policy

    card = load_card(model_dir)
    path = Path(directory) / "see_policy.json"
    write_policy(path, policy(card_fingerprint=card_fingerprint(card), model_name=card.model_name))
    return path


def kill_hard(running: RunningServer) -> None:
    """SIGKILL the server and everything it started (no shutdown handlers run), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.process.pid, signal.SIGKILL)
    running.process.wait(timeout=60)


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory) -> RunningServer:
    # the session's tests loosen thresholds per request (ALWAYS_ACCEPT ...); the default refusal is tested on
    # test_limits' server
    with running_server(model_dir, tmp_path_factory.mktemp("server"), allow_looser_thresholds="true") as running:
        yield running


@pytest.fixture(scope="session")
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=300) as http:
        yield http
