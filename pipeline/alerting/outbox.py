"""The alert outbox: what each finding owes a destination, and delivering it exactly once.

``enqueue`` gives every open finding at or above the minimum severity one ``alert`` row per
destination, and a finding that grew after it was alerted an ``update`` row (posted as a reply in
the alert's thread). ``deliver`` posts pending rows: an agent's new findings go out together in one
message, updates one per finding, paced to Slack's one message per second per channel.

Exactly once: before posting, the rows are marked ``sending`` under a message key that the message
carries in its metadata, and committed; after Slack answers, the ts is recorded. A crash between
the two leaves ``sending`` rows, and the next run first asks the channel whether a message with
that key exists (recording it if so, retrying if not) - so a re-run never posts twice, and a
failed post is retried on the next run. Nothing is lost in an outage: rows stay pending.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from detectors.base import SEVERITIES
from models.inventory import Inventory
from models.redact import redacted
from pipeline.alerting.messages import Message, alert_message, status_message, update_message
from pipeline.alerting.slack import Sender
from pipeline.errors import TerminalError, TrailwardenError, scrub
from pipeline.findings import FINDING_COLUMNS
from pipeline.store import Store, first_row, utcnow

RECOVERY_SLACK = timedelta(minutes=10)  # how far before a 'sending' mark to look in the channel


@dataclass
class AlertReport:
    enqueued: int = 0
    alerts_sent: int = 0  # findings alerted
    messages_sent: int = 0
    updates_sent: int = 0
    status_sent: int = 0  # thread replies for acknowledged / resolved / false positive
    recovered: int = 0  # found already posted after an interrupted run
    pending: int = 0
    error: str | None = None
    previews: list[Message] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "previews"}


_ALERT_COLUMNS = ("id, finding_id, destination, kind, event_count, status, message_key, message_ts, thread_ts, "
                  "attempts, last_error, created_at, sent_at, change_id")

_OWED_ALERTS = """
    SELECT f.id FROM findings f
    WHERE f.status = 'open' AND list_contains($allowed, f.severity)
      AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.finding_id = f.id AND a.destination = $dest
                      AND a.kind = 'alert')
