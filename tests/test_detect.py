"""detect, findings, agents, policy simulate and re-attribution, as users drive them."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

import detectors
from detectors.base import SEVERITIES, Detector, Finding
from models.inventory import Attributor, Inventory, load_inventory
from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.store.attribution import reattribute_if_changed
from pipeline.store.store import open_store
from tests.conftest import ROOT, assert_one_line_error, run_cli, write_ndjson

CI_AGENT = {
    "name": "ci", "purpose": "deploys", "owner": "platform", "environment": "prod",
    "identities": ["ram-user:ci-deploy"],
    "policies": [{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"}]}],
}


def _inventory(*agents: dict[str, Any]) -> Inventory:
    return Inventory.model_validate({"agents": list(agents)})


def _events(make_event, start: datetime, names: list[str]) -> list[dict[str, Any]]:
    return [make_event(i, eventName=n, eventTime=(start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"))
            for i, n in enumerate(names)]


def _store_with(store, tmp_path, events, inventory) -> None:
    write_ndjson(tmp_path / "e.jsonl", events)
    ingest_files(store, [tmp_path / "e.jsonl"], Attributor(inventory))


# -- the registry (each detector's declared contract: tests/detectors/test_catalogue.py) ------------
def test_config_overrides_are_validated():
    with pytest.raises(UsageError) as err:
        detectors.build({"out_of_scope": {"dedup_windw": "2h"}}, "cfg.yaml")
    assert err.value.key == "detectors.out_of_scope.dedup_windw" and err.value.path == "cfg.yaml"
    with pytest.raises(UsageError, match="unknown detector"):
        detectors.build({"no_such_detector": {}}, "cfg.yaml")
    built = {d.id: d for d in detectors.build({"out_of_scope": {"dedup_window": "2h"}})}
    assert built["out_of_scope"].dedup_window == timedelta(hours=2)


def test_a_detector_can_be_turned_off(store, tmp_path, make_event):
    built = {d.id for d in detectors.build({"new_source": {"enabled": False}, "odd_hours": {"enabled": True}})}
    assert "new_source" not in built and "odd_hours" in built
    with pytest.raises(UsageError) as err:
        detectors.build({"new_source": {"enabled": "no"}}, "cfg.yaml")
    assert err.value.key == "detectors.new_source.enabled"
    inv = _inventory(CI_AGENT)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    _store_with(store, tmp_path, _events(make_event, start, ["RunInstances"]), inv)
    report = run_detect(store, Config(detectors={"out_of_scope": {"enabled": False}}), inv,
                        since=start - timedelta(hours=1), until=start + timedelta(hours=1))
    assert report.new == 0 and "out_of_scope" not in report.detectors
    assert list_findings(store) == []


# -- detect ------------------------------------------------------------------------------------
def test_detect_is_idempotent_over_a_window(store, tmp_path, make_event):
    inv = _inventory(CI_AGENT)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    _store_with(store, tmp_path, _events(make_event, start, ["DescribeInstances", "RunInstances", "RunInstances"]), inv)
    window = {"since": start - timedelta(hours=1), "until": start + timedelta(hours=1)}
    first = run_detect(store, Config(), inv, **window)
    again = run_detect(store, Config(), inv, **window)
    assert (first.new, again.new, again.extended) == (1, 0, 0)
    rows = list_findings(store)
    assert len(rows) == 1 and rows[0]["event_count"] == 2
    assert rows[0]["evidence"]["action"] == "ecs:RunInstances"


def test_detect_without_flags_scores_only_what_is_new(store, tmp_path, make_event):
    inv = _inventory(CI_AGENT)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    _store_with(store, tmp_path, _events(make_event, start, ["RunInstances"]), inv)
    assert run_detect(store, Config(), inv).new == 1
    assert run_detect(store, Config(), inv).since is None  # nothing new
    later = [make_event(50, eventName="RunInstances", eventTime="2026-11-02T03:20:00Z")]
    write_ndjson(tmp_path / "later.jsonl", later)
    ingest_files(store, [tmp_path / "later.jsonl"], Attributor(inv))
    report = run_detect(store, Config(), inv)
    assert (report.new, report.extended) == (0, 1)  # the same burst grew, no second finding
    assert list_findings(store)[0]["event_count"] == 2


class _Broken(Detector):
    """Always fails. Known gaps: everything."""

    id = "broken"
    severity = "low"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "60m"}
    columns = ("event_id",)

    def score(self, events, models, now) -> list[Finding]:
        raise RuntimeError("boom")


def test_a_failing_detector_is_recorded_and_the_others_still_run(store, tmp_path, make_event, monkeypatch):
    inv = _inventory(CI_AGENT)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    _store_with(store, tmp_path, _events(make_event, start, ["RunInstances"]), inv)
    real = detectors.registry()
    monkeypatch.setattr(detectors, "registry", lambda: {**real, "broken": _Broken})
    report = run_detect(store, Config(), inv, since=start, until=start + timedelta(hours=1))
    assert report.failed == ["broken"]
    assert "boom" in report.detectors["broken"]["error"]
    assert report.new == 1 and list_findings(store)[0]["detector"] == "out_of_scope"


class _Flaky(Detector):
    """Fails while ``broken`` is set; else one finding per event. Known gaps: everything."""

    id = "flaky"
    severity = "low"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "60m"}
    columns = ("event_id",)
    broken = True

    def score(self, events, models, now) -> list[Finding]:
        if _Flaky.broken:
            raise RuntimeError("boom")
        return [Finding(detector=self.id, agent=str(r.agent), severity="low", score=0.1,
                        first_seen=r.event_time.to_pydatetime(), last_seen=r.event_time.to_pydatetime(),
                        summary="seen", event_ids=[r.event_id], evidence={}, dedup_key=r.event_id)
                for r in events.itertuples(index=False)]


def test_events_a_failed_detector_missed_are_scored_once_it_works(store, tmp_path, make_event, monkeypatch):
    """Without flags, detect moves its watermark on; the detector that failed keeps the span it
    missed and scores it alone next time, even when nothing new was ingested."""
    inv = _inventory(CI_AGENT)
    start = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    _store_with(store, tmp_path, _events(make_event, start, ["DescribeInstances", "DescribeInstances"]), inv)
    real = detectors.registry()
    monkeypatch.setattr(detectors, "registry", lambda: {**real, "flaky": _Flaky})
    monkeypatch.setattr(_Flaky, "broken", True)
    assert run_detect(store, Config(), inv).failed == ["flaky"]
    again = run_detect(store, Config(), inv)  # still broken: still reported, the span kept
    assert again.failed == ["flaky"] and not [f for f in list_findings(store) if f["detector"] == "flaky"]
    monkeypatch.setattr(_Flaky, "broken", False)
    fixed = run_detect(store, Config(), inv)
    assert fixed.failed == [] and fixed.new == 2
    assert sorted(f["detector"] for f in list_findings(store)) == ["flaky", "flaky"]
    assert run_detect(store, Config(), inv).new == 0  # scored once: nothing left to retry


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, demo_checkout) -> Path:
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"  # train and detect write: a copy
    shutil.copyfile(demo_checkout / "data" / "trailwarden.duckdb", db)
    return db


def test_train_stores_the_baselines_detect_then_uses(demo_db):
    """train --until T refits for T's UTC day: the rows detect loads for a window on that day."""
    with open_store(demo_db, read_only=True) as store:
        last = store.con.execute("SELECT max(event_time) FROM events").fetchall()[0][0].astimezone(UTC)
    day = last.replace(hour=0, minute=0, second=0, microsecond=0)
    trained = run_cli("train", "--db", str(demo_db), "--until", f"{day:%Y-%m-%d}T13:45:00Z", "--format", "json")
    assert trained.returncode == 0, trained.stderr
    agents = {row["agent"] for row in json.loads(trained.stdout)}
    assert "ci-deployer" in agents

    def stored() -> dict[str, Any]:
        with open_store(demo_db, read_only=True) as store:
            return dict(store.con.execute(
                "SELECT agent, fitted_at FROM baselines WHERE history_end = ?", [day]).fetchall())

    before = stored()
    assert set(before) == agents
    scored = run_cli("detect", "--db", str(demo_db), "--since", f"{day:%Y-%m-%d}T00:00:00Z",
                     "--until", f"{day:%Y-%m-%d}T06:00:00Z")
    assert scored.returncode == 0, scored.stderr
    assert stored() == before  # loaded as trained, not fitted again


