"""The layers, checked on the import graph (every import statement, including those inside functions).

selfeval/ (the SEE contract) imports none of our packages; server/ and training/ import neither each other
nor evaluation/ (or the command line, or the benchmarks); the SDK imports nothing of the server side.
Higher layers (evaluation/, seecli/, bench/) may import the ones below them. Inside server/, the calibration
subsystem (server/calibration/) imports nothing of the answer path but its settings and metrics."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "clients" / "python" / "see_client"
OURS = {"selfeval", "server", "training", "evaluation", "seecli", "bench", "see_client"}
FORBIDDEN = {
    "selfeval": OURS - {"selfeval"},
    "server": {"training", "evaluation", "seecli", "bench"},
    "training": {"server", "evaluation", "seecli", "bench"},
    "see_client": OURS - {"see_client"},
}


def package_dir(name: str) -> Path:
    return SDK if name == "see_client" else REPO / name


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_up_or_across_the_layers(package):
    files = sorted(package_dir(package).rglob("*.py"))
    assert files, f"no Python files under {package_dir(package)}"
    crossings = {str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package]) for path in files}
    assert {path: found for path, found in crossings.items() if found} == {}


def test_the_calibration_subsystem_sits_below_the_answer_path():
    """server/calibration/ may use the server's settings and metrics, nothing of the answer path above it."""
    allowed = {"server.settings", "server.metrics"}
    found = {}
    for path in sorted((REPO / "server" / "calibration").rglob("*.py")):
        server = {m for m in imported_modules(path) if m.split(".")[0] == "server"}
        above = {m for m in server - allowed if not m.startswith("server.calibration")}
        if above:
            found[str(path.relative_to(REPO))] = sorted(above)
    assert found == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from evaluation.metrics import spearman\n", encoding="utf-8")
    assert imported_packages(module) == {"evaluation"}


# What a route may ask of the answer service: the one answer path's operations and the served model's name.
ANSWER_PATH = {"prepare_answers", "answers", "stream_answers", "score", "model_name"}
ANSWER_STEPS = {"server.scoring", "server.policy", "server.engine", "selfeval.readout", "selfeval.block"}


def test_routes_only_map_the_one_answer_path():
    """Generation, readout, calibration, decision, ledger record and metrics are assembled in one place
    (server.service); a route calls its operations and maps the result to its wire format, nothing more."""
    found = {}
    for path in sorted((REPO / "server" / "routes").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        used = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "service"
        }
        steps = imported_modules(path) & ANSWER_STEPS
        if (used - ANSWER_PATH) or steps:
            found[path.name] = sorted(used - ANSWER_PATH) + sorted(steps)
    assert found == {}