"""


def enqueue(store: Store, destination: str, min_severity: str) -> int:
    """Add the rows findings owe ``destination``; returns how many were added."""
    now = utcnow()
    params = {"dest": destination, "allowed": _at_least(min_severity), "now": now}
    with store.transaction() as con:
        before = _count(con)
        con.execute(
            f"""
            INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS})
            SELECT sha256(f.id || '|' || $dest || '|alert'), f.id, $dest, 'alert', f.event_count, 'pending',
                   NULL, NULL, NULL, 0, NULL, $now, NULL, NULL
            FROM findings f WHERE f.id IN ({_OWED_ALERTS})
            """, params)  # noqa: S608 - a fixed query text
        con.execute(  # growth of an alerted finding someone is still watching: a thread reply
            f"""
            INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS})
            SELECT sha256(f.id || '|' || $dest || '|update|' || f.event_count), f.id, $dest, 'update',
                   f.event_count, 'pending', NULL, NULL, a.alert_ts, 0, NULL, $now, NULL, NULL
            FROM findings f
            JOIN (SELECT finding_id, max(event_count) FILTER (WHERE kind <> 'status') AS reported,
                         any_value(message_ts) FILTER (WHERE kind = 'alert' AND status = 'sent') AS alert_ts
                  FROM alerts WHERE destination = $dest GROUP BY finding_id) a ON a.finding_id = f.id
            WHERE a.alert_ts IS NOT NULL AND f.event_count > a.reported
              AND f.status IN ('open', 'acknowledged')
              AND NOT EXISTS (SELECT 1 FROM alerts p WHERE p.finding_id = f.id AND p.destination = $dest
                              AND p.kind = 'update' AND p.status <> 'sent')
            """, {"dest": destination, "now": now})  # noqa: S608 - a fixed query text
        con.execute(  # each status change of an alerted finding: a thread reply saying who and why
            f"""
            INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS})
            SELECT sha256(c.finding_id || '|' || $dest || '|status|' || c.id), c.finding_id, $dest, 'status',
                   f.event_count, 'pending', NULL, NULL, a.message_ts, 0, NULL, $now, NULL, c.id
            FROM finding_status_changes c
            JOIN findings f ON f.id = c.finding_id
            JOIN alerts a ON a.finding_id = c.finding_id AND a.destination = $dest AND a.kind = 'alert'
                         AND a.status = 'sent'
            """, {"dest": destination, "now": now})  # noqa: S608 - a fixed query text
        return _count(con) - before


def preview(store: Store, destination: str, min_severity: str, inventory: Inventory,
            replay: Callable[[str, Any], str]) -> AlertReport:
    """The alert messages a run would post now (pending rows and findings not yet enqueued);
    records nothing. Thread updates are not previewed."""
    rows = _pending(store, destination, "alert")
    owed = [r[0] for r in store.con.execute(_OWED_ALERTS, {"dest": destination,
                                                          "allowed": _at_least(min_severity)}).fetchall()]
    rows = _with_event_times(store, rows + _findings_as_rows(store, owed))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["finding"]["agent"], []).append(row)
    report = AlertReport()
    for agent, group in groups.items():
        report.previews.append(alert_message(agent, [r["finding"] for r in group], inventory.agent(agent),
                                             replay(agent, min(r["finding"]["first_seen"] for r in group))))
    return report


def _at_least(min_severity: str) -> list[str]:
    return list(SEVERITIES[SEVERITIES.index(min_severity):])


def _count(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM alerts").fetchall()[0][0])


def deliver(store: Store, sender: Sender, inventory: Inventory, replay: Callable[[str, Any], str], *,
            sleep: Callable[[float], None] = time.sleep) -> AlertReport:
    """Recover interrupted posts, then post pending alerts and updates. Errors from the sender
    propagate (after the rows involved are put back to pending)."""
    report = AlertReport()
    report.recovered = _recover(store, sender)
    groups = _pending_alerts(store, sender.destination)
    updates = _pending_updates(store, sender.destination)
    changes = _pending_status(store, sender.destination)
    posted = 0
    for agent, rows in groups.items():
        message = alert_message(agent, [r["finding"] for r in rows], inventory.agent(agent),
                                replay(agent, min(r["finding"]["first_seen"] for r in rows)))
        _pace(sender, posted, sleep)
        _send(store, sender, rows, message, thread_ts=None)
        posted += 1
        report.messages_sent += 1
        report.alerts_sent += len(rows)
    for row in updates:
        message = update_message(row["finding"], row["finding"]["event_count"] - row["reported"])
        _pace(sender, posted, sleep)
        _send(store, sender, [row], message, thread_ts=row["thread_ts"])
        posted += 1
        report.updates_sent += 1
    for row in changes:
        _pace(sender, posted, sleep)
        _send(store, sender, [row], status_message(row["finding"], row["change"]), thread_ts=row["thread_ts"])
        posted += 1
        report.status_sent += 1
    report.pending = _pending_count(store, sender.destination)
    return report


def _pace(sender: Sender, posted: int, sleep: Callable[[float], None]) -> None:
    if posted and sender.pace:
        sleep(sender.pace)  # Slack allows about one message per second per channel


def _send(store: Store, sender: Sender, rows: Sequence[dict[str, Any]], message: Message,
          thread_ts: str | None) -> None:
    ids = sorted(r["id"] for r in rows)
    key = hashlib.sha256("|".join(ids).encode()).hexdigest()[:32]
    with store.transaction() as con:  # 1. promise: committed before Slack hears of it, with the
        con.execute(                     # finding's count as the message will show it
            """
            UPDATE alerts SET status = 'sending', message_key = ?, attempts = attempts + 1, sent_at = ?,
                   event_count = greatest(event_count, (SELECT f.event_count FROM findings f
                                                        WHERE f.id = alerts.finding_id))
            WHERE list_contains(?, id)
            """, [key, utcnow(), ids])
    try:
        ts = sender.post(message, key=key, thread_ts=thread_ts)  # 2. post
    except TrailwardenError as exc:
        error = scrub(str(exc))
        if isinstance(exc, TerminalError) or not getattr(exc, "maybe_posted", False):
            with store.transaction() as con:  # refused outright: certainly not posted
                con.execute("UPDATE alerts SET status = 'pending', message_key = NULL, last_error = ? "
                            "WHERE list_contains(?, id)", [error, ids])
        else:  # maybe posted (a timeout, a 5xx): left 'sending', so the next run asks Slack first
            with store.transaction() as con:
                con.execute("UPDATE alerts SET last_error = ? WHERE list_contains(?, id)", [error, ids])
        raise
    _mark_sent(store, ids, ts)  # 3. record


def _mark_sent(store: Store, ids: list[str], ts: str) -> None:
    """Record the post (the rows already hold the count the message showed)."""
    with store.transaction() as con:
        con.execute("UPDATE alerts SET status = 'sent', message_ts = ?, sent_at = ?, last_error = NULL "
                    "WHERE list_contains(?, id)", [ts, utcnow(), ids])


def _recover(store: Store, sender: Sender) -> int:
    """Rows a crash left 'sending': posted after all (record it), or not (pending again)."""
    rows = store.con.execute(
        "SELECT message_key, list(id), min(sent_at), any_value(thread_ts) FROM alerts "
        "WHERE destination = ? AND status = 'sending' GROUP BY message_key", [sender.destination]).fetchall()
    found = 0
    for key, ids, since, thread_ts in rows:
        ts = sender.find(key, since - RECOVERY_SLACK, thread_ts) if key else None
        if ts:
            _mark_sent(store, list(ids), ts)
            found += len(ids)
        else:
            with store.transaction() as con:
                con.execute("UPDATE alerts SET status = 'pending', message_key = NULL WHERE list_contains(?, id)",
                            [list(ids)])
    return found


def _with_event_times(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finding's first listed events with their times (``event_times``), for the message."""
    from pipeline.alerting.messages import EVENTS_SHOWN

    wanted = sorted({e for r in rows for e in (r["finding"].get("event_ids") or [])[:EVENTS_SHOWN]})
    if wanted:
        times = dict(store.con.execute("SELECT event_id, event_time FROM events WHERE list_contains(?, event_id)",
                                       [wanted]).fetchall())
        for r in rows:
            ids = (r["finding"].get("event_ids") or [])[:EVENTS_SHOWN]
            r["finding"]["event_times"] = {e: times[e] for e in ids if e in times}
    return rows


