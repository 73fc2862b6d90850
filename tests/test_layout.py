"""The architecture, checked (docs/ARCHITECTURE.md): stage packages import only lower layers and only their
public faces, modules form no import cycle, and no module grows past 400 lines."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "competition"
# Import layers, lowest first: a package may import its own modules and any lower layer, never a higher one.
LAYERS = ("core", "data", "submit", "predict", "train", "search", "ensemble", "report", "cli")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) of every `competition` import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "competition":  # stage packages themselves
            found += [(f"competition.{a.name}", [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "competition":
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "competition"]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "public_face":  # a lazy face's modules
            for key in node.args[1].keys:
                module = module_name(path) + key.value if key.value.startswith(".") else key.value
                found += [(module, [], node.lineno)] if module.split(".")[0] == "competition" else []
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_and_through_public_faces(path):
    here = stage(module_name(path))
    for module, names, line in imports(path):
        there = stage(module)
        if here is None or there is None or there == here:
            continue
        where = f"{path.relative_to(ROOT)}:{line}"
        assert LAYERS.index(there) < LAYERS.index(here), f"{where}: {here} imports the higher layer {there}"
        if there != "core" and module != f"competition.{there}":
            pytest.fail(f"{where}: imports {module}, not the public face competition.{there}")
        if there != "core" and names and module == f"competition.{there}" and names != [there]:
            public = set(importlib.import_module(module).__all__)
            assert set(names) <= public, f"{where}: {sorted(set(names) - public)} not in {module}.__all__"


def test_no_import_cycles():
    graph = {module_name(p): set() for p in FILES}
    for path in FILES:
        for module, names, _ in imports(path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in graph] or [module]
            graph[module_name(path)] |= {t for t in targets if t in graph and t != module_name(path)}
    # A package's __init__ re-exporting its own modules is its face, not a cycle: drop edges into a package's own
    # __init__ from inside it.
    for name, edges in graph.items():
        graph[name] = {t for t in edges if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_models_import_only_the_core():
    for path in (ROOT / "models").glob("*.py"):
        for module, _, line in imports(path):
            assert stage(module) == "core", f"{path.name}:{line}: models import {module}"


def test_the_harness_is_installed_editable(tmp_path):
    """`./run.sh setup` installs the project editable: from any working directory, `competition` (and the model
    registry a user edits) is this checkout's source, not a copy in site-packages that goes stale."""
    import subprocess
    import sys

    code = "import competition, models; print(competition.__file__); print(models.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    root = Path(__file__).resolve().parents[1]
    found = [Path(path).resolve() for path in done.stdout.split()]
    assert found == [root / "competition" / "__init__.py", root / "models" / "__init__.py"], (
        f"{found}: not this checkout's source (an installed copy, not an editable install)"
    )
