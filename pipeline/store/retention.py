"""Retention: audit logs grow without end, and compliance says how long they are kept.

``prune`` archives events older than ``retention.events`` to Parquet (zstd, one folder per UTC
day, ``archive_dir/day=YYYY-MM-DD/``) when ``archive_dir`` is set, then deletes them; and drops the
raw JSON of events older than ``retention.raw_json`` while their typed columns stay. Events that
an open finding references are never touched: evidence is kept until the finding is closed.
Archived events stay queryable: ``trailwarden query "SELECT * FROM read_parquet('<dir>/*/*.parquet')"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Retention
from pipeline.core.times import utcnow
from pipeline.store.store import Store, first_row

# events an open finding points at (the event_ids lists hold up to 1,000 per finding)
_KEPT = """
    SELECT DISTINCT unnest(event_ids) AS event_id FROM findings
    WHERE status IN ('open', 'acknowledged')
"""


@dataclass
class PruneReport:
    archived: int = 0
    deleted: int = 0
    raw_dropped: int = 0
    kept_as_evidence: int = 0
    archive_dir: str | None = None


def prune(store: Store, retention: Retention) -> PruneReport:
    now = utcnow()
    horizon = now - retention.events
    report = PruneReport(archive_dir=str(retention.archive_dir) if retention.archive_dir else None)
    with store.transaction() as con:
        con.execute(f"CREATE TEMP TABLE _tw_old AS SELECT event_id FROM events "  # noqa: S608 - fixed text
                    f"WHERE event_time < ? AND event_id NOT IN ({_KEPT})", [horizon])
        row = first_row(con.execute(f"SELECT count(*) FROM events WHERE event_time < ? "  # noqa: S608
                                    f"AND event_id IN ({_KEPT})", [horizon]))
        report.kept_as_evidence = int(row[0]) if row else 0
        if retention.archive_dir is not None:
            report.archived = _archive(con, Path(retention.archive_dir))
        row = first_row(con.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM _tw_old)"))
        report.deleted = int(row[0]) if row else 0
        con.execute("DROP TABLE _tw_old")
        if retention.raw_json is not None:
            row = first_row(con.execute(
                f"UPDATE events SET raw = NULL WHERE raw IS NOT NULL AND event_time < ? "  # noqa: S608
                f"AND event_id NOT IN ({_KEPT})", [now - retention.raw_json]))
            report.raw_dropped = int(row[0]) if row else 0
    return report


def _archive(con: object, folder: Path) -> int:
    """Events leaving the store, to Parquet by day (appending beside earlier archives)."""
    folder.mkdir(parents=True, exist_ok=True)
    execute = con.execute  # type: ignore[attr-defined]
    count = first_row(execute("SELECT count(*) FROM _tw_old"))
    if not count or not count[0]:
        return 0
    execute(
        f"""
        COPY (SELECT e.*, strftime(e.event_time, '%Y-%m-%d') AS day FROM events e
              JOIN _tw_old USING (event_id))
        TO '{_quoted(folder)}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day),
                                FILENAME_PATTERN 'events_{{uuid}}', APPEND)
        """)  # noqa: S608 - a path from the config, quoted
    return int(count[0])


def _quoted(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")
