"""Incidents (issue 16, item 1): the findings of one agent that overlap or follow each other within
an hour are one incident, stored (``incidents``), pointed to by its findings, with one severity
(the highest), a status derived from its findings, and a headline of its most harmful acts, then
where from and when (local time with the zone). Real events are ingested so the headline is told
from what the store holds; findings are saved as a detector returns them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest
import yaml

from detectors.base import Finding
from models.inventory import Attributor, Inventory
from pipeline.detection.findings import save_findings
from pipeline.detection.incidents import assign_incidents, get_incident, list_incidents
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store, open_store
from pipeline.triage.lifecycle import set_incident_status, set_status
from tests.conftest import ram_user_event, run_cli, write_ndjson

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # 11:00 in Asia/Shanghai
SHANGHAI = ZoneInfo("Asia/Shanghai")
TOR = "185.220.101.9"
AGENTS: list[dict[str, Any]] = [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"]},
    {"name": "billing-exporter", "purpose": "Exports billing data nightly", "owner": "finance-eng",
     "environment": "production", "identities": ["ram-user:billing-export"]},
]
INVENTORY = Inventory.model_validate({"agents": AGENTS})


def _events() -> list[dict[str, Any]]:
    """The stolen-key story: nine reads from a Tor exit, then a new user given AdministratorAccess;
    hours later an unrelated read; and another agent's read in the same hour."""
    reads = [ram_user_event(f"ev-read-{i}", "ci-deploy", T0 + timedelta(minutes=i), sourceIpAddress=TOR)
             for i in range(9)]
    create = ram_user_event("ev-create", "ci-deploy", T0 + timedelta(minutes=20), "CreateUser",
                            eventRW="Write", sourceIpAddress=TOR, serviceName="Ram",
                            eventSource="ram.aliyuncs.com", requestParameters={"UserName": "svc-backup2"})
    attach = ram_user_event("ev-attach", "ci-deploy", T0 + timedelta(minutes=21), "AttachPolicyToUser",
                            eventRW="Write", sourceIpAddress=TOR, serviceName="Ram",
                            eventSource="ram.aliyuncs.com",
                            requestParameters={"UserName": "svc-backup2", "PolicyName": "AdministratorAccess",
                                               "PolicyType": "System"})
    later = ram_user_event("ev-later", "ci-deploy", T0 + timedelta(hours=4))
    other = ram_user_event("ev-billing", "billing-export", T0 + timedelta(minutes=5))
    return [*reads, create, attach, later, other]


def _finding(detector: str, severity: str, event_ids: list[str], start: datetime, *, agent: str = "ci-deployer",
             summary: str | None = None, key: str | None = None) -> Finding:
    return Finding(detector=detector, agent=agent, severity=severity, score=0.8, first_seen=start,
                   last_seen=start + timedelta(minutes=len(event_ids)), event_ids=event_ids,
                   summary=summary or f"{agent}: {detector} on {len(event_ids)} events",
                   evidence={"kind": detector, "count": len(event_ids)}, dedup_key=key or detector)


NEW_SOURCE = _finding("new_source", "medium", [f"ev-read-{i}" for i in range(9)], T0,
                      summary=f"ci-deployer made 9 calls from {TOR}")
ESCALATION = _finding("privilege_escalation", "critical", ["ev-create", "ev-attach"], T0 + timedelta(minutes=20))
LATER = _finding("odd_hours", "low", ["ev-later"], T0 + timedelta(hours=4))
OTHER = _finding("new_source", "high", ["ev-billing"], T0 + timedelta(minutes=5), agent="billing-exporter")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        ingest_files(store, [write_ndjson(tmp_path / "events.jsonl", _events())], Attributor(INVENTORY))
        yield store


def _by_agent(store: Store) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for incident in list_incidents(store):
        out.setdefault(incident["agent"], []).append(incident)
    return out


