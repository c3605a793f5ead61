"""Every runtime dependency pyproject.toml declares is imported by the code it ships: a declared
dependency nothing uses costs every install its size and its CVEs (issue 15: scikit-learn was one;
what it was measured to add is in the README's learned-behaviour section)."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import ROOT


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for folder in ("pipeline", "models", "detectors"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_declared_dependency_is_imported() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {_normal(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]) for spec in declared}
    dists = packages_distributions()
    used = {_normal(d) for module in _imported_top_levels() for d in dists.get(module, [])}
    # protobuf is what aliyun-log-python-sdk needs at the version pinned (it imports it itself)
    unused = sorted(names - used - {"protobuf"})
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"
