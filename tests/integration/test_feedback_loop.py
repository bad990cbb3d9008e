"""Calibration in production on the real engine and default model: ledger, /v1/feedback, shadow judging against
the rule-based judge over loopback (hanging, down, back), metrics, recalibration fitted from the ledger, and
kill -9 under a sustained load of scored answers and verdicts, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from see_client import ConflictError, SeeClient
from selfeval.calibration import card_fingerprint, load_calibration
from selfeval.card import load_card
from selfeval.certified_policy import load_policy
from selfeval.rubric import ATTRIBUTES
from server.calibration.ledger import Ledger
from server.launch import free_port
from tests.integration.conftest import REPO, certified_policy_for, kill_hard, running_server
from tests.postgres import fresh_database
from training.testing.rule_judge import RULE_JUDGE_MODEL, running_rule_judge

pytestmark = pytest.mark.integration
SCORES = {a: 6 for a in ATTRIBUTES}
JUDGE_TIMEOUT_S = 10.0  # the shadow judge's per-call timeout; 2 attempts, so a request waiting on it takes >= 20 s


class Judge:
    """The rule-based judge on a fixed loopback port, which the test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._stack: ExitStack | None = None
        self.state = None

    def start(self) -> None:
        self._stack = ExitStack()
        _, self.state = self._stack.enter_context(running_rule_judge(port=self.port))

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


@pytest.fixture(scope="module")
def judge():
    running = Judge()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server_a(model_dir, tmp_path_factory, judge):
    log_dir = tmp_path_factory.mktemp("feedback-sqlite")
    policy_file = certified_policy_for(model_dir, log_dir)
    with running_server(
        model_dir,
        log_dir,
        certified_policy_file=str(policy_file),
        shadow__rate="1.0",
        shadow__judge_url=judge.url,
        shadow__judge_model=RULE_JUDGE_MODEL,
        shadow__queue_size="8",
        shadow__concurrency="2",
        shadow__max_attempts="2",
        shadow__timeout_s=str(JUDGE_TIMEOUT_S),
        shadow__backoff_base_s="0.1",
        monitor__refresh_interval_s="1",
    ) as running:
        running.ledger_url = str(log_dir / "ledger.sqlite3")
        running.policy_file = policy_file
        yield running


@pytest.fixture(scope="module")
def client_a(server_a):
    with httpx.Client(base_url=server_a.url, timeout=300) as http:
        yield http


