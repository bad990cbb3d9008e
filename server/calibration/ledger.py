"""The score ledger: every scored response and every judge verdict on it, in SQLite or PostgreSQL.

Two tables. `see_responses`: one row per scored answer (response id + choice index), with time, model name,
card fingerprint, calibration version, endpoint, readout source, SHA-256 of the prompt and of the answer, the
five raw distributions (JSON), predicted quality and decision; the prompt and answer text only when the
operator turns `store_text` on. `see_feedback`: one row per (response, choice, judge), so the same verdict
posted twice is one record; a different verdict for the same key is a conflict, never an overwrite.

Durability: every operation runs on one worker thread that owns the connection. It drains whatever is queued,
runs it in one transaction and commits before resolving any caller's future (group commit): a caller that
awaited its write may acknowledge it, since the commit is on disk. SQLite runs in WAL mode with
`synchronous=FULL` (the commit fsyncs the WAL); PostgreSQL keeps its default `synchronous_commit=on`. When a
batch fails on a live connection, each operation is retried in a transaction of its own so that one bad write
fails alone; when the connection broke (a database restart), the whole batch is retried once on a new one, so
the first write after a restart is not lost.

Outages: connecting backs off (0.5 s doubling to 10 s) and writes in the meantime fail at once instead of each
waiting for a connect timeout; the queue of waiting writes is bounded (`max_queued`, beyond: refused). A server
opens its ledger non-strict: a database unreachable at start is logged and reconnected to in the background,
never a crash loop, because the ledger is monitoring and must not stop a replica from answering.

`url`: a path or `sqlite:///path` for the embedded store, `postgresql://...` for a server shared by replicas
(psycopg 3, the `postgres` extra). SQL is written once with `?` placeholders and translated for psycopg.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)
SECRET_PARAMS = ("password", "sslpassword")
RECONNECT_BACKOFF_MAX_S = 10.0

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS see_ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS see_responses (
        id TEXT NOT NULL, choice INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        model_name TEXT NOT NULL, card_fingerprint TEXT NOT NULL, calibration_version TEXT,
        endpoint TEXT NOT NULL, readout_source TEXT NOT NULL,
        prompt_sha256 TEXT NOT NULL, answer_sha256 TEXT NOT NULL,
        distributions TEXT, predicted_quality DOUBLE PRECISION, decision TEXT,
        prompt_text TEXT, answer_text TEXT,
        PRIMARY KEY (id, choice))""",
    """CREATE INDEX IF NOT EXISTS see_responses_created ON see_responses (created_at)""",
    """CREATE TABLE IF NOT EXISTS see_feedback (
        response_id TEXT NOT NULL, choice INTEGER NOT NULL, judge TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, scores TEXT NOT NULL, outcome TEXT,
        PRIMARY KEY (response_id, choice, judge),
        FOREIGN KEY (response_id, choice) REFERENCES see_responses (id, choice) ON DELETE CASCADE)""",
    """CREATE INDEX IF NOT EXISTS see_feedback_created ON see_feedback (created_at)""",
)


class LedgerError(RuntimeError):
    """The ledger could not be opened or written (the database is unreachable, full or not ours)."""


class LedgerUnreachableError(LedgerError):
    """No connection to the database (it is down, or a reconnect is backing off): worth waiting out."""


@dataclass(frozen=True)
class ResponseRecord:
    id: str
    choice: int
    model_name: str
    card_fingerprint: str
    endpoint: str
    readout_source: str
    prompt_sha256: str
    answer_sha256: str
    distributions: dict[str, list[float]] | None  # raw probs per attribute
    predicted_quality: float | None
    decision: str | None
    calibration_version: str | None = None
    prompt_text: str | None = None
    answer_text: str | None = None
    created_at: float = 0.0


@dataclass(frozen=True)
class Feedback:
    response_id: str
    choice: int
    judge: str
    scores: dict[str, int]
    source: str = "api"  # api | shadow
    outcome: str | None = None
    created_at: float = 0.0


@dataclass(frozen=True)
class FeedbackOutcome:
    status: str  # created | duplicate | conflict | unknown_id
    stored_scores: dict[str, int] | None = None  # what the ledger holds for the key (conflict, duplicate)
    distributions: dict[str, list[float]] | None = None  # the response's raw distributions
    card_fingerprint: str | None = None


