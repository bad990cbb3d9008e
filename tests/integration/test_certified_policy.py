"""The certified decision policy on the real server and default model: the shipped policy decides and is cited,
and a policy that does not belong to the served checkpoint stops the server before it loads anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evaluation.policy_fit import distributions_of
from selfeval.calibration import card_fingerprint
from selfeval.card import load_card
from selfeval.certified_policy import load_policy, policy_path, write_policy
from selfeval.models import SHIPPED_DELTA_DIR
from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import REPO, running_server

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "How do I sort a list in Python?"}]
ANSWER = "Use sorted(my_list) for a new sorted list, or my_list.sort() to sort it in place."


def test_the_shipped_policy_decides_and_is_cited(client, model_dir):
    shipped = load_policy(policy_path(model_dir))
    assert shipped == load_policy(policy_path(SHIPPED_DELTA_DIR))
    body = client.post("/v1/score", json={"messages": QUESTION, "response": ANSWER}).json()
    decision = body["decision"]
    assert decision["policy"] == shipped.version
    scores = body["self_evaluation"]["scores"]
    assert decision["action"] == shipped.decide(distributions_of([scores[a]["probs"] for a in ATTRIBUTES]))[0]
    assert f"certified {shipped.version}" in decision["reasons"][-1]
    # per-request thresholds on this server may loosen the policy: then the hand-set rules decide, uncited
    loosened = client.post(
        "/v1/score", json={"messages": QUESTION, "response": ANSWER, "decision_thresholds": {"low_score": 3}}
    ).json()["decision"]
    assert loosened["policy"] is None


def test_a_policy_for_another_checkpoint_stops_the_server_at_once(model_dir, tmp_path):
    foreign = tmp_path / "see_policy.json"
    shipped = load_policy(policy_path(SHIPPED_DELTA_DIR))
    write_policy(foreign, shipped.__class__(**{**shipped.__dict__, "card_fingerprint": "0" * 16}))
    assert card_fingerprint(load_card(model_dir)) != "0" * 16
    with running_server(model_dir, tmp_path, wait_ready=False, certified_policy_file=str(foreign)) as running:
        assert running.process.wait(timeout=120) == 2
        assert "was fitted for card 0000000000000000" in running.log_tail()


def test_see_calibrate_policy_refuses_what_the_data_cannot_certify(model_dir, tmp_path):
    """From the shipped labelled set's journals in the repository (no server): a 1 % promise is out of reach."""
    journals = [REPO / "experiments/risk-control/calibration/scores_see-distilled.jsonl",
                REPO / "experiments/hs2-distill/eval/scores_see-distilled.jsonl"]  # fmt: skip
    args = ["--model", str(model_dir), *[a for j in journals for a in ("--scores", str(j))], "--out",
            str(tmp_path / "p.json")]  # fmt: skip
    refused = subprocess.run(
        [sys.executable, "-m", "seecli.main", "calibrate", "policy", *args, "--target-risk", "0.01"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    said = " ".join(refused.stdout.split())
    assert refused.returncode == 1 and "nothing written" in said and not (tmp_path / "p.json").exists()
    assert "no score reaches a bad rate below 0.01" in said or "labelled answers would be needed" in said