def _pending_alerts(store: Store, destination: str) -> dict[str, list[dict[str, Any]]]:
    rows = _with_event_times(store, _pending(store, destination, "alert"))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["finding"]["agent"], []).append(row)
    return groups


def _pending_updates(store: Store, destination: str) -> list[dict[str, Any]]:
    rows = _pending(store, destination, "update")
    for row in rows:  # the last count Slack heard about this finding
        reported = store.con.execute(
            "SELECT max(event_count) FROM alerts WHERE finding_id = ? AND destination = ? AND status = 'sent' "
            "AND kind <> 'status'",
            [row["finding"]["id"], destination]).fetchall()[0][0]
        row["reported"] = int(reported or 0)
    return rows


def _pending_status(store: Store, destination: str) -> list[dict[str, Any]]:
    rows = _pending(store, destination, "status")
    for row in rows:
        change = first_row(store.con.execute(
            "SELECT c.new_status, c.changed_by, c.reason, c.changed_at FROM alerts a "
            "JOIN finding_status_changes c ON c.id = a.change_id WHERE a.id = ?", [row["id"]]))
        row["change"] = dict(zip(("status", "by", "reason", "at"), change or (None,) * 4, strict=True))
    return rows


def _pending(store: Store, destination: str, kind: str) -> list[dict[str, Any]]:
    columns = ", ".join(f"f.{c}" for c in FINDING_COLUMNS)
    result = store.con.execute(
        f"SELECT a.id, a.thread_ts, {columns} FROM alerts a JOIN findings f ON f.id = a.finding_id "  # noqa: S608
        "WHERE a.destination = ? AND a.kind = ? AND a.status = 'pending' "
        "ORDER BY f.agent, f.first_seen, f.id, a.change_id", [destination, kind]).fetchall()
    return [_row(alert_id, thread_ts, values) for alert_id, thread_ts, *values in result]


def _findings_as_rows(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    columns = ", ".join(FINDING_COLUMNS)
    result = store.con.execute(
        f"SELECT {columns} FROM findings WHERE list_contains(?, id) ORDER BY agent, first_seen, id",  # noqa: S608
        [ids]).fetchall()
    return [_row(None, None, values) for values in result]


def _row(alert_id: str | None, thread_ts: str | None, values: Sequence[Any]) -> dict[str, Any]:
    finding = dict(zip(FINDING_COLUMNS, values, strict=True))
    if isinstance(finding["evidence"], str):
        finding["evidence"] = json.loads(finding["evidence"])
    finding["evidence"] = redacted(finding["evidence"])  # also a finding stored before evidence was redacted
    return {"id": alert_id, "thread_ts": thread_ts, "finding": finding}


def _pending_count(store: Store, destination: str) -> int:
    return int(store.con.execute("SELECT count(*) FROM alerts WHERE destination = ? AND status <> 'sent'",
                                 [destination]).fetchall()[0][0])
