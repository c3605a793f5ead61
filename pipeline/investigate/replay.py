"""``trailwarden replay``: one agent's history for a responder - what it did, when, from where, to
what, and what was new.

``build_replay`` returns a plain dict (the JSON export, and what the table and HTML views
render):

* ``timeline``: the agent's events, oldest first, with its findings interleaved where they fired;
* ``blast_radius``: every resource touched (as RAM ARNs), split read/write and succeeded/failed,
  and the source IPs, user agents, regions and AccessKeys used, each with first and last seen;
* ``changes``: APIs, source IPs and regions never seen from this agent before the window (its
  whole stored history before ``since``);
* the evidence trail: each event's raw JSON, and a SHA-256 over the export (computed over the
  export without the hash, keys sorted), so what is attached to a ticket can be checked later.

Exports are redacted by default (``pipeline.core.redact``: passwords, AccessKey secrets, tokens, keys,
at any depth and inside strings): ``redaction`` says so and how many values went, and the hash
is over the redacted export, as written. ``redact=False`` (``replay --unredacted``) gives the raw
evidence as received, for who needs it; the store keeps it either way.

Only the agent's rows are read: the ``agent`` column is compared in DuckDB (dictionary-encoded,
fast even on 10M rows) and the raw JSON is fetched only for the export.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from models.inventory import Inventory
from models.mapping import PARAMETER_TARGETS, CallFacts, action, is_authorized_call, resources
from pipeline import __version__
from pipeline.core.output import to_jsonable
from pipeline.core.redact import might_hold_secrets
from pipeline.core.redact import redact as redact_values
from pipeline.core.times import utcnow
from pipeline.detection.findings import list_findings
from pipeline.store.store import Store

EVENT_FIELDS = ("event_id", "event_time", "event_name", "event_type", "event_rw", "service_name", "service_code",
                "acs_region", "source_ip", "user_agent", "access_key_id", "error_code", "error_message",
                "identity", "referenced_resources", "resource_type", "resource_name", "recipient_account_id",
                "account_id")
# The target of a RAM user/role call is often only in its request parameters (a virtual column over
# the raw JSON): read them for those events only.
_PARAMETERS = ("CASE WHEN list_contains(?, lower(event_name)) THEN request_parameters::VARCHAR END "
               "AS request_parameters")


def build_replay(store: Store, agent: str, inventory: Inventory, *, since: datetime | None = None,
                 until: datetime | None = None, with_raw: bool = True, redact: bool = True) -> dict[str, Any]:
    until = until or utcnow()
    since = since or until - timedelta(days=90)
    rows, redactions = _events(store, agent, since, until, with_raw, redact)
    findings = sorted((f for f in list_findings(store, agent=agent)
                       if f["last_seen"] >= since and f["first_seen"] < until), key=lambda f: (f["first_seen"], f["id"]))
    known = _history(store, agent, since)
    inv = inventory.agent(agent)
    report: dict[str, Any] = {
        "agent": agent,
        "registered": inv is not None,
        "purpose": inv.purpose if inv else None, "owner": inv.owner if inv else None,
        "environment": inv.environment if inv else None,
        "identities": inv.identities if inv else [agent],
        "window": {"since": since, "until": until},
        "generated_at": utcnow(), "generator": f"trailwarden {__version__}",
        "summary": _summary(rows, findings),
        "blast_radius": _blast_radius(rows),
        "changes": _changes(rows, known),
        "findings": findings,
        "timeline": _timeline(rows, findings),
        "redaction": _redaction_note(redact, redactions),
    }
    report = to_jsonable(report)
    report["sha256"] = export_digest(report)
    return report


def export_digest(report: dict[str, Any]) -> str:
    """SHA-256 of the export without its own ``sha256`` field (canonical JSON, keys sorted)."""
    body = {k: v for k, v in report.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _redaction_note(applied: bool, count: int) -> dict[str, Any]:
    if applied:
        return {"applied": True, "values_redacted": count,
                "note": "secrets in the events (passwords, AccessKey secrets, tokens, private keys) are "
                        "replaced by <redacted>; `trailwarden replay --unredacted` exports them as received"}
    return {"applied": False, "values_redacted": 0,
            "note": "UNREDACTED: the events as received, secrets included; handle as a secret"}


def _events(store: Store, agent: str, since: datetime, until: datetime, with_raw: bool,
            redact: bool) -> tuple[list[dict[str, Any]], int]:
    """The agent's events in the window, and how many values were redacted from them. Only the
    rare event whose text may hold a secret (``might_hold_secrets``) is walked."""
    columns = [*EVENT_FIELDS, _PARAMETERS, "raw" if with_raw else "NULL AS raw"]
    result = store.con.execute(
        f"SELECT {', '.join(columns)} FROM events WHERE agent = ? AND event_time >= ? AND event_time < ? "  # noqa: S608
        "ORDER BY event_time, event_id", [sorted(PARAMETER_TARGETS), agent, since, until])
    names = [d[0] for d in result.description or []]
    out = []
    redacted = 0
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        facts = CallFacts(row["event_type"], row["event_name"], row["service_name"], row["service_code"],
                          row["acs_region"], row["recipient_account_id"] or row["account_id"],
                          row["referenced_resources"], row["resource_type"], row["resource_name"],
                          row.pop("request_parameters"))  # only for the mapping: not exported
        row["action"] = action(facts)
        row["resources"] = resources(facts) if is_authorized_call(row["event_type"], row["service_name"]) else []
        text = "\n".join(v for v in row.values() if isinstance(v, str))  # the raw JSON too
        row["raw"] = json.loads(row["raw"]) if isinstance(row["raw"], str) else None
        if redact and might_hold_secrets(text):
            row, count = redact_values(row)
            redacted += count
        out.append(row)
    return out, redacted


def _history(store: Store, agent: str, before: datetime) -> dict[str, set[str]]:
    rows = store.con.execute(
        "SELECT list(DISTINCT event_name), list(DISTINCT source_ip), list(DISTINCT acs_region) "
        "FROM events WHERE agent = ? AND event_time < ?", [agent, before]).fetchall()
    names, ips, regions = rows[0] if rows else (None, None, None)
    return {"apis": set(names or []), "source_ips": set(ips or []), "regions": set(regions or [])}


def _summary(rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> dict[str, Any]:
    failed = sum(1 for r in rows if r["error_code"])
    return {"events": len(rows), "failed": failed, "findings": len(findings),
            "first_event": rows[0]["event_time"] if rows else None,
            "last_event": rows[-1]["event_time"] if rows else None,
            "apis": len({r["action"] for r in rows})}


def _blast_radius(rows: list[dict[str, Any]]) -> dict[str, Any]:
    touched: dict[tuple[str, str, str], dict[str, Any]] = {}
    seen: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        write = r["event_rw"] == "Write"
        outcome = "failed" if r["error_code"] else "succeeded"
        for arn in r["resources"]:
            if arn.endswith(":*"):
                continue  # a call with no resource: nothing touched to name
            entry = touched.setdefault((arn, "write" if write else "read", outcome), {
                "resource": arn, "access": "write" if write else "read", "outcome": outcome, "calls": 0,
                "actions": set(), "first_seen": r["event_time"], "last_seen": r["event_time"]})
            entry["calls"] += 1
            entry["actions"].add(r["action"])
            entry["last_seen"] = r["event_time"]
        for key, value in (("source_ips", r["source_ip"]), ("user_agents", r["user_agent"]),
                           ("regions", r["acs_region"]), ("access_keys", r["access_key_id"])):
            if value:
                item = seen[key].setdefault(value, {"value": value, "calls": 0, "first_seen": r["event_time"]})
                item["calls"] += 1
                item["last_seen"] = r["event_time"]
    resources_out = sorted(({**e, "actions": sorted(e["actions"])} for e in touched.values()),
                           key=lambda e: (e["access"] != "write", e["outcome"] != "succeeded", -e["calls"]))
    return {"resources": resources_out, **{k: sorted(v.values(), key=lambda i: -i["calls"]) for k, v in seen.items()}}


def _changes(rows: list[dict[str, Any]], known: dict[str, set[str]]) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"new_apis": [], "new_source_ips": [], "new_regions": []}
    firsts: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        for kind, key, value in (("new_apis", "apis", r["event_name"]), ("new_source_ips", "source_ips", r["source_ip"]),
                                 ("new_regions", "regions", r["acs_region"])):
            if value and value not in known[key] and (kind, value) not in firsts:
                firsts[(kind, value)] = {"value": value, "first_seen": r["event_time"], "event_id": r["event_id"]}
                out[kind].append(firsts[(kind, value)])
    out_any: dict[str, Any] = dict(out)
    out_any["history_was_empty"] = not any(known.values())
    return out_any


def _timeline(rows: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[tuple[Any, int, dict[str, Any]]] = []
    for r in rows:
        event = {k: r[k] for k in ("event_id", "event_time", "action", "event_rw", "source_ip", "acs_region",
                                   "user_agent", "access_key_id", "error_code", "error_message", "resources")}
        event["kind"] = "event"
        event["raw"] = r["raw"]
        items.append((r["event_time"], 1, event))
    for f in findings:
        items.append((f["first_seen"], 0, {"kind": "finding", "event_time": f["first_seen"], "id": f["id"],
                                           "detector": f["detector"], "severity": f["severity"],
                                           "summary": f["summary"], "status": f["status"]}))
    return [item for _, _, item in sorted(items, key=lambda i: (i[0], i[1]))]
