"""A scripted HTTP server for SDK unit tests: answers queued responses through httpx.MockTransport."""

from __future__ import annotations

import json

import httpx

from selfeval.rubric import ATTRIBUTES


def self_evaluation(expected: float = 6.0) -> dict:
    probs = [0.0] * 10
    probs[round(expected)] = 1.0
    score = {"expected": expected, "argmax": round(expected), "probs": probs, "std": 0.0, "entropy": 0.0}
    return {
        "source": "generated",
        "scale_max": 9,
        "scores": {name: {**score, "label_mass": 1.0, "emitted": round(expected)} for name in ATTRIBUTES},
        "predicted_quality": expected / 9,
        "reason": None,
    }


def chat_completion(content: str, action: str | None = "accept", model: str = "m") -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if action is not None:
        choice |= {"self_evaluation": self_evaluation(), "decision": {"action": action, "reasons": [f"{action} rule"]}}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": model, "choices": [choice], "usage": usage}


def error(status: int, message: str, code: str, param: str | None = None, headers: dict | None = None):
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


class ScriptedServer:
    """Answers each request with the next scripted item (a Response, or an exception to raise)."""

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def bodies(self) -> list[dict]:
        return [json.loads(request.content) for request in self.requests if request.content]

    def client(self, base_url: str = "http://see.test") -> httpx.Client:
        return httpx.Client(base_url=base_url, transport=httpx.MockTransport(self))

    def async_client(self, base_url: str = "http://see.test") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, transport=httpx.MockTransport(self))
