"""The demo runs end to end on a fresh machine: generate, write an OSS dump, ingest, summarize."""

from __future__ import annotations

import json

from models.inventory import load_inventory
from pipeline import synthetic
from tests.conftest import ROOT, run_cli


def test_demo_runs_end_to_end(tmp_path):
    db = tmp_path / "demo.duckdb"
    result = run_cli("demo", "--db", str(db), "--days", "14")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Generated" in out and "Ingested" in out and "0 quarantined" in out
    for incident in synthetic.INCIDENTS:
        assert incident.what in out
    # the dump is laid out as an OSS trail delivers it
    dumps = list((tmp_path / "demo-actiontrail" / "AliyunLogs" / "Actiontrail" / "cn-hangzhou").rglob("*.gz"))
    assert len(dumps) > 300
    status = json.loads(run_cli("status", "--db", str(db), "--format", "json").stdout)
    agents = json.loads(run_cli("query", "SELECT DISTINCT agent FROM events ORDER BY 1", "--db", str(db),
                                "--format", "json").stdout)
    names = {a["agent"] for a in agents}
    inventory = {a.name for a in load_inventory(ROOT / "config" / "agents.yaml").agents}
    assert inventory <= names  # every sample agent acted
    assert "ram-user:ops-debug" in names  # the unregistered identity is kept, not dropped
    assert any(n.startswith("root-account:") for n in names)
    assert status["events"] > 10_000 and status["quarantined"] == 0


def test_demo_is_repeatable(tmp_path):
    a = run_cli("demo", "--db", str(tmp_path / "a" / "d.duckdb"), "--days", "14", "--seed", "3")
    b = run_cli("demo", "--db", str(tmp_path / "b" / "d.duckdb"), "--days", "14", "--seed", "3")
    assert a.returncode == b.returncode == 0
    line = [ln for ln in a.stdout.splitlines() if ln.startswith("Generated")]
    assert line and line[0].split(" with ")[0] == [ln for ln in b.stdout.splitlines()
                                                   if ln.startswith("Generated")][0].split(" with ")[0]


def test_incidents_are_in_the_generated_traffic():
    from datetime import UTC, datetime

    end = datetime(2026, 11, 28, tzinfo=UTC)
    events = synthetic.month(end, days=10, seed=1)
    names = {(e["userIdentity"].get("userName"), e["eventName"]) for e in events}
    assert ("alice", "StopLogging") in names
    assert ("ci-deploy", "AttachPolicyToUser") in names
    assert ("root", "ConsoleSignin") in names
    stolen = [e for e in events if e["sourceIpAddress"] == "185.220.101.34"]
    local = datetime.fromisoformat(stolen[0]["eventTime"]).astimezone(synthetic.BUSINESS_TZ)
    assert local.weekday() >= 5 and local.hour == 3  # a weekend, in the small hours
    assert [e["eventTime"] for e in events] == sorted(e["eventTime"] for e in events)
