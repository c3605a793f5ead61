"""Storing and listing findings.

Saving is idempotent: a finding whose detector, agent and dedup key match a stored one within
the detector's dedup window extends it (more events, a later ``last_seen``) instead of making a
second row; the same finding saved twice changes nothing. So re-running ``detect`` over a window
adds no duplicates, and a burst that spans two runs stays one finding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from detectors.base import SEVERITIES, Finding, finding_id, severity_rank
from pipeline.core.errors import UsageError
from pipeline.core.redact import redacted
from pipeline.core.times import utcnow
from pipeline.store.sessions import origin_of
from pipeline.store.store import Store, first_row

MAX_EVENT_IDS = 1000
FINDING_COLUMNS = ("id", "detector", "agent", "severity", "score", "first_seen", "last_seen", "summary",
                   "event_ids", "event_count", "evidence", "status", "incident_id",
                   "origin_agent", "origin_account", "chain", "account", "home_account")

# Where most of each finding's events happened (recipientAccountId, else the caller's home
# account), and the home account of most of them: one pass over the events of the findings' whole
# time span ($1, $2), for the findings ($3) and their event ids ($4), saved together.
_ACCOUNTS = """
WITH wanted AS (
    SELECT unnest($3::VARCHAR[]) AS fid, unnest($4::VARCHAR[][]) AS ids
), ids AS (
    SELECT fid, unnest(ids) AS event_id FROM wanted
), seen AS (
    SELECT ids.fid, coalesce(e.recipient_account_id, e.account_id) AS acted, e.account_id AS home
    FROM ids JOIN events e ON e.event_id = ids.event_id
    WHERE e.event_time BETWEEN $1 AND $2
), acted AS (
    SELECT fid, acted, count(*) AS n FROM seen WHERE acted IS NOT NULL GROUP BY fid, acted
    QUALIFY row_number() OVER (PARTITION BY fid ORDER BY n DESC, acted) = 1
), home AS (
    SELECT fid, home, count(*) AS n FROM seen WHERE home IS NOT NULL GROUP BY fid, home
    QUALIFY row_number() OVER (PARTITION BY fid ORDER BY n DESC, home) = 1
)
SELECT fid, acted.acted, home.home FROM acted FULL JOIN home USING (fid)
"""


@dataclass
class SaveReport:
    new: int = 0
    extended: int = 0
    unchanged: int = 0
    new_ids: tuple[str, ...] = ()
    extended_ids: tuple[str, ...] = ()


def save_findings(store: Store, findings: Sequence[Finding], dedup: dict[str, timedelta],
                  run_id: int | None = None, *, tz: ZoneInfo | None = None) -> SaveReport:
    """Insert or extend, in one transaction. A new finding that an active suppression covers is
    stored as ``suppressed``; one that matches a *resolved* finding fires again as a new finding
    naming it (``previous_id``), so it is alerted again. In the same transaction every new finding
    joins an incident (``pipeline.detection.incidents``; headlines in the time zone ``tz``, default
    UTC), and the incidents of findings that grew are refreshed."""
    from pipeline.detection.incidents import assign_incidents
    from pipeline.triage.lifecycle import load_suppressions

    report = SaveReport()
    new_ids: list[str] = []
    extended_ids: list[str] = []
    with store.transaction() as con:
        suppressions = load_suppressions(store, con=con)
        accounts: dict[str, tuple[str | None, str | None]] | None = None  # read at the first insert
        for f in findings:
            window = dedup.get(f.detector, timedelta(hours=1))
            row = first_row(con.execute(
                """
                SELECT id, first_seen, last_seen, event_ids, event_count, severity, score, status
                FROM findings
                WHERE detector = ? AND agent = ? AND dedup_key = ?
                  AND last_seen >= ? AND first_seen <= ?
                ORDER BY (id = ?) DESC, last_seen DESC LIMIT 1
                """,
                [f.detector, f.agent, f.dedup_key, f.first_seen - window, f.last_seen + window, f.id],
            ))
            previous, refire = None, False
            if row is not None and row[7] == "resolved":
                again, row, previous = _refire(con, f, row)
                if again is None:
                    report.unchanged += 1
                    continue
                f, refire = again, row is not None
            if row is None:
                accounts = _accounts_of(con, findings) if accounts is None else accounts
                _insert(con, f, run_id, suppressions, previous, accounts)
                report.new += 1
                new_ids.append(f.id)
            elif _extend(con, f, row[:7], keep_words=refire):
                report.extended += 1
                extended_ids.append(row[0])
            else:
                report.unchanged += 1
        _record_cells(con, new_ids + extended_ids)
        assign_incidents(con, tz or ZoneInfo("UTC"), touched=extended_ids)
    report.new_ids, report.extended_ids = tuple(new_ids), tuple(extended_ids)
    return report


def _record_cells(con: Any, ids: list[str]) -> None:
    """Record the (UTC day, agent) cells of the events these findings list
    (``pipeline.detection.features``: a refit reads them from learnable events). Their events lie
    between their first and last event: the scan reads that span only."""
    if not ids:
        return
    con.execute(
        """
        UPDATE findings SET event_cells = c.cells FROM (
            SELECT f.id, list(DISTINCT CAST(CAST(timezone('UTC', e.event_time) AS DATE) AS VARCHAR) || '|' || e.agent)
                   AS cells
            FROM (SELECT id, unnest(event_ids) AS event_id FROM findings WHERE list_contains($ids, id)) f
            JOIN (SELECT event_id, event_time, agent FROM events
                  WHERE event_time >= (SELECT min(first_seen) FROM findings WHERE list_contains($ids, id))
                    AND event_time <= (SELECT max(last_seen) FROM findings WHERE list_contains($ids, id))) e
              USING (event_id)
            GROUP BY f.id) c
        WHERE findings.id = c.id
        """, {"ids": ids})


def _refire(con: Any, f: Finding, resolved: tuple[Any, ...]
            ) -> tuple[Finding | None, tuple[Any, ...] | None, str | None]:
    """``f`` matched a resolved finding. Events it had already are settled; new ones make it fire
    again: as the re-fire already stored (extend it), or as a new finding that names the resolved
    one. Returns (the finding, the row to extend or None to insert, the resolved id), or Nones
    when nothing is new."""
    from pipeline.triage.lifecycle import last_resolution

    known = set(resolved[3])
    fresh = [e for e in f.event_ids if e not in known]
    if not fresh:
        return None, None, None
    times = first_row(con.execute("SELECT min(event_time), max(event_time) FROM events WHERE list_contains(?, event_id)",
                                  [fresh]))
    first_seen = times[0] if times and times[0] else f.first_seen
    last_seen = times[1] if times and times[1] else f.last_seen
    again = first_row(con.execute(
        "SELECT id, first_seen, last_seen, event_ids, event_count, severity, score, status FROM findings "
        "WHERE previous_id = ? ORDER BY first_seen DESC LIMIT 1", [resolved[0]]))
    if again is not None:  # only what is new since the resolution, keeping the re-fire's own words
        return replace(f, first_seen=first_seen, last_seen=last_seen, event_ids=fresh), again, None
    resolution = last_resolution(con, resolved[0]) or {}
    evidence = {**f.evidence, "fires_again_after": {
        "finding": resolved[0], "resolved_by": resolution.get("by"), "resolved_at": resolution.get("at"),
        "resolution": resolution.get("reason")}}
    refired = replace(f, id=finding_id(f.detector, f.agent, f"{f.dedup_key}|after:{resolved[0]}", first_seen),
                      first_seen=first_seen, last_seen=last_seen, event_ids=fresh,
                      evidence=json.loads(json.dumps(evidence, default=_iso)),
                      summary=f"{f.summary} (again, after {resolved[0][:12]} was resolved)")
    return refired, None, resolved[0]


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)


def _accounts_of(con: Any, findings: Sequence[Finding]) -> dict[str, tuple[str | None, str | None]]:
    """finding id -> (the account most of its events happened in, their callers' home account),
    for findings saved together: one query over their events (a finding's first
    :data:`MAX_EVENT_IDS`, as stored) within their whole time span."""
    if not findings:
        return {}
    first, last = min(f.first_seen for f in findings), max(f.last_seen for f in findings)
    rows = con.execute(_ACCOUNTS, [first, last, [f.id for f in findings],
                                   [list(f.event_ids[:MAX_EVENT_IDS]) for f in findings]]).fetchall()
    out: dict[str, tuple[str | None, str | None]] = dict.fromkeys((f.id for f in findings), (None, None))
    out.update({str(fid): (acted, home) for fid, acted, home in rows})
    return out


def _insert(con: Any, f: Finding, run_id: int | None, suppressions: Sequence[Any] = (),
            previous_id: str | None = None, accounts: dict[str, tuple[str | None, str | None]] | None = None) -> None:
    from pipeline.triage.lifecycle import matching_suppression

    now = utcnow()
    status, suppression_id = f.status, None
    if status == "open":
        covering = matching_suppression(con, suppressions, f.detector, f.agent, f.event_ids)
        if covering is not None:
            status, suppression_id = "suppressed", covering.id
    origin = origin_of(con, list(f.event_ids[:MAX_EVENT_IDS]), f.first_seen, f.last_seen)
    where = (accounts if accounts is not None and f.id in accounts else _accounts_of(con, [f])).get(f.id)
    con.execute(
        "INSERT INTO findings (id, detector, agent, severity, score, first_seen, last_seen, summary, event_ids, "
        "event_count, evidence, status, dedup_key, created_at, updated_at, run_id, suppression_id, previous_id, "
        "origin_agent, origin_account, chain, account, home_account) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [f.id, f.detector, f.agent, f.severity, f.score, f.first_seen, f.last_seen, f.summary,
         list(f.event_ids[:MAX_EVENT_IDS]), len(f.event_ids), json.dumps(f.evidence, default=str),
         status, f.dedup_key, now, now, run_id, suppression_id, previous_id,
         *((origin.agent, origin.account, origin.chain) if origin and origin.agent != f.agent else (None, None, None)),
         *(where or (None, None))],
    )


def _extend(con: Any, f: Finding, row: tuple[Any, ...], *, keep_words: bool = False) -> bool:
    fid, first, last, ids, count, severity, score = row
    known = set(ids)
    fresh = [e for e in f.event_ids if e not in known]
    first_seen, last_seen = min(first, f.first_seen), max(last, f.last_seen)
    higher = severity_rank(f.severity) > severity_rank(severity)
    if not fresh and first_seen == first and last_seen == last and not higher and f.score <= score:
        return False
    merged = (list(ids) + fresh)[:MAX_EVENT_IDS]
    # the newcomer's words describe the whole finding only when it covers the stored one (the same
    # burst seen whole, e.g. across a scoring chunk); a later part keeps the original's
    covers = f.first_seen <= first and f.last_seen >= last and not keep_words
    con.execute(
        f"""
        UPDATE findings SET first_seen = ?, last_seen = ?, event_ids = ?, event_count = ?,
               severity = ?, score = ?, updated_at = ?{", summary = ?, evidence = ?" if covers else ""}
        WHERE id = ?
        """,  # noqa: S608 - a fixed optional clause
        [first_seen, last_seen, merged, count + len(fresh), f.severity if higher else severity,
         max(score, f.score), utcnow(), *([f.summary, json.dumps(f.evidence, default=str)] if covers else []), fid],
    )
    return True


def list_findings(store: Store, *, agent: str | None = None, detector: str | None = None,
                  status: str | None = None, since: datetime | None = None,
                  min_severity: str | None = None, limit: int | None = None,
                  finding_id: str | None = None, account: str | None = None,
                  home_account: str | None = None) -> list[dict[str, Any]]:
    """Findings, newest first; ``account`` (an id) keeps those whose events happened there,
    ``home_account`` those whose callers' credentials are of that account."""
    where: list[str] = []
    params: list[Any] = []
    if finding_id is not None:
        where.append("id = ?")
        params.append(finding_id)
    for column, value in (("agent", agent), ("detector", detector), ("status", status), ("account", account),
                          ("home_account", home_account)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since:
        where.append("last_seen >= ?")
        params.append(since)
    if min_severity:
        if min_severity not in SEVERITIES:
            raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}", key="--min-severity")
        where.append("list_position(?, severity) >= ?")
        params.extend([list(SEVERITIES), SEVERITIES.index(min_severity) + 1])
    sql = f"SELECT {', '.join(FINDING_COLUMNS)} FROM findings"  # noqa: S608 - fixed column names
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY last_seen DESC, id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.con.execute(sql, params).fetchall()
    out = []
    for row in rows:
        item = dict(zip(FINDING_COLUMNS, row, strict=True))
        evidence = json.loads(item["evidence"]) if isinstance(item["evidence"], str) else item["evidence"]
        item["evidence"] = redacted(evidence)  # a finding stored before evidence was redacted has secrets
        out.append(item)
    return out


_TRIAGE_COLUMNS = ("suppression_id", "previous_id", "created_at", "updated_at")


def get_finding(store: Store, finding_id: str) -> dict[str, Any]:
    """One finding in full (a full id; see ``triage.lifecycle.resolve_finding_ids``): its listed
    fields plus its suppression, the resolved finding it fires again after, and when it was made
    and last changed."""
    [finding] = list_findings(store, finding_id=finding_id)
    extra = store.con.execute(f"SELECT {', '.join(_TRIAGE_COLUMNS)} FROM findings WHERE id = ?",  # noqa: S608
                              [finding_id]).fetchall()[0]
    finding.update(zip(_TRIAGE_COLUMNS, extra, strict=True))
    return finding


def known_detectors(store: Store) -> set[str]:
    """Detector ids that have findings in the store (a removed detector's too)."""
    return {r[0] for r in store.con.execute("SELECT DISTINCT detector FROM findings").fetchall()}


def suppressed_counts(store: Store) -> dict[str, int]:
    """How many findings each suppression has suppressed."""
    return {str(k): int(n) for k, n in store.con.execute(
        "SELECT suppression_id, count(*) FROM findings WHERE suppression_id IS NOT NULL GROUP BY 1").fetchall()}