def test_train_says_which_agents_are_too_new_to_be_judged(demo_db):
    """Issue 15: a brand-new agent (under 7 active days) gets no learned-behaviour finding above
    low, and train says so, naming it (on stderr beside JSON, so stdout stays parseable)."""
    with open_store(demo_db, read_only=True) as store:
        first = store.con.execute("SELECT min(event_time) FROM events").fetchall()[0][0].astimezone(UTC)
    early = f"{first + timedelta(days=4):%Y-%m-%d}T12:00:00Z"
    trained = run_cli("train", "--db", str(demo_db), "--until", early, "--format", "json")
    assert trained.returncode == 0, trained.stderr
    rows = json.loads(trained.stdout)
    assert rows and not any(row["learned"] for row in rows)
    assert f"{len(rows)} agents have under 7 active days ({rows[0]['agent']}" in trained.stderr
    assert "raise nothing above low about them" in trained.stderr
    table = run_cli("train", "--db", str(demo_db), "--until", early)
    assert "not learned yet" in table.stdout


def test_findings_json_has_the_designed_fields(demo_db):
    out = run_cli("findings", "--db", str(demo_db), "--format", "json")
    rows = json.loads(out.stdout)
    assert rows
    for row in rows:
        assert {"id", "detector", "agent", "severity", "score", "first_seen", "last_seen", "summary",
                "event_ids", "evidence", "status"} <= set(row)
        assert row["severity"] in SEVERITIES and 0 <= row["score"] <= 1
        assert row["first_seen"].endswith("Z") and isinstance(row["event_ids"], list)
        assert row["status"] == "open" and row["summary"]
    critical = json.loads(run_cli("findings", "--db", str(demo_db), "--min-severity", "critical",
                                  "--agent", "ci-deployer", "--format", "json").stdout)
    assert critical and all(r["severity"] == "critical" and r["agent"] == "ci-deployer" for r in critical)


