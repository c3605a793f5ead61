"""permission_drift from what a new RAM snapshot changed (``ram sync`` against the fake, through the
real SDKs); the examples from calls in ActionTrail are tests/detectors/test_permission_drift.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.inventory import Attributor, load_inventory
from models.ram import diff
from pipeline.core.config import Config
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.ram.sync import ram_sync
from pipeline.store.store import Store
from tests.conftest import ROOT, write_ndjson
from tests.fakes.ram import FakeRam
from tests.ram.conftest import demo_snapshot, ram_call, ram_config

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
def detect(store: Store, tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if events:
        path = write_ndjson(tmp_path / f"e{len(list(tmp_path.iterdir()))}.ndjson", events)
        assert ingest_files(store, [path], Attributor(INVENTORY)).quarantined == 0
    report = run_detect(store, Config(), INVENTORY)
    assert not report.failed, report.detectors
    return list_findings(store)


def drift_of(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f["detector"] == "permission_drift"]


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
