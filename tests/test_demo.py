"""The demo runs end to end on a fresh machine: generate, write an OSS dump, ingest, summarize."""

from __future__ import annotations

import json
import re

import pytest

from models.inventory import load_inventory
from pipeline.demo import synthetic
from tests.conftest import REAL_ATTACKS, ROOT, assert_one_line_error, kill_after_commits, run_cli


@pytest.mark.slow  # builds the demo
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


@pytest.mark.slow  # builds the demo
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


# -- the demo's store is the one every command reads ----------------------------------------------
def test_after_the_demo_status_works_with_no_flags(demo_checkout):
    result = run_cli("status", cwd=demo_checkout)
    assert result.returncode == 0, result.stderr
    assert "data/trailwarden.duckdb" in result.stdout and "events" in result.stdout
    assert not (demo_checkout / "data" / "demo.duckdb").exists()


def test_the_demo_never_replaces_a_store_that_is_not_its_own(tmp_path):
    db = tmp_path / "real.duckdb"
    assert run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(db)).returncode == 0
    before = db.read_bytes()
    result = run_cli("demo", "--db", str(db), "--days", "14", cwd=tmp_path)
    assert_one_line_error(result, 2, f"{db} holds a store that is not the demo's; pass --db OTHER")
    assert db.read_bytes() == before
    (tmp_path / "junk.duckdb").write_text("not a store")
    assert run_cli("demo", "--db", str(tmp_path / "junk.duckdb"), "--days", "14", cwd=tmp_path).returncode == 2
    assert (tmp_path / "junk.duckdb").read_text() == "not a store"


@pytest.mark.slow  # builds the demo
def test_the_demo_replaces_its_own_store_and_marks_it(tmp_path):
    db = tmp_path / "d.duckdb"
    for _ in range(2):  # the second run replaces the first's store
        result = run_cli("demo", "--db", str(db), "--days", "14", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    rows = json.loads(run_cli("query", "SELECT name, value FROM pipeline_state WHERE name = 'demo'",
                              "--db", str(db), "--format", "json", cwd=tmp_path).stdout)
    assert len(rows) == 1 and rows[0]["value"].endswith("Z")
    assert not list(tmp_path.glob("*.demo-building*"))  # built beside it, then moved into place


@pytest.mark.slow  # builds the demo, and kills a process
def test_a_demo_killed_half_way_leaves_the_old_store_and_a_retry_finishes(tmp_path):
    db = tmp_path / "d.duckdb"
    assert run_cli("demo", "--db", str(db), "--days", "14", cwd=tmp_path).returncode == 0
    before = db.read_bytes()
    kill_after_commits("\nfrom pipeline.cli.main import main\nmain()\n", ["demo", "--db", str(db), "--days", "14"],
                       commits=3)
    assert (tmp_path / "d.duckdb.demo-building").exists()  # killed while building
    assert db.read_bytes() == before  # the old demo store is untouched
    result = run_cli("demo", "--db", str(db), "--days", "14", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(run_cli("status", "--db", str(db), "--format", "json").stdout)["quarantined"] == 0


@pytest.mark.slow  # builds the demo
def test_where_no_config_is_found_the_demo_writes_one_and_never_overwrites_it(tmp_path):
    result = run_cli("demo", "--days", "14", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "config" / "trailwarden.yaml"
    assert "Wrote config/trailwarden.yaml" in result.stdout
    for command in (["status"], ["agents", "--format", "json"], ["replay", "ci-deployer", "--since", "7d"]):
        ran = run_cli(*command, cwd=tmp_path)
        assert ran.returncode == 0, (command, ran.stderr)
    assert "ci-deployer" in run_cli("agents", cwd=tmp_path).stdout  # the sample inventory is configured
    written.write_text(written.read_text() + "# mine now\n")
    again = run_cli("demo", "--days", "14", cwd=tmp_path)
    assert again.returncode == 0 and "Wrote" not in again.stdout
    assert written.read_text().endswith("# mine now\n")


# the first (most harmful) act each planted incident's headline must lead with (issue 16)
DEMO_HEADLINES = {
    "ci-deployer": "attached AdministratorAccess to user svc-backup2",
    "admin-alice": "stopped the audit trail",
    "monitor-readonly": "tried to read 36 secrets (refused)",
    "root-account:1384926508761234": "signed in to the console",
    "ram-user:ops-debug": "opened security group",
    "vendor-acme": "read object",
    "etl-pipeline": "read 40 objects",
    # the multi-account incidents (issue 19): the staging key's AssumeRole, what it then did with
    # the production role (an incident of the role's, naming its origin), the undeclared account
    "staging-ci": "assumed role ProdDeployRole",
    "prod-deploy-role": "opened security group sg-bp1payments01",
    "nightly-backup": "read 3 objects",
}


@pytest.mark.slow
def test_the_demo_alerts_are_one_short_message_per_incident_led_by_the_worst_act(demo_checkout):
    """Issue 16's target: the planted incidents are one top-level message each (every other
    detail in their threads; the cross-account one is two: the staging key's and the production
    role's it used), each at most 12 lines before its thread, whose headline - also the
    notification text - names the incident's most harmful act, most severe incident first."""
    from pipeline.service.alerting.messages import Message, visible_lines

    result = run_cli("alert", "--dry-run", "--format", "json", cwd=demo_checkout)
    assert result.returncode == 0, result.stderr
    messages = json.loads(result.stdout)["messages"]
    top = [m for m in messages if m["kind"] == "alert" and m["thread_ts"] is None]
    assert sorted(m["agent"] for m in top) == sorted(DEMO_HEADLINES)
    assert {i.agent for i in synthetic.INCIDENTS} | {"prod-deploy-role"} == set(DEMO_HEADLINES)
    (role,) = [m for m in top if m["agent"] == "prod-deploy-role"]  # whose session it was
    assert "through a role session started by `staging-ci` in account `1779304125568802`" in json.dumps(role)
    for m in top:
        assert visible_lines(Message(text=m["text"], blocks=m["blocks"])) <= 12, m["text"]
        assert m["text"].startswith(f"{m['agent']} {DEMO_HEADLINES[m['agent']]}"), m["text"]
        assert m["blocks"][1]["text"]["text"] == m["text"]  # the headline, right under the severity
    severities = [m["blocks"][0]["text"]["text"].split(":")[0] for m in top]
    order = ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
    assert severities == sorted(severities, key=order.index)  # most severe first
    replies = [m for m in messages if m["kind"] == "detail"]
    assert {m["agent"] for m in replies} == set(DEMO_HEADLINES) and len(replies) >= len(top)
    everything = json.dumps(messages)
    assert not re.search(r"\bnan\b", everything) and "baseline:" not in everything  # no internal dumps