def test_detect_again_adds_nothing_and_ids_are_stable(demo_db, tmp_path):
    before = json.loads(run_cli("findings", "--db", str(demo_db), "--format", "json").stdout)
    out = run_cli("detect", "--db", str(demo_db), "--since", "30d", "--config", str(ROOT / "config" / "trailwarden.yaml"))
    assert out.returncode == 0, out.stderr
    assert "0 new findings" in out.stdout
    after = json.loads(run_cli("findings", "--db", str(demo_db), "--format", "json").stdout)
    assert sorted(r["id"] for r in before) == sorted(r["id"] for r in after)


def test_detect_rejects_a_backwards_window(demo_db):
    result = run_cli("detect", "--db", str(demo_db), "--since", "2026-11-02", "--until", "2026-11-01")
    assert result.returncode == 2 and "--since" in result.stderr


def test_agents_lists_inventory_activity_and_unregistered(demo_db):
    out = run_cli("agents", "--db", str(demo_db), "--format", "json",
                  "--config", str(ROOT / "config" / "trailwarden.yaml"))
    rows = {r["agent"]: r for r in json.loads(out.stdout)}
    assert {"ci-deployer", "monitor-readonly", "vendor-acme"} <= set(rows)
    assert rows["ci-deployer"]["open_findings"] > 0
    assert rows["vendor-acme"]["flags"][0] == "expired"  # lists are JSON arrays (issue 13, item 15)
    assert rows["ram-user:ops-debug@prod"]["flags"] == ["unregistered"]  # several accounts: with its home
    assert rows["monitor-readonly"]["last_activity"] is not None