def test_close_findings_of_one_agent_are_one_incident_with_the_highest_severity(db):
    save_findings(db, [NEW_SOURCE, ESCALATION, LATER, OTHER], {}, tz=SHANGHAI)
    incidents = _by_agent(db)
    stolen, later = sorted(incidents["ci-deployer"], key=lambda i: i["first_seen"])
    [billing] = incidents["billing-exporter"]  # the same hour, another agent: its own incident
    assert sorted(stolen["finding_ids"]) == sorted([NEW_SOURCE.id, ESCALATION.id])
    assert (stolen["severity"], stolen["status"], stolen["finding_count"]) == ("critical", "open", 2)
    assert stolen["detectors"] == ["new_source", "privilege_escalation"] and stolen["event_count"] == 11
    assert later["finding_ids"] == [LATER.id] and later["severity"] == "low"  # four hours later: another
    assert billing["finding_ids"] == [OTHER.id]
    # the findings point to their incident
    rows = dict(db.con.execute("SELECT id, incident_id FROM findings").fetchall())
    assert rows == {NEW_SOURCE.id: stolen["id"], ESCALATION.id: stolen["id"], LATER.id: later["id"],
                    OTHER.id: billing["id"]}
    # most severe first
    assert [i["severity"] for i in list_incidents(db)] == ["critical", "high", "low"]


def test_the_headline_leads_with_the_most_harmful_act_then_where_from_and_local_time(db):
    save_findings(db, [NEW_SOURCE, ESCALATION], {}, tz=SHANGHAI)
    [incident] = list_incidents(db)
    headline = incident["headline"]
    assert headline.startswith("ci-deployer ")
    assert "AdministratorAccess" in headline and "svc-backup2" in headline
    assert headline.index("AdministratorAccess") < headline.index("created user svc-backup2")
    assert "described" not in headline.split("—")[0].split(",")[0]  # never led by the reads
    assert f"from {TOR}" in headline
    assert headline.endswith("at 11:00 Mon 2 Nov (Asia/Shanghai)")  # when it began, local, the zone named
    assert incident["summary"]["when_utc"] == "2026-11-02T03:00:00Z"


def test_a_finding_that_follows_within_the_window_joins_and_one_much_later_does_not(db):
    save_findings(db, [NEW_SOURCE], {}, tz=SHANGHAI)
    [first] = list_incidents(db)
    assert first["severity"] == "medium"
    save_findings(db, [ESCALATION], {}, tz=SHANGHAI)  # a later detect run, 20 minutes on
    [joined] = list_incidents(db)
    assert joined["id"] == first["id"] and joined["severity"] == "critical"
    assert joined["version"] > first["version"]  # its Slack message is owed an update
    save_findings(db, [LATER], {}, tz=SHANGHAI)
    assert len(list_incidents(db)) == 2


def test_findings_sharing_an_event_are_one_incident_even_far_apart(db):
    """Two detectors on one event (StopLogging raised both audit_tampering and out_of_scope): one
    incident, whatever the window."""
    a = _finding("audit_tampering", "critical", ["ev-later"], T0 + timedelta(hours=4))
    b = _finding("out_of_scope", "critical", ["ev-later"], T0 + timedelta(hours=4))
    save_findings(db, [a, b], {}, tz=SHANGHAI)
    [incident] = list_incidents(db)
    assert sorted(incident["finding_ids"]) == sorted([a.id, b.id]) and incident["event_count"] == 1


def test_the_incident_status_follows_its_findings_and_says_who_set_it(db):
    save_findings(db, [NEW_SOURCE, ESCALATION], {}, tz=SHANGHAI)
    [incident] = list_incidents(db)
    set_status(db, [NEW_SOURCE.id], "acknowledged", by="alice", reason="looking")
    assert get_incident(db, incident["id"])["status"] == "open"  # one finding still open
    set_incident_status(db, incident["id"], "acknowledged", by="bob", reason="on it")
    acked = get_incident(db, incident["id"])
    assert (acked["status"], acked["status_by"]) == ("acknowledged", "bob") and acked["version"] > incident["version"]
    set_incident_status(db, incident["id"], "false_positive", by="carol", reason="a drill")
    assert get_incident(db, incident["id"])["status"] == "false_positive"
    # a closed incident takes no new findings: the same story again is a new incident
    again = _finding("privilege_escalation", "critical", ["ev-create"], T0 + timedelta(minutes=40), key="again")
    save_findings(db, [again], {}, tz=SHANGHAI)
    assert len(list_incidents(db)) == 2


