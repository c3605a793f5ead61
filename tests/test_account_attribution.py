"""Attribution by account (issue 19 item 2): an agent bound to accounts owns its identities and
AccessKeys only in those home accounts, at ingest and in the `events` view after an inventory
change, with DESIGN's precedence (the AccessKey first, then the user or role; bound before unbound)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.store.store import open_store
from tests.conftest import run_cli, write_ndjson
from tests.test_sessions import PROD, SECURITY, STAGING, T0, _event, user

CONFIG = f"""accounts:
  - {{id: "{STAGING}", alias: staging}}
  - {{id: "{PROD}", alias: prod}}
  - {{id: "{SECURITY}", alias: security}}
"""


def agent(name: str, identities: list[str], accounts: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "purpose": "p", "owner": "o", "environment": "e", "identities": identities}
    if accounts:
        out["accounts"] = accounts
    return out


def setup(tmp_path: Path, agents: list[dict[str, Any]]) -> list[str]:
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": agents}), encoding="utf-8")
    (tmp_path / "trailwarden.yaml").write_text(
        f"database: {tmp_path / 'store.duckdb'}\ninventory: {tmp_path / 'agents.yaml'}\n{CONFIG}", encoding="utf-8")
    return ["--config", str(tmp_path / "trailwarden.yaml")]


EVENTS = {
    "staging-user": _event(user("ci-deploy", STAGING, "LTAI5tStaging"), T0, "DescribeInstances"),
    "prod-user": _event(user("ci-deploy", PROD, "LTAI5tProd"), T0, "DescribeInstances"),
    "security-user": _event(user("ci-deploy", SECURITY, "LTAI5tSec"), T0, "DescribeInstances"),
    # the production key, as the events of another account would never show it; the key is bound
    # to prod, so in staging the user decides
    "prod-key-in-staging": _event(user("ci-deploy", STAGING, "LTAI5tProd"), T0, "DescribeInstances"),
    "monitor-anywhere": _event(user("monitor", SECURITY, "LTAI5tMon"), T0, "DescribeInstances"),
}
BOUND = [agent("staging-ci", ["ram-user:ci-deploy"], ["staging"]),
         agent("prod-ci", ["ram-user:ci-deploy", "access-key:LTAI5tProd"], ["prod"]),
         agent("monitor", ["ram-user:monitor"])]
EXPECTED = {"staging-user": "staging-ci", "prod-user": "prod-ci", "security-user": "ram-user:ci-deploy",
            "prod-key-in-staging": "staging-ci", "monitor-anywhere": "monitor"}


def agents_of(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """event label -> (agent in the view, agent stored at ingest)."""
    ids = {e["eventId"]: label for label, e in EVENTS.items()}
    with open_store(tmp_path / "store.duckdb", read_only=True) as store:
        rows = store.con.execute("SELECT e.event_id, e.agent, h.agent FROM events e JOIN events_hot h USING (event_id)"
                                 ).fetchall()
    return {ids[r[0]]: (r[1], r[2]) for r in rows}


def test_identities_are_attributed_in_their_accounts_only(tmp_path: Path) -> None:
    config = setup(tmp_path, BOUND)
    write_ndjson(tmp_path / "e.ndjson", list(EVENTS.values()))

    assert run_cli(*config, "ingest", "--file", str(tmp_path / "e.ndjson"), cwd=tmp_path).returncode == 0

    got = agents_of(tmp_path)
    assert {k: v[0] for k, v in got.items()} == EXPECTED
    assert {k: v[1] for k, v in got.items()} == EXPECTED  # stored at ingest by the same rule


def test_binding_an_inventory_to_accounts_changes_the_view_not_the_events(tmp_path: Path) -> None:
    config = setup(tmp_path, [agent("ci", ["ram-user:ci-deploy", "access-key:LTAI5tProd"]),
                              agent("monitor", ["ram-user:monitor"])])
    write_ndjson(tmp_path / "e.ndjson", list(EVENTS.values()))
    assert run_cli(*config, "ingest", "--file", str(tmp_path / "e.ndjson"), cwd=tmp_path).returncode == 0
    assert {v[0] for k, v in agents_of(tmp_path).items() if k != "monitor-anywhere"} == {"ci"}

    setup(tmp_path, BOUND)
    assert run_cli(*config, "detect", "--reattribute", cwd=tmp_path).returncode == 0

    got = agents_of(tmp_path)
    assert {k: v[0] for k, v in got.items()} == EXPECTED
    assert {v[1] for k, v in got.items() if k != "monitor-anywhere"} == {"ci"}  # no event rewritten


def test_a_multi_account_trail_folder_keeps_each_event_in_its_account(tmp_path: Path) -> None:
    """The OSS layout of a multi-account trail (notes/actiontrail.md): one folder per account under
    the Resource Directory's id; every event keeps the account it happened in and its agent."""
    import gzip

    config = setup(tmp_path, BOUND)
    root = tmp_path / "oss" / "AliyunLogs" / "Actiontrail" / "rd-a1b2c3"
    for label, account in (("staging-user", STAGING), ("prod-user", PROD), ("security-user", SECURITY)):
        folder = root / account / "cn-hangzhou" / "2026" / "11" / "03"
        folder.mkdir(parents=True)
        body = json.dumps([{**EVENTS[label], "recipientAccountId": account}]).encode()
        (folder / f"Actiontrail_cn-hangzhou_20261103220000_1002_1_{len(body)}_0a1b.gz").write_bytes(gzip.compress(body))

    assert run_cli(*config, "ingest", "--file", str(tmp_path / "oss"), cwd=tmp_path).returncode == 0

    with open_store(tmp_path / "store.duckdb", read_only=True) as store:
        rows = dict(store.con.execute("SELECT recipient_account_id, agent FROM events").fetchall())
    assert rows == {STAGING: "staging-ci", PROD: "prod-ci", SECURITY: "ram-user:ci-deploy"}