def test_agents_flags_a_review_overdue_and_an_agent_idle_for_90_days(tmp_path, make_event):
    now = datetime.now(UTC)
    agents = [{"name": name, "purpose": "p", "owner": "sre", "environment": "prod", "identities": [f"ram-user:{name}"],
               "review_by": (now + timedelta(days=review)).date().isoformat()}
              for name, review in (("stale-bot", -1), ("busy-bot", 30))]
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": agents}))
    config = tmp_path / "tw.yaml"
    config.write_text(json.dumps({"database": str(tmp_path / "s.duckdb"), "inventory": str(tmp_path / "agents.yaml")}))
    events = [make_event(i, eventTime=f"{now - timedelta(days=ago):%Y-%m-%dT%H:%M:%SZ}",
                         userIdentity={**make_event()["userIdentity"], "userName": name, "accessKeyId": ""})
              for i, (name, ago) in enumerate((("stale-bot", 100), ("busy-bot", 100), ("busy-bot", 2)))]
    ingested = run_cli("--config", str(config), "ingest", "--file", str(write_ndjson(tmp_path / "e.jsonl", events)))
    assert ingested.returncode == 0, ingested.stderr
    out = run_cli("--config", str(config), "agents", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["agent"]: r for r in json.loads(out.stdout)}
    assert rows["stale-bot"]["flags"] == ["review overdue", "idle 90d+"]
    assert rows["busy-bot"]["flags"] == []  # review due in a month, active two days ago
    table = run_cli("--config", str(config), "agents").stdout
    assert "review overdue, idle 90d+" in next(line for line in table.splitlines() if "stale-bot" in line)


def test_findings_filters_that_name_nothing_exit_2_naming_the_value(demo_db):
    base = ("findings", "--db", str(demo_db), "--config", str(ROOT / "config" / "trailwarden.yaml"))
    assert_one_line_error(run_cli(*base, "--agent", "no-such-agent"), 2, "--agent", "no-such-agent")
    assert_one_line_error(run_cli(*base, "--detector", "odd_hour"), 2, "--detector", "odd_hour")
    assert_one_line_error(run_cli(*base, "--agent", "ram-user:ci-deploy"), 2, "ram-user:ci-deploy",
                          "identity of agent ci-deployer")
    # known names with nothing to list are not errors: an agent never seen, an unregistered one, a quiet detector
    for args in (("--agent", "admin-alice"), ("--agent", "ram-user:ops-debug"), ("--detector", "expired_agent"),
                 ("--agent", "terraform-apply", "--detector", "odd_hours")):
        result = run_cli(*base, *args, "--format", "json")
        assert result.returncode == 0, (args, result.stderr)


def test_policy_simulate_single_and_batch(tmp_path):
    policy = ROOT / "config" / "policies" / "ci-deployer.json"
    base = ["policy", "simulate", "--policy", str(policy)]
    ok = run_cli(*base, "--action", "ecs:RunInstances", "--resource", "acs:ecs:cn-hangzhou:1:instance/i-1",
                 "--context", "acs:SourceIp=203.0.113.9")
    assert ok.stdout.strip() == "Allow"
    denied = run_cli(*base, "--action", "ecs:RunInstances", "--resource", "acs:ecs:cn-hangzhou:1:instance/i-1",
                     "--context", "acs:SourceIp=185.220.101.34")
    assert denied.stdout.strip() == "ExplicitDeny" and "Statement[3]" in denied.stderr
    implicit = run_cli(*base, "--action", "ram:CreateUser", "--resource", "acs:ram::1:user/x",
                       "--context", "acs:SourceIp=203.0.113.9")
    assert implicit.stdout.strip() == "ImplicitDeny"
    by_agent = run_cli("policy", "simulate", "--agent", "ci-deployer", "--action", "oss:GetObject",
                       "--resource", "acs:oss:*:1:release-artifacts/a.tar.gz", "--context", "acs:SourceIp=203.0.113.1",
                       "--config", str(ROOT / "config" / "trailwarden.yaml"))
    assert by_agent.stdout.strip() == "Allow"

    doc = json.loads(policy.read_text())
    lines = [
        {"id": 1, "policies": [doc], "request": {"action": "ecs:RunInstances", "resource": "acs:ecs:x:1:instance/i",
                                                 "context": {"acs:SourceIp": "203.0.113.9"}}},
        {"id": "two", "policies": [doc], "request": {"action": "ecs:RunInstances", "resource": "acs:ecs:x:1:instance/i",
                                                     "context": {"acs:SourceIp": "8.8.8.8"}}},
        {"id": 3, "policies": [doc], "request": {"action": "ram:CreateUser", "resource": "*"}},
    ]
    batch = tmp_path / "reqs.jsonl"
    batch.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = run_cli("policy", "simulate", "--batch", str(batch))
    assert out.returncode == 0, out.stderr
    assert [json.loads(x) for x in out.stdout.splitlines()] == [
        {"id": 1, "decision": "Allow"}, {"id": "two", "decision": "ExplicitDeny"},
        # no acs:SourceIp at all: NotIpAddress on an absent key holds, so the Deny applies
        {"id": 3, "decision": "ExplicitDeny"}]