def metric(client: httpx.Client, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def score_body(i: int) -> dict:
    question = f"Question {i}: name {i % 7 + 1} things that are {['red', 'loud', 'old'][i % 3]}."
    return {
        "messages": [{"role": "user", "content": question}],
        "response": " ".join(["Here is an answer."] * (1 + i % 9)),
    }


def score(client: httpx.Client, i: int) -> dict:
    response = client.post("/v1/score", json=score_body(i))
    assert response.status_code == 200, response.text
    return response.json()


def feedback(client: httpx.Client, response_id: str, scores=SCORES, judge="human", **extra) -> httpx.Response:
    return client.post("/v1/feedback", json={"id": response_id, "judge_scores": scores, "judge": judge, **extra})


def test_feedback_is_stored_once_checked_and_measured(client_a):
    generated = client_a.post("/generate", json={"prompt": "Name a colour.", "max_tokens": 12, "temperature": 0})
    response_id = generated.json()["id"]
    before = metric(client_a, "see_calibration_absolute_error_count", attribute="helpfulness")

    first = feedback(client_a, response_id, outcome="accepted by user")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "created" and set(first.json()["absolute_error"]) == set(ATTRIBUTES)
    expected = generated.json()["self_evaluation"]["scores"]["helpfulness"]["expected"]
    assert first.json()["absolute_error"]["helpfulness"] == pytest.approx(abs(expected - 6))
    again = feedback(client_a, response_id, outcome="accepted by user")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    conflict = feedback(client_a, response_id, scores={**SCORES, "coherence": 1}, outcome="accepted by user")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "feedback_conflict"
    unknown = feedback(client_a, "gen-does-not-exist")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_response_id"

    malformed = {
        "a missing attribute": {a: 5 for a in ATTRIBUTES[:4]},
        "a score above 9": {**SCORES, "verbosity": 10},
        "a fraction": {**SCORES, "verbosity": 7.5},
        "a string": {**SCORES, "verbosity": "7"},
        "a boolean": {**SCORES, "verbosity": True},
        "an unknown attribute": {**SCORES, "style": 3},
    }
    for what, scores in malformed.items():
        bad = feedback(client_a, response_id, scores=scores, judge=f"judge-{what}")
        assert bad.status_code == 400, what
        assert bad.json()["error"]["param"].startswith("judge_scores"), (what, bad.json())
    no_judge = client_a.post("/v1/feedback", json={"id": response_id, "judge_scores": SCORES})
    assert no_judge.status_code == 400 and no_judge.json()["error"]["param"] == "judge"

    # one observation per new verdict: ours, and the shadow judge's on the same response (rate 1.0)
    created = metric(client_a, "see_feedback_total", status="created")
    assert metric(client_a, "see_calibration_absolute_error_count", attribute="helpfulness") == created > before
    assert metric(client_a, "see_feedback_total", source="api", status="created") >= 1
    assert metric(client_a, "see_feedback_total", source="api", status="conflict") >= 1


def test_chat_choices_streams_and_scores_all_take_feedback(server_a, client_a):
    model = client_a.get("/v1/models").json()["data"][0]["id"]
    chat = client_a.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Say hi."}], "n": 2, "max_tokens": 8},
    )
    assert chat.status_code == 200, chat.text
    chat = chat.json()
    assert feedback(client_a, chat["id"], choice=1).json()["status"] == "created"
    assert feedback(client_a, chat["id"], choice=5).status_code == 404

    with client_a.stream(
        "POST", "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Bye."}], "max_tokens": 8, "stream": True},
    ) as stream:  # fmt: skip
        chunks = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data: {")]
    assert feedback(client_a, chunks[-1]["id"]).json()["status"] == "created"
    assert feedback(client_a, score(client_a, 0)["id"]).json()["status"] == "created"

    with SeeClient(server_a.url) as see:  # the SDK's call and its typed conflict error
        result = see.generate("Name a fruit.", max_tokens=8, temperature=0)
        stored = see.feedback(result.id, SCORES, judge="sdk", outcome="ok")
        assert stored.status == "created" and set(stored.absolute_error) == set(ATTRIBUTES)
        assert see.feedback(result.id, SCORES, judge="sdk", outcome="ok").status == "duplicate"
        with pytest.raises(ConflictError):
            see.feedback(result.id, {**SCORES, "verbosity": 0}, judge="sdk", outcome="ok")


def test_a_hanging_failing_or_dead_shadow_judge_never_touches_user_requests(client_a, judge):
    judge.state.script = ["hang", "500"] * 500  # a judge that hangs and errors
    slowest = 0.0
    for i in range(20):
        started = time.monotonic()
        score(client_a, i)
        slowest = max(slowest, time.monotonic() - started)
    # had a request waited for the judge it would have taken at least one judge timeout
    assert slowest < JUDGE_TIMEOUT_S, slowest
    assert metric(client_a, "see_shadow_judge_requests_total", outcome="dropped_queue_full") >= 1

    judge.state.script = []
    time.sleep(2 * JUDGE_TIMEOUT_S)  # let the hung calls time out on the client side before the judge goes away
    judge.stop()
    failed_before = metric(client_a, "see_shadow_judge_requests_total", outcome="failed")
    for i in range(5):
        score(client_a, 100 + i)
    assert client_a.get("/health").status_code == 200
    deadline = time.monotonic() + 120
    while metric(client_a, "see_shadow_judge_requests_total", outcome="failed") <= failed_before:
        assert time.monotonic() < deadline, "judge failures were never counted"
        time.sleep(1)

    judge.start()  # back, answering normally
    judged_before = metric(client_a, "see_feedback_total", source="shadow", status="created")
    score(client_a, 200)
    deadline = time.monotonic() + 120
    while metric(client_a, "see_feedback_total", source="shadow", status="created") <= judged_before:
        assert time.monotonic() < deadline, "no shadow verdict landed after the judge came back"
        time.sleep(1)
    assert client_a.get("/ready").status_code == 200


@pytest.fixture(scope="module")
def fitted_calibration(server_a, client_a, judge, model_dir, tmp_path_factory) -> Path:
    """130 scored responses judged by the shadow judge, then `see calibrate fit` on the server's ledger."""
    judge.state.script = []
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: score(client_a, 1000 + i), range(130)))
    deadline = time.monotonic() + 300
    while metric(client_a, "see_feedback_total", source="shadow", status="created") < 120:
        assert time.monotonic() < deadline, "shadow verdicts did not arrive"
        time.sleep(1)
    out = tmp_path_factory.mktemp("calibration") / "see_calibration.json"
    fit = subprocess.run(
        [sys.executable, "-m", "seecli.main", "calibrate", "fit", "--model", str(model_dir), "--ledger",
         server_a.ledger_url, "--judge", f"shadow:{RULE_JUDGE_MODEL}", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    assert "mean held-out ECE" in fit.stdout
    return out


def test_recalibration_from_ledger_feedback_lowers_heldout_ece(fitted_calibration, client_a):
    calibration = load_calibration(fitted_calibration)
    assert calibration.fitted_on + calibration.evaluated_on >= 120
    heldout = calibration.heldout_metrics
    before = sum(v["before"]["ece"] for v in heldout.values()) / len(heldout)
    after = sum(v["after"]["ece"] for v in heldout.values()) / len(heldout)
    assert after < before, heldout
    assert metric(client_a, "see_calibration_window_records", window="recent") > 0
    assert metric(client_a, "see_calibration_rolling_mae", attribute="correctness") > 0


def test_a_policy_fitted_from_ledger_verdicts_and_the_served_promise_monitored(
    server_a, client_a, fitted_calibration, model_dir, tmp_path
):
    """`see calibrate policy --source ledger` on the shadow judge's verdicts (a fixture judge: this checks the
    plumbing, not the claim), and the served policy's realised accept risk from the same verdicts."""
    out = tmp_path / "see_policy.json"
    fit = subprocess.run(
        [sys.executable, "-m", "seecli.main", "calibrate", "policy", "--model", str(model_dir), "--source", "ledger",
         "--ledger", server_a.ledger_url, "--judge", f"shadow:{RULE_JUDGE_MODEL}", "--bad-at-or-below", "0",
         "--target-risk", "0.5", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stdout + fit.stderr
    fitted = load_policy(out)
    fitted.check_for(card_fingerprint(load_card(model_dir)), None)
    assert fitted.source.startswith("ledger verdicts") and fitted.fitted_on + fitted.test["answers"] >= 120
    served = load_policy(server_a.policy_file)
    assert metric(client_a, "see_certified_accept_risk_target") == served.accept.target_risk
    deadline = time.monotonic() + 30
    while not any(s.name == "see_certified_accepted_verdicts" for s in samples(client_a)):
        assert time.monotonic() < deadline, "the accept-risk monitor never reported"
        time.sleep(1)


def samples(client: httpx.Client) -> list:
    return [s for family in text_string_to_metric_families(client.get("/metrics").text) for s in family.samples]


def feedback_under_load_then_kill(running, client: httpx.Client, writers: int = 6, acked: int = 24) -> dict:
    """`writers` threads score a response and post its verdict, back to back, until `acked` verdicts are
    acknowledged; then SIGKILL while writes are in flight. Returns what was acknowledged (response id -> scores)."""
    acknowledged: dict[str, dict[str, int]] = {}
    lock, stop = threading.Lock(), threading.Event()

    def write(writer: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            seed = 9000 + 100 * writer + i
            verdict = {a: (seed + k) % 10 for k, a in enumerate(ATTRIBUTES)}
            try:
                scored = client.post("/v1/score", json=score_body(seed))
                if scored.status_code != 200:
                    continue
                response = feedback(client, scored.json()["id"], scores=verdict, judge="ops")
            except httpx.TransportError:
                return  # the server died under this request: nothing was acknowledged
            if response.status_code == 200 and response.json()["status"] == "created":
                with lock:
                    acknowledged[scored.json()["id"]] = verdict

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 600
    while len(acknowledged) < acked:
        assert time.monotonic() < deadline, f"only {len(acknowledged)} verdicts acknowledged in 10 minutes"
        time.sleep(0.05)
    kill_hard(running)  # the writers are mid-request
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    with lock:
        return dict(acknowledged)


def assert_ledger_holds(url: str, verdicts: dict[str, dict[str, int]]) -> None:
    ledger = Ledger(url)
    try:
        stored = {p.response_id: p.scores for p in ledger.call(Ledger.scored_pairs(judge="ops"))}
    finally:
        ledger.close()
    assert stored == verdicts


def test_kill_9_under_write_load_loses_no_acknowledged_feedback_on_sqlite(server_a, client_a, fitted_calibration):
    verdicts = feedback_under_load_then_kill(server_a, client_a)
    assert_ledger_holds(server_a.ledger_url, verdicts)


def test_postgres_ledger_serves_calibrated_scores_and_survives_kill_9(
    model_dir, tmp_path, postgres_admin_url, fitted_calibration
):
    url = fresh_database(postgres_admin_url)
    settings = {
        "calibration_file": str(fitted_calibration),
        "certified_policy_file": str(certified_policy_for(model_dir, tmp_path)),
    }
    with (
        running_server(model_dir, tmp_path, ledger__url=url, **settings) as running,
        httpx.Client(base_url=running.url, timeout=300) as client,
    ):
        scored = score(client, 7)
        evaluation = scored["self_evaluation"]
        calibrated = evaluation["calibrated"]
        # a certified policy fitted on raw scores still decides (on those), beside the map
        assert scored["decision"]["policy"] == load_policy(tmp_path / "see_policy.json").version
        assert calibrated["version"] == load_calibration(fitted_calibration).version
        assert set(calibrated["scores"]) == set(ATTRIBUTES)
        assert calibrated["scores"]["helpfulness"]["probs"] != evaluation["scores"]["helpfulness"]["probs"]
        assert sum(calibrated["scores"]["helpfulness"]["probs"]) == pytest.approx(1.0)
        verdicts = feedback_under_load_then_kill(running, client)
    assert_ledger_holds(url, verdicts)
