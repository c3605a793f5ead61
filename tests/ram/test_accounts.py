"""`accounts sync` (the real Resource Manager SDK against the fake Resource Directory) and the
`accounts` listing with a stopped account."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import Account, Config, ResourceDirectoryConfig
from pipeline.core.errors import TerminalError, TrailwardenError
from pipeline.ram.accounts import propose_alias, sync_accounts
from pipeline.ram.directory import DirectoryApi, DirectoryUnavailable, connect_directory, last_sync
from pipeline.store.store import Store, open_store
from tests.conftest import assert_one_line_error, run_cli, write_ndjson
from tests.fakes.openapi import ACCESS_KEY_ID, ACCESS_KEY_SECRET
from tests.fakes.ram import credentials_env
from tests.fakes.resource_directory import DIRECTORY_ID, MASTER_ID, FakeResourceDirectory, member
from tests.ram.conftest import CREDENTIALS

PROD, STAGING, SECURITY, SANDBOX = "1234567890123456", "6543210987654321", "1111222233334444", "5555666677778888"
MEMBERS = [member(MASTER_ID, "acme-management", kind="CloudAccount", join_method="invited"),
           member(PROD, "Production"), member(STAGING, "Staging (EU)"), member(SECURITY, "Security"),
           member(SANDBOX, "Sandbox 2024"), member("2222333344445555", "测试"), member("3333444455556666", "Production")]
CONFIGURED = [{"id": PROD, "alias": "prod"}, {"id": STAGING, "alias": "staging"},
              {"id": "9999000011112222", "alias": "legacy"}]


@pytest.fixture
def directory() -> Iterator[FakeResourceDirectory]:
    with FakeResourceDirectory(list(MEMBERS)) as fake:
        yield fake


def _api(fake: FakeResourceDirectory, waits: list[float]) -> DirectoryApi:
    return connect_directory(fake.endpoint, credentials=CREDENTIALS, sleep=waits.append)


def _config(endpoint: str, accounts: list[dict[str, str]] | None = None) -> Config:
    return Config(accounts=[Account(**a) for a in accounts or CONFIGURED],
                  resource_directory=ResourceDirectoryConfig(endpoint=endpoint))


def _count(store: Store, table: str) -> int:
    return int(store.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_every_page_is_read_and_stored(store: Store, directory: FakeResourceDirectory):
    waits: list[float] = []
    result = sync_accounts(store, _config(directory.endpoint), api=_api(directory, waits), page=3)
    pages = [c.params for c in directory.calls if c.action == "ListAccounts"]
    assert [(p["PageNumber"], p["PageSize"]) for p in pages] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert [a["id"] for a in result.accounts] == [m["AccountId"] for m in MEMBERS]
    stored = last_sync(store)
    assert stored is not None and stored[0] == result.sync == 1
    assert stored[1].id == DIRECTORY_ID and stored[1].master_account_id == MASTER_ID
    assert {a.id: a.display_name for a in stored[1].accounts}[STAGING] == "Staging (EU)"
    assert {a.id: a.join_time for a in stored[1].accounts}[PROD] == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert waits == []


def test_the_directory_is_compared_with_the_config(store: Store, directory: FakeResourceDirectory):
    result = sync_accounts(store, _config(directory.endpoint), api=_api(directory, []))
    assert {a["id"]: a["alias"] for a in result.accounts if a["configured"]} == {PROD: "prod", STAGING: "staging"}
    assert result.not_in_directory == [{"id": "9999000011112222", "alias": "legacy"}]
    proposed = {n["id"]: n["proposed_alias"] for n in result.not_configured}
    assert proposed == {MASTER_ID: "acme-management", SECURITY: "security", SANDBOX: "sandbox-2024",
                        "2222333344445555": "account-5555", "3333444455556666": "production"}
    pasted = yaml.safe_load(result.snippet)  # ready to paste: the config accepts it as it is
    accounts = Config.model_validate(pasted).accounts
    assert accounts is not None and len(accounts) == 3 + 5
    assert [a.alias for a in accounts][:3] == ["prod", "staging", "legacy"]


def test_proposed_aliases_are_unique_and_valid():
    taken = {"prod"}
    assert [propose_alias(n, "1234567890123456", taken) for n in ("Prod", "Prod", "", "2024", "A--b__C")] == [
        "prod-2", "prod-3", "account-3456", "account-3456-2", "a-b-c"]


def test_a_throttled_page_is_retried(store: Store, directory: FakeResourceDirectory):
    waits: list[float] = []
    directory.fail_next("Throttling.User", status=400, action="ListAccounts", after=1, times=2)
    api = _api(directory, waits)
    result = sync_accounts(store, _config(directory.endpoint), api=api, page=3)
    codes = [(c.params["PageNumber"], c.code) for c in directory.calls if c.action == "ListAccounts"]
    assert codes == [("1", None), ("2", "Throttling.User"), ("2", "Throttling.User"), ("2", None), ("3", None)]
    assert waits == [0.5, 1.0] and result.throttled == 2 and result.calls == 1 + 5
    assert len(result.accounts) == len(MEMBERS)


@pytest.mark.parametrize(("script", "error", "needle"), [
    ({"code": "InvalidAccessKeyId.NotFound", "status": 404}, DirectoryUnavailable, "rejected the credentials"),
    ({"code": "NoPermission", "status": 403, "action": "ListAccounts"}, TerminalError,
     "resourcemanager:ListAccounts"),
    ({"code": "Throttling.User", "status": 400, "action": "ListAccounts", "after": 1, "times": 99}, TrailwardenError,
     "kept refusing ListAccounts"),
])
def test_a_sync_that_cannot_finish_stores_nothing(store: Store, directory: FakeResourceDirectory,
                                                  script: dict[str, Any], error: type[Exception], needle: str):
    directory.fail_next(**script)
    with pytest.raises(error, match=needle):
        sync_accounts(store, _config(directory.endpoint), api=_api(directory, []), page=3)
    assert _count(store, "account_syncs") == _count(store, "directory_accounts") == 0


def test_a_second_sync_is_kept_as_history(store: Store, directory: FakeResourceDirectory):
    sync_accounts(store, _config(directory.endpoint), api=_api(directory, []))
    directory.accounts.pop(1)  # prod leaves the directory
    second = sync_accounts(store, _config(directory.endpoint), api=_api(directory, []))
    assert second.sync == 2 and {"id": PROD, "alias": "prod"} in second.not_in_directory
    rows = store.con.execute("SELECT sync_id, count(*) FROM directory_accounts GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [(1, len(MEMBERS)), (2, len(MEMBERS) - 1)]
    assert store.con.execute("SELECT count(*) FROM directory_accounts WHERE sync_id = 1 AND account_id = ?",
                             [PROD]).fetchall() == [(1,)]


# -- the commands -------------------------------------------------------------------------------
def _write_config(tmp_path: Path, endpoint: str, accounts: list[dict[str, str]] | None = None) -> Path:
    data: dict[str, Any] = {"database": str(tmp_path / "tw.duckdb"), "resource_directory": {"endpoint": endpoint}}
    if accounts is not None:
        data["accounts"] = accounts
    path = tmp_path / "trailwarden.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_accounts_sync_command(tmp_path: Path, directory: FakeResourceDirectory):
    config = _write_config(tmp_path, directory.endpoint, CONFIGURED)
    result = run_cli("--config", str(config), "accounts", "sync", env=credentials_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"accounts sync 1: Resource Directory {DIRECTORY_ID}" in out and "7 accounts" in out
    assert "configured but not in the Resource Directory: legacy (9999000011112222)" in out
    assert f'  - {{id: "{SANDBOX}", alias: sandbox-2024}}  # new: Sandbox 2024' in out
    as_json = json.loads(run_cli("--config", str(config), "accounts", "sync", "--format", "json",
                                 env=credentials_env()).stdout)
    assert as_json["sync"] == 2 and as_json["directory"]["id"] == DIRECTORY_ID
    assert {a["id"] for a in as_json["not_configured"]} == {MASTER_ID, SECURITY, SANDBOX, "2222333344445555",
                                                           "3333444455556666"}


@pytest.mark.parametrize("case", ["unreachable", "bad credentials", "no directory"])
def test_accounts_sync_that_cannot_read_exits_1_in_one_line_and_stores_nothing(tmp_path: Path, case: str,
                                                                               directory: FakeResourceDirectory):
    env = credentials_env()
    endpoint = "http://127.0.0.1:9" if case == "unreachable" else directory.endpoint
    if case == "bad credentials":
        env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "not-" + ACCESS_KEY_SECRET
    directory.enabled = case != "no directory"
    result = run_cli("--config", str(_write_config(tmp_path, endpoint)), "accounts", "sync", env=env)
    needle = {"unreachable": "the Resource Directory is unreachable at http://127.0.0.1:9",
              "bad credentials": "the Resource Directory rejected the credentials (SignatureDoesNotMatch)",
              "no directory": "no Resource Directory for these credentials"}[case]
    line = assert_one_line_error(result, 1, needle)
    assert env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] not in line and ACCESS_KEY_ID not in line
    with open_store(tmp_path / "tw.duckdb") as store:
        assert _count(store, "account_syncs") == 0
        assert store.con.execute("SELECT status FROM runs WHERE command = 'accounts sync'").fetchall() == [("failed",)]


def _event(n: int, account: str, when: datetime, *, recipient: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventId": f"00000000-0000-4000-8000-{n:012d}", "eventVersion": "1", "eventType": "ApiCall",
        "eventRW": "Read", "eventName": "DescribeInstances", "eventSource": "ecs.aliyuncs.com", "serviceName": "Ecs",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "acsRegion": "cn-hangzhou", "sourceIpAddress": "203.0.113.7",
        "requestId": f"req-{n}", "userIdentity": {"type": "ram-user", "principalId": "2001", "accountId": account,
                                                  "userName": "ci-deploy"}}
    if recipient:
        event["recipientAccountId"] = recipient
    return event


def test_the_listing_shows_a_stopped_account(tmp_path: Path, directory: FakeResourceDirectory):
    """Three accounts' trails: security's stopped three days before the others; an account that is
    not configured shows too; the sync's display names are beside the config's aliases."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    events = [_event(i, PROD, now - timedelta(hours=i)) for i in range(5)]
    events += [_event(10 + i, STAGING, now - timedelta(hours=2 + i)) for i in range(3)]
    events += [_event(20, SECURITY, now - timedelta(days=3, hours=5))]
    # a call made from staging's credentials into prod happened in prod
    events += [_event(30, STAGING, now - timedelta(minutes=5), recipient=PROD)]
    events += [_event(40, SANDBOX, now - timedelta(hours=1))]
    events += [_event(50, "9999000011112222", now - timedelta(days=40))]  # legacy: before the recent window
    configured = [{"id": PROD, "alias": "prod"}, {"id": STAGING, "alias": "staging"},
                  {"id": SECURITY, "alias": "security"}, {"id": "9999000011112222", "alias": "legacy"}]
    config = _write_config(tmp_path, directory.endpoint, configured)
    trail = write_ndjson(tmp_path / "trail.json", events)
    assert run_cli("--config", str(config), "ingest", "--file", str(trail)).returncode == 0
    before_sync = json.loads(run_cli("--config", str(config), "accounts", "--format", "json").stdout)
    assert before_sync["synced_at"] is None and before_sync["accounts"][0]["in_directory"] is None
    assert run_cli("--config", str(config), "accounts", "sync", env=credentials_env()).returncode == 0

    listed = json.loads(run_cli("--config", str(config), "accounts", "list", "--format", "json").stdout)
    rows = {r["id"]: r for r in listed["accounts"]}
    assert list(rows) == [PROD, STAGING, SECURITY, "9999000011112222", SANDBOX]  # configured first
    assert rows[PROD]["last_event"] == "2026-11-20T12:00:00Z" and rows[PROD]["events_30d"] == 6
    assert rows[STAGING]["last_event"] == "2026-11-20T10:00:00Z" and rows[STAGING]["gap"] is None
    assert rows[SECURITY]["gap"] == "stopped: last event 3d 5h before the newest in the store"
    legacy = rows["9999000011112222"]
    assert (legacy["last_event"], legacy["events_30d"]) == ("2026-10-11T12:00:00Z", 0)
    assert legacy["gap"] == "stopped: last event 40d 0h before the newest in the store"
    assert legacy["in_directory"] is False
    assert rows[SANDBOX]["configured"] is False and rows[SANDBOX]["alias"] is None
    assert rows[STAGING]["display_name"] == "Staging (EU)" and rows[STAGING]["in_directory"] is True

    table = run_cli("--config", str(config), "accounts").stdout
    security = next(line for line in table.splitlines() if line.startswith("security"))
    assert SECURITY in security and "stopped: last event 3d 5h" in security
    assert any(line.startswith("(not configured)") and SANDBOX in line for line in table.splitlines())


