"""Every third-party import of our packages is declared in pyproject.toml, in a group that is installed wherever that
package runs: the core dependencies for all of them, the engine extras (cpu/gpu) and postgres for the server side,
plus the `train` extra for training/ and evaluation/. torch is the one exception: its build (CPU or CUDA) is the
engine's choice and each engine extra pins it through vLLM."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from tests.unit.test_layering import OURS, REPO, imported_packages

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ENGINE_PROVIDED = {"torch"}
SERVING = ("cpu", "gpu", "postgres")
GROUPS = {
    "selfeval": SERVING,
    "server": SERVING,
    "seecli": SERVING,
    "training": (*SERVING, "train"),
    "evaluation": (*SERVING, "train"),
}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(groups: tuple[str, ...]) -> set[str]:
    extras = PROJECT["optional-dependencies"]
    requirements = PROJECT["dependencies"] + [r for group in groups for r in extras[group]]
    return {normalised(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def third_party_imports(package: str) -> set[str]:
    modules = set().union(*(imported_packages(path) for path in (REPO / package).rglob("*.py")))
    return {m for m in modules - OURS - {"tests", "__future__"} if m not in sys.stdlib_module_names}


@pytest.mark.parametrize("package", sorted(GROUPS))
def test_every_third_party_import_is_declared_where_the_package_runs(package):
    distributions = packages_distributions()
    allowed = declared(GROUPS[package])
    undeclared = {}
    for module in sorted(third_party_imports(package) - ENGINE_PROVIDED):
        names = {normalised(d) for d in distributions.get(module, [module])}
        if not names & allowed:
            undeclared[module] = sorted(names)
    assert undeclared == {}, f"imported by {package}/ but not declared for it in pyproject.toml"


def test_the_check_sees_an_undeclared_import(tmp_path, monkeypatch):
    package = tmp_path / "selfeval"
    package.mkdir()
    (package / "m.py").write_text("import yaml\nimport matplotlib\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert third_party_imports("selfeval") == {"yaml", "matplotlib"}
    assert "matplotlib" not in declared(GROUPS["selfeval"])  # a train-only dependency
    assert "matplotlib" in declared(GROUPS["evaluation"])
