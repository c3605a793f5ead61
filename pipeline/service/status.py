"""`trailwarden status`: what is in the store, how fresh each source is, and how the service is doing
(the health report: its steps, what alerts are owed, the snapshot readers see)."""


from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.config import Config
from pipeline.core.times import utcnow
from pipeline.store.store import Store, first_row, recent_total, snapshot_path


def collect_status(store: Store, alert_destination: str = "console", min_severity: str = "medium",
                   config: Config | None = None) -> dict[str, Any]:
    """Everything ``status`` shows. Pending alerts are what ``alert_destination`` is owed (the
    config's Slack channel, else the console): outbox rows not yet sent and the findings, growth
    and triage replies not even enqueued yet (``pipeline.service.alerting.outbox.owed_count``).
    With the config's ``accounts:``, the last event per account and the accounts whose events
    stopped (``pipeline.ram.accounts``: a gap the service reports among its health)."""
    from pipeline.service.alerting.outbox import owed_count

    con = store.con
    now = utcnow()
    sealed = _lake(store)
    # the view leaves out the sealed days whose files cannot be read (named under "lake")
    count, first, last, agents = first_row(con.execute(
        "SELECT count(*), min(event_time), max(event_time), count(DISTINCT agent) FROM events"
    )) or (0, None, None, 0)
    last_hour = dict(con.execute(
        "SELECT source, count(*) FROM events_hot WHERE ingested_at >= ? GROUP BY source", [now - timedelta(hours=1)]
    ).fetchall())
    # an SLS cursor is opaque: the receive time of the pull it follows is kept beside it
    received = {name.removeprefix("sls.received:"): int(value) for name, value in con.execute(
        "SELECT name, value FROM pipeline_state WHERE name LIKE 'sls.received:%'").fetchall()}
    rows = con.execute(
        "SELECT source, partition, cursor, watermark, events, updated_at, last_error, last_error_at, recent "
        "FROM ingest_state ORDER BY source, partition").fetchall()
    partitions = Counter(r[0] for r in rows)
    sources = []
    for s, p, c, w, n, u, e, ea, recent in rows:
        cursor_time = _cursor_time(s, p, c, received)
        sources.append({
            "source": s, "partition": p or None, "cursor": c, "cursor_time": cursor_time, "watermark": w,
            "events": n, "updated_at": u,
            # how far behind the source the cursor is: a quiet source that is caught up lags little,
            # however old its newest event (newest_event_age_seconds)
            "lag_seconds": _lag(now, cursor_time or w), "newest_event_age_seconds": _lag(now, w),
            "events_last_hour": _last_hour(recent, now, last_hour.get(s, 0) if partitions[s] == 1 else None),
            "last_error": e, "last_error_at": ea})
    quarantined = first_row(con.execute("SELECT count(*) FROM quarantine"))
    reasons = con.execute(_QUARANTINE_KINDS).fetchall()
    runs = [
        {"id": i, "command": c, "started_at": s, "finished_at": f, "status": _run_status(st, pid, f),
         "error": e}
        for i, c, s, f, st, pid, e in con.execute(
            "SELECT id, command, started_at, finished_at, status, pid, error FROM runs "
            "ORDER BY id DESC LIMIT 5").fetchall()
    ]
    files = first_row(con.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM ingested_files"))
    steps = [
        {"step": c.removeprefix("cycle."), "last_run": s_, "status": st, "seconds": sec, "error": e,
         "counts": json.loads(n) if n else None}
        for c, s_, st, sec, e, n in con.execute(
            """
            SELECT command, started_at, status, CAST(counts->>'$.seconds' AS DOUBLE), error, counts FROM runs
            WHERE command LIKE 'cycle.%'
            QUALIFY row_number() OVER (PARTITION BY command ORDER BY id DESC) = 1 ORDER BY command
            """).fetchall()
    ]
    pending = owed_count(store, alert_destination, min_severity)
    from pipeline.ram.snapshots import sync_status

    accounts = _accounts(store, config)
    return {
        "database": store.path,
        "database_bytes": _size(store.path),
        "schema_version": store.schema_version(),
        "events": count,
        "agents": agents,
        "first_event": first,
        "last_event": last,
        "sources": sources,
        "files_ingested": files[0] if files else 0,
        "quarantined": quarantined[0] if quarantined else 0,
        "quarantine_reasons": [{"reason": r, "count": n} for r, n, _ in reasons],
        "quarantine_reason_kinds": reasons[0][2] if reasons else 0,
        "recent_runs": runs,
        "lake": sealed,
        "ram": sync_status(store),
        **({"accounts": accounts} if accounts is not None else {}),
        "service": {"steps": steps, "pending_alerts": pending, "alert_destination": alert_destination,
                    "snapshot": _snapshot_info(store.path, now), "slack_triage": _triage_health(store.path),
                    **({"account_gaps": [a for a in accounts if a["gap"]]} if accounts is not None else {})},
    }


def _lake(store: Store) -> dict[str, Any]:
    """The sealed tier (:func:`pipeline.store.lake.lake_summary`), with the days whose files
    cannot be read named as unavailable (with why): ``events`` leaves them out until restored."""
    from pipeline.store.lake import lake_summary

    summary = lake_summary(store)
    if summary["missing"]:
        summary["sealed_events"] = None  # not all readable
    return summary


def _accounts(store: Store, config: Config | None) -> list[dict[str, Any]] | None:
    """Per account (configured, then seen but not configured): its last event and its gap, as
    ``accounts`` lists them; None without ``accounts:`` in the config (one account, as before)."""
    if config is None or not config.accounts:
        return None
    import duckdb

    from pipeline.ram.accounts import list_accounts

    try:
        rows = list_accounts(store, config).rows
    except duckdb.IOException:  # a sealed file damaged inside (its ends intact): the lake line or the query names it
        return [{"alias": alias, "id": account_id, "last_event": None, "events_30d": None, "gap": False,
                 "unavailable": True} for account_id, alias in ((a.id, a.alias) for a in config.accounts)]
    return [{"alias": r["alias"], "id": r["id"], "last_event": r["last_event"], "events_30d": r["events_30d"],
             "gap": r["gap"]} for r in rows]


# The five commonest kinds of quarantine reason, and how many kinds there are. A kind is the reason
# up to its value-specific parts, so like input groups together: a JSON error's position, a quoted
# value (``eventTime: not an ISO-8601 time in range: …``), the keys an SLS log held. (RE2: no
# backreferences in a pattern; ``\1`` in a replacement is fine.)
_QUARANTINE_KINDS = r"""
SELECT regexp_replace(regexp_replace(regexp_replace(reason,
           ': line \d+ column \d+ \(char \d+\)', '', 'g'),
           '(: |got )[''"].*$', '\1…'),
           ' \([^()]*: [^()]*\)$', '') AS reason,
       count(*) AS n, count(*) OVER () AS kinds
FROM quarantine GROUP BY 1 ORDER BY n DESC, reason LIMIT 5
"""


def _triage_health(path: str) -> dict[str, Any] | None:
    """The Slack triage app's last state (it writes it beside the store; it never opens it)."""
    if path == ":memory:":
        return None
    from pipeline.service.slack_app import read_health

    return read_health(Path(path))


def human_duration(seconds: float | None) -> str | None:
    """``3979d 23h``, ``2h 0m``, ``4m 10s``, ``42s``: the largest unit and the next, for people."""
    if seconds is None:
        return None
    sign, left = ("-" if seconds < 0 else ""), round(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next(i for i, (_, size) in enumerate(units) if left >= size or size == 1)
    (unit, size), rest = units[first], units[first + 1:first + 2]
    return sign + " ".join([f"{left // size}{unit}"] + [f"{left % size // n}{u}" for u, n in rest])


def _snapshot_info(path: str, now: datetime) -> dict[str, Any] | None:
    snap = snapshot_path(path)
    if not snap.exists():
        return None
    stamp = datetime.fromtimestamp(snap.stat().st_mtime, now.tzinfo)
    return {"path": str(snap), "age_seconds": round((now - stamp).total_seconds(), 1), "bytes": snap.stat().st_size}


def _cursor_time(source: str, partition: str, cursor: str | None, received: dict[str, int]) -> datetime | None:
    """When the cursor stands: an SLS pull's receive time, or a LookupEvents window's end."""
    if f"{source}/{partition}" in received:
        return datetime.fromtimestamp(received[f"{source}/{partition}"], UTC)
    try:
        when = datetime.fromisoformat(cursor.replace("Z", "+00:00")) if cursor else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def _last_hour(recent: str | None, now: datetime, fallback: int | None) -> int | None:
    """A partition's events committed in the last hour, from its per-minute counts; for a partition
    last written before those were kept, its source's count when it is the only one, else unknown."""
    total = recent_total(recent, now)
    return fallback if total is None else total


def _lag(now: datetime, watermark: datetime | None) -> float | None:
    return round((now - watermark).total_seconds(), 1) if watermark else None


def _run_status(status: str, pid: int | None, finished: datetime | None) -> str:
    """A run still marked running whose process is gone was killed: say so."""
    if status != "running" or finished is not None or pid is None:
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:
        pass
    return "running"


def _size(path: str) -> int:
    p = Path(path)
    wal = Path(path + ".wal")
    return (p.stat().st_size if p.exists() else 0) + (wal.stat().st_size if wal.exists() else 0)
