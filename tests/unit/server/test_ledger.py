import concurrent.futures
import json
import time

import pytest

from selfeval.rubric import ATTRIBUTES
from server.calibration.ledger import Feedback, Ledger, LedgerError, ResponseRecord, redact

UNIFORM = {a: [0.1] * 10 for a in ATTRIBUTES}
SCORES = {a: 7 for a in ATTRIBUTES}


def record(response_id: str, choice: int = 0, created_at: float = 0.0, card: str = "card-a", **extra) -> ResponseRecord:
    return ResponseRecord(
        id=response_id,
        choice=choice,
        model_name="m",
        card_fingerprint=card,
        endpoint="generate",
        readout_source="forced",
        prompt_sha256="p" * 64,
        answer_sha256="a" * 64,
        distributions=UNIFORM,
        predicted_quality=0.5,
        decision="review",
        created_at=created_at,
        **extra,
    )


@pytest.fixture
def ledger(ledger_url):
    store = Ledger(ledger_url)
    yield store
    store.close()


def test_feedback_on_the_same_id_and_judge_twice_is_one_record(ledger):
    ledger.call(Ledger.insert_responses([record("r1")]))
    first = ledger.call(Ledger.insert_feedback(Feedback("r1", 0, "gpt", SCORES)))
    again = ledger.call(Ledger.insert_feedback(Feedback("r1", 0, "gpt", SCORES)))
    other_judge = ledger.call(Ledger.insert_feedback(Feedback("r1", 0, "human", SCORES)))
    assert (first.status, again.status, other_judge.status) == ("created", "duplicate", "created")
    assert first.distributions == UNIFORM and first.card_fingerprint == "card-a"
    assert ledger.call(Ledger.counts()) == {"responses": 1, "feedback": 2}


def test_different_scores_from_the_same_judge_conflict_and_keep_the_first(ledger):
    ledger.call(Ledger.insert_responses([record("r1")]))
    ledger.call(Ledger.insert_feedback(Feedback("r1", 0, "gpt", SCORES)))
    changed = {**SCORES, "helpfulness": 2}
    conflict = ledger.call(Ledger.insert_feedback(Feedback("r1", 0, "gpt", changed)))
    assert conflict.status == "conflict" and conflict.stored_scores == SCORES
    (pair,) = ledger.call(Ledger.scored_pairs())
    assert pair.scores == SCORES


def test_feedback_for_an_unknown_id_or_choice_stores_nothing(ledger):
    ledger.call(Ledger.insert_responses([record("r1")]))
    assert ledger.call(Ledger.insert_feedback(Feedback("nope", 0, "gpt", SCORES))).status == "unknown_id"
    assert ledger.call(Ledger.insert_feedback(Feedback("r1", 3, "gpt", SCORES))).status == "unknown_id"
    assert ledger.call(Ledger.counts())["feedback"] == 0


def test_text_is_stored_only_when_given_and_records_round_trip(ledger_url):
    store = Ledger(ledger_url)
    try:
        store.call(Ledger.insert_responses([record("r1"), record("r2", prompt_text="[]", answer_text="hi")]))
        rows = store.call(lambda db: db.execute("SELECT id, prompt_text, answer_text, distributions "
                                                "FROM see_responses ORDER BY id").fetchall())  # fmt: skip
    finally:
        store.close()
    assert [tuple(r[:3]) for r in rows] == [("r1", None, None), ("r2", "[]", "hi")]
    assert json.loads(rows[0][3]) == UNIFORM


def test_concurrent_writes_all_commit_in_groups(ledger):
    records = [record(f"r{i}") for i in range(200)]
    futures = [ledger.submit(Ledger.insert_responses([r])) for r in records]
    concurrent.futures.wait(futures, timeout=60)
    assert all(f.result() == 1 for f in futures)
    feedback = [ledger.submit(Ledger.insert_feedback(Feedback(r.id, 0, "gpt", SCORES))) for r in records]
    assert {f.result(60).status for f in feedback} == {"created"}
    assert ledger.call(Ledger.counts()) == {"responses": 200, "feedback": 200}


def test_a_failing_operation_fails_alone_in_its_batch(ledger):
    def broken(db):
        db.execute("INSERT INTO no_such_table VALUES (1)")

    futures = [
        ledger.submit(Ledger.insert_responses([record("ok1")])),
        ledger.submit(broken),
        ledger.submit(Ledger.insert_responses([record("ok2")])),
    ]
    assert futures[0].result(30) == 1 and futures[2].result(30) == 1
    with pytest.raises(LedgerError):
        futures[1].result(30)
    assert ledger.call(Ledger.counts())["responses"] == 2


