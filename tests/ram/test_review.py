"""`review`: each agent's declared scope against what RAM grants (a stored snapshot) and what it
used (its events), with a verdict and reasons; and the account's undeclared principals."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor, Inventory, load_inventory
from models.ram import AccessKey, Policy, Snapshot, User
from pipeline.cli.views.review import review_markdown
from pipeline.ingest.run import ingest_files
from pipeline.investigate.review import review
from pipeline.ram.snapshots import load_snapshot, save_snapshot
from pipeline.ram.sync import ram_sync
from pipeline.store.store import Store
from tests.conftest import ROOT, assert_one_line_error, run_cli, write_ndjson
from tests.fakes.ram import FakeRam
from tests.ram.conftest import demo_snapshot, ram_config

NOW = datetime.now(UTC)
INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")


def _agent(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in result["agents"] if a["agent"] == name)


def _messages(result: dict[str, Any], name: str, kind: str | None = None, level: str | None = None) -> list[str]:
    return [r["message"] for r in _agent(result, name)["reasons"]
            if (kind is None or r["kind"] == kind) and (level is None or r["level"] == level)]


def _use(store: Store, tmp_path: Path, make_event: Callable[..., dict[str, Any]], user: str,
         names: list[str], inventory: Inventory = INVENTORY) -> None:
    """``user`` called ``names`` (ECS APIs) yesterday."""
    when = NOW - timedelta(days=1)
    events = [make_event(i, eventName=n, eventTime=f"{when + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ}",
                         userIdentity={"type": "ram-user", "accountId": "1384926508761234", "userName": user,
                                       "principalId": "1"}) for i, n in enumerate(names)]
    ingest_files(store, [write_ndjson(tmp_path / f"{user}.jsonl", events)], Attributor(inventory))


def test_the_demo_accounts_planted_problems_are_each_named(store: Store, tmp_path, make_event):
    save_snapshot(store, demo_snapshot(NOW), source="demo")
    _use(store, tmp_path, make_event, "ci-deploy", ["DescribeInstances", "RunInstances"])
    result = review(store, INVENTORY, load_snapshot(store), now=NOW)
    ci = _agent(result, "ci-deployer")
    assert ci["verdict"] == "fail"
    [drift] = _messages(result, "ci-deployer", "drift")
    assert drift == ("AdministratorAccess (System) (user/ci-deploy) Statement[0] allows * on * beyond the declared "
                     "scope (not declared)")
    assert ci["drift"] == [{"policy": "AdministratorAccess (System)", "statement": "Statement[0]", "actions": ["*"],
                            "resources": ["*"], "why": "not declared", "attached": "user/ci-deploy"}]
    [unused] = _messages(result, "ci-deployer", "unused")
    assert "ecs:DeleteInstance" in unused and "ecs:DescribeInstances" not in unused and "ecs:RunInstances" not in unused
    assert any("automation on a long-lived AccessKey" in m for m in _messages(result, "ci-deployer", "credentials"))
    vendor = _messages(result, "vendor-acme")
    assert ("expired 2026-11-14 but RAM still grants it: active AccessKey LTAI5tVendorAcme2Wd8N; attached "
            "VendorAcme (Custom)") in vendor
    assert any("LTAI5tVendorAcme2Wd8N of user/vendor-acme is 400 days old" in m for m in vendor)
    assert _messages(result, "admin-alice", "credentials", "fail") == ["user/alice has console access without MFA"]
    assert _agent(result, "admin-alice")["granted"] == [
        {"principal": "user/alice", "policy": "AdminAlice (Custom)", "via": "admins"}]
    undeclared = {u["principal"]: u for u in result["undeclared"]}
    assert set(undeclared) == {"user/legacy-sync", "user/ops-debug", "user/svc-backup2"}  # service-linked apart
    assert undeclared["user/legacy-sync"]["flags"] == ["no activity seen"]
    assert "admin" in undeclared["user/svc-backup2"]["flags"]
    # the staging agent and the production deploy role (issue 19's demo) are not in this RAM
    # (the demo account's): each is a warning naming its identity
    assert result["summary"] == {"pass": 0, "warn": 6, "fail": 3, "agents": 9, "undeclared": 3}
    assert any("ram-user:ci-staging is not in RAM" in m for m in _messages(result, "staging-ci"))


def test_an_agent_within_its_scope_passes(store: Store, tmp_path, make_event):
    inventory = Inventory.model_validate({"agents": [{
        "name": "etl", "purpose": "etl", "owner": "data", "environment": "production", "identities": ["role:EtlRole"],
        "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "rds:Describe*", "Resource": "*"}]}]}]})
    snap = Snapshot(NOW)
    snap.roles["EtlRole"] = replace(demo_snapshot(NOW).roles["EtlRole"], policies=(("Custom", "Narrow"),))
    snap.policies[("Custom", "Narrow")] = Policy("Custom", "Narrow", "v1", document={  # within rds:Describe*
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": "rds:DescribeDB*", "Resource": "*"}]})
    when = NOW - timedelta(days=2)
    event = make_event(1, eventName="DescribeDBInstances", serviceName="Rds", eventTime=f"{when:%Y-%m-%dT%H:%M:%SZ}",
                       userIdentity={"type": "assumed-role", "accountId": "1", "userName": "EtlRole:s1",
                                     "principalId": "3:s1", "accessKeyId": "STS.x"})
    ingest_files(store, [write_ndjson(tmp_path / "e.jsonl", [event])], Attributor(inventory))
    result = review(store, inventory, snap, now=NOW)
    assert [r["kind"] for r in _agent(result, "etl")["reasons"]] == ["not_granted"]  # rds:DescribeRegions...
    inventory = Inventory.model_validate({"agents": [{**inventory.agents[0].model_dump(exclude_none=True), "policies": [
        {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "rds:DescribeDB*", "Resource": "*"}]}]}]})
    result = review(store, inventory, snap, now=NOW)
    assert _agent(result, "etl")["reasons"] == [] and _agent(result, "etl")["verdict"] == "pass"
    assert result["summary"]["pass"] == 1


def test_declared_but_not_granted_and_a_missing_identity_are_warned():
    snap = demo_snapshot(NOW)
    snap.users["cms-reader"] = replace(snap.users["cms-reader"], policies=())
    del snap.roles["EtlRole"]
    result = review(None, INVENTORY, snap, now=NOW)
    assert any(m.startswith("declared ecs:Describe*, rds:Describe*") and m.endswith("but RAM does not grant it")
               for m in _messages(result, "monitor-readonly", "not_granted", "warn"))
    assert _messages(result, "etl-pipeline", "inventory") == [
        "declared identity role:EtlRole is not in RAM (snapshot None): removed, renamed, or a stale inventory"]


@pytest.mark.parametrize("document, why", [
    ("not json at all", "its document is not a JSON object"),
    (json.dumps({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*",
                                                "Condition": {"StringEqualsIfExists": {"acs:SourceVpc": "vpc-1"}}}]}),
     "is not RAM policy the engine can read"),
])
def test_a_policy_the_engine_cannot_read_fails_the_review(store: Store, api_for: Callable[..., Any], document: str,
                                                          why: str):
    """Never silently treated as granting nothing: RAM returned it, the engine cannot say what it grants."""
    with FakeRam(demo_snapshot(), documents={("Custom", "MonitorReadonly"): document}) as fake:
        ram_sync(store, ram_config(fake.endpoint), api=api_for(fake))
    result = review(store, INVENTORY, load_snapshot(store), now=NOW)
    [message] = _messages(result, "monitor-readonly", "unreadable", "fail")
    assert message.startswith("policy MonitorReadonly (Custom)") and why in message
    assert message.endswith("what it grants is unknown")


def test_a_principal_that_could_not_be_read_fails(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    fake_ram.fail_next("NoPermission", action="ListPoliciesForRole", after=1)  # the second role: BackupRole
    ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    result = review(store, INVENTORY, load_snapshot(store), now=NOW)
    assert _agent(result, "nightly-backup")["verdict"] == "fail"
    assert _messages(result, "nightly-backup", "unreadable") == [
        "RAM could not be read for role/BackupRole (ListPoliciesForRole: NoPermission): what it grants is unknown"]


def test_credentials_and_hygiene():
    snap = demo_snapshot(NOW)
    snap.keys["LTAI5tCmsOld"] = AccessKey("LTAI5tCmsOld", "cms-reader", "Active", NOW - timedelta(days=200),
                                          NOW - timedelta(days=120))
    snap.users["cms-reader"] = replace(snap.users["cms-reader"], console=True, mfa=None)
    inventory = Inventory.model_validate({"agents": [
        {**INVENTORY.agent("monitor-readonly").model_dump(exclude_none=True), "owner": "TBD",
         "review_by": date(2026, 1, 1), "source_ips": ["198.51.100.10/32"]}]})
    result = review(None, inventory, snap, now=NOW)
    messages = _messages(result, "monitor-readonly")
    assert "AccessKey LTAI5tCmsOld of user/cms-reader is 200 days old (rotate within 90)" in messages
    assert "AccessKey LTAI5tCmsOld of user/cms-reader is active but unused for 120 days: deactivate it" in messages
    assert "user/cms-reader has 2 active AccessKeys (one at a time, except while rotating)" in messages
    assert "user/cms-reader has console access; whether it has MFA is unknown" in messages
    assert "no owner (owner: 'TBD')" in messages and "review_by 2026-01-01 has passed" in messages
    assert _agent(result, "monitor-readonly")["verdict"] == "warn"


def test_without_a_snapshot_nothing_passes():
    result = review(None, INVENTORY, None, now=NOW)
    assert "pass" not in {a["verdict"] for a in result["agents"]}
    assert all("no RAM snapshot" in " ".join(m["message"] for m in a["reasons"]) for a in result["agents"])


def test_markdown_keeps_hostile_names_inert():
    snap = demo_snapshot(NOW)
    name = "[click](http://evil.example)|<img src=x>*boss*\x1b[2J"
    snap.users[name] = User(name, created=NOW)
    text = review_markdown(review(None, INVENTORY, snap, now=NOW))
    row = next(line for line in text.splitlines() if "evil" in line)
    # rendered: [click](http[:]//evil.example)|<img src=x>*boss*\x1b[2J, as text
    assert r"\[click\]\(http\[:\]//evil.example\)\|\<img src=x\>\*boss\*\\x1b\[2J" in row
    assert row.count(" | ") == 4  # the name's own | did not make a column
    assert "# Permission review" in text and "## ci-deployer: FAIL" in text


@pytest.mark.slow
def test_review_and_agents_commands(tmp_path: Path, store_path_with_snapshot: Path):
    db = store_path_with_snapshot
    config = ["--config", str(ROOT / "config" / "trailwarden.yaml"), "--db", str(db)]
    result = run_cli(*config, "review", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {a["agent"]: a["verdict"] for a in data["agents"]}["ci-deployer"] == "fail"
    one = run_cli(*config, "review", "vendor-acme")
    assert one.returncode == 0 and re.search(r"vendor-acme +fail", one.stdout) and "ci-deployer" not in one.stdout
    assert "1 fail, 0 warn, 0 pass of 1 agents. RAM snapshot 1" in one.stdout
    assert_one_line_error(run_cli(*config, "review", "nobody"), 2, "not an inventory agent: nobody")
    md = run_cli(*config, "review", "--format", "markdown")
    assert md.stdout.startswith("# Permission review") and "## RAM principals no agent declares" in md.stdout
    agents = {a["agent"]: a for a in json.loads(run_cli(*config, "agents", "--format", "json").stdout)}
    assert {a: v["review"] for a, v in agents.items()} == {a["agent"]: a["verdict"] for a in data["agents"]}


@pytest.fixture
def store_path_with_snapshot(tmp_path: Path) -> Path:
    from pipeline.store.store import open_store

    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        save_snapshot(s, demo_snapshot(NOW), source="demo")
    return db
