"""The alert outbox: what each finding owes a destination, and delivering it exactly once.

``enqueue`` gives every open finding at or above the minimum severity one ``alert`` row per
destination, and a finding that grew after it was alerted an ``update`` row (posted as a reply in
the incident's thread). ``deliver`` posts pending rows, paced to Slack's one message per second
per channel: an incident's new findings go out together in one top-level message (incidents most
severe first, then oldest), each then owes a ``detail`` row, its evidence as a reply in the
message's thread (two findings of one reason on the same events share one); a finding that joins
an incident already posted is a reply in its thread. Triage changes are one reply per change (all
the findings one triage moved together). The incident's message is updated in place
(``chat.update``) whenever the incident changed after it was posted (``incidents.version`` above
``incident_messages.shown_version``): a triage, a new finding, a higher severity. An update is
idempotent, so it is simply repeated after a crash until it is recorded.

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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from detectors.base import SEVERITIES
from models.inventory import Inventory
from pipeline.core.config import Config
from pipeline.core.errors import TerminalError, TrailwardenError, scrub
from pipeline.core.redact import redacted
from pipeline.core.times import pause, utcnow
from pipeline.detection.findings import FINDING_COLUMNS
from pipeline.service.alerting.facts import reason_groups
from pipeline.service.alerting.messages import (
    Message,
    finding_reply,
    incident_message,
    replay_hint,
    status_message,
    update_message,
)
from pipeline.store.store import Store, first_row

if TYPE_CHECKING:  # slack_sdk is not imported for `status`, which only counts what is owed
    from pipeline.service.alerting.slack import Sender

log = logging.getLogger("trailwarden.alert")
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
    """One message a run posts (or would post): an incident's top-level message (``alert`` without
    a thread), a reply in its thread (``alert`` for a finding that joined it, ``detail``,
    ``update``, ``status``), or the message updated in place (``refresh``)."""

    kind: str  # alert | detail | update | status | refresh
    agent: str
    rows: list[dict[str, Any]]
    message: Message
    thread_ts: str | None
    incident_id: str | None = None
    version: int | None = None  # the incident version the message shows (top-level and refresh)
    update_ts: str | None = None  # refresh: the ts of the message updated
    channel_id: str | None = None
    findings: list[str] = field(default_factory=list)  # finding ids a reply is about (preview)

    @property
    def finding_ids(self) -> list[str]:
        return list(dict.fromkeys([*(r["finding"]["id"] for r in self.rows), *self.findings]))

    def as_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "agent": self.agent, "incident_id": self.incident_id,
               "finding_ids": self.finding_ids, "thread_ts": self.thread_ts, "text": self.message.text,
               "blocks": self.message.blocks}
        if self.kind == "refresh":
            out["updates_ts"] = self.update_ts
        return out


@dataclass
class AlertReport:
    enqueued: int = 0
    alerts_sent: int = 0  # findings alerted
    messages_sent: int = 0
    updates_sent: int = 0
    details_sent: int = 0  # thread replies with a finding's evidence
    status_sent: int = 0  # thread replies for acknowledged / resolved / false positive
    refreshed: int = 0  # incident messages updated in place
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
                     any_value(coalesce(thread_ts, message_ts)) FILTER (WHERE kind = 'alert' AND status = 'sent')
                         AS alert_ts
              FROM alerts WHERE destination = $dest GROUP BY finding_id) a ON a.finding_id = f.id
        WHERE a.alert_ts IS NOT NULL AND f.event_count > a.reported
          AND f.status IN ('open', 'acknowledged')
          AND NOT EXISTS (SELECT 1 FROM alerts p WHERE p.finding_id = f.id AND p.destination = $dest
                          AND p.kind = 'update' AND p.status <> 'sent')
    """,
    # each status change of an alerted finding: a thread reply saying who and why
    "status": """
        SELECT sha256(c.finding_id || '|' || $dest || '|status|' || c.id) AS id, c.finding_id, 'status' AS kind,
               f.event_count, coalesce(a.thread_ts, a.message_ts) AS thread_ts, c.id AS change_id
        FROM finding_status_changes c
        JOIN findings f ON f.id = c.finding_id
        JOIN alerts a ON a.finding_id = c.finding_id AND a.destination = $dest AND a.kind = 'alert'
                     AND a.status = 'sent'
        WHERE NOT EXISTS (SELECT 1 FROM alerts x WHERE x.destination = $dest AND x.kind = 'status'
                          AND x.change_id = c.id)
    """,
    # a finding announced in its incident's top-level message: its evidence, as a reply in the thread
    "detail": """
        SELECT sha256(f.id || '|' || $dest || '|detail') AS id, f.id AS finding_id, 'detail' AS kind,
               f.event_count, a.message_ts AS thread_ts, NULL::BIGINT AS change_id
        FROM findings f
        JOIN alerts a ON a.finding_id = f.id AND a.destination = $dest AND a.kind = 'alert' AND a.status = 'sent'
                     AND a.thread_ts IS NULL
        JOIN incident_messages m ON m.incident_id = f.incident_id AND m.destination = $dest
                                AND m.message_ts = a.message_ts
        WHERE NOT EXISTS (SELECT 1 FROM alerts d WHERE d.finding_id = f.id AND d.destination = $dest
                          AND d.kind = 'detail')
    """,
}
# incident messages that show an older version of their incident than the current one
_STALE = """
    SELECT m.incident_id, m.message_ts, m.channel_id, i.version FROM incident_messages m
    JOIN incidents i ON i.id = m.incident_id
    WHERE m.destination = ? AND i.version > m.shown_version ORDER BY m.incident_id
"""


