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

What a destination is *owed* has one definition (``_OWED``): ``enqueue`` inserts it, and
``owed_count`` (``status``'s "pending") and ``preview`` (``alert --dry-run``) read it without
writing, so "pending" counts findings that were never enqueued too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from detectors.base import SEVERITIES
from models.inventory import Inventory
from pipeline.core.config import Config
from pipeline.core.errors import TerminalError, TrailwardenError, scrub
from pipeline.core.redact import redacted
from pipeline.core.times import utcnow
from pipeline.detection.findings import FINDING_COLUMNS
from pipeline.service.alerting.messages import (
    Message,
    alert_message,
    replay_hint,
    status_message,
    update_message,
)
from pipeline.store.store import Store, first_row

if TYPE_CHECKING:  # slack_sdk is not imported for `status`, which only counts what is owed
    from pipeline.service.alerting.slack import Sender

CONSOLE = "console"  # the destination of ConsoleSender
RECOVERY_SLACK = timedelta(minutes=10)  # how far before a 'sending' mark to look in the channel


@dataclass(frozen=True)
class Target:
    """Where a config's alerts go: its Slack channel when ``slack:`` is configured (which then
    needs ``SLACK_BOT_TOKEN``), else the console."""

    destination: str
    min_severity: str
    slack: bool


def alert_target(config: Config) -> Target:
    if config.slack is not None:
        return Target(config.slack.channel, config.slack.min_severity, slack=True)
    return Target(CONSOLE, "medium", slack=False)


@dataclass
class Post:
    """One message a run posts (or would post): an agent's new findings, or a thread reply."""

    kind: str  # alert | update | status
    agent: str
    rows: list[dict[str, Any]]
    message: Message
    thread_ts: str | None

    @property
    def finding_ids(self) -> list[str]:
        return list(dict.fromkeys(r["finding"]["id"] for r in self.rows))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "agent": self.agent, "finding_ids": self.finding_ids,
                "thread_ts": self.thread_ts, "text": self.message.text, "blocks": self.message.blocks}


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
    previews: list[Post] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "previews"}


_ALERT_COLUMNS = ("id, finding_id, destination, kind, event_count, status, message_key, message_ts, thread_ts, "
                  "attempts, last_error, created_at, sent_at, change_id")

# What a destination is owed and has no outbox row for yet, one query per kind of row, each giving
# the row's id, finding, kind, event count, thread and status change. ``enqueue`` inserts exactly
# these; ``owed_count`` and ``preview`` only read them.
_OWED = {
    # an open finding at or above the minimum severity, never alerted to this destination; one
    # reported with another (permission_drift's view of the call the actor's finding reports:
    # evidence.reported_with) goes out in that one's alert while that one is alerted
    "alert": """
        SELECT sha256(f.id || '|' || $dest || '|alert') AS id, f.id AS finding_id, 'alert' AS kind, f.event_count,
               NULL::VARCHAR AS thread_ts, NULL::BIGINT AS change_id
        FROM findings f
        WHERE f.status = 'open' AND list_contains($allowed, f.severity)
          AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.finding_id = f.id AND a.destination = $dest
                          AND a.kind = 'alert')
          AND NOT EXISTS (SELECT 1 FROM findings g
                          WHERE list_contains(coalesce(CAST(json_extract(f.evidence, '$.reported_with') AS VARCHAR[]),
                                                       []), g.id)
                            AND g.status NOT IN ('suppressed', 'false_positive') AND list_contains($allowed, g.severity))
    """,
    # growth of an alerted finding someone is still watching: a thread reply
    "update": """
        SELECT sha256(f.id || '|' || $dest || '|update|' || f.event_count) AS id, f.id AS finding_id,
               'update' AS kind, f.event_count, a.alert_ts AS thread_ts, NULL::BIGINT AS change_id
        FROM findings f
        JOIN (SELECT finding_id, max(event_count) FILTER (WHERE kind <> 'status') AS reported,
                     any_value(message_ts) FILTER (WHERE kind = 'alert' AND status = 'sent') AS alert_ts
              FROM alerts WHERE destination = $dest GROUP BY finding_id) a ON a.finding_id = f.id
        WHERE a.alert_ts IS NOT NULL AND f.event_count > a.reported
          AND f.status IN ('open', 'acknowledged')
          AND NOT EXISTS (SELECT 1 FROM alerts p WHERE p.finding_id = f.id AND p.destination = $dest
                          AND p.kind = 'update' AND p.status <> 'sent')
    """,
    # each status change of an alerted finding: a thread reply saying who and why
    "status": """
        SELECT sha256(c.finding_id || '|' || $dest || '|status|' || c.id) AS id, c.finding_id, 'status' AS kind,
               f.event_count, a.message_ts AS thread_ts, c.id AS change_id
        FROM finding_status_changes c
        JOIN findings f ON f.id = c.finding_id
        JOIN alerts a ON a.finding_id = c.finding_id AND a.destination = $dest AND a.kind = 'alert'
                     AND a.status = 'sent'
        WHERE NOT EXISTS (SELECT 1 FROM alerts x WHERE x.destination = $dest AND x.kind = 'status'
                          AND x.change_id = c.id)
    """,
}


