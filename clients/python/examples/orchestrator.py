"""An agent orchestrator loop: answer each task with the sidecar, then accept, queue for review, or escalate.

    python clients/python/examples/orchestrator.py --sidecar http://127.0.0.1:8000 \
        --fallback-url https://api.example.com/v1 --fallback-model big-model --fallback-key "$KEY"

Without --fallback-url the sidecar's own OpenAI endpoint stands in as the fallback, so the loop runs
against a single local server (handy for a demo; in production point it at a stronger model).
"""

from __future__ import annotations

import argparse
import json

from see_client import Escalator, FallbackEndpoint, SeeClient

TASKS = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about a lighthouse.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecar", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key")
    parser.add_argument("--fallback-url", help="OpenAI-compatible base URL ending in /v1")
    parser.add_argument("--fallback-model")
    parser.add_argument("--fallback-key")
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    sidecar = SeeClient(args.sidecar, api_key=args.api_key)
    fallback = FallbackEndpoint(
        base_url=args.fallback_url or f"{args.sidecar}/v1",
        model=args.fallback_model or sidecar.served_model(),
        api_key=args.fallback_key or args.api_key,
    )
    review_queue = []
    with sidecar:
        router = Escalator(sidecar, fallback)
        for task in TASKS:
            routed = router.chat([{"role": "user", "content": task}], max_tokens=args.max_tokens, temperature=0)
            if routed.needs_review:
                review_queue.append({"task": task, "answer": routed.content, "reasons": routed.reasons})
            quality = routed.sidecar.self_evaluation.predicted_quality if routed.sidecar else None
            print(f"[{routed.action:>8} -> {routed.answered_by}] {task}")
            print(f"    quality {quality}  reasons: {'; '.join(routed.reasons)}")
            print(f"    {routed.content[:200]!r}")
        router.close()
    print(f"\n{len(review_queue)} answer(s) queued for human review")
    print(json.dumps(review_queue, indent=2)[:2000])


if __name__ == "__main__":
    main()