def _owed_params(query: str, destination: str, min_severity: str) -> dict[str, Any]:
    params = {"dest": destination, "allowed": _at_least(min_severity)}
    return {k: v for k, v in params.items() if f"${k}" in query}


def enqueue(store: Store, destination: str, min_severity: str, kinds: Sequence[str] = tuple(_OWED)) -> int:
    """Add the rows findings owe ``destination``; returns how many were added."""
    now = utcnow()
    with store.transaction() as con:
        before = _count(con)
        for query in (_OWED[k] for k in kinds):  # alerts first: nothing else reads an unsent alert
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
    stale = store.con.execute(f"SELECT count(*) FROM ({_STALE})", [destination]).fetchall()[0][0]  # noqa: S608
    return int(unsent) + int(stale) + sum(
        int(store.con.execute(f"SELECT count(*) FROM ({query})",  # noqa: S608 - fixed query texts
                              _owed_params(query, destination, min_severity)).fetchall()[0][0])
        for query in _OWED.values())


@dataclass(frozen=True)
class Style:
    """How messages are drawn for a destination: the business time zone of local times, and
    whether the incident message carries triage buttons (triage from Slack is configured)."""

    tz: ZoneInfo = ZoneInfo("UTC")
    triage: bool = False


def style_of(config: Config) -> Style:
    """Buttons when ``slack.triage_group`` says who may press them (the app that answers them:
    ``pipeline/service/slack_app.py``, run by `serve` or `trailwarden slack` with SLACK_APP_TOKEN)."""
    triage = config.slack is not None and bool(getattr(config.slack, "triage_group", None))
    return Style(config.tz, triage)


def preview(store: Store, destination: str, min_severity: str, inventory: Inventory,
            replay: Callable[[str, Any], str] = replay_hint, style: Style | None = None) -> AlertReport:
    """The messages a run would post now, in the order it would post them: the outbox's pending
    rows and what ``enqueue`` would add (new incidents with their thread replies, growth, triage
    replies, messages updated in place). Records nothing. (Rows a crash left 'sending' are not
    shown: the run first asks Slack whether they went out.)"""
    report = AlertReport()
    report.previews = _plan(store, destination, inventory, replay, style or Style(), owed=min_severity)
    return report


def _at_least(min_severity: str) -> list[str]:
    return list(SEVERITIES[SEVERITIES.index(min_severity):])


def _count(con: Any) -> int:
    return int(con.execute("SELECT count(*) FROM alerts").fetchall()[0][0])


