"""The official `openai` client against the sidecar: the SEE extension sits on each choice.

python clients/python/examples/openai_client.py --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--question", default="What is the capital of France?")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    model = client.models.list().data[0].id
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.question}], max_tokens=64, temperature=0
    )
    choice = completion.choices[0].model_dump()  # extension fields survive model_dump()
    evaluation, decision = choice["self_evaluation"], choice["decision"]
    print(choice["message"]["content"])
    print(f"decision: {decision['action']} ({'; '.join(decision['reasons'])})")
    print(f"readout: {evaluation['source']}, predicted quality {evaluation['predicted_quality']:.2f}")
    for attribute, score in evaluation["scores"].items():
        print(f"  {attribute:<12} expected {score['expected']:.2f}  entropy {score['entropy']:.2f} nats")


if __name__ == "__main__":
    main()
