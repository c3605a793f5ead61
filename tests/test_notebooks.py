"""Every notebook under notebooks/ runs top to bottom against a demo store and shows something.

The demo's month (planted incidents, detectors run) is built once; each notebook's cell tagged
``parameters`` is rewritten to point at it, and an in-memory copy is executed in a real Jupyter
kernel (the notebook files are never written).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.inventory import load_inventory
from pipeline.detection.findings import list_findings
from pipeline.investigate.least_privilege import least_privilege
from pipeline.store.store import open_store
from tests.conftest import ROOT

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the dev extras: pip install -e '.[dev]'")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"
DAYS = 30  # the demo's month: baselines learn from three weeks, detect scores the last eight days
REPLAYED = "ci-deployer"
REPLAY_DAYS = 2 * DAYS  # the replay notebook's window holds the whole demo: no event near its edge


def _kernel_or_skip() -> str:
    """``python3``: a kernelspec installed in the environment, else the one ipykernel provides."""
    try:
        from jupyter_client.kernelspec import find_kernel_specs
    except ImportError:
        pytest.skip("jupyter_client not installed: pip install -e '.[dev]'")
    specs = find_kernel_specs()
    if KERNEL not in specs:
        pytest.skip(f"no {KERNEL!r} Jupyter kernel (found {sorted(specs)}): pip install -e '.[dev]' (ipykernel)")
    return KERNEL


@pytest.fixture(scope="module")
def demo_db(demo_checkout: Path) -> Path:
    return demo_checkout / "data" / "trailwarden.duckdb"  # the demo's month: DAYS days, read only


def _parameterised(path: Path, values: dict[str, Any]) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    source = cells[0].source
    assert re.search(r"^DB_PATH\s*=", source, flags=re.M), f"{path.name}: no DB_PATH parameter"
    for name, value in values.items():  # the parameters this notebook has
        source = re.sub(rf"^{name}\s*=.*$", f"{name} = {value!r}", source, flags=re.M)
    cells[0].source = source
    return nb


def _execute(nb: nbformat.NotebookNode, kernel: str) -> nbformat.NotebookNode:
    NotebookClient = pytest.importorskip("nbclient").NotebookClient

    with pytest.MonkeyPatch.context() as env:
        # no display needed, and the charts land in the outputs as PNGs (with plain Agg, which the
        # notebooks keep under a kernel, plt.show() would draw nothing there)
        env.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> Iterator[dict[str, Any]]:
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for out in _outputs(nb):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        for mime in ("text/plain", "text/html"):
            data = out.get("data", {}).get(mime)
            if data:
                parts.append(data if isinstance(data, str) else "".join(data))
    return "\n".join(parts)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for out in _outputs(nb) if "image/png" in out.get("data", {}))


@pytest.fixture(scope="module")
def executed(demo_db: Path) -> dict[str, nbformat.NotebookNode]:
    kernel = _kernel_or_skip()
    before = {p.name: p.read_bytes() for p in NOTEBOOKS}
    out = {}
    for path in NOTEBOOKS:
        values: dict[str, Any] = {"DB_PATH": str(demo_db)}
        if path.stem == "agent_replay":
            values.update(AGENT=REPLAYED, DAYS=REPLAY_DAYS)
        out[path.stem] = _execute(_parameterised(path, values), kernel)
    assert {p.name: p.read_bytes() for p in NOTEBOOKS} == before, "running the notebooks changed them"
    return out


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"triage", "agent_replay", "least_privilege"}


@pytest.mark.slow  # a Jupyter kernel per notebook
@pytest.mark.parametrize("name", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_error_and_draws(executed, name):
    nb = executed[name]
    errors = [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert not errors, errors
    assert _images(nb) >= 1, f"{name} drew no chart"


@pytest.mark.slow  # executes the notebooks
def test_triage_shows_the_planted_findings(executed, demo_db):
    with open_store(demo_db, read_only=True) as store:
        found = list_findings(store)
    detectors = {f["detector"] for f in found}
    agents = {f["agent"] for f in found}
    assert {"out_of_scope", "audit_tampering", "unregistered_identity"} <= detectors, "the demo plants these"
    text = _text(executed["triage"])
    for name in detectors | agents:
        assert name in text, f"triage does not show {name}"


@pytest.mark.slow  # executes the notebooks
def test_agent_replay_shows_the_agents_events_and_findings(executed, demo_db):
    with open_store(demo_db, read_only=True) as store:
        count, failed = store.con.execute(
            "SELECT count(*), count(*) FILTER (WHERE error_code IS NOT NULL) FROM events WHERE agent = ?",
            [REPLAYED]).fetchone() or (0, 0)
        ips = [r[0] for r in store.con.execute("SELECT DISTINCT source_ip FROM events WHERE agent = ?",
                                               [REPLAYED]).fetchall()]
        findings = list_findings(store, agent=REPLAYED)
    assert count and findings, "the demo plants a stolen CI key"
    text = _text(executed["agent_replay"])
    assert f"{REPLAYED}: {count} events, {failed} failed, {len(findings)} findings" in text
    for ip in ips:
        assert ip in text, f"the blast radius does not show {ip}"
    for det in {f["detector"] for f in findings}:
        assert det in text, f"the findings table does not show {det}"


@pytest.mark.slow  # executes the notebooks
def test_least_privilege_shows_unused_grants_for_every_agent(executed, demo_db):
    inventory = load_inventory(ROOT / "config" / "agents.yaml")
    text = _text(executed["least_privilege"])
    since = datetime.now(UTC) - timedelta(days=90)
    with open_store(demo_db, read_only=True) as store:
        results = {a.name: least_privilege(store, inventory, a.name, since=since) for a in inventory.agents}
    assert any(r["unused_grants"] for r in results.values())
    for name, result in results.items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"== {name}:")), None)
        assert line is not None, f"no line for {name}"
        for pattern in result["unused_grants"]:
            assert pattern in line
        if not result["unused_grants"]:
            assert "none" in line
    busiest = max(results, key=lambda n: len(results[n]["used"]))
    assert json.dumps(results[busiest]["suggested_policy"], indent=2) in text


def _requirement_names(specs: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_the_notebooks_extra_provides_everything_the_notebooks_import():
    """`pip install -e '.[notebooks]'` then `jupyter lab notebooks/`: every module a notebook
    imports is the standard library's, the project's, or a base or `notebooks` dependency's."""
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["notebooks"]
    provided = _requirement_names(project["dependencies"]) | _requirement_names(extra)
    assert {"jupyterlab", "matplotlib"} <= _requirement_names(extra)
    owners = {m: {d.lower().replace("_", "-") for d in ds} for m, ds in packages_distributions().items()}
    local = {"pipeline", "models", "detectors"}
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        modules = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", source, flags=re.M))
        for module in modules - local - set(sys.stdlib_module_names):
            assert module in owners, f"{path.name}: imports {module}, which nothing installed provides"
            assert owners[module] & provided, f"{path.name}: {module} comes from {owners[module]}, not in the extras"
