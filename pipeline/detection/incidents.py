"""Incidents: the findings of one agent that overlap or follow each other closely, as one thing.

A finding joins an incident of its agent that is still open or acknowledged when their spans,
widened by :data:`WINDOW` (one hour) on each side, meet; findings that share events always meet
(a shared event lies in both spans). Otherwise it starts a new incident. An incident has one
severity (the highest of its findings that are not suppressed), a status derived from its
findings (:func:`derived_status`), and a headline saying what happened, most harmful act first,
then where from and when (``pipeline.detection.incident_story``). Findings point to it
(``findings.incident_id``).

Assignment happens in the transaction that saves the findings (``save_findings``), so a finding is
never stored without its incident; findings stored before incidents existed are assigned by the
next ``detect`` or ``alert`` (:func:`assign_incidents`). ``version`` counts the changes an
incident's Slack message shows (severity, status, findings, headline), so the message is updated
until it shows the latest.

Known gaps: an incident is never split or merged afterwards: a finding that would bridge two
incidents joins the earlier one; a resolved or false-positive incident takes no new findings (they
start a new incident).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from detectors.base import SEVERITIES
from pipeline.core.errors import UsageError
from pipeline.core.times import utcnow
from pipeline.detection.incident_story import EVENT_COLUMNS, headline, story
from pipeline.store.store import Store, first_row

WINDOW = timedelta(hours=1)
OPEN_STATES = ("open", "acknowledged")
STORY_EVENTS = 2000  # events read for an incident's headline; the rest are counted, not read
MIN_ID_PREFIX = 6
INCIDENT_COLUMNS = ("id", "agent", "severity", "status", "first_seen", "last_seen", "headline", "summary",
                    "finding_count", "event_count", "detectors", "version", "status_by", "status_at",
                    "created_at", "updated_at")


def incident_id(first_finding: str) -> str:
    return "inc-" + hashlib.sha256(first_finding.encode()).hexdigest()[:10]


def derived_status(statuses: Iterable[str]) -> str:
    """An incident's status from its findings': open while any is open, then acknowledged while
    any is; false positive when all are; suppressed when all are; resolved otherwise."""
    seen = [s for s in statuses if s != "suppressed"]
    if not seen:
        return "suppressed"
    for state in OPEN_STATES:
        if state in seen:
            return state
    return "false_positive" if all(s == "false_positive" for s in seen) else "resolved"


def assign_incidents(con: Any, tz: ZoneInfo | None = None, *, touched: Sequence[str] = (),
                     window: timedelta = WINDOW) -> list[str]:
    """Give every finding without an incident one, then refresh the incidents of those findings
    and of ``touched`` (findings that grew). Call inside a transaction. Returns the incidents
    refreshed. Costs a pass over the findings without an incident (a new finding's own), and
    for each incident refreshed a read of its findings and up to :data:`STORY_EVENTS` events."""
    changed: list[str] = []
    rows = con.execute("SELECT id, agent, first_seen, last_seen FROM findings WHERE incident_id IS NULL "
                       "ORDER BY first_seen, id").fetchall()
    for fid, agent, first, last in rows:
        found = first_row(con.execute(
            "SELECT id, first_seen, last_seen FROM incidents WHERE agent = ? AND list_contains(?, status) "
            "AND last_seen >= ? AND first_seen <= ? ORDER BY first_seen, id LIMIT 1",
            [agent, list(OPEN_STATES), first - window, last + window]))
        if found is None:
            iid = incident_id(fid)
            _insert(con, iid, agent, first, last)
        else:
            iid = found[0]
            con.execute("UPDATE incidents SET first_seen = least(first_seen, ?), last_seen = greatest(last_seen, ?) "
                        "WHERE id = ?", [first, last, iid])
        con.execute("UPDATE findings SET incident_id = ? WHERE id = ?", [iid, fid])
        changed.append(iid)
    if touched:
        changed += [r[0] for r in con.execute(
            "SELECT DISTINCT incident_id FROM findings WHERE list_contains(?, id) AND incident_id IS NOT NULL",
            [list(touched)]).fetchall()]
    refreshed = list(dict.fromkeys(changed))
    for start in range(0, len(refreshed), _BATCH):
        batch = refreshed[start:start + _BATCH]
        told = _events_of(con, batch)
        for iid in batch:
            refresh(con, iid, tz or ZoneInfo("UTC"), events=told.get(iid, []))
    return refreshed


_BATCH = 500  # incidents whose events one query reads


def _insert(con: Any, iid: str, agent: str, first: datetime, last: datetime) -> None:
    now = utcnow()
    con.execute(
        f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) "  # noqa: S608 - fixed columns
        "VALUES (?, ?, 'low', 'open', ?, ?, '', '{}', 0, 0, [], 0, NULL, NULL, ?, ?)",
        [iid, agent, first, last, now, now])


def refresh(con: Any, iid: str, tz: ZoneInfo | None = None, *, events: list[dict[str, Any]] | None = None) -> None:
    """Recompute an incident from its findings (and, with ``tz``, its headline from its events:
    ``events``, read here when not given); ``version`` goes up when what its message shows changed."""
    findings = con.execute(
        "SELECT id, severity, status, first_seen, last_seen, event_ids, event_count, detector, summary, score "
        "FROM findings WHERE incident_id = ? ORDER BY first_seen, id", [iid]).fetchall()
    current = first_row(con.execute(
        "SELECT agent, severity, status, headline, finding_count, summary, status_by FROM incidents WHERE id = ?",
        [iid]))
    if not findings or current is None:
        return
    agent = current[0]
    shown = [f for f in findings if f[2] != "suppressed"] or findings
    severity = max((f[1] for f in shown), key=SEVERITIES.index)
    status = derived_status(f[2] for f in findings)
    by, at = _last_change(con, [f[0] for f in findings])
    title, summary = current[3], current[5]
    if tz is not None or not title:
        worst = max(shown, key=lambda f: (SEVERITIES.index(f[1]), f[9]))
        told = story(_events_of(con, [iid]).get(iid, []) if events is None else events, tz or ZoneInfo("UTC"))
        title, summary = headline(agent, told, worst[8]), json.dumps(told.as_dict())
    visible = (severity, status, title, len(shown), by)
    bump = visible != (current[1], current[2], current[3], current[4], current[6])
    con.execute(
        "UPDATE incidents SET severity = ?, status = ?, first_seen = ?, last_seen = ?, headline = ?, summary = ?, "
        "finding_count = ?, event_count = ?, detectors = ?, status_by = ?, status_at = ?, "
        "version = version + ?, updated_at = ? WHERE id = ?",
        [severity, status, min(f[3] for f in findings), max(f[4] for f in findings), title, summary, len(shown),
         _distinct_events(shown), sorted({f[7] for f in shown}), by, at, int(bump), utcnow(), iid])


def _distinct_events(findings: Sequence[tuple[Any, ...]]) -> int:
    """Events of the incident, each once (findings share events); a finding whose listed ids were
    capped counts at least its own total."""
    listed = {e for f in findings for e in f[5]}
    return max(len(listed), *(int(f[6]) for f in findings))


def _last_change(con: Any, finding_ids: list[str]) -> tuple[str | None, datetime | None]:
    row = first_row(con.execute(
        "SELECT changed_by, changed_at FROM finding_status_changes WHERE list_contains(?, finding_id) "
        "ORDER BY id DESC LIMIT 1", [finding_ids]))
    return (row[0], row[1]) if row else (None, None)


def _events_of(con: Any, iids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The events of each of these incidents (at most :data:`STORY_EVENTS` each), in ONE query: a
    cycle refreshes hundreds of incidents, and each query of ``events`` costs its scan of the
    span (and of the sealed files' footers) however few events it returns. The ids are matched
    by a hash join (``IN (SELECT unnest(...))``; ``list_contains`` of 76k ids took 3x longer).
    Only the incident's agent's own events tell its story (a finding may list the AssumeRole call
    of the agent that started a session)."""
    agents = dict(con.execute("SELECT id, agent FROM incidents WHERE list_contains(?, id)", [iids]).fetchall())
    findings = con.execute(
        "SELECT incident_id, first_seen, last_seen, event_ids FROM findings "
        "WHERE list_contains(?, incident_id) ORDER BY first_seen, id", [iids]).fetchall()
    wanted: dict[str, list[str]] = {}
    for f in findings:
        wanted.setdefault(f[0], []).extend(f[3])
    wanted = {iid: list(dict.fromkeys(ids))[:STORY_EVENTS] for iid, ids in wanted.items()}
    ids = sorted({e for listed in wanted.values() for e in listed})
    if not ids:
        return {}
    first, last = min(f[1] for f in findings), max(f[2] for f in findings)
    cursor = con.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)}, agent FROM events WHERE event_time BETWEEN ? AND ? "  # noqa: S608
        "AND event_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY event_time, event_id", [first, last, ids])
    listing: dict[str, list[str]] = {}  # event id -> the incidents that list it
    for iid, listed in wanted.items():
        for e in listed:
            listing.setdefault(e, []).append(iid)
    told: dict[str, list[dict[str, Any]]] = {iid: [] for iid in wanted}
    for row in cursor.fetchall():  # in time order: each incident's events come out in order
        event = dict(zip(EVENT_COLUMNS, row[:-1], strict=True))
        for iid in listing[row[0]]:
            if row[-1] == agents.get(iid):
                told[iid].append(event)
    return told


