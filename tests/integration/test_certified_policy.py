"""The certified decision policy on the real server and default model: a policy for the served checkpoint
decides and is cited, and a policy that does not belong to it stops the server before it loads anything.
What `see calibrate policy` fits on and refuses: tests/unit/evaluation/test_policy_sources.py."""

from __future__ import annotations

import httpx
import pytest

from evaluation.policy_fit import distributions_of
from selfeval.calibration import card_fingerprint
from selfeval.card import load_card
from selfeval.certified_policy import load_policy, write_policy
from selfeval.rubric import ATTRIBUTES
from tests.integration.conftest import certified_policy_for, running_server
from tests.unit.selfeval.test_certified_policy import policy

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "How do I sort a list in Python?"}]
ANSWER = "Use sorted(my_list) for a new sorted list, or my_list.sort() to sort it in place."


def test_a_certified_policy_decides_and_is_cited(model_dir, tmp_path):
    served = certified_policy_for(model_dir, tmp_path)
    certified = load_policy(served)
    with (
        running_server(
            model_dir, tmp_path, certified_policy_file=str(served), allow_looser_thresholds="true"
        ) as running,
        httpx.Client(base_url=running.url, timeout=300) as client,
    ):
        body = client.post("/v1/score", json={"messages": QUESTION, "response": ANSWER}).json()
        decision = body["decision"]
        assert decision["policy"] == certified.version
        scores = body["self_evaluation"]["scores"]
        assert decision["action"] == certified.decide(distributions_of([scores[a]["probs"] for a in ATTRIBUTES]))[0]
        assert f"certified {certified.version}" in decision["reasons"][-1]
        # per-request thresholds on this server may loosen the policy: then the hand-set rules decide, uncited
        loosened = client.post(
            "/v1/score", json={"messages": QUESTION, "response": ANSWER, "decision_thresholds": {"low_score": 3}}
        ).json()["decision"]
        assert loosened["policy"] is None


def test_a_policy_for_another_checkpoint_stops_the_server_at_once(model_dir, tmp_path):
    foreign = tmp_path / "see_policy.json"
    write_policy(foreign, policy(card_fingerprint="0" * 16))
    assert card_fingerprint(load_card(model_dir)) != "0" * 16
    with running_server(model_dir, tmp_path, wait_ready=False, certified_policy_file=str(foreign)) as running:
        assert running.process.wait(timeout=120) == 2
        assert "was fitted for card 0000000000000000" in running.log_tail()