def deliver(store: Store, sender: Sender, inventory: Inventory, replay: Callable[[str, Any], str] = replay_hint,
            *, sleep: Callable[[float], None] = pause, style: Style | None = None) -> AlertReport:
    """Recover interrupted posts, then post what is pending: new incidents (then their details,
    in a second pass, once the message they reply to exists), replies, and updates in place.
    Errors from the sender propagate (after the rows involved are put back to pending)."""
    style = style or Style()
    report = AlertReport()
    report.recovered = _recover(store, sender)
    posted = 0
    for attempt in range(3):
        if attempt:
            enqueue(store, sender.destination, "low", kinds=("detail",))
        posts = _plan(store, sender.destination, inventory, replay, style)
        if not posts:
            break
        for post in posts:
            _pace(sender, posted, sleep)
            posted += 1
            _deliver_one(store, sender, post, report)
    report.pending = _pending_count(store, sender.destination)
    return report


def _deliver_one(store: Store, sender: Sender, post: Post, report: AlertReport) -> None:
    if post.kind == "refresh":
        _refresh(store, sender, post)
        report.refreshed += 1
        return
    _send(store, sender, post.rows, post.message, thread_ts=post.thread_ts,
          parent=(post.incident_id, post.version) if post.kind == "alert" and post.thread_ts is None else None)
    if post.kind == "alert" and post.thread_ts is None:
        report.messages_sent += 1
        report.alerts_sent += len(post.rows)
    elif post.kind == "alert":
        report.alerts_sent += len(post.rows)
        report.details_sent += 1
    elif post.kind == "detail":
        report.details_sent += 1
    elif post.kind == "update":
        report.updates_sent += 1
    else:
        report.status_sent += 1


def _plan(store: Store, destination: str, inventory: Inventory, replay: Callable[[str, Any], str], style: Style,
          *, owed: str | None = None) -> list[Post]:
    """The messages for the pending rows (and, with ``owed`` = a minimum severity, for the rows
    ``enqueue`` would add, previewed with the thread replies they will owe): new incidents most
    severe first, then oldest; details, growth and triage replies; then messages to update; then
    (a preview's) the evidence replies the new messages will owe - the order a run posts them."""
    from pipeline.detection.incidents import get_incident

    posts: list[Post] = []
    later: list[Post] = []  # a preview's evidence replies: posted in a second pass, after the rest
    by_incident: dict[str, list[dict[str, Any]]] = {}
    for row in _with_event_times(store, _rows(store, destination, "alert", owed)):
        by_incident.setdefault(row["finding"].get("incident_id") or f"agent:{row['finding']['agent']}", []).append(row)
    incidents = {iid: get_incident(store, iid) or _unassigned(rows) for iid, rows in by_incident.items()}
    for iid in sorted(by_incident, key=lambda i: (-SEVERITIES.index(incidents[i]["severity"]),
                                                   incidents[i]["first_seen"], i)):
        for post in _incident_posts(store, destination, inventory, replay, style, incidents[iid], by_incident[iid],
                                    preview=owed is not None):
            (later if post.kind == "detail" else posts).append(post)
    posts += _detail_posts(_with_event_times(store, _rows(store, destination, "detail", owed)), style)
    posts += [Post("update", row["finding"]["agent"], [row],
                   update_message(row["finding"], row["finding"]["event_count"] - row["reported"]), row["thread_ts"],
                   row["finding"].get("incident_id"))
              for row in _with_reported(store, destination, _rows(store, destination, "update", owed))]
    posts += _status_posts(_with_change(store, _rows(store, destination, "status", owed)))
    posts += _refresh_posts(store, destination, inventory, replay, style)
    return posts + later


def _incident_posts(store: Store, destination: str, inventory: Inventory, replay: Callable[[str, Any], str],
                    style: Style, incident: dict[str, Any], rows: list[dict[str, Any]], *,
                    preview: bool) -> list[Post]:
    """An incident's new findings: its top-level message (with, in a preview, the detail replies
    it will owe), or replies in the thread of the message it already has."""
    agent, iid = incident["agent"], incident["id"]
    parent = _parent(store, iid, destination)
    new = [r["finding"] for r in rows]
    if parent is not None:
        return [Post("alert", agent, [r for r in rows if r["finding"]["id"] in {f["id"] for f in g.findings}],
                     finding_reply(g, style.tz), parent[0], iid) for g in reason_groups(new)]
    shown = _alerted(store, iid, destination, exclude={f["id"] for f in new}) + new
    message = incident_message(incident, shown, inventory.agent(agent),
                               replay(agent, min(f["first_seen"] for f in shown)), triage=style.triage)
    posts = [Post("alert", agent, rows, message, None, iid, int(incident.get("version") or 0))]
    if preview:
        posts += [Post("detail", agent, [], finding_reply(g, style.tz), "(the incident's message)", iid,
                       findings=[f["id"] for f in g.findings]) for g in reason_groups(new)]
    return posts


