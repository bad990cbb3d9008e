"""Schemathesis against the real server's OpenAPI document: generated valid and invalid requests, no 5xx.

A server of its own with an 8-token answer cap, so that the hundreds of generated requests that are valid
finish in seconds on a CPU; everything else about it is the production configuration.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_server(model_dir, tmp_path_factory):
    with running_server(
        model_dir, tmp_path_factory.mktemp("fuzzed"), max_answer_tokens="8", default_max_tokens="8"
    ) as running:
        yield running


def test_no_generated_request_gets_a_server_error(small_server, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency"
    command = [
        cli, "run", f"{small_server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", "25", "--workers", "1", "--seed", "1",
        "--generation-database", "none", "--request-timeout", "120", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and " failed" not in result.stdout.split("SUMMARY")[-1]
    # the server is still healthy afterwards
    assert small_server.process.poll() is None