# -- reading ---------------------------------------------------------------------------------------
def list_incidents(store: Store, *, status: str | None = None, agent: str | None = None,
                   since: datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Incidents, most severe first, then newest; each with its finding ids."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    for column, value in (("status", status), ("agent", agent)):
        if value:
            where.append(f"i.{column} = ?")
            params.append(value)
    if since is not None:
        where.append("i.last_seen >= ?")
        params.append(since)
    sql = (f"SELECT {', '.join('i.' + c for c in INCIDENT_COLUMNS)}, "  # noqa: S608 - fixed columns
           "(SELECT list(f.id ORDER BY f.first_seen, f.id) FROM findings f WHERE f.incident_id = i.id) "
           f"FROM incidents i WHERE {' AND '.join(where)} "
           "ORDER BY list_position(?, i.severity) DESC, i.first_seen DESC, i.id")
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.con.execute(sql, [*params, list(SEVERITIES)]).fetchall()
    return [_as_dict(row) for row in rows]


def _as_dict(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(INCIDENT_COLUMNS, row[: len(INCIDENT_COLUMNS)], strict=True))
    out["summary"] = json.loads(out["summary"]) if isinstance(out["summary"], str) else (out["summary"] or {})
    out["finding_ids"] = list(row[len(INCIDENT_COLUMNS)] or [])
    return out


def get_incident(store: Store, iid: str, con: Any = None) -> dict[str, Any] | None:
    con = con or store.con
    row = first_row(con.execute(
        f"SELECT {', '.join(INCIDENT_COLUMNS)}, "  # noqa: S608 - fixed columns
        "(SELECT list(f.id ORDER BY f.first_seen, f.id) FROM findings f WHERE f.incident_id = incidents.id) "
        "FROM incidents WHERE id = ?", [iid]))
    return _as_dict(row) if row else None


def resolve_incident_id(store: Store, text: str) -> str:
    """A full id for an id or a unique prefix (at least 6 characters, ``inc-`` optional)."""
    key = text.strip()
    key = key if key.startswith("inc-") else f"inc-{key}"
    if len(key) < len("inc-") + MIN_ID_PREFIX:
        raise UsageError(f"{text!r}: give at least {MIN_ID_PREFIX} characters of the incident id", key="ID")
    rows = [r[0] for r in store.con.execute("SELECT id FROM incidents WHERE starts_with(id, ?) ORDER BY id LIMIT 3",
                                            [key]).fetchall()]
    if not rows:
        raise UsageError(f"no such incident: {text!r}", key="ID")
    if len(rows) > 1 and key not in rows:
        raise UsageError(f"ambiguous incident id {text!r}: {', '.join(rows[:2])}, ...", key="ID")
    return key if key in rows else rows[0]
