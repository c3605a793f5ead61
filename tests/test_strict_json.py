"""Every ``--format json`` is strict JSON: no ``NaN`` or ``Infinity``, which strict parsers refuse
(issue 13, item 12: ``findings --format json`` printed ``"statement": NaN``).

The store holds what made it happen - an out_of_scope finding whose agent also made allowed calls
(pandas turned the missing statement into NaN) - plus what an older version stored: a finding
whose evidence holds NaN and Infinity, a service step whose seconds are NaN."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.conftest import BASE_EVENT, run_cli, write_ndjson

WHEN = (datetime.now(UTC) - timedelta(days=2)).replace(hour=3, minute=0, second=0, microsecond=0)
POLICY = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"},
    {"Effect": "Allow", "Action": "ecs:StopInstance", "Resource": "acs:ecs:*:*:instance/i-staging*"}]}


def strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def event(n: int, name: str, minutes: int, **fields: Any) -> dict[str, Any]:
    ev = copy.deepcopy(BASE_EVENT)
    ev.update(eventId=f"00000000-0000-4000-8000-{n:012d}", eventName=name,
              eventTime=(WHEN + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields)
    return ev


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("strict")
    (folder / "agents.yaml").write_text(yaml.safe_dump({"agents": [
        {"name": "ci-deployer", "purpose": "deploys", "owner": "platform", "environment": "production",
         "identities": ["ram-user:ci-deploy"], "policies": [POLICY]}]}), encoding="utf-8")
    path = folder / "trailwarden.yaml"
    path.write_text(yaml.safe_dump({"database": str(folder / "store.duckdb"),
                                    "inventory": str(folder / "agents.yaml")}), encoding="utf-8")
    events = [event(1, "DescribeInstances", 0), event(2, "DescribeInstances", 1),
              event(3, "StopInstance", 2, eventRW="Write", referencedResources={"ACS::ECS::Instance": ["i-prod-1"]})]
    for args in (("ingest", "--file", str(write_ndjson(folder / "e.jsonl", events))), ("detect", "--since", "7d")):
        result = run_cli("--config", str(path), *args)
        assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(folder / "store.duckdb"))
    try:  # as an older version stored them
        (fid,) = con.execute("SELECT id FROM findings WHERE detector = 'out_of_scope'").fetchall()[0]
        legacy = {"kind": "out_of_scope", "statement": float("nan"), "ratio": float("inf")}
        con.execute("INSERT INTO findings SELECT * REPLACE ('legacy-nan' AS id, ? AS evidence) FROM findings "
                    "WHERE id = ?", [json.dumps(legacy), fid])
        con.execute("INSERT INTO runs (command, started_at, finished_at, status, counts) "
                    "VALUES ('cycle.detect', now(), now(), 'ok', ?)", [json.dumps({"seconds": float("nan")})])
    finally:
        con.close()
    return path


@pytest.mark.parametrize("args", [
    ("findings", "--status", "all", "--format", "json"),
    ("findings", "show", "legacy-nan", "--format", "json"),
    ("replay", "ci-deployer", "--since", "7d", "--format", "json"),
    ("status", "--format", "json"),
    ("query", "SELECT 'NaN'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, 1.5 AS x", "--format", "json"),
    ("backtest", "--since", "7d", "--format", "json"),
], ids=lambda a: " ".join(a[:2]))
def test_json_output_is_strict(config, args):
    result = run_cli("--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    strict(result.stdout)


def test_a_missing_number_is_null_and_the_rest_is_kept(config):
    listed = strict(run_cli("--config", str(config), "findings", "--status", "all", "--format", "json").stdout)
    by_id = {f["id"]: f for f in listed}
    assert by_id["legacy-nan"]["evidence"] == {"kind": "out_of_scope", "statement": None, "ratio": None}
    (real,) = [f for f in listed if f["id"] != "legacy-nan"]
    assert real["evidence"]["statement"] is None and real["evidence"]["decision"] == "ImplicitDeny"
    rows = strict(run_cli("--config", str(config), "query", "SELECT 'NaN'::DOUBLE AS nan, 1.5 AS x",
                          "--format", "json").stdout)
    assert rows == [{"nan": None, "x": 1.5}]
