"""permission_drift: a grant beyond an agent's declared scope, raised on the target agent naming the
actor, from calls in ActionTrail and from what a new RAM snapshot changed; one Slack alert per call
when privilege_escalation reports the actor of the same call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor, load_inventory
from models.ram import diff
from pipeline.core.config import Config
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.ram.snapshots import save_snapshot
from pipeline.ram.sync import ram_sync
from pipeline.service.alerting.outbox import CONSOLE, preview
from pipeline.store.store import Store
from tests.conftest import ROOT, write_ndjson
from tests.fakes.ram import FakeRam
from tests.ram.conftest import demo_snapshot, ram_config

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
MakeEvent = Callable[..., dict[str, Any]]


def ram_call(make_event: MakeEvent, n: int, name: str, params: dict[str, Any], *, by: str = "alice",
             **extra: Any) -> dict[str, Any]:
    """RAM user ``by`` (alice is admin-alice) calling RAM API ``name``."""
    return make_event(n, eventName=name, serviceName="Ims", eventSource="ims.aliyuncs.com", eventRW="Write",
                      isGlobal=True, requestParameters=params, sourceIpAddress="198.18.7.21",
                      eventTime=(T0 + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      userIdentity={"type": "ram-user", "accountId": "1384926508761234", "userName": by,
                                    "principalId": "2001", "accessKeyId": f"LTAI5t{by}"}, **extra)


def detect(store: Store, tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if events:
        path = write_ndjson(tmp_path / f"e{len(list(tmp_path.iterdir()))}.ndjson", events)
        assert ingest_files(store, [path], Attributor(INVENTORY)).quarantined == 0
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


def test_a_new_snapshot_shows_drift_nobody_logged(store: Store, tmp_path, make_event, fake_ram: FakeRam,
                                                  api_for: Callable[..., Any]):
    ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert drift_of(detect(store, tmp_path, [])) == []  # the first snapshot is where history starts
    fake_ram.roles["EtlRole"]["policies"].append(["System", "AdministratorAccess"])
    fake_ram.users["cms-reader"]["groups"].append("admins")
    ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    found = {f["agent"]: f for f in drift_of(detect(store, tmp_path, []))}
    assert set(found) == {"etl-pipeline", "monitor-readonly"}
    etl = found["etl-pipeline"]
    assert etl["summary"] == ("etl-pipeline: AdministratorAccess (System) attached to role/EtlRole seen by ram sync "
                              "(snapshot 2); who did it is not in RAM, beyond its declared scope: * on *")
    assert (etl["event_ids"], etl["evidence"]["source"], etl["severity"]) == ([], "ram snapshot", "critical")
    assert found["monitor-readonly"]["evidence"]["change"] == "joined"
    assert sorted(f["id"] for f in drift_of(detect(store, tmp_path, []))) == sorted(
        f["id"] for f in found.values())  # each snapshot is scored once: nothing new
    # the call behind it, arriving late from ActionTrail, is the same finding (now naming the actor)
    late = ram_call(make_event, 2, "AttachPolicyToRole", {"RoleName": "EtlRole", "PolicyName": "AdministratorAccess",
                                                          "PolicyType": "System"})
    after = drift_of(detect(store, tmp_path, [late]))
    assert len(after) == 2 and {f["id"] for f in after} == {f["id"] for f in found.values()}
    assert late["eventId"] in next(f for f in after if f["agent"] == "etl-pipeline")["event_ids"]


def test_a_principal_unread_in_one_snapshot_is_not_drift():
    before, after = demo_snapshot(), demo_snapshot()
    from dataclasses import replace

    from models.ram import SyncError
    before.users["ci-deploy"] = replace(before.users["ci-deploy"], policies=())  # its policies could not be read
    before.errors.append(SyncError("user/ci-deploy", "ListPoliciesForUser", "NoPermission", "refused"))
    assert [c for c in diff(before, after) if c.principal == "user/ci-deploy"] == []
    before.errors.clear()
    assert {c.policy for c in diff(before, after) if c.principal == "user/ci-deploy"} == {
        ("Custom", "CiDeployer"), ("System", "AdministratorAccess")}