def test_scored_pairs_filter_by_card_and_judge_and_order_by_time(ledger):
    ledger.call(Ledger.insert_responses([record("old", created_at=1.0), record("new"), record("b", card="card-b")]))
    ledger.call(Ledger.insert_feedback(Feedback("old", 0, "gpt", SCORES, created_at=10.0)))
    ledger.call(Ledger.insert_feedback(Feedback("new", 0, "gpt", SCORES, created_at=20.0)))
    ledger.call(Ledger.insert_feedback(Feedback("new", 0, "human", SCORES, created_at=30.0)))
    ledger.call(Ledger.insert_feedback(Feedback("b", 0, "gpt", SCORES, created_at=40.0)))
    newest = ledger.call(Ledger.scored_pairs(card_fingerprint="card-a"))
    assert [(p.response_id, p.judge) for p in newest] == [("new", "human"), ("new", "gpt"), ("old", "gpt")]
    oldest_gpt = ledger.call(Ledger.scored_pairs(card_fingerprint="card-a", judge="gpt", limit=1, newest=False))
    assert [p.response_id for p in oldest_gpt] == ["old"]


def test_retention_prunes_old_responses_with_their_feedback(ledger):
    now = time.time()
    ledger.call(Ledger.insert_responses([record("old", created_at=now - 10 * 86400), record("new", created_at=now)]))
    ledger.call(Ledger.insert_feedback(Feedback("old", 0, "gpt", SCORES)))
    ledger.call(Ledger.insert_feedback(Feedback("new", 0, "gpt", SCORES)))
    assert ledger.call(Ledger.prune(now - 86400)) == 1
    assert ledger.call(Ledger.counts()) == {"responses": 1, "feedback": 1}


def test_the_ledger_reopens_with_its_data(ledger_url):
    first = Ledger(ledger_url)
    first.call(Ledger.insert_responses([record("r1")]))
    first.close()
    second = Ledger(ledger_url)
    try:
        assert second.call(Ledger.counts())["responses"] == 1
    finally:
        second.close()


def test_an_unreachable_database_is_a_clear_error_at_open():
    with pytest.raises(LedgerError, match=r"cannot open the ledger at postgresql://user:\*\*\*@127.0.0.1:9/"):
        Ledger("postgresql://user:secret@127.0.0.1:9/nothing")


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://see:s3cret-pw@db:5432/see", "s3cret-pw"),
        ("postgresql://db:5432/see?sslmode=require&password=hunter2-pw", "hunter2-pw"),
        ("postgresql://:only-pw@db/see", "only-pw"),
        ("postgresql://see@db/see?sslpassword=key-pw", "key-pw"),
    ],
)
def test_a_ledger_url_is_shown_without_its_password_in_every_form(url, secret):
    assert secret not in redact(f"cannot open {url}: refused ({url})", url)
    assert "***" in redact(url, url)


def test_a_sqlite_path_is_shown_as_it_is():
    assert redact("/var/lib/see/ledger.sqlite3", "/var/lib/see/ledger.sqlite3") == "/var/lib/see/ledger.sqlite3"


def test_a_full_write_queue_refuses_instead_of_growing(tmp_path):
    ledger = Ledger(str(tmp_path / "l.sqlite3"), max_queued=2)
    try:
        gate = concurrent.futures.Future()
        blocker = ledger.submit(lambda db: gate.result(10))  # holds the worker
        time.sleep(0.2)
        queued = [ledger.submit(lambda db: None) for _ in range(2)]
        refused = ledger.submit(lambda db: None)
        with pytest.raises(LedgerError, match="queue is full"):
            refused.result(5)
        gate.set_result(None)
        blocker.result(10)
        for future in queued:
            future.result(10)
    finally:
        ledger.close()


def test_a_server_ledger_opens_without_its_database_and_fails_writes_fast():
    ledger = Ledger("postgresql://user:pw@127.0.0.1:9/nothing", strict=False)
    try:
        assert not ledger.connected
        started = time.monotonic()
        with pytest.raises(LedgerError, match="unreachable|cannot open"):
            ledger.call(Ledger.counts(), timeout=30)
        assert time.monotonic() - started < 5
    finally:
        ledger.close()


def test_a_wrong_schema_is_fatal_even_for_a_server(tmp_path):
    path = str(tmp_path / "l.sqlite3")
    Ledger(path).call(lambda db: db.execute("UPDATE see_ledger_meta SET value = '999' WHERE key = 'schema_version'"))
    with pytest.raises(LedgerError, match="schema version 999"):
        Ledger(path, strict=False)
