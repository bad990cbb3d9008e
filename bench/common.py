"""What the benchmarks share: the prompts, the engine settings, starting and stopping the servers under test.

The sidecar and a stock vLLM OpenAI server run one after the other on the same machine, the same model and
the same engine settings (eager, float32, 4096 context, prefix caching, the same CPU KV cache and threads),
so ratios between them come from one run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

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
    cores = os.cpu_count() or 1
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }


@contextmanager
def served(command: list[str], env: dict, log_path: Path, ready_url: str, timeout: float = 600):
    """Run a server until the block ends; yields once `ready_url` answers 200."""
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command[:3])} exited early; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {timeout} s; see {log_path}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def sidecar_server(model_dir: Path, port: int, log_path: Path):
    env = {**engine_env(), "SEE_MODEL": str(model_dir), "SEE_PORT": str(port), "SEE_MAX_MODEL_LEN": "4096"}
    return served([sys.executable, "-m", "server"], env, log_path, f"http://127.0.0.1:{port}/ready")


def stock_vllm_server(model_dir: Path, port: int, log_path: Path):
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        STOCK_MODEL_NAME,
        "--port",
        str(port),
        *ENGINE_FLAGS,
    ]
    return served(command, engine_env(), log_path, f"http://127.0.0.1:{port}/health")
