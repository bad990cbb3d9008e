"""The SEE contract: rubric, prompts, self-evaluation block, score readout and model card.

Pure Python on purpose: importing this package must not import torch, vllm or fastapi, so the
server, the trainer, the evaluator and the client tooling can all share one source of truth.
"""
