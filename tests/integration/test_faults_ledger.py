"""Fault injection on real processes: the PostgreSQL ledger down at start, killed mid-run and restarted.

The ledger is monitoring: while it is away the sidecar keeps answering (unrecorded, counted), feedback is a
503 the client may retry, and once the database is back the next response is recorded (the write that meets
the stale connection is retried on a new one, not lost) and takes feedback again.
"""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import running_server
from tests.integration.test_openai_api import wait_for
from tests.postgres import fresh_database, postgres_cluster, require_postgres

pytestmark = pytest.mark.integration

SCORES = {"helpfulness": 7, "correctness": 8, "coherence": 9, "complexity": 3, "verbosity": 4}
ASK = {"prompt": "Name a colour.", "max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def cluster():
    require_postgres()
    with postgres_cluster() as running:
        yield running


def ledger_of(url: str) -> str:
    return httpx.get(f"{url}/health", timeout=10).json()["ledger"]


def answer_and_feedback(url: str) -> tuple[httpx.Response, float]:
    """A scored answer, then a verdict on it; returns the feedback response and the answer's latency."""
    started = time.monotonic()
    answer = httpx.post(f"{url}/generate", json=ASK, timeout=120)
    latency = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    verdict = {"id": answer.json()["id"], "judge": "human", "judge_scores": SCORES}
    return httpx.post(f"{url}/v1/feedback", json=verdict, timeout=60), latency


def test_the_sidecar_rides_out_a_ledger_outage_from_start_to_restart(model_dir, tmp_path, cluster):
    url = fresh_database(cluster.url)
    cluster.stop()  # down before the sidecar starts: it must serve anyway, not crash-loop
    # a long write timeout: an answer that waited for it (instead of failing fast) shows in its latency
    with running_server(model_dir, tmp_path, ledger__url=url, ledger__write_timeout_s="60") as server:
        assert ledger_of(server.url) == "unreachable"
        feedback, latency = answer_and_feedback(server.url)
        assert feedback.status_code == 503 and feedback.json()["error"]["code"] == "ledger_unavailable"
        assert latency < 30, "a down ledger must fail fast, not cost each answer the write timeout"

        cluster.start()
        assert wait_for(lambda: ledger_of(server.url) == "connected", 30), ledger_of(server.url)
        feedback, _ = answer_and_feedback(server.url)
        assert feedback.status_code == 200 and feedback.json()["status"] == "created", feedback.text

        cluster.stop()  # killed while idle: the sidecar's connection goes stale without it knowing
        cluster.start()
        feedback, _ = answer_and_feedback(server.url)  # the first write after the restart meets the stale one
        assert feedback.status_code == 200 and feedback.json()["status"] == "created", feedback.text

        cluster.stop()  # killed mid-run, and written to while down
        feedback, latency = answer_and_feedback(server.url)
        assert feedback.status_code == 503 and latency < 30
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        cluster.start()
        assert wait_for(lambda: ledger_of(server.url) == "connected", 30), ledger_of(server.url)
        feedback, _ = answer_and_feedback(server.url)
        assert feedback.status_code == 200, feedback.text
        families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text)
        writes = {
            (s.labels["kind"], s.labels["outcome"]): s.value
            for f in families
            if f.name == "see_ledger_writes"
            for s in f.samples
            if s.name.endswith("_total")
        }
        assert writes[("response", "error")] >= 2 and writes[("feedback", "ok")] >= 3, writes  # counted, not hidden
        assert writes.get(("response", "timeout"), 0) == 0, writes  # failed fast, never waited out


def test_a_server_told_the_ledger_is_required_refuses_to_start_without_it(model_dir, tmp_path, cluster):
    url = fresh_database(cluster.url)
    cluster.stop()
    try:
        with running_server(model_dir, tmp_path, wait_ready=False, ledger__url=url, ledger__required="true") as server:
            server.process.wait(timeout=300)
            assert server.process.returncode != 0
            assert "cannot open the ledger" in server.log_tail()
    finally:
        cluster.start()