@dataclass(frozen=True)
class ScoredPair:
    """One feedback verdict joined with the raw distributions it judges (for monitoring and fitting)."""

    response_id: str
    choice: int
    created_at: float
    judge: str
    scores: dict[str, int]
    distributions: dict[str, list[float]]
    decision: str | None = None  # what the server decided for the answer


Operation = Callable[[Any], Any]  # runs on the worker thread inside a transaction, given the connection


class _Dialect:
    def __init__(self, url: str) -> None:
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.url = url

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def connect(self):
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise LedgerError("a postgresql:// ledger needs psycopg: pip install 'see-sidecar[postgres]'") from None
            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        path = Path(self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else self.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn


class Ledger:
    """The ledger's one connection, behind a worker thread; submit operations, await their commit."""

    def __init__(self, url: str, *, strict: bool = True, max_queued: int = 10_000) -> None:
        """`strict`: an unusable store at start raises (CLI, tests). Not strict (the server): an unreachable
        database is logged and the worker keeps reconnecting, so monitoring never stops a replica serving."""
        self.dialect = _Dialect(url)
        self.url = url
        self.max_queued = max_queued
        self._queue: queue.SimpleQueue[tuple[Operation, concurrent.futures.Future] | None] = queue.SimpleQueue()
        self._conn = None
        self._schema_ready = False
        self._retry_at = 0.0  # no connection attempt before this (monotonic); backoff after a failed connect
        self._backoff_s = 0.0
        self._thread = threading.Thread(target=self._run, name="see-ledger", daemon=True)
        self._closed = False
        self._thread.start()
        try:
            self.call(lambda db: None)  # connect and create the schema now, not on the first request
        except Exception as exc:
            if strict or not isinstance(exc, LedgerUnreachableError):  # a wrong schema is never waited out
                self.close()
                raise
            log.error("%s; serving without the ledger until it is reachable (retrying in the background)", exc)

    @property
    def backend(self) -> str:
        return "postgresql" if self.dialect.postgres else "sqlite"

    # ---- submitting work ----------------------------------------------------------------------------------

    def submit(self, operation: Operation) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            future.set_exception(LedgerError("the ledger is closed"))
        elif self._queue.qsize() >= self.max_queued:  # a stalled store must not grow memory without bound
            future.set_exception(LedgerError(f"the ledger's write queue is full ({self.max_queued} waiting)"))
        else:
            self._queue.put((operation, future))
        return future

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def call(self, operation: Operation, timeout: float | None = 60.0) -> Any:
        """Run one operation and wait for its commit (blocking: CLI and boot)."""
        return self.submit(operation).result(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    # ---- the worker ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            work = []
            try:  # while a database is out of reach, wake to reconnect: /health and the gauge say when it is back
                item = self._queue.get(timeout=self._reconnect_wait())
            except queue.Empty:
                with contextlib.suppress(LedgerError):
                    self._connection()
                continue
            while True:
                if item is None:
                    stopping = True
                else:
                    work.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if work:
                self._run_batch(work)
        self._disconnect()

    def _connection(self):
        """The open connection, or a new one (schema checked once). While a reconnect is backing off, fails at
        once: a database that is down costs each write nothing, not a connect timeout."""
        if self._conn is not None:
            return self._conn
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise LedgerUnreachableError(f"the ledger at {self.shown_url()} is unreachable; next try in {wait:.1f} s")
        try:
            conn = self.dialect.connect()
        except Exception as exc:
            self._backoff_s = min(max(2 * self._backoff_s, 0.5), RECONNECT_BACKOFF_MAX_S)
            self._retry_at = time.monotonic() + self._backoff_s
            if isinstance(exc, LedgerError):
                raise
            raise LedgerUnreachableError(
                redact(f"cannot open the ledger at {self.shown_url()}: {exc}", self.url)
            ) from None
        if not self._schema_ready:
            try:
                self._create_schema(self._Cursor(conn, self.dialect))
                conn.commit()
            except Exception:
                with contextlib.suppress(Exception):
                    conn.close()
                raise
            self._schema_ready = True
        if self._backoff_s:
            log.info("ledger reconnected at %s", self.shown_url())
        self._conn, self._backoff_s, self._retry_at = conn, 0.0, 0.0
        return conn

    def _reconnect_wait(self) -> float | None:
        if self._conn is not None or not self._backoff_s:
            return None  # connected, or never failed: sleep until there is work
        return max(0.05, self._retry_at - time.monotonic())

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _run_batch(self, work: list[tuple[Operation, concurrent.futures.Future]]) -> None:
        operations = [operation for operation, _ in work]
        had_connection = self._conn is not None
        try:
            results = self._transaction(operations)
        except Exception as batch_error:
            if self._conn is None and not had_connection:  # could not connect: fail fast, all of it
                for _, future in work:
                    self._fail(future, batch_error)
                return
            if self._conn is None:  # the connection broke (a database restart): the batch once more, whole
                try:
                    results = self._transaction(operations)
                except Exception as retry_error:
                    for _, future in work:
                        self._fail(future, retry_error)
                    return
            elif len(work) == 1:
                self._fail(work[0][1], batch_error)
                return
            else:
                self._run_one_by_one(work)
                return
        for (_, future), result in zip(work, results, strict=True):
            future.set_result(result)

    def _run_one_by_one(self, work: list[tuple[Operation, concurrent.futures.Future]]) -> None:
        """The connection is fine but the batch failed: one bad write must not fail the others."""
        for operation, future in work:
            try:
                (result,) = self._transaction([operation])
            except Exception as exc:
                self._fail(future, exc)
            else:
                future.set_result(result)

    def _transaction(self, operations: Sequence[Operation]) -> list[Any]:
        conn = self._connection()
        try:
            results = [operation(self._Cursor(conn, self.dialect)) for operation in operations]
            conn.commit()
            return results
        except Exception:
            try:
                conn.rollback()
            except Exception:
                self._disconnect()  # a broken connection: reconnect on the next attempt
            else:
                if getattr(conn, "broken", False) or getattr(conn, "closed", False):  # psycopg's own verdict
                    self._disconnect()
            raise

    def _fail(self, future: concurrent.futures.Future, exc: Exception) -> None:
        if not isinstance(exc, LedgerError):
            log.warning("ledger write failed: %s: %s", type(exc).__name__, exc)
            exc = LedgerError(f"{type(exc).__name__}: {exc}")
        future.set_exception(exc)

    def shown_url(self) -> str:
        """The URL without its secrets, for messages, logs and /health."""
        return redact(self.url, self.url)

    class _Cursor:
        """What an operation sees: execute with `?` placeholders on either backend."""

        def __init__(self, conn, dialect: _Dialect) -> None:
            self.conn, self.dialect = conn, dialect

        def execute(self, statement: str, params: Sequence[Any] = ()):
            return self.conn.execute(self.dialect.sql(statement), tuple(params))

    # ---- operations ---------------------------------------------------------------------------------------

    @staticmethod
    def _create_schema(db) -> None:
        for statement in SCHEMA:
            db.execute(statement)
        row = db.execute("SELECT value FROM see_ledger_meta WHERE key = ?", ("schema_version",)).fetchone()
        if row is None:
            version = ("schema_version", str(SCHEMA_VERSION))
            db.execute("INSERT INTO see_ledger_meta (key, value) VALUES (?, ?)", version)
        elif int(row[0]) != SCHEMA_VERSION:
            raise LedgerError(f"ledger schema version {row[0]}, this server reads {SCHEMA_VERSION}")

    @staticmethod
    def insert_responses(records: Sequence[ResponseRecord]) -> Operation:
        def operation(db) -> int:
            for r in records:
                db.execute(
                    "INSERT INTO see_responses (id, choice, created_at, model_name, card_fingerprint, "
                    "calibration_version, endpoint, readout_source, prompt_sha256, answer_sha256, distributions, "
                    "predicted_quality, decision, prompt_text, answer_text) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id, choice) DO NOTHING",
                    (
                        r.id, r.choice, r.created_at or time.time(), r.model_name, r.card_fingerprint,
                        r.calibration_version, r.endpoint, r.readout_source, r.prompt_sha256, r.answer_sha256,
                        json.dumps(r.distributions) if r.distributions is not None else None,
                        r.predicted_quality, r.decision, r.prompt_text, r.answer_text,
                    ),
                )  # fmt: skip
            return len(records)

        return operation

    @staticmethod
    def insert_feedback(feedback: Feedback) -> Operation:
        def operation(db) -> FeedbackOutcome:
            key = (feedback.response_id, feedback.choice)
            response = db.execute(
                "SELECT distributions, card_fingerprint FROM see_responses WHERE id = ? AND choice = ?", key
            ).fetchone()
            if response is None:
                return FeedbackOutcome("unknown_id")
            distributions = json.loads(response[0]) if response[0] else None
            inserted = db.execute(
                "INSERT INTO see_feedback (response_id, choice, judge, created_at, source, scores, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (response_id, choice, judge) DO NOTHING",
                (*key, feedback.judge, feedback.created_at or time.time(), feedback.source,
                 json.dumps(feedback.scores, sort_keys=True), feedback.outcome),
            ).rowcount  # fmt: skip
            if inserted == 1:
                return FeedbackOutcome("created", feedback.scores, distributions, response[1])
            stored = db.execute(
                "SELECT scores, outcome FROM see_feedback WHERE response_id = ? AND choice = ? AND judge = ?",
                (*key, feedback.judge),
            ).fetchone()
            stored_scores = json.loads(stored[0])
            same = stored_scores == feedback.scores and stored[1] == feedback.outcome
            return FeedbackOutcome("duplicate" if same else "conflict", stored_scores, distributions, response[1])

        return operation

    @staticmethod
    def scored_pairs(
        card_fingerprint: str | None = None, judge: str | None = None, limit: int | None = None, newest: bool = True
    ) -> Operation:
        """Feedback joined with its response's distributions, newest (or oldest) first, optionally filtered."""

        def operation(db) -> list[ScoredPair]:
            where, params = ["r.distributions IS NOT NULL"], []
            if card_fingerprint is not None:
                where.append("r.card_fingerprint = ?")
                params.append(card_fingerprint)
            if judge is not None:
                where.append("f.judge = ?")
                params.append(judge)
            order = "DESC" if newest else "ASC"
            statement = (
                "SELECT f.response_id, f.choice, f.created_at, f.judge, f.scores, r.distributions, r.decision "
                "FROM see_feedback f "
                "JOIN see_responses r ON r.id = f.response_id AND r.choice = f.choice "
                f"WHERE {' AND '.join(where)} ORDER BY f.created_at {order}, f.response_id {order}"
            )
            if limit is not None:
                statement += " LIMIT ?"
                params.append(int(limit))
            rows = db.execute(statement, params).fetchall()
            return [ScoredPair(*row[:4], json.loads(row[4]), json.loads(row[5]), row[6]) for row in rows]

        return operation

    @staticmethod
    def prune(older_than: float) -> Operation:
        """Delete responses (and, by cascade, their feedback) created before `older_than` (unix seconds)."""

        def operation(db) -> int:
            db.execute(
                "DELETE FROM see_feedback WHERE EXISTS (SELECT 1 FROM see_responses r WHERE r.id = response_id "
                "AND r.choice = see_feedback.choice AND r.created_at < ?)",
                (older_than,),
            )
            return db.execute("DELETE FROM see_responses WHERE created_at < ?", (older_than,)).rowcount

        return operation

    @staticmethod
    def counts() -> Operation:
        def operation(db) -> dict[str, int]:
            return {
                "responses": db.execute("SELECT COUNT(*) FROM see_responses").fetchone()[0],
                "feedback": db.execute("SELECT COUNT(*) FROM see_feedback").fetchone()[0],
            }

        return operation


def url_secrets(url: str) -> list[str]:
    """The secrets a ledger URL carries: the password of user:password@ and ?password= / ?sslpassword=."""
    if "://" not in url:
        return []
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query) if key.lower() in SECRET_PARAMS and value]
    return found


def redact(text: str, url: str) -> str:
    """`text` with every secret of `url` replaced by ***, also the user:password@ form without a username."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
