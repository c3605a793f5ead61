"""Retention: audit logs grow without end, and compliance says how long they are kept.

``prune`` archives events older than ``retention.events`` to Parquet (zstd, one folder per UTC
day, ``archive_dir/day=YYYY-MM-DD/``) when ``archive_dir`` is set, then deletes them; and drops the
raw JSON of events older than ``retention.raw_json`` while their typed columns stay. Events that
an open finding references are never touched: evidence is kept until the finding is closed.
Archived events stay queryable: ``trailwarden query "SELECT * FROM read_parquet('<dir>/*/*.parquet')"``.

Hot events (``events_hot``) are deleted or updated in place, as before. Sealed days
(:mod:`pipeline.store.lake`) go whole: a day is dropped once all of it is older than the horizon
(a day straddling it waits until it is), one day per transaction - its files retired, or
replaced by one file of the events open findings cite. Dropping the raw JSON of a sealed day
rewrites its files once (``lake_files.raw_dropped``), a day at a time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipeline.core.config import Retention
from pipeline.core.times import utcnow
from pipeline.store import lake
from pipeline.store.store import Store, first_row

# events an open finding points at (the event_ids lists hold up to 1,000 per finding)
_KEPT = """
    SELECT DISTINCT unnest(event_ids) AS event_id FROM findings
    WHERE status IN ('open', 'acknowledged')
