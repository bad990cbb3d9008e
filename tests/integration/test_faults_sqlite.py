"""Fault injection on real processes: the SQLite ledger's file system fills up, or another process holds its
write lock, under a running sidecar.

Full file system: the server's file-size limit (RLIMIT_FSIZE, set from outside with prlimit) is lowered to just
above its files' sizes, so the ledger's next writes fail as on a full disk (EFBIG; Python ignores SIGXFSZ). The
ledger is monitoring: answers go on, feedback is a 503 the client may retry (never a 500, never a 200 for a verdict not
on disk), and once there is room again the ledger takes writes without a restart.
Held lock (as a stuck backup or a manual `BEGIN EXCLUSIVE` would): verdicts wait at most the feedback timeout,
at most `SEE_MAX_PENDING_FEEDBACK` of them at once (the rest get 429), and a retry afterwards stores each once.
"""

from __future__ import annotations

import resource
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration

SCORES = {"helpfulness": 7, "correctness": 8, "coherence": 9, "complexity": 3, "verbosity": 4}
HEADROOM_BYTES = 32_768


def answer_and_feedback(url: str, index: int) -> tuple[httpx.Response, httpx.Response]:
    """A scored answer to a long prompt (a few KB a ledger row, with text stored), then a verdict on it."""
    prompt = f"Request {index}. " + "Summarise this sentence about the sea and its tides. " * 60
    answer = httpx.post(f"{url}/generate", json={"prompt": prompt, "max_tokens": 2, "temperature": 0}, timeout=120)
    if answer.status_code != 200:
        return answer, answer
    verdict = {"id": answer.json()["id"], "judge": "human", "judge_scores": SCORES}
    return answer, httpx.post(f"{url}/v1/feedback", json=verdict, timeout=60)


def failed_writes(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "see_ledger_writes")
    return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["outcome"] != "ok")


def test_a_full_file_system_under_the_sqlite_ledger(model_dir, tmp_path):
    with running_server(model_dir, tmp_path, ledger__store_text="true") as server:
        answer, feedback = answer_and_feedback(server.url, 0)
        assert feedback.status_code == 200, feedback.text
        files = [tmp_path / "ledger.sqlite3", tmp_path / "ledger.sqlite3-wal", server.log_path]
        limit = max(path.stat().st_size for path in files if path.exists()) + HEADROOM_BYTES
        pid = server.process.pid
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            outcomes = []
            for index in range(1, 40):
                answer, feedback = answer_and_feedback(server.url, index)
                outcomes.append((answer.status_code, feedback.status_code))
                if feedback.status_code != 200:
                    break
            assert all(answer == 200 for answer, _ in outcomes), outcomes  # answers never depend on the ledger
            assert outcomes[-1][1] == 503, outcomes  # the file system filled within 40 rows
            assert feedback.json()["error"]["code"] == "ledger_unavailable", feedback.text
            assert failed_writes(server.url) > 0
            assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        answer, feedback = answer_and_feedback(server.url, 99)  # room again: no restart needed
        assert feedback.status_code == 200 and feedback.json()["status"] == "created", feedback.text


def scored_answer_id(url: str, index: int) -> str:
    answer = httpx.post(f"{url}/generate", json={"prompt": f"Say {index}.", "max_tokens": 2, "temperature": 0},
                        timeout=120)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def test_a_held_database_lock_bounds_how_long_and_how_many_verdicts_wait(model_dir, tmp_path):
    settings = {"ledger__feedback_timeout_s": "4", "max_pending_feedback": "1", "retry_after_s": "3"}
    with running_server(model_dir, tmp_path, **settings) as server:
        ids = [scored_answer_id(server.url, index) for index in range(2)]
        verdicts = [{"id": i, "judge": "human", "judge_scores": SCORES} for i in ids]
        lock = sqlite3.connect(tmp_path / "ledger.sqlite3", timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # no reader or writer of the ledger gets past this until it ends
        try:
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                waiting = pool.submit(httpx.post, f"{server.url}/v1/feedback", json=verdicts[0], timeout=60)
                time.sleep(1.5)  # the first verdict now waits on the ledger and holds the one feedback slot
                turned_away = httpx.post(f"{server.url}/v1/feedback", json=verdicts[1], timeout=60)
                first = waiting.result()
                waited = time.monotonic() - started
            assert turned_away.status_code == 429, turned_away.text
            assert turned_away.json()["error"]["code"] == "queue_full" and turned_away.headers["retry-after"] == "3"
            assert first.status_code == 503 and first.json()["error"]["code"] == "ledger_unavailable", first.text
            assert 4 <= waited < 15, waited  # the feedback timeout, not the database's (SQLite's own is 30 s)
            assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
        finally:
            lock.rollback()
            lock.close()
        retried = [httpx.post(f"{server.url}/v1/feedback", json=v, timeout=60) for v in verdicts]
        assert [r.status_code for r in retried] == [200, 200], [r.text for r in retried]
        # the timed-out write may have committed once the lock went: then its retry is a duplicate, never a 2nd row
        assert retried[0].json()["status"] in {"created", "duplicate"} and retried[1].json()["status"] == "created"
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        rows = db.execute("SELECT response_id, COUNT(*) FROM see_feedback GROUP BY response_id").fetchall()
    assert sorted(rows) == sorted((i, 1) for i in ids)
