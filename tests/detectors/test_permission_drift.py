"""permission_drift: a grant beyond an agent's declared scope, raised on the target agent naming the
actor, from calls in ActionTrail (what a new RAM snapshot changed: tests/ram/test_drift.py); one Slack alert per call
when privilege_escalation reports the actor of the same call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.inventory import load_inventory
from pipeline.core.config import Config
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ram.snapshots import save_snapshot
from pipeline.service.alerting.outbox import CONSOLE, preview
from pipeline.store.store import Store
from tests.conftest import ROOT
from tests.detectors import harness
from tests.ram.conftest import demo_snapshot, ram_call

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
def detect(store: Store, tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if events:
        harness.ingest(store, events, INVENTORY)
    report = run_detect(store, Config(), INVENTORY)
    assert not report.failed, report.detectors
    return list_findings(store)


def drift_of(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["detector"] == "permission_drift"]


@pytest.fixture
def snapshot_store(store: Store) -> Store:
    save_snapshot(store, demo_snapshot(), source="demo")
    return store


def test_an_admin_attaching_administrator_access_to_the_ci_user(snapshot_store: Store, tmp_path, make_event):
    """The textbook case: the actor was entitled to do it; the CI deployer now holds everything."""
    call = ram_call(make_event, 1, "AttachPolicyToUser",
                    {"UserName": "ci-deploy", "PolicyName": "AdministratorAccess", "PolicyType": "System"})
    findings = detect(snapshot_store, tmp_path, [call])
    [drift] = drift_of(findings)
    assert (drift["agent"], drift["severity"], drift["event_ids"]) == ("ci-deployer", "critical", [call["eventId"]])
    assert drift["summary"] == ("ci-deployer: AdministratorAccess (System) attached to user/ci-deploy by admin-alice, "
                                "beyond its declared scope: * on *")
    assert drift["evidence"]["actor"] == "admin-alice" and drift["evidence"]["actor_identity"] == "ram-user:alice"
    assert drift["evidence"]["beyond_scope"][0]["actions"] == ["*"]
    [escalation] = [f for f in findings if f["detector"] == "privilege_escalation"]
    assert escalation["agent"] == "admin-alice"
    # one call, two findings, one Slack alert: the actor's, which names the target's drift
    assert drift["evidence"]["reported_with"] == [escalation["id"]]
    assert escalation["evidence"]["drift"] == [{"agent": "ci-deployer", "finding": drift["id"], "severity": "critical"}]
    assert "beyond the declared scope of ci-deployer (permission_drift)" in escalation["summary"]
    posts = preview(snapshot_store, CONSOLE, "medium", INVENTORY).previews
    alerted = {fid for p in posts for fid in p.finding_ids}
    assert escalation["id"] in alerted and drift["id"] not in alerted


def test_the_drift_is_alerted_itself_when_its_partner_is_not(snapshot_store: Store, tmp_path, make_event):
    from pipeline.triage.lifecycle import set_status

    call = ram_call(make_event, 1, "AttachPolicyToUser",
                    {"UserName": "ci-deploy", "PolicyName": "AdministratorAccess", "PolicyType": "System"})
    findings = detect(snapshot_store, tmp_path, [call])
    [escalation] = [f for f in findings if f["detector"] == "privilege_escalation"]
    set_status(snapshot_store, [escalation["id"]], "false_positive", by="bob", reason="drill")
    alerted = {fid for p in preview(snapshot_store, CONSOLE, "medium", INVENTORY).previews for fid in p.finding_ids}
    [drift] = drift_of(findings)
    assert drift["id"] in alerted and escalation["id"] not in alerted


@pytest.mark.parametrize("name, params, expected", [
    ("AttachPolicyToUser", {"UserName": "ci-deploy", "PolicyName": "CiDeployer", "PolicyType": "Custom"}, None),
    ("AttachPolicyToUser", {"UserName": "svc-backup2", "PolicyName": "AdministratorAccess", "PolicyType": "System"},
     None),  # not an agent's principal
    ("AddUserToGroup", {"UserName": "ci-deploy", "GroupName": "admins"},
     ("critical", "ci-deployer: user/ci-deploy added to group admins (AdminAlice (Custom)) by admin-alice")),
    ("CreatePolicyVersion", {"PolicyName": "MonitorReadonly", "SetAsDefault": "true", "PolicyDocument":
                             '{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'},
     ("high", "monitor-readonly: a new default version of MonitorReadonly (Custom), which applies to "
              "user/cms-reader by admin-alice")),
    ("CreatePolicyVersion", {"PolicyName": "MonitorReadonly", "SetAsDefault": "false", "PolicyDocument":
                             '{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'}, None),
    ("UpdateRole", {"RoleName": "BackupRole", "NewAssumeRolePolicyDocument":
                    '{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Principal":"*"}]}'},
     ("critical", "nightly-backup: the trust policy of role/BackupRole changed by admin-alice")),
    ("AttachPolicyToRole", {"RoleName": "EtlRole", "PolicyName": "SomethingNew", "PolicyType": "Custom"},
     ("medium", "etl-pipeline: SomethingNew (Custom) attached to role/EtlRole by admin-alice")),
])
def test_each_kind_of_change_is_judged_against_the_declared_scope(snapshot_store: Store, tmp_path, make_event,
                                                                  name, params, expected):
    findings = drift_of(detect(snapshot_store, tmp_path, [ram_call(make_event, 1, name, params)]))
    if expected is None:
        assert findings == []
        return
    [drift] = findings
    assert drift["severity"] == expected[0] and drift["summary"].startswith(expected[1] + ", beyond its declared scope")


def test_a_failed_call_grants_nothing(snapshot_store: Store, tmp_path, make_event):
    call = ram_call(make_event, 1, "AttachPolicyToUser", {"UserName": "ci-deploy", "PolicyName": "AdministratorAccess",
                                                          "PolicyType": "System"}, errorCode="NoPermission")
    assert drift_of(detect(snapshot_store, tmp_path, [call])) == []
