"""A missing or wrong config never silently strips the store of its agents (issue 13 item 1).

A cron job started in $HOME finds no config/, loads the built-in defaults (no inventory) and
would re-attribute every stored event to its raw identity, then raise a flood of "unregistered
identity" findings. A command that would re-attribute validates everything first, and refuses an
empty or absent inventory, or one that would orphan most events, unless told (--reattribute).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor, Inventory
from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.ingest.run import ingest_files
from pipeline.service.cycle import run_cycle
from pipeline.store.attribution import reattribute_if_changed
from pipeline.store.store import open_store
from tests.conftest import assert_one_line_error, run_cli, write_ndjson

AGENTS = [
    {"name": "ci-deployer", "purpose": "deploys", "owner": "platform", "environment": "production",
     "identities": ["ram-user:ci-deploy"]},
    {"name": "monitor", "purpose": "watches", "owner": "sre", "environment": "production",
     "identities": ["ram-user:monitor-ro"]},
]


def _inventory(agents: list[dict[str, Any]]) -> Inventory:
    return Inventory.model_validate({"agents": agents})


def _user(make_event: Any, n: int, name: str) -> dict[str, Any]:
    return make_event(n, userIdentity={"type": "ram-user", "principalId": str(n), "accountId": "1", "userName": name},
                      eventTime=f"2026-11-02T03:{n % 60:02d}:00Z")


@pytest.fixture
def attributed(tmp_path: Path, make_event: Any) -> Path:
    """A store of 30 events by the two agents and 2 by an unregistered user, attributed with the
    full inventory (as the last writing command left it)."""
    events = [_user(make_event, i, "ci-deploy" if i < 20 else "monitor-ro") for i in range(30)]
    events += [_user(make_event, 40 + i, "ops-debug") for i in range(2)]
    write_ndjson(tmp_path / "e.jsonl", events)
    db = tmp_path / "store.duckdb"
    inventory = _inventory(AGENTS)
    with open_store(db) as store:
        ingest_files(store, [tmp_path / "e.jsonl"], Attributor(inventory))
        reattribute_if_changed(store, inventory)
    return db


def _agents(db: Path) -> dict[str, int]:
    with open_store(db, read_only=True) as store:
        return dict(store.con.execute("SELECT agent, count(*) FROM events GROUP BY 1").fetchall())


def test_detect_without_a_config_refuses_to_strip_the_agents(attributed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    before = _agents(attributed)
    result = run_cli("--db", str(attributed), "detect", cwd=elsewhere)
    line = assert_one_line_error(result, 2, "refusing to re-attribute", "30 of the 30", "ci-deployer (20)",
                                 "monitor (10)", "--reattribute")
    assert "no inventory is configured (no config file: --config, $TRAILWARDEN_CONFIG" in line  # and why
    assert _agents(attributed) == before
    with open_store(attributed, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM findings").fetchall() == [(0,)]
    # told explicitly, it does what it was told
    forced = run_cli("--db", str(attributed), "detect", "--reattribute", cwd=elsewhere)
    assert forced.returncode == 0, forced.stderr
    assert _agents(attributed) == {"ram-user:ci-deploy": 20, "ram-user:monitor-ro": 10, "ram-user:ops-debug": 2}


def test_an_invalid_config_is_rejected_before_anything_is_rewritten(attributed: Path, tmp_path: Path) -> None:
    """A detector typo is found before the store is touched, even when the inventory changed."""
    inventory = tmp_path / "agents.yaml"
    inventory.write_text(json.dumps({"agents": AGENTS[:1]}), encoding="utf-8")  # monitor is retired
    config = tmp_path / "tw.yaml"
    config.write_text(f"inventory: {inventory}\ndetectors: {{failure_storm: {{treshold: 3}}}}\n", encoding="utf-8")
    before = _agents(attributed)
    for command in ("detect", "ingest"):
        args = ["--file", str(tmp_path / "e.jsonl")] if command == "ingest" else []
        result = run_cli("--config", str(config), "--db", str(attributed), command, *args, cwd=tmp_path)
        assert_one_line_error(result, 2, str(config), "detectors.failure_storm.treshold")
        assert _agents(attributed) == before
    # fixed, the change (a third of the events) goes through without --reattribute
    config.write_text(f"inventory: {inventory}\n", encoding="utf-8")
    result = run_cli("--config", str(config), "--db", str(attributed), "detect", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _agents(attributed) == {"ci-deployer": 20, "ram-user:monitor-ro": 10, "ram-user:ops-debug": 2}


def test_an_inventory_that_orphans_most_events_is_refused(attributed: Path) -> None:
    with open_store(attributed) as store:
        with pytest.raises(UsageError, match=r"20 of the 30 .*ci-deployer \(20\)") as refused:
            reattribute_if_changed(store, _inventory(AGENTS[1:]), source="config/agents.yaml")
        assert "the inventory config/agents.yaml;" in str(refused.value)
        with pytest.raises(UsageError, match="config/agents.yaml has no agents"):
            reattribute_if_changed(store, Inventory(), source="config/agents.yaml")
        assert reattribute_if_changed(store, _inventory(AGENTS[:1])) == 10  # a third: allowed
        renamed = [{**AGENTS[0], "name": "deployer"}, AGENTS[1]]
        assert reattribute_if_changed(store, _inventory(renamed)) == 30  # nothing orphaned


def test_a_cycle_with_a_stripping_inventory_fails_whole(attributed: Path) -> None:
    """run and serve: no step runs (new events would be attributed with the same inventory)."""
    with pytest.raises(UsageError, match="refusing to re-attribute"):
        run_cycle(Config(), Inventory(), attributed, snapshot=False)
    assert _agents(attributed)["ci-deployer"] == 20
    with open_store(attributed, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM runs WHERE command LIKE 'cycle.%'").fetchall() == [(0,)]
    result = run_cycle(Config(), Inventory(), attributed, snapshot=False, reattribute=True)
    assert result.ok and _agents(attributed)["ram-user:ci-deploy"] == 20


@pytest.mark.parametrize("command", ["run", "serve"])
def test_run_and_serve_need_a_config_file(tmp_path: Path, command: str) -> None:
    result = run_cli(command, cwd=tmp_path)
    assert_one_line_error(result, 2, f"`{command}` needs a config file", "--config", "TRAILWARDEN_CONFIG")
    assert not (tmp_path / "data").exists()  # no store was created in the wrong place


def test_a_config_from_the_environment_is_enough(attributed: Path, tmp_path: Path) -> None:
    config = tmp_path / "tw.yaml"
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": AGENTS}), encoding="utf-8")
    config.write_text(f"database: {attributed}\ninventory: {tmp_path / 'agents.yaml'}\n", encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    result = run_cli("run", cwd=home, env={"TRAILWARDEN_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert _agents(attributed)["ci-deployer"] == 20