def test_the_listing_without_a_store_or_accounts(tmp_path: Path):
    config = _write_config(tmp_path, "http://127.0.0.1:9")
    result = run_cli("--config", str(config), "accounts")
    assert result.returncode == 0, result.stderr
    assert "no accounts configured and no events in the store" in result.stdout


@pytest.mark.slow
def test_a_kill_mid_sync_stores_nothing_and_a_rerun_stores_it_once(tmp_path: Path, directory: FakeResourceDirectory):
    """kill -9 while a page is read: no sync, no partial accounts; the rerun stores one whole sync."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    directory.accounts = [member(f"{7000000000000000 + i}", f"Team {i}") for i in range(250)]  # 3 pages of 100
    config = _write_config(tmp_path, directory.endpoint, CONFIGURED)
    directory.hang_next("ListAccounts", after=1, seconds=60)
    env = {**{k: v for k, v in os.environ.items() if k not in ("TRAILWARDEN_CONFIG", "COLUMNS")}, **credentials_env()}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), "accounts", "sync"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while directory.actions().count("ListAccounts") < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with open_store(tmp_path / "tw.duckdb") as store:
        assert _count(store, "account_syncs") == _count(store, "directory_accounts") == 0
    rerun = run_cli("--config", str(config), "accounts", "sync", env=credentials_env())
    assert rerun.returncode == 0, rerun.stderr
    with open_store(tmp_path / "tw.duckdb") as store:
        assert store.con.execute("SELECT id, accounts FROM account_syncs").fetchall() == [(1, 250)]
        assert _count(store, "directory_accounts") == 250
