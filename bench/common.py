"""What the benchmarks share: the prompts, the engine settings, starting and stopping the servers under test, the
small random-initialised model the training benchmarks use on GPUs that cannot fetch a real one.

The sidecar and a stock vLLM OpenAI server run one after the other on the same machine, the same model and
the same engine settings (eager, float32, 4096 context, prefix caching, the same CPU KV cache and threads, and
on CPU the sidecar's KV block size of 32 tokens unless a benchmark asks for vLLM's own default), so ratios
between them come from one run.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from server import launch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

PROMPTS = [
    "Explain in detail how a refrigerator works.",
    "Write a long story about a lighthouse keeper.",
    "Describe the history of the Roman Empire in detail.",
    "Explain step by step how to bake bread at home.",
    "Write a detailed guide to learning the guitar.",
    "Describe the water cycle in detail for a school report.",
    "Explain how the internet works, in detail.",
    "Write a long letter to a friend about a summer holiday.",
]
ENGINE_FLAGS = ["--enforce-eager", "--dtype", "float32", "--max-model-len", "4096", "--enable-prefix-caching"]
STOCK_MODEL_NAME = "stock"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count() or 1} cores"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def engine_env() -> dict[str, str]:
    return launch.cpu_engine_env()


def served(command: list[str], env: dict, log_path: Path, ready_url: str, timeout: float = 600):
    """Run a server from the repository root until the block ends; yields once `ready_url` answers 200."""
    return launch.served(command, env, log_path, ready_url, timeout, cwd=REPO)


def sidecar_server(model_dir: Path, port: int, log_path: Path, engine_url: str | None = None, **settings: str):
    """The sidecar; with `engine_url`, in remote engine mode in front of that vLLM server; `settings` are
    further SEE_* variables by their lower-case names (answer_model="...")."""
    env = {**engine_env(), "SEE_MODEL": str(model_dir), "SEE_PORT": str(port), "SEE_MAX_MODEL_LEN": "4096"}
    if engine_url:
        env["SEE_ENGINE_URL"] = engine_url
    env |= {f"SEE_{name.upper()}": value for name, value in settings.items()}
    return served([sys.executable, "-m", "server"], env, log_path, f"http://127.0.0.1:{port}/ready")


def stock_engine_flags(like_sidecar: bool = True) -> list[str]:
    """ENGINE_FLAGS, plus on CPU the KV block size the sidecar sets there (vLLM's CPU default is 128 tokens)."""
    import torch

    from server.engine import CPU_KV_BLOCK_SIZE

    on_cpu = not torch.cuda.is_available()
    return [*ENGINE_FLAGS, *(["--block-size", str(CPU_KV_BLOCK_SIZE)] if like_sidecar and on_cpu else [])]


def stock_vllm_server(model_dir: Path, port: int, log_path: Path, like_sidecar: bool = True):
    command = launch.stock_vllm_command(model_dir, port, STOCK_MODEL_NAME, *stock_engine_flags(like_sidecar))
    return served(command, engine_env(), log_path, f"http://127.0.0.1:{port}/health")


def plugin_vllm_server(model_dir: Path, port: int, log_path: Path):
    """vLLM's own server with the see_sidecar endpoint plugin (server/vllm_plugin.py), stock engine flags."""
    from server.vllm_plugin import PLUGIN_NAME

    command = launch.stock_vllm_command(model_dir, port, STOCK_MODEL_NAME, *stock_engine_flags())
    return served(command, {**engine_env(), "VLLM_PLUGINS": PLUGIN_NAME}, log_path, f"http://127.0.0.1:{port}/health")


def small_random_model(model_dir: Path):
    """A 4-layer, 256-wide model of `model_dir`'s architecture and vocabulary, random weights (seed 0): the
    training benchmarks' stand-in where only the step's shape matters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.update({"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
                   "num_key_value_heads": 4})  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)