def _detail_posts(rows: list[dict[str, Any]], style: Style) -> list[Post]:
    """One reply per reason group of each incident's findings awaiting their detail."""
    by_thread: dict[str | None, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: r["thread_ts"] or ""):  # the order the messages were posted (ts order)
        by_thread.setdefault(row["thread_ts"], []).append(row)
    posts = []
    for thread_ts, group_rows in by_thread.items():
        for g in reason_groups([r["finding"] for r in group_rows]):
            ids = {f["id"] for f in g.findings}
            posts.append(Post("detail", g.lead["agent"], [r for r in group_rows if r["finding"]["id"] in ids],
                              finding_reply(g, style.tz), thread_ts, g.lead.get("incident_id")))
    return posts


def _status_posts(rows: list[dict[str, Any]]) -> list[Post]:
    """One reply per triage: the findings one change moved (same thread, who, status, why and
    time) together."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        c = row["change"]
        groups.setdefault((row["thread_ts"], c["by"], c["status"], c["reason"], c["at"]), []).append(row)
    return [Post("status", grouped[0]["finding"]["agent"], grouped,
                 status_message([r["finding"] for r in grouped], grouped[0]["change"]), grouped[0]["thread_ts"],
                 grouped[0]["finding"].get("incident_id")) for grouped in groups.values()]


def _refresh_posts(store: Store, destination: str, inventory: Inventory, replay: Callable[[str, Any], str],
                   style: Style) -> list[Post]:
    """Incident messages to update in place: their incident changed after they were drawn."""
    from pipeline.detection.incidents import get_incident

    posts = []
    for iid, ts, channel_id, version in store.con.execute(_STALE, [destination]).fetchall():
        incident = get_incident(store, iid)
        shown = _alerted(store, iid, destination)
        if incident is None or not shown:
            continue
        message = incident_message(incident, shown, inventory.agent(incident["agent"]),
                                   replay(incident["agent"], min(f["first_seen"] for f in shown)), triage=style.triage)
        posts.append(Post("refresh", incident["agent"], [], message, None, iid, int(version), ts, channel_id))
    return posts


def _parent(store: Store, incident_id: str, destination: str) -> tuple[str, str | None] | None:
    row = first_row(store.con.execute(
        "SELECT message_ts, channel_id FROM incident_messages WHERE incident_id = ? AND destination = ?",
        [incident_id, destination]))
    return (str(row[0]), row[1]) if row else None


def _alerted(store: Store, incident_id: str, destination: str, exclude: set[str] | None = None
             ) -> list[dict[str, Any]]:
    """The incident's findings this destination is told of (an alert row, in any state), suppressed
    ones aside."""
    columns = ", ".join(f"f.{c}" for c in FINDING_COLUMNS)
    result = store.con.execute(
        f"SELECT NULL, NULL, NULL, {columns} FROM findings f WHERE f.incident_id = ? AND f.status <> 'suppressed' "  # noqa: S608
        "AND EXISTS (SELECT 1 FROM alerts a WHERE a.finding_id = f.id AND a.destination = ? AND a.kind = 'alert') "
        "ORDER BY f.first_seen, f.id", [incident_id, destination]).fetchall()
    rows = [_row(a, t, c, values) for a, t, c, *values in result]
    return [r["finding"] for r in rows if r["finding"]["id"] not in (exclude or set())]


def _unassigned(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A preview's stand-in for findings stored before incidents existed (the next writing run
    assigns them): their agent's, with the worst one's summary as headline."""
    worst = max((r["finding"] for r in rows), key=lambda f: (SEVERITIES.index(f["severity"]), f["score"]))
    return {"id": None, "agent": worst["agent"], "severity": worst["severity"], "status": "open",
            "headline": worst["summary"], "summary": {}, "version": 0,
            "first_seen": min(r["finding"]["first_seen"] for r in rows)}


