"""The tree shows the architecture, and imports point one way (issue 14).

The CLI and the service sit over the library (store, ingest, detection, triage, investigate,
demo); the library over ``models/`` and ``detectors/``; those over nothing of ``pipeline`` but
``pipeline.core``. Every import counts, at module level or inside a function: a lazy import that
closes a cycle is still a cycle a newcomer has to untangle.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "models", "detectors")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every project module ``path`` imports (``from X import Y`` is X.Y when that is a module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        yield from (n for n in names if n in MODULES)


GRAPH = {name: sorted(set(_imports(path)) - {name}) for name, path in MODULES.items()}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_packages_are_found():
    assert {"pipeline.core.errors", "pipeline.cli.app", "models.inventory", "detectors.base"} <= set(MODULES)


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles():  # the test above could not fail otherwise
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["models", "detectors"])
def test_models_and_detectors_use_only_the_core_of_pipeline(package: str):
    wrong = {m: [i for i in deps if i.startswith("pipeline") and not i.startswith("pipeline.core")]
             for m, deps in GRAPH.items() if m.split(".")[0] == package}
    assert {m: deps for m, deps in wrong.items() if deps} == {}


def test_the_core_depends_on_nothing_else_of_the_project():
    wrong = {m: [i for i in deps if not i.startswith("pipeline.core")]
             for m, deps in GRAPH.items() if m.startswith("pipeline.core")}
    assert {m: deps for m, deps in wrong.items() if deps} == {}


def test_only_the_entry_points_import_the_cli():
    importers = {m for m, deps in GRAPH.items() if any(d.startswith("pipeline.cli") for d in deps)}
    assert {m for m in importers if not m.startswith("pipeline.cli")} == {"pipeline.__main__"}


def test_the_library_never_imports_the_service_or_the_demo():
    """The service and the demo are built on the library, not the other way round."""
    library = ("pipeline.store", "pipeline.ingest", "pipeline.detection", "pipeline.triage", "pipeline.investigate")
    wrong = {m: [d for d in deps if d.startswith(("pipeline.service", "pipeline.demo"))]
             for m, deps in GRAPH.items() if m.startswith(library)}
    assert {m: deps for m, deps in wrong.items() if deps} == {}


SQL_CALL = re.compile(r"\.(execute|sql|executemany)\(|\.con\b")


def test_the_cli_runs_no_sql():
    """Commands parse options, call one library function and render: DuckDB is the library's."""
    found = {str(p.relative_to(ROOT)): SQL_CALL.findall(p.read_text(encoding="utf-8"))
             for p in (ROOT / "pipeline" / "cli").rglob("*.py")}
    assert {p: calls for p, calls in found.items() if calls} == {}