"""
_CITED = "event_id IN (SELECT event_id FROM _tw_kept)"


@dataclass
class PruneReport:
    archived: int = 0
    deleted: int = 0
    raw_dropped: int = 0
    kept_as_evidence: int = 0
    archive_dir: str | None = None
    sealed_days_dropped: int = 0
    sealed_days_raw_dropped: int = 0


def prune(store: Store, retention: Retention) -> PruneReport:
    now = utcnow()
    report = PruneReport(archive_dir=str(retention.archive_dir) if retention.archive_dir else None)
    _prune_hot(store, retention, now, report)
    _prune_sealed(store, retention, now, report)
    return report


def _prune_hot(store: Store, retention: Retention, now: datetime, report: PruneReport) -> None:
    """Old hot events archived and deleted, old raw JSON dropped, in one transaction."""
    horizon = now - retention.events
    with store.transaction() as con:
        con.execute(f"CREATE TEMP TABLE _tw_old AS SELECT event_id FROM events_hot "  # noqa: S608 - fixed text
                    f"WHERE event_time < ? AND event_id NOT IN ({_KEPT})", [horizon])
        row = first_row(con.execute(f"SELECT count(*) FROM events_hot WHERE event_time < ? "  # noqa: S608
                                    f"AND event_id IN ({_KEPT})", [horizon]))
        report.kept_as_evidence += int(row[0]) if row else 0
        if retention.archive_dir is not None:
            report.archived += _archive(con, Path(retention.archive_dir), horizon)
        row = first_row(con.execute("DELETE FROM events_hot WHERE event_id IN (SELECT event_id FROM _tw_old)"))
        report.deleted += int(row[0]) if row else 0
        con.execute("DROP TABLE _tw_old")
        if retention.raw_json is not None:
            row = first_row(con.execute(
                f"UPDATE events_hot SET raw = NULL WHERE raw IS NOT NULL AND event_time < ? "  # noqa: S608
                f"AND event_id NOT IN ({_KEPT})", [now - retention.raw_json]))
            report.raw_dropped += int(row[0]) if row else 0


def _prune_sealed(store: Store, retention: Retention, now: datetime, report: PruneReport) -> None:
    """Whole sealed days past the horizon dropped (cited events kept), then the raw JSON of whole
    sealed days past ``raw_json`` dropped; each day its own bounded step."""
    store.con.execute(f"CREATE OR REPLACE TEMP TABLE _tw_kept AS {_KEPT}")
    try:
        for day in _days_before(store, now - retention.events):
            _drop_day(store, day, retention, report)
        if retention.raw_json is not None:
            for day in _days_before(store, now - retention.raw_json, raw_kept=True):
                _drop_raw(store, day, report)
    finally:
        store.con.execute("DROP TABLE IF EXISTS _tw_kept")


def _days_before(store: Store, horizon: datetime, *, raw_kept: bool = False) -> list[date]:
    """Sealed days that ended by ``horizon`` (with raw JSON not yet dropped, if ``raw_kept``)."""
    extra = " AND NOT raw_dropped" if raw_kept else ""
    return [r[0] for r in store.con.execute(
        f"SELECT DISTINCT day FROM lake_files WHERE day + 1 <= CAST(? AS DATE){extra} ORDER BY day",  # noqa: S608
        [horizon]).fetchall()]


def _drop_day(store: Store, day: date, retention: Retention, report: PruneReport) -> None:
    source = lake.day_source(store, day)
    row = first_row(store.con.execute(f"SELECT count(*), count(*) FILTER ({_CITED}) FROM {source}"))  # noqa: S608
    total, cited = (int(row[0]), int(row[1])) if row else (0, 0)
    report.kept_as_evidence += cited
    if total == cited:
        return  # only evidence left: nothing to drop
    if retention.archive_dir is not None:
        _archive_day(store, day, source, Path(retention.archive_dir))
        report.archived += total - cited
    lake.rewrite_day(store, day, lake.stored_select(), _CITED)
    report.deleted += total - cited
    report.sealed_days_dropped += 1


def _drop_raw(store: Store, day: date, report: PruneReport) -> None:
    source = lake.day_source(store, day)
    row = first_row(store.con.execute(
        f"SELECT count(*) FILTER (raw IS NOT NULL AND NOT {_CITED}) FROM {source}"))  # noqa: S608
    dropped = int(row[0]) if row else 0
    lake.rewrite_day(store, day, lake.stored_select(raw=f"CASE WHEN {_CITED} THEN raw END"), raw_dropped=True)
    report.raw_dropped += dropped
    report.sealed_days_raw_dropped += 1


def _archive(con: object, folder: Path, horizon: datetime) -> int:
    """Hot events leaving the store, to Parquet by day (appending beside earlier archives)."""
    folder.mkdir(parents=True, exist_ok=True)
    execute = con.execute  # type: ignore[attr-defined]
    count = first_row(execute("SELECT count(*) FROM _tw_old"))
    if not count or not count[0]:
        return 0
    execute(
        f"""
        COPY (SELECT e.*, strftime(e.event_time, '%Y-%m-%d') AS day FROM events e
              JOIN _tw_old USING (event_id) WHERE e.event_time < ?)
        TO '{_quoted(folder)}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day),
                                FILENAME_PATTERN 'events_{{uuid}}', APPEND)
        """, [horizon])  # noqa: S608 - a path from the config, quoted
    return int(count[0])


def _archive_day(store: Store, day: date, source: str, folder: Path) -> None:
    """A sealed day's events leaving the store (all but the cited ones), as the archive's
    ``day=YYYY-MM-DD/`` file named after the day's sealed files: a prune retried after a crash
    writes the same file again, never a second copy. The columns are the ``events`` view's."""
    target = folder / f"day={day.isoformat()}"
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(lake.day_files(store, day, day))
    name = hashlib.sha256("\0".join(Path(f).name for f in files).encode()).hexdigest()[:16]
    path = target / f"events_sealed_{name}.parquet"
    tmp = path.with_name(path.name + ".tmp")
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    store.con.execute(
        f"""
        COPY (SELECT * FROM events WHERE event_time >= $start AND event_time < $end AND NOT {_CITED})
        TO '{_quoted(tmp)}' (FORMAT parquet, COMPRESSION zstd)
        """, {"start": start, "end": start + timedelta(days=1)})  # noqa: S608 - fixed text, quoted path
    os.replace(tmp, path)


def _quoted(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")