def _pace(sender: Sender, posted: int, sleep: Callable[[float], None]) -> None:
    if posted and sender.pace:
        sleep(sender.pace)  # Slack allows about one message per second per channel


def _send(store: Store, sender: Sender, rows: Sequence[dict[str, Any]], message: Message,
          thread_ts: str | None, parent: tuple[str | None, int | None] | None = None) -> None:
    """Post one message for these outbox rows, exactly once (see the module docstring). ``parent``
    (incident, version) marks an incident's top-level message, recorded in ``incident_messages``
    with the rows."""
    ids = sorted(r["id"] for r in rows)
    key = hashlib.sha256("|".join(ids).encode()).hexdigest()[:32]
    with store.transaction() as con:  # 1. promise: committed before Slack hears of it, with the
        con.execute(                     # finding's count as the message will show it, and its thread
            """
            UPDATE alerts SET status = 'sending', message_key = ?, attempts = attempts + 1, sent_at = ?,
                   thread_ts = coalesce(thread_ts, ?),
                   event_count = greatest(event_count, (SELECT f.event_count FROM findings f
                                                        WHERE f.id = alerts.finding_id))
            WHERE list_contains(?, id)
            """, [key, utcnow(), thread_ts, ids])
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
    _mark_sent(store, ids, ts, parent, getattr(sender, "channel_id", None))  # 3. record


def _mark_sent(store: Store, ids: list[str], ts: str, parent: tuple[str | None, int | None] | None = None,
               channel_id: str | None = None) -> None:
    """Record the post (the rows already hold the count the message showed); an incident's
    top-level message also becomes the incident's message at this destination, showing
    ``parent``'s version."""
    with store.transaction() as con:
        con.execute("UPDATE alerts SET status = 'sent', message_ts = ?, sent_at = ?, last_error = NULL "
                    "WHERE list_contains(?, id)", [ts, utcnow(), ids])
        if parent is not None and parent[0] is not None:
            con.execute(
                "INSERT OR REPLACE INTO incident_messages (incident_id, destination, channel_id, message_ts, "
                "shown_version, updated_at) SELECT ?, destination, ?, ?, ?, ? FROM alerts WHERE list_contains(?, id) "
                "LIMIT 1", [parent[0], channel_id, ts, parent[1] or 0, utcnow(), ids])


def _refresh(store: Store, sender: Sender, post: Post) -> None:
    """Update an incident's message in place, then record the version it shows. ``chat.update``
    is idempotent: a crash between the two repeats it, which changes nothing. A message that is
    gone (deleted in Slack) is given up: recorded as shown, with a warning."""
    assert post.update_ts is not None and post.incident_id is not None
    gone = sender.update(post.message, ts=post.update_ts, channel_id=post.channel_id)
    if gone:
        log.warning("the Slack message of incident %s is gone (%s); it is no longer updated", post.incident_id, gone)
    with store.transaction() as con:
        con.execute("UPDATE incident_messages SET shown_version = greatest(shown_version, ?), updated_at = ? "
                    "WHERE incident_id = ? AND destination = ?",
                    [post.version or 0, utcnow(), post.incident_id, sender.destination])


def _recover(store: Store, sender: Sender) -> int:
    """Rows a crash left 'sending': posted after all (record it), or not (pending again)."""
    rows = store.con.execute(
        "SELECT a.message_key, list(a.id), min(a.sent_at), any_value(a.thread_ts), "
        "any_value(f.incident_id) FILTER (WHERE a.kind = 'alert' AND a.thread_ts IS NULL) FROM alerts a "
        "LEFT JOIN findings f ON f.id = a.finding_id "
        "WHERE a.destination = ? AND a.status = 'sending' GROUP BY a.message_key", [sender.destination]).fetchall()
    found = 0
    for key, ids, since, thread_ts, incident in rows:
        ts = sender.find(key, since - RECOVERY_SLACK, thread_ts) if key else None
        if ts:  # a top-level message found: the incident's, drawn from an unknown version (updated next)
            _mark_sent(store, list(ids), ts, (incident, 0) if incident else None, getattr(sender, "channel_id", None))
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
