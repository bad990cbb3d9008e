"""The package works installed from its wheel, away from the checkout: the wheel is built from a copy of the sources,
installed (not editable) into a fresh virtual environment, and run from another directory; `see model prepare`
builds the default from the delta the wheel carries, `see serve` answers `/generate` with self-scores, and the
shipped datasets are found where the wheel put them.

The fresh environment borrows this environment's third-party packages (vLLM is GBs) through a plain path line
in a .pth file: that line adds their directory to sys.path without running the .pth files inside it, so our own
editable install (a .pth finder pointing at the checkout) stays invisible there."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from selfeval.models import base_model_dir
from selfeval.rubric import ATTRIBUTES
from server.launch import cpu_engine_env, free_port, served
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration
SOURCES = ("selfeval", "server", "seecli", "training", "evaluation", "data")


def run(command: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command[:4]))} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory, model_dir) -> dict:
    """A fresh venv with the wheel installed; the paths and the environment to run it with."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in SOURCES:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEE_", "PYTHON", "VIRTUAL_ENV"))}
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist"]
    run([*build, source], root, env)
    wheel = next((root / "dist").glob("see_sidecar-*.whl"))

    venv = root / "venv"
    run([sys._base_executable, "-m", "venv", venv], root, env)
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root, env).strip())
    (purelib / "borrowed_dependencies.pth").write_text(site.getsitepackages()[0] + "\n", encoding="utf-8")
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], root, env)

    cache = root / "cache"
    shutil.copytree(base_model_dir(), base_model_dir(cache))  # the untrained model: no 93 MB download again
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env |= {"SEE_CACHE_DIR": str(cache), "SEE_LEDGER__URL": str(root / "ledger.sqlite3")}
    return {"venv": venv, "python": python, "purelib": purelib, "cwd": elsewhere, "env": env, "cache": cache}


def test_our_packages_come_from_the_wheel_not_the_checkout(installed):
    code = "import selfeval, server, training; print(selfeval.__file__, server.__file__, training.__file__)"
    out = run([installed["python"], "-c", code], installed["cwd"], installed["env"])
    for path in out.split():
        assert Path(path).is_relative_to(installed["purelib"]), out


def test_the_shipped_datasets_are_found_where_the_wheel_put_them(installed):
    code = (
        "from training.data import data_dir, default_dataset, load_groups\n"
        "print(data_dir()); print(len(load_groups(default_dataset(), 'eval.json')))"
    )
    where, held_out_prompts = run([installed["python"], "-c", code], installed["cwd"], installed["env"]).split()
    assert Path(where).is_relative_to(installed["venv"]), where
    assert int(held_out_prompts) == 500


def test_model_prepare_and_generate_from_the_installed_package(installed):
    see = installed["venv"] / "bin" / "see"
    prepared = Path(run([see, "model", "prepare"], installed["cwd"], installed["env"]).strip().splitlines()[-1])
    assert prepared.is_relative_to(installed["cache"]) and (prepared / "see_card.json").is_file()

    port = free_port()
    env = {**cpu_engine_env(), **installed["env"], "SEE_MAX_MODEL_LEN": "2048"}
    log = installed["cwd"] / "serve.log"
    command = [str(see), "serve", "--port", str(port)]
    with served(command, env, log, f"http://127.0.0.1:{port}/ready", cwd=installed["cwd"]):
        response = httpx.post(
            f"http://127.0.0.1:{port}/generate",
            json={"prompt": "Name a primary colour.", "max_tokens": 16, "temperature": 0},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == prepared.name
    assert sorted(body["self_evaluation"]["scores"]) == sorted(ATTRIBUTES)
