"""Views per account (issue 19 item 6), end to end through the CLI: a three-account organisation
(staging, prod, security) ingested and detected, then `findings --account`, `findings` (table and
JSON), `findings show`, `agents` and `status` as a responder reads them; and a single-account
config whose views do not change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import assert_one_line_error, run_cli, write_ndjson

STAGING, PROD, SECURITY = "1111222233334444", "5555666677778888", "9999000011112222"
NEWEST = datetime(2026, 11, 6, 12, 0, tzinfo=UTC)
ACCOUNTS = f"""accounts:
  - {{id: "{STAGING}", alias: staging}}
  - {{id: "{PROD}", alias: prod}}
  - {{id: "{SECURITY}", alias: security}}
"""
AGENTS = [
    {"name": "ci-deployer", "purpose": "deploys", "owner": "platform", "environment": "production",
     "identities": ["ram-user:ci-deploy"], "accounts": ["prod"]},
    {"name": "staging-ci", "purpose": "tests", "owner": "platform", "environment": "staging",
     "identities": ["ram-user:staging-ci"], "accounts": ["staging"]},
]


def event(n: int, user: str, home: str, when: datetime, name: str = "DescribeInstances",
          recipient: str | None = None, **fields: Any) -> dict[str, Any]:
    ev = {"eventId": f"view-{n:04d}", "eventVersion": "1", "eventType": "ApiCall", "eventRW": "Read",
          "eventName": name, "eventSource": "ecs.aliyuncs.com", "serviceName": "Ecs",
          "eventTime": when.isoformat().replace("+00:00", "Z"), "acsRegion": "cn-hangzhou",
          "sourceIpAddress": "203.0.113.7", "userAgent": "aliyun-cli/3.0.204", "requestId": f"r-{n}",
          "userIdentity": {"type": "ram-user", "principalId": f"2000{n}", "accountId": home, "userName": user},
          **fields}
    if recipient:
        ev["recipientAccountId"] = recipient
    return ev


def organisation(tmp_path: Path, *, accounts: bool = True) -> list[str]:
    """A store with: ci-deployer in prod, then reading in the security account (drift); an
    unregistered ram-user:ops-debug of staging; staging's events stopping three days before the
    newest. Returns the --config arguments."""
    agents = AGENTS if accounts else [{k: v for k, v in a.items() if k != "accounts"} for a in AGENTS]
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": agents}), encoding="utf-8")
    (tmp_path / "trailwarden.yaml").write_text(
        f"database: {tmp_path / 'store.duckdb'}\ninventory: {tmp_path / 'agents.yaml'}\n"
        + (ACCOUNTS if accounts else ""), encoding="utf-8")
    events = [event(1, "staging-ci", STAGING, NEWEST - timedelta(days=3)),
              event(2, "ci-deploy", PROD, NEWEST - timedelta(hours=2), recipient=PROD),
              *(event(3 + i, "ci-deploy", PROD, NEWEST - timedelta(minutes=50 - i), "ListBuckets", recipient=SECURITY)
                for i in range(3)),
              event(9, "ops-debug", STAGING, NEWEST - timedelta(days=3, hours=1), "CreateUser", eventRW="Write"),
              event(10, "ci-deploy", PROD, NEWEST)]
    write_ndjson(tmp_path / "events.ndjson", events)
    config = ["--config", str(tmp_path / "trailwarden.yaml")]
    assert run_cli(*config, "ingest", "--file", str(tmp_path / "events.ndjson"), cwd=tmp_path).returncode == 0
    assert run_cli(*config, "detect", "--since", "2026-11-01T00:00Z", "--until", "2026-11-07T00:00Z",
                   cwd=tmp_path).returncode == 0
    return config


def findings_json(config: list[str], tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli(*config, "findings", "--status", "all", "--format", "json", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_findings_by_account_alias_or_id(tmp_path: Path) -> None:
    config = organisation(tmp_path)
    security = findings_json(config, tmp_path, "--account", "security")
    assert [(f["detector"], f["agent"], f["account"]) for f in security] == [("cross_account", "ci-deployer", "security")]
    assert findings_json(config, tmp_path, "--account", SECURITY) == security
    staging = findings_json(config, tmp_path, "--account", "staging")
    assert staging and {f["account"] for f in staging} == {"staging"}
    assert "ram-user:ops-debug@staging" in {f["agent"] for f in staging}
    # the identity as the views show it is a filter too
    shown = findings_json(config, tmp_path, "--agent", "ram-user:ops-debug@staging")
    assert shown and {f["agent"] for f in shown} == {"ram-user:ops-debug@staging"}
    assert findings_json(config, tmp_path, "--agent", "ram-user:ops-debug@prod") == []
    everything = findings_json(config, tmp_path)
    assert len(everything) == len(security) + len(staging) + len(findings_json(config, tmp_path, "--account", "prod"))


def test_an_undefined_account_alias_is_a_usage_error(tmp_path: Path) -> None:
    config = organisation(tmp_path)
    result = run_cli(*config, "findings", "--account", "qa", cwd=tmp_path)
    assert_one_line_error(result, 2, "--account", "'qa'", "staging, prod, security")


def test_the_table_and_show_name_the_account_and_the_identity_home(tmp_path: Path) -> None:
    config = organisation(tmp_path)
    table = run_cli(*config, "findings", "--status", "all", cwd=tmp_path).stdout
    header = table.splitlines()[0].split()
    assert header[:6] == ["id", "severity", "status", "detector", "agent", "account"]
    assert "ram-user:ops-debug@staging" in table
    (drift,) = findings_json(config, tmp_path, "--account", "security")
    shown = run_cli(*config, "findings", "show", drift["id"], cwd=tmp_path).stdout
    assert "3 events in account security" in shown


def test_agents_shows_each_agents_accounts_and_unregistered_identities_with_their_home(tmp_path: Path) -> None:
    config = organisation(tmp_path)
    rows = {r["agent"]: r for r in json.loads(run_cli(*config, "agents", "--format", "json", cwd=tmp_path).stdout)}
    assert rows["ci-deployer"]["accounts"] == ["prod"] and rows["staging-ci"]["accounts"] == ["staging"]
    assert rows["ram-user:ops-debug@staging"]["accounts"] == ["staging"]
    assert rows["ram-user:ops-debug@staging"]["flags"] == ["unregistered"]


def test_status_shows_the_last_event_per_account_and_the_one_that_stopped(tmp_path: Path) -> None:
    config = organisation(tmp_path)
    info = json.loads(run_cli(*config, "status", "--format", "json", cwd=tmp_path).stdout)
    last = {a["alias"]: a["last_event"] for a in info["accounts"]}
    assert last == {"staging": "2026-11-03T12:00:00Z", "prod": "2026-11-06T12:00:00Z",
                    "security": "2026-11-06T11:12:00Z"}
    assert [a["alias"] for a in info["service"]["account_gaps"]] == ["staging"]
    text = run_cli(*config, "status", cwd=tmp_path).stdout
    assert "staging (1111222233334444): last event 2026-11-03T12:00:00Z - GAP, stopped: last event 3d 0h" in text


def test_a_single_account_config_shows_what_it_did_before(tmp_path: Path) -> None:
    config = organisation(tmp_path, accounts=False)
    table = run_cli(*config, "findings", "--status", "all", cwd=tmp_path).stdout
    assert table.splitlines()[0].split()[:6] == ["id", "severity", "status", "detector", "agent", "last_seen"]
    assert "@" not in table and "cross_account" not in table
    agents = json.loads(run_cli(*config, "agents", "--format", "json", cwd=tmp_path).stdout)
    assert all("accounts" not in r for r in agents)
    assert "ram-user:ops-debug" in {r["agent"] for r in agents}
    info = json.loads(run_cli(*config, "status", "--format", "json", cwd=tmp_path).stdout)
    assert "accounts" not in info and "account_gaps" not in info["service"]


def test_findings_stored_before_the_account_column_get_it_from_their_events(tmp_path: Path) -> None:
    """Migration 0025 on a store whose findings predate it: each gets the account most of its
    events happened in and its callers' home account, once; a finding without events gets none."""
    from pipeline.store.store import open_store

    config = organisation(tmp_path)
    db = tmp_path / "store.duckdb"
    with open_store(db) as store:
        before = dict(store.con.execute("SELECT id, account FROM findings").fetchall())
        store.con.execute("INSERT INTO findings (id, detector, agent, severity, score, first_seen, last_seen, summary, "
                          "event_ids, event_count, evidence, status, dedup_key, created_at, updated_at) "
                          "SELECT 'no-events', detector, agent, severity, score, first_seen, last_seen, summary, "
                          "[], 0, evidence, status, 'x', created_at, updated_at FROM findings LIMIT 1")
        for sql in ("ALTER TABLE findings DROP COLUMN account", "ALTER TABLE findings DROP COLUMN home_account",
                    "DELETE FROM schema_migrations WHERE version = 25"):
            store.con.execute(sql)
    with open_store(db) as store:  # as a store of the previous release, opened by this one
        after = dict(store.con.execute("SELECT id, account FROM findings").fetchall())
        homes = dict(store.con.execute("SELECT id, home_account FROM findings").fetchall())
    assert after == {**before, "no-events": None} and set(before.values()) == {STAGING, SECURITY}
    (drift,) = findings_json(config, tmp_path, "--account", "security")
    assert homes[drift["id"]] == PROD and homes["no-events"] is None