def test_policy_simulate_reports_invalid_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "policies": [{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "x:y", "Resource": "*", "Condition": {"NumericEqualsIfExists": {"a": "1"}}}]}],
        "request": {"action": "x:y", "resource": "*"}}) + "\nnot json\n")
    out = run_cli("policy", "simulate", "--batch", str(bad))
    assert out.returncode == 2
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert "IfExists" in lines[0]["error"] and lines[1]["id"] is None and "line 2" in lines[1]["error"]
    single = run_cli("policy", "simulate", "--action", "x:y", "--resource", "*")
    assert single.returncode == 2 and "--policy" in single.stderr


def test_inventory_with_an_invalid_policy_exits_2_naming_the_statement(tmp_path):
    inv = tmp_path / "agents.yaml"
    inv.write_text("agents:\n  - name: a\n    purpose: p\n    owner: o\n    environment: e\n"
                   "    identities: [ram-user:x]\n    policies:\n"
                   "      - {Version: '1', Statement: [{Effect: Allow, Action: 'x:y', Resource: '*',"
                   " Condition: {'ForAnyValue:StringEquals': {k: v}}}]}\n")
    with pytest.raises(UsageError) as err:
        load_inventory(inv)
    assert err.value.key == "agents[0].policies[0].Statement[0].Condition.ForAnyValue:StringEquals"
    assert "agent 'a'" in str(err.value)


def test_system_policies_can_be_named(tmp_path):
    inv = tmp_path / "agents.yaml"
    inv.write_text("agents:\n  - {name: ro, purpose: p, owner: o, environment: e, identities: [role:Ro],"
                   " policies: [{system: ReadOnlyAccess}]}\n")
    agent = load_inventory(inv).agents[0]
    assert "*:Describe*" in agent.policies[0]["Statement"][0]["Action"]
    inv.write_text(inv.read_text().replace("ReadOnlyAccess", "GodMode"))
    with pytest.raises(UsageError, match="unknown system policy"):
        load_inventory(inv)


# -- re-attribution -----------------------------------------------------------------------------
def test_changing_the_inventory_reattributes_stored_events(store, tmp_path, make_event):
    stranger = {"type": "ram-user", "principalId": "2", "accountId": "1", "userName": "ops-debug"}
    events = [make_event(1), make_event(2, userIdentity=stranger)]
    before = _inventory(CI_AGENT)
    _store_with(store, tmp_path, events, before)
    reattribute_if_changed(store, before)
    agents = sorted(r[0] for r in store.con.execute("SELECT agent FROM events").fetchall())
    assert agents == ["ci", "ram-user:ops-debug"]
    adopted = _inventory(CI_AGENT, {"name": "debugger", "purpose": "p", "owner": "o", "environment": "e",
                                    "identities": ["ram-user:ops-debug"]})
    assert reattribute_if_changed(store, adopted) == 1
    assert reattribute_if_changed(store, adopted) is None  # unchanged inventory: no work
    agents = sorted(r[0] for r in store.con.execute("SELECT agent FROM events").fetchall())
    assert agents == ["ci", "debugger"]
    key_owner = _inventory({**CI_AGENT, "identities": ["access-key:LTAI5tCiDeploy7Qx2mK"]})
    reattribute_if_changed(store, key_owner)
    agents = sorted(r[0] for r in store.con.execute("SELECT agent FROM events").fetchall())
    assert agents == ["ci", "ram-user:ops-debug"]