def _owed_params(query: str, destination: str, min_severity: str) -> dict[str, Any]:
    params = {"dest": destination, "allowed": _at_least(min_severity)}
    return {k: v for k, v in params.items() if f"${k}" in query}


def enqueue(store: Store, destination: str, min_severity: str) -> int:
    """Add the rows findings owe ``destination``; returns how many were added."""
    now = utcnow()
    with store.transaction() as con:
        before = _count(con)
        for query in _OWED.values():  # alerts first: nothing else reads an unsent alert
            params = {**_owed_params(query, destination, min_severity), "dest": destination, "now": now}
            con.execute(
                f"""
                INSERT OR IGNORE INTO alerts ({_ALERT_COLUMNS})
                SELECT o.id, o.finding_id, $dest, o.kind, o.event_count, 'pending', NULL, NULL, o.thread_ts, 0,
                       NULL, $now, NULL, o.change_id
                FROM ({query}) o
                """, params)  # noqa: S608 - fixed query texts
        return _count(con) - before


def owed_count(store: Store, destination: str, min_severity: str) -> int:
    """How many messages ``destination`` is owed: outbox rows not sent yet, plus the rows
    ``enqueue`` would add now (findings never enqueued, growth, triage). Reads only; costs a pass
    over the findings and the outbox (not over events)."""
    unsent = store.con.execute("SELECT count(*) FROM alerts WHERE destination = ? AND status <> 'sent'",
                               [destination]).fetchall()[0][0]
    return int(unsent) + sum(
        int(store.con.execute(f"SELECT count(*) FROM ({query})",  # noqa: S608 - fixed query texts
                              _owed_params(query, destination, min_severity)).fetchall()[0][0])
        for query in _OWED.values())


def preview(store: Store, destination: str, min_severity: str, inventory: Inventory,
            replay: Callable[[str, Any], str] = replay_hint) -> AlertReport:
    """The messages a run would post now, in the order it would post them: the outbox's pending
    rows and what ``enqueue`` would add (new findings, growth, triage replies). Records nothing.
    (Rows a crash left 'sending' are not shown: the run first asks Slack whether they went out.)"""
    report = AlertReport()
    report.previews = _plan(store, destination, inventory, replay, owed=min_severity)
    return report


def _at_least(min_severity: str) -> list[str]:
    return list(SEVERITIES[SEVERITIES.index(min_severity):])