def test_findings_stored_before_incidents_existed_get_one(db):
    save_findings(db, [NEW_SOURCE, ESCALATION], {}, tz=SHANGHAI)
    with db.transaction() as con:  # as a store migrated from before incidents holds them
        con.execute("UPDATE findings SET incident_id = NULL")
        con.execute("DELETE FROM incidents")
    with db.transaction() as con:
        assign_incidents(con, SHANGHAI)
    [incident] = list_incidents(db)
    assert sorted(incident["finding_ids"]) == sorted([NEW_SOURCE.id, ESCALATION.id])
    assert "AdministratorAccess" in incident["headline"]


@pytest.mark.slow
def test_the_incidents_command_lists_shows_and_refuses_unknown_ids(tmp_path):
    inventory = tmp_path / "agents.yaml"
    inventory.write_text(yaml.safe_dump({"agents": AGENTS}), encoding="utf-8")
    config = tmp_path / "trailwarden.yaml"
    config.write_text(yaml.safe_dump({"database": str(tmp_path / "store.duckdb"), "inventory": str(inventory),
                                      "timezone": "Asia/Shanghai"}), encoding="utf-8")
    with open_store(tmp_path / "store.duckdb") as store:
        ingest_files(store, [write_ndjson(tmp_path / "events.jsonl", _events())], Attributor(INVENTORY))
        save_findings(store, [NEW_SOURCE, ESCALATION, OTHER], {}, tz=SHANGHAI)
    con = duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True)
    stolen_id = con.execute("SELECT incident_id FROM findings WHERE id = ?", [ESCALATION.id]).fetchall()[0][0]
    con.close()

    listed = run_cli("--config", str(config), "incidents", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["agent"], r["severity"], r["finding_count"]) for r in rows] == [
        ("ci-deployer", "critical", 2), ("billing-exporter", "high", 1)]
    assert rows[0]["id"] == stolen_id and "AdministratorAccess" in rows[0]["headline"]

    table = run_cli("--config", str(config), "incidents", "--status", "open", "--agent", "billing-exporter")
    assert table.returncode == 0, table.stderr
    assert "billing-exporter" in table.stdout and stolen_id not in table.stdout

    shown = run_cli("--config", str(config), "incidents", "show", stolen_id.removeprefix("inc-")[:7])
    assert shown.returncode == 0, shown.stderr
    assert stolen_id in shown.stdout and ESCALATION.id in shown.stdout and NEW_SOURCE.id in shown.stdout
    assert "(Asia/Shanghai)" in shown.stdout

    unknown = run_cli("--config", str(config), "incidents", "show", "inc-ffffffffff")
    assert unknown.returncode == 2 and "no such incident" in unknown.stderr and "Traceback" not in unknown.stderr


def test_incidents_refreshed_together_each_tell_their_own_events(db):
    """A cycle refreshes its incidents' headlines from one read of all their events: each is told
    from its own, as when it is refreshed alone."""
    from pipeline.detection.incidents import refresh

    save_findings(db, [NEW_SOURCE, ESCALATION, LATER, OTHER], {}, tz=SHANGHAI)
    together = {i["id"]: (i["headline"], i["summary"]) for i in list_incidents(db)}
    assert len(together) == 3 and len({h for h, _ in together.values()}) == 3
    for iid in together:
        db.con.execute("UPDATE incidents SET headline = '', summary = '{}' WHERE id = ?", [iid])
        refresh(db.con, iid, SHANGHAI)  # alone, reading its own events
    assert {i["id"]: (i["headline"], i["summary"]) for i in list_incidents(db)} == together
    billing = next(h for h, _ in together.values() if h.startswith("billing-exporter"))
    assert "AdministratorAccess" not in billing and f"from {TOR}" not in billing

