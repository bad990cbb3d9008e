"""The SDK's result types stay in step with the server's wire models; importing the SDK stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import see_client
from server import openai_protocol, protocol

PAIRS = [
    (see_client.AttributeScore, protocol.AttributeScore),
    (see_client.SelfEvaluation, protocol.SelfEvaluation),
    (see_client.GenerateResult, protocol.GenerateResponse),
    (see_client.Decision, openai_protocol.DecisionOut),
    (see_client.ScoreResult, openai_protocol.ScoreResponse),
    (see_client.CalibratedEvaluation, protocol.CalibratedEvaluation),
    (see_client.FeedbackResult, protocol.FeedbackResponse),
]


@pytest.mark.parametrize(("sdk", "wire"), PAIRS, ids=[sdk.__name__ for sdk, _ in PAIRS])
def test_sdk_types_have_every_field_the_server_sends(sdk, wire):
    assert set(wire.model_fields) - {"object"} <= set(sdk.model_fields)


def test_sdk_chat_choice_carries_the_extension_fields():
    extension = {"self_evaluation", "decision"}
    assert extension <= set(openai_protocol.ChatChoice.model_fields) and extension <= set(
        see_client.ChatChoice.model_fields
    )


def test_sdk_attributes_are_the_rubric():
    from selfeval.rubric import ATTRIBUTES

    assert tuple(see_client.ATTRIBUTES) == tuple(ATTRIBUTES)


def test_importing_the_sdk_imports_only_httpx_and_pydantic():
    code = (
        "import sys, see_client\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'vllm', 'transformers', 'fastapi', 'server', 'selfeval', 'openai', 'numpy')]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