def _count(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM alerts").fetchall()[0][0])


def deliver(store: Store, sender: Sender, inventory: Inventory, replay: Callable[[str, Any], str] = replay_hint,
            *, sleep: Callable[[float], None] = time.sleep) -> AlertReport:
    """Recover interrupted posts, then post pending alerts and updates. Errors from the sender
    propagate (after the rows involved are put back to pending)."""
    report = AlertReport()
    report.recovered = _recover(store, sender)
    for posted, post in enumerate(_plan(store, sender.destination, inventory, replay)):
        _pace(sender, posted, sleep)
        _send(store, sender, post.rows, post.message, thread_ts=post.thread_ts)
        if post.kind == "alert":
            report.messages_sent += 1
            report.alerts_sent += len(post.rows)
        elif post.kind == "update":
            report.updates_sent += 1
        else:
            report.status_sent += 1
    report.pending = _pending_count(store, sender.destination)
    return report


def _plan(store: Store, destination: str, inventory: Inventory, replay: Callable[[str, Any], str], *,
          owed: str | None = None) -> list[Post]:
    """The messages for the pending rows (and, with ``owed`` = a minimum severity, for the rows
    ``enqueue`` would add): each agent's new findings together, then growth, then triage replies."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _with_event_times(store, _rows(store, destination, "alert", owed)):
        groups.setdefault(row["finding"]["agent"], []).append(row)
    posts = [Post("alert", agent, rows, alert_message(agent, [r["finding"] for r in rows], inventory.agent(agent),
                                                      replay(agent, min(r["finding"]["first_seen"] for r in rows))),
                  None) for agent, rows in groups.items()]
    posts += [Post("update", row["finding"]["agent"], [row],
                   update_message(row["finding"], row["finding"]["event_count"] - row["reported"]), row["thread_ts"])
              for row in _with_reported(store, destination, _rows(store, destination, "update", owed))]
    posts += [Post("status", row["finding"]["agent"], [row], status_message(row["finding"], row["change"]),
                   row["thread_ts"]) for row in _with_change(store, _rows(store, destination, "status", owed))]
    return posts


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
    from pipeline.service.alerting.messages import EVENTS_SHOWN

    wanted = sorted({e for r in rows for e in (r["finding"].get("event_ids") or [])[:EVENTS_SHOWN]})
    if wanted:
        times = dict(store.con.execute("SELECT event_id, event_time FROM events WHERE list_contains(?, event_id)",
                                       [wanted]).fetchall())
        for r in rows:
            ids = (r["finding"].get("event_ids") or [])[:EVENTS_SHOWN]
            r["finding"]["event_times"] = {e: times[e] for e in ids if e in times}
    return rows


def _with_reported(store: Store, destination: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each update row with ``reported``: the last count Slack heard about its finding."""
    for row in rows:
        reported = store.con.execute(
            "SELECT max(event_count) FROM alerts WHERE finding_id = ? AND destination = ? AND status = 'sent' "
            "AND kind <> 'status'",
            [row["finding"]["id"], destination]).fetchall()[0][0]
        row["reported"] = int(reported or 0)
    return rows


def _with_change(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each status row with ``change``: the triage change it reports (status, by, reason, at)."""
    for row in rows:
        change = first_row(store.con.execute(
            "SELECT new_status, changed_by, reason, changed_at FROM finding_status_changes WHERE id = ?",
            [row["change_id"]]))
        row["change"] = dict(zip(("status", "by", "reason", "at"), change or (None,) * 4, strict=True))
    return rows


def _rows(store: Store, destination: str, kind: str, owed: str | None) -> list[dict[str, Any]]:
    """The outbox's pending rows of ``kind``, and with ``owed`` (a minimum severity) the rows
    ``enqueue`` would add, in posting order (agent, first seen, finding, change)."""
    rows = _pending(store, destination, kind)
    if owed is None:
        return rows
    query = _OWED[kind]
    columns = ", ".join(f"f.{c}" for c in FINDING_COLUMNS)
    result = store.con.execute(
        f"SELECT NULL, o.thread_ts, o.change_id, {columns} FROM ({query}) o "  # noqa: S608 - fixed query texts
        "JOIN findings f ON f.id = o.finding_id", _owed_params(query, destination, owed)).fetchall()
    rows += [_row(alert_id, thread_ts, change_id, values) for alert_id, thread_ts, change_id, *values in result]
    return sorted(rows, key=lambda r: (r["finding"]["agent"], r["finding"]["first_seen"], r["finding"]["id"],
                                       r["change_id"] or 0))


def _pending(store: Store, destination: str, kind: str) -> list[dict[str, Any]]:
    columns = ", ".join(f"f.{c}" for c in FINDING_COLUMNS)
    result = store.con.execute(
        f"SELECT a.id, a.thread_ts, a.change_id, {columns} FROM alerts a "  # noqa: S608
        "JOIN findings f ON f.id = a.finding_id WHERE a.destination = ? AND a.kind = ? AND a.status = 'pending' "
        "ORDER BY f.agent, f.first_seen, f.id, a.change_id", [destination, kind]).fetchall()
    return [_row(alert_id, thread_ts, change_id, values) for alert_id, thread_ts, change_id, *values in result]


def _row(alert_id: str | None, thread_ts: str | None, change_id: int | None, values: Sequence[Any]) -> dict[str, Any]:
    finding = dict(zip(FINDING_COLUMNS, values, strict=True))
    if isinstance(finding["evidence"], str):
        finding["evidence"] = json.loads(finding["evidence"])
    finding["evidence"] = redacted(finding["evidence"])  # also a finding stored before evidence was redacted
    return {"id": alert_id, "thread_ts": thread_ts, "change_id": change_id, "finding": finding}


def _pending_count(store: Store, destination: str) -> int:
    return int(store.con.execute("SELECT count(*) FROM alerts WHERE destination = ? AND status <> 'sent'",
                                 [destination]).fetchall()[0][0])
