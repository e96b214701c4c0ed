"""pyproject.toml's dependencies checked against the code's imports, and the constraints file against both.

A package that is imported but only installed as somebody else's dependency breaks the day that somebody
drops it; a runtime import of a training-only extra breaks the slim install.  So: every third-party import
in stream/, connectors/ and migrations/ (and in every model/ module they reach) comes from a core
dependency; model/'s own training and evaluation modules may also use the optional extras; every declared
distribution is pinned in constraints.txt, which `make` and the Dockerfile install with.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSTRAINTS_PATH = ROOT / "constraints.txt"
LOCAL_PACKAGES = {"stream", "connectors", "model", "migrations"}
RUNTIME_PACKAGES = ("stream", "connectors", "migrations")
TOOLING_EXTRAS = {"dev"}  # test and lint tools: never a reason for product code to import something


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """Distribution names of requirements, without those that point back at this project (``x[dev]``)."""
    names = {canonical(Requirement(r).name) for r in requirements}
    return names - {canonical(PYPROJECT["project"]["name"])}


CORE = requirement_names(PYPROJECT["project"]["dependencies"])
EXTRAS = {extra: requirement_names(reqs) for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
PRODUCT_EXTRAS = set().union(*(names for extra, names in EXTRAS.items() if extra not in TOOLING_EXTRAS))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCES = {module_name(p): p for pkg in sorted(LOCAL_PACKAGES) for p in (ROOT / pkg).rglob("*.py")}


@functools.cache
def installed_packages() -> dict[str, list[str]]:
    """Import name -> distributions providing it (reading every installed package's metadata is slow)."""
    return importlib.metadata.packages_distributions()


def distributions_of(top_level: str) -> set[str]:
    return {canonical(d) for d in installed_packages().get(top_level, [])}


def third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in LOCAL_PACKAGES and top != "__future__"


def runtime_modules() -> set[str]:
    """stream/, connectors/, migrations/ and every local module they import, followed transitively."""
    seen: set[str] = set()
    todo = [m for m in SOURCES if m.split(".")[0] in RUNTIME_PACKAGES]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(name for name in imports_of(SOURCES[current]) if name in SOURCES)
    return seen


def undeclared(modules: set[str], allowed: set[str]) -> list[str]:
    problems = []
    for module in sorted(modules):
        for name in sorted(imports_of(SOURCES[module])):
            if not third_party(name):
                continue
            top = name.split(".")[0]
            provided_by = distributions_of(top)
            if not provided_by:
                problems.append(f"{module}: imports {top}, which no installed distribution provides")
            elif not provided_by & allowed:
                problems.append(f"{module}: imports {top} from {sorted(provided_by)}, not declared where allowed")
    return sorted(set(problems))


def test_the_runtime_imports_only_core_dependencies() -> None:
    runtime = runtime_modules()
    assert "stream.worker" in runtime and "model.scorer" in runtime
    assert undeclared(runtime, CORE) == []


def test_model_modules_import_only_core_or_extra_dependencies() -> None:
    model_modules = {m for m in SOURCES if m.split(".")[0] == "model"}
    assert undeclared(model_modules, CORE | PRODUCT_EXTRAS) == []


def test_training_and_evaluation_packages_are_extras_not_runtime() -> None:
    assert {"tensorboard", "vadersentiment"} <= PRODUCT_EXTRAS
    assert not ({"tensorboard", "vadersentiment"} & CORE)


def test_dev_installs_every_extra_so_make_test_needs_one_step() -> None:
    name = canonical(PYPROJECT["project"]["name"])
    pulled: set[str] = set()
    for requirement in map(Requirement, PYPROJECT["project"]["optional-dependencies"]["dev"]):
        if canonical(requirement.name) == name:
            pulled |= requirement.extras
    assert pulled >= set(EXTRAS) - TOOLING_EXTRAS


def read_constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS_PATH.read_text().splitlines(), start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"constraints.txt:{number} is no pin: {line}"
        pins[canonical(requirement.name)] = specifiers[0].version
    return pins


def test_constraints_pin_every_declared_distribution_within_its_range() -> None:
    pins = read_constraints()
    declared = [*PYPROJECT["project"]["dependencies"], *(
        r for reqs in PYPROJECT["project"]["optional-dependencies"].values() for r in reqs)]
    for requirement in map(Requirement, declared):
        name = canonical(requirement.name)
        if name == canonical(PYPROJECT["project"]["name"]):
            continue
        assert name in pins, f"{requirement.name} is declared but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside the declared {requirement}")


def test_make_and_the_dockerfile_install_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt", makefile)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*constraints\.txt", dockerfile)
    assert re.search(r"pip install [^\n]*-c constraints\.txt", dockerfile)


def test_the_extras_map_of_the_model_cli_matches_pyproject() -> None:
    from model.cli import EXTRA_PROVIDING

    for package, extra in EXTRA_PROVIDING.items():
        assert distributions_of(package) & EXTRAS[extra], f"{package} is not in the {extra!r} extra"


def test_a_verb_whose_extra_is_missing_says_which_extra_to_install(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import build_parser

    for module in ("model.eval", "model.baselines"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    # Import fails as if not installed; a submodule already imported by an earlier test would otherwise
    # be found in sys.modules before its missing parent is ever looked at.
    for module in [m for m in sys.modules if m == "vaderSentiment" or m.startswith("vaderSentiment.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["model", "eval", "--help"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "vaderSentiment is not installed" in error and ".[eval]" in error
