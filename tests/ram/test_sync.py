"""`ram sync`: the real RAM and IMS SDKs read the fake account into a stored, dated snapshot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from models.ram import Snapshot, User
from pipeline.ram.snapshots import load_snapshot, sync_status
from pipeline.ram.sync import ram_sync
from pipeline.service.status import collect_status
from pipeline.store.store import Store
from tests.conftest import assert_one_line_error, run_cli
from tests.fakes.ram import ACCESS_KEY_SECRET, FakeRam, RamFakeProcess, credentials_env
from tests.ram.conftest import DEMO_SEED, ram_config, write_config


def _count(store: Store, table: str) -> int:
    return int(store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_sync_stores_what_ram_grants(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    report = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert report.error is None and report.errors == []
    snap = load_snapshot(store)
    assert snap is not None and snap.id == report.snapshot
    ci = snap.users["ci-deploy"]
    assert set(ci.policies) == {("Custom", "CiDeployer"), ("System", "AdministratorAccess")}
    assert snap.policies[("System", "AdministratorAccess")].document == {
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    assert snap.users["alice"].groups == ("admins",)
    assert [k for _, k in snap.grants("user/alice")] == [("Custom", "AdminAlice")]
    # console access, MFA and last use come from IMS's credential report
    assert (snap.users["alice"].console, snap.users["alice"].mfa) == (True, False)
    assert (snap.users["vendor-acme"].console, snap.users["vendor-acme"].mfa) == (True, True)
    vendor_key = snap.keys["LTAI5tVendorAcme2Wd8N"]
    assert vendor_key.active and vendor_key.created is not None and vendor_key.last_used is not None
    assert (datetime.now(UTC) - vendor_key.created).days in (399, 400)
    assert snap.roles["BackupRole"].trust["Statement"][0]["Principal"] == {"Service": ["ecs.aliyuncs.com"]}
    assert snap.roles["AliyunServiceRoleForActionTrail"].service_linked


def test_a_throttled_page_is_retried_with_backoff(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    api = api_for(fake_ram)
    fake_ram.fail_next("Throttling.User", action="ListUsers", after=1, times=2)  # the second page, twice
    report = ram_sync(store, ram_config(fake_ram.endpoint), api=api, page=2)
    assert report.error is None
    snap = load_snapshot(store)
    assert snap is not None and len(snap.users) == 7  # 4 pages of 2
    list_users = [c for c in fake_ram.calls if c.action == "ListUsers"]
    assert [c.code for c in list_users] == [None, "Throttling.User", "Throttling.User", None, None, None]
    assert api.waits[:2] == [0.5, 1.0] and report.throttled == 2


def test_retry_after_is_honoured(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    api = api_for(fake_ram)
    fake_ram.fail_next("Throttling.Api", action="ListRoles", retry_after_ms=2500)
    assert ram_sync(store, ram_config(fake_ram.endpoint), api=api).error is None
    assert 2.5 in api.waits


def test_one_principals_failure_is_recorded_and_the_rest_read(store: Store, fake_ram: FakeRam,
                                                              api_for: Callable[..., Any]):
    fake_ram.fail_next("NoPermission", action="ListAccessKeys", after=2)  # the third user, alphabetically
    report = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert report.error and "1 RAM call(s) failed" in report.error
    assert report.errors == [{"principal": "user/cms-reader", "call": "ListAccessKeys", "code": "NoPermission",
                              "message": "ListAccessKeys: NoPermission: fake NoPermission"}]
    snap = load_snapshot(store)
    assert snap is not None
    assert "cms-reader" in snap.users and snap.keys_of("cms-reader") == []
    assert [k.id for k in snap.keys_of("vendor-acme")] == ["LTAI5tVendorAcme2Wd8N"]  # the others were read
    assert [e.principal for e in snap.errors_of("user/cms-reader")] == ["user/cms-reader"]
    status = collect_status(store)
    assert status["ram"]["errors"] == 1 and status["ram"]["first_errors"][0]["code"] == "NoPermission"


def test_a_principal_deleted_while_read_is_left_out(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    original = fake_ram._ListPoliciesForUser

    def vanish(q: Any) -> Any:  # ops-debug is deleted between ListUsers and its own calls
        if q.get("UserName") == "ops-debug":
            fake_ram.users.pop("ops-debug", None)
        return original(q)

    fake_ram._ListPoliciesForUser = vanish  # type: ignore[method-assign]
    report = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    snap = load_snapshot(store)
    assert report.error is None and snap is not None
    assert "ops-debug" not in snap.users and "LTAI5tOpsDebug8Kk3Vv" not in snap.keys


def test_history_is_kept_and_documents_are_stored_once(store: Store, fake_ram: FakeRam,
                                                       api_for: Callable[..., Any]):
    first = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    documents = _count(store, "ram_documents")
    get_policy = fake_ram.actions().count("GetPolicy")
    fake_ram.keys["LTAI5tVendorAcme2Wd8N"]["Status"] = "Inactive"  # something changes in between
    fake_ram.users["ci-deploy"]["policies"].remove(["System", "AdministratorAccess"])
    second = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert (first.snapshot, second.snapshot) == (1, 2)
    assert fake_ram.actions().count("GetPolicy") == get_policy  # every document was already stored
    assert second.documents_reused == second.policies
    assert _count(store, "ram_documents") == documents
    before, after = load_snapshot(store, 1), load_snapshot(store, 2)
    assert before is not None and after is not None
    assert before.keys["LTAI5tVendorAcme2Wd8N"].status == "Active"  # the earlier snapshot as it was
    assert ("System", "AdministratorAccess") in before.users["ci-deploy"].policies
    assert after.keys["LTAI5tVendorAcme2Wd8N"].status == "Inactive"
    assert ("System", "AdministratorAccess") not in after.users["ci-deploy"].policies


def test_a_changed_policy_version_is_read_again(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any]):
    ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    entry = fake_ram.policies["Custom/CiDeployer"]
    entry.update(DefaultVersion="v5", UpdateDate="2026-12-01T00:00:00Z",
                 document='{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}')
    fake_ram.calls.clear()
    ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert [c.params.get("PolicyName") for c in fake_ram.calls if c.action == "GetPolicy"] == ["CiDeployer"]
    snap = load_snapshot(store)
    assert snap is not None and snap.policies[("Custom", "CiDeployer")].version == "v5"
    assert snap.policies[("Custom", "CiDeployer")].document["Statement"][0]["Action"] == "ecs:*"


def test_the_credential_report_pages_end(store: Store, api_for: Callable[..., Any]):
    """IsTruncated is the string "false": a plain truth test would page for ever."""
    now = datetime.now(UTC)
    snap = Snapshot(taken_at=now, users={f"u{i:03d}": User(f"u{i:03d}", created=now) for i in range(120)})
    with FakeRam(snap) as fake:
        report = ram_sync(store, ram_config(fake.endpoint), api=api_for(fake))
        assert report.error is None
        assert fake.actions().count("GetCredentialReport") == 3  # 50 users a page
    stored = load_snapshot(store)
    assert stored is not None and all(u.console is False for u in stored.users.values())


def test_without_the_credential_report_keys_are_asked_one_by_one(store: Store, fake_ram: FakeRam,
                                                                   api_for: Callable[..., Any]):
    fake_ram.fail_next("NoPermission", action="GenerateCredentialReport")
    report = ram_sync(store, ram_config(fake_ram.endpoint), api=api_for(fake_ram))
    assert [e["call"] for e in report.errors] == ["GenerateCredentialReport"]
    assert fake_ram.actions().count("GetAccessKeyLastUsed") == len(fake_ram.keys)
    snap = load_snapshot(store)
    assert snap is not None and snap.keys["LTAI5tCiDeploy7Qx2mK"].last_used is not None
    assert snap.users["alice"].mfa is None  # unknown, not "no MFA"


@pytest.mark.slow
def test_ram_sync_command_against_the_fake_in_its_own_process(tmp_path: Path):
    with RamFakeProcess(DEMO_SEED) as fake:
        config = write_config(tmp_path, fake.endpoint)
        result = run_cli("--config", str(config), "ram", "sync", env=credentials_env())
        assert result.returncode == 0, result.stderr
        assert "ram sync: snapshot 1" in result.stdout and "7 users" in result.stdout
        fake.fail_next("NoPermission", action="ListPoliciesForRole")
        again = run_cli("--config", str(config), "ram", "sync", env=credentials_env())
        assert_one_line_error(again, 1, "1 RAM call(s) failed", "role/AliyunServiceRoleForActionTrail")
        status = run_cli("--config", str(config), "status")
        assert "ram         snapshot 2" in status.stdout and "1 call(s) failed" in status.stdout
        assert "ListPoliciesForRole: NoPermission" in status.stdout


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unreachable", "bad credentials"])
def test_ram_sync_that_cannot_read_says_so_and_stores_nothing(tmp_path: Path, case: str):
    from pipeline.store.store import open_store

    env = credentials_env()
    with RamFakeProcess(DEMO_SEED) as fake:
        endpoint = "http://127.0.0.1:9" if case == "unreachable" else fake.endpoint
        if case == "bad credentials":
            env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "not-" + ACCESS_KEY_SECRET
        result = run_cli("--config", str(write_config(tmp_path, endpoint)), "ram", "sync", env=env)
    needle = "RAM is unreachable" if case == "unreachable" else "RAM rejected the credentials"
    line = assert_one_line_error(result, 1, needle)
    assert env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] not in line
    with open_store(tmp_path / "tw.duckdb") as store:
        assert _count(store, "ram_snapshots") == 0
        assert sync_status(store) is None
        assert store.con.execute("SELECT status FROM runs WHERE command = 'ram sync'").fetchall() == [("failed",)]
