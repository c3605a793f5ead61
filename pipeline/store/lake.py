"""The tiered store: recent events in the DuckDB file, sealed UTC days in immutable Parquet.

Recent events live in the table ``events_hot``. Once a UTC day is older than ``store.seal_after``
it is *sealed*: its events are written to one zstd Parquet file under the lake directory beside
the store (``<store>.lake/day=YYYY-MM-DD/part-<uuid>.parquet``; an ``account=`` level can go above
``day=`` once accounts exist), the file is registered in ``lake_files`` and the day's rows leave
``events_hot`` - registration and deletion in ONE transaction. Every reader uses the view
``events``, rebuilt from the registered file list (never a glob: a file not registered is
invisible, and ``read_parquet`` of an empty glob fails), so hot and sealed events read the same.

Crash safety (kill -9 at any point loses and doubles nothing): the file is written under a temp
name, fsynced and renamed; until the transaction that registers it commits, it is an orphan no
view names, and the day's rows are still hot - the next seal writes the day again and removes the
orphan. Files leaving the view (compaction, retention) are *retired*, not deleted: a reader may
hold a snapshot whose view still names them, so they are removed after :data:`RETIRED_GRACE`.

Late events for a sealed day land in ``events_hot`` and the next seal of that day writes an
additional file for it; :func:`compact` merges a day's files into one. Each step (a day sealed, a
day compacted, a day pruned) is its own bounded unit of work: never proportional to history.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb

from pipeline.core.errors import TerminalError
from pipeline.core.times import utcnow
from pipeline.store import tiers
from pipeline.store.store import Store, first_row
from pipeline.store.tiers import LAKE_STATE, STORED_COLUMNS, lake_root, parquet_source
from pipeline.store.tiers import STORED as _STORED
from pipeline.store.tiers import sql_text as _sql_text

RETIRED_GRACE = timedelta(hours=6)  # a reader opening a snapshot keeps its files this long
EXTENSION = ".parquet"

def _no_crash(step: str) -> None:
    """Where a test may kill the process (``crash_point``): after each step of a seal."""


crash_point: Callable[[str], None] = _no_crash


def lake_path(store: Store) -> Path:
    """Where this store's sealed files are (:func:`pipeline.store.tiers.lake_root`)."""
    return lake_root(store.con, store.path)


def use_root(store: Store, path: Path) -> None:
    """Seal under ``path`` (the config's ``lake.path``, a shared location). Recorded in the store,
    so every reader and writer finds the files without the config. Refused (exit 1) once files
    are sealed elsewhere: moving them is an operator's job (move the directory, then update
    ``pipeline_state`` 'lake.path' and rebuild the view with a seal)."""
    wanted = path.absolute()
    current = lake_path(store)
    if current == wanted:
        return
    row = first_row(store.con.execute("SELECT (SELECT count(*) FROM lake_files) + (SELECT count(*) FROM lake_retired)"))
    if row and row[0]:
        raise TerminalError(f"lake.path: {wanted} is not where this store's {row[0]:,} sealed files are "
                            f"({current}); move them there first, or set lake.path back")
    with store.transaction():
        store.write_state(LAKE_STATE, str(wanted))


# -- the view --------------------------------------------------------------------------------------
def refresh_view(store: Store) -> None:
    """Rebuild ``events`` from the registered files. Call inside the transaction that changed them."""
    tiers.refresh_events_view(store.con, store.path)


def stored_select(**replaced: str) -> str:
    """The stored columns as a select list, some replaced by an expression (``raw="NULL"``)."""
    return ", ".join(f"{replaced[c]} AS {c}" if c in replaced else c for c in STORED_COLUMNS)


# -- sealing ---------------------------------------------------------------------------------------
@dataclass
class LakeReport:
    days: list[str] = field(default_factory=list)  # the days sealed (or compacted, pruned) by this call
    events: int = 0
    files: int = 0
    bytes: int = 0
    removed_files: int = 0  # orphans and retired files deleted

    def as_dict(self) -> dict[str, Any]:
        return {"days": self.days, "events": self.events, "files": self.files, "bytes": self.bytes,
                "removed_files": self.removed_files}


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def sealable_days(store: Store, seal_after: timedelta, now: datetime | None = None) -> list[date]:
    """The UTC days with hot events that ended at least ``seal_after`` ago, oldest first."""
    now = now or utcnow()
    cutoff = datetime.combine((now - seal_after).date(), time(), tzinfo=UTC)
    rows = store.con.execute(
        "SELECT DISTINCT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS d FROM events_hot "
        "WHERE event_time < ? ORDER BY d", [cutoff]).fetchall()
    return [r[0] for r in rows]


def seal(store: Store, seal_after: timedelta, *, max_days: int = 1) -> LakeReport:
    """Seal up to ``max_days`` of the oldest sealable days (a bounded step), after removing orphan
    and expired retired files. Each day is sealed in its own transaction."""
    report = LakeReport(removed_files=clean(store))
    for day in sealable_days(store, seal_after)[:max_days]:
        rows, size = seal_day(store, day)
        report.days.append(day.isoformat())
        report.events += rows
        report.bytes += size
        report.files += 1
    return report


def seal_day(store: Store, day: date) -> tuple[int, int]:
    """Move the hot events of one UTC day to a new Parquet file; return (events, bytes).

    The file is sorted by identity, then time, in row groups of 16,384 events: a query of one
    agent (``agent_filter``) skips the row groups of other identities by their statistics (on
    one 333k-event day, 0.05 s instead of 0.78 s with DuckDB's default 122,880-row groups, same
    file size); one of a time window reads whole days (a day is one file, or a few until
    compacted).

    The store's write lock is held throughout, so nothing is inserted between the copy and the
    delete; the rows deleted must be the rows written, else nothing is committed."""
    start, end = _day_bounds(day)
    with store.write_lock:
        rel, path = _new_file(store, day)
        rows = _write_file(store.con, f"SELECT {_STORED} FROM events_hot "  # noqa: S608 - fixed names
                           "WHERE event_time >= $start AND event_time < $end ORDER BY identity, event_time",
                           {"start": start, "end": end}, path)
        crash_point("renamed")
        try:
            size, digest = _measure(path)
            with store.transaction() as con:
                con.execute("INSERT INTO lake_identities BY NAME SELECT ? AS path, identity, access_key_id, "
                            "account_id, agent, count(*) AS events "
                            "FROM events_hot WHERE event_time >= ? AND event_time < ? GROUP BY ALL",
                            [rel, start, end])
                deleted = first_row(con.execute("DELETE FROM events_hot WHERE event_time >= ? AND event_time < ?",
                                                [start, end]))
                if not deleted or int(deleted[0]) != rows:
                    raise RuntimeError(f"sealing {day}: wrote {rows} events but {deleted} left the hot table")
                _register(store, rel, day, rows, size, digest)
                crash_point("registered")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    crash_point("committed")
    return rows, size


def day_files(store: Store, first: date, last: date) -> list[str]:
    """Absolute paths of the registered files of the UTC days ``first``..``last``."""
    return tiers.day_files(store.con, store.path, first, last)


def day_source(store: Store, day: date) -> str:
    """A FROM-able source of one sealed day's files ('' when it has none)."""
    return parquet_source(day_files(store, day, day))


def _new_file(store: Store, day: date) -> tuple[str, Path]:
    rel = f"day={day.isoformat()}/part-{uuid.uuid4().hex}{EXTENSION}"
    path = lake_path(store) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return rel, path


def _write_file(con: duckdb.DuckDBPyConnection, select: str, params: dict[str, Any], path: Path,
                *, single_thread: bool = True) -> int:
    """Write ``select`` to ``path`` durably: a temp name, fsync, rename, fsync of the folder.

    On one thread by default: sorting a day by identity with its raw JSON on two threads ran out
    of memory at 1 GB (a 333k-event day, 1.5 KB each); on one, it spills and finishes (19 s).
    ``single_thread=False`` keeps the connection's setting (a ``select`` that does not sort)."""
    tmp = path.with_name(path.name + ".tmp")
    threads = first_row(con.execute("SELECT current_setting('threads')")) if single_thread else None
    if threads:
        con.execute("SET threads = 1")
    try:
        row = first_row(con.execute(
            f"COPY ({select}) TO {_sql_text(str(tmp))} "
            "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 16384)", params))
        crash_point("copied")
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:  # a full disk, a quota, an I/O error: leave nothing half-written
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError | duckdb.IOException):
            raise TerminalError(f"could not write {path}: {_first_line(exc)}; nothing was written "
                                "(the day's events stay where they were: a later cycle retries)") from None
        raise
    finally:
        if threads:
            con.execute(f"SET threads = {int(threads[0])}")
    return int(row[0]) if row else 0


def _first_line(exc: BaseException) -> str:
    """An OS error's reason (``[Errno 28] No space left on device``), or a DuckDB error's first line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def _register(store: Store, rel: str, day: date, rows: int, size: int, digest: str,
              raw_dropped: bool = False) -> None:
    store.con.execute("INSERT INTO lake_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                      [rel, day, rows, size, digest, utcnow(), raw_dropped])
    refresh_view(store)


def retire(store: Store, rels: Sequence[str]) -> None:
    """Unregister files (inside the caller's transaction); they are deleted after the grace period."""
    now = utcnow()
    for rel in rels:
        store.con.execute("DELETE FROM lake_files WHERE path = ?", [rel])
        store.con.execute("DELETE FROM lake_identities WHERE path = ?", [rel])
        store.con.execute("INSERT OR IGNORE INTO lake_retired VALUES (?, ?)", [rel, now])
    refresh_view(store)


def clean(store: Store) -> int:
    """Delete orphans (files no transaction registered: a seal cut short) and retired files past
    their grace; return how many files went. Only the writer runs this, under its lock."""
    root = lake_path(store)
    if not root.is_dir():
        return 0
    with store.write_lock:
        known = {r[0] for r in store.con.execute("SELECT path FROM lake_files UNION ALL SELECT path FROM lake_retired")
                 .fetchall()}
        removed = 0
        for path in root.glob("day=*/*"):
            rel = path.relative_to(root).as_posix()
            if rel not in known and (path.name.endswith(EXTENSION) or path.name.endswith(EXTENSION + ".tmp")):
                path.unlink(missing_ok=True)
                removed += 1
        expired = [r[0] for r in store.con.execute("SELECT path FROM lake_retired WHERE retired_at < ?",
                                                   [utcnow() - RETIRED_GRACE]).fetchall()]
        for rel in expired:
            (root / rel).unlink(missing_ok=True)
            removed += 1
        if expired:
            with store.transaction() as con:
                con.execute("DELETE FROM lake_retired WHERE list_contains(?, path)", [expired])
    return removed


# -- compaction and partition rewrites -------------------------------------------------------------
def days_to_compact(store: Store) -> list[date]:
    """Days sealed in more than one file (late events sealed after the day), oldest first."""
    return [r[0] for r in store.con.execute(
        "SELECT day FROM lake_files GROUP BY day HAVING count(*) > 1 ORDER BY day").fetchall()]


def compact(store: Store, *, max_days: int = 1) -> LakeReport:
    """Merge each of up to ``max_days`` days' files into one (a bounded step per day)."""
    report = LakeReport()
    for day in days_to_compact(store)[:max_days]:
        rows, size = rewrite_day(store, day, _STORED)
        report.days.append(day.isoformat())
        report.events += rows
        report.bytes += size
        report.files += 1
    return report


def rewrite_day(store: Store, day: date, select: str, where: str = "true", *,
                raw_dropped: bool = False) -> tuple[int, int]:
    """Replace a sealed day's files by one file of ``SELECT {select} FROM <the day's files> WHERE
    {where}`` (stored columns, in order); the old files are retired in the transaction that
    registers the new one. A day left with no events keeps no file. Returns (events, bytes)."""
    with store.write_lock:
        rels = [r[0] for r in store.con.execute("SELECT path FROM lake_files WHERE day = ? ORDER BY path",
                                                [day]).fetchall()]
        if not rels:
            return 0, 0
        root = lake_path(store)
        source = parquet_source([str(root / r) for r in rels])
        query = f"SELECT {select} FROM {source} WHERE {where} ORDER BY identity, event_time"  # noqa: S608 - callers' fixed SQL
        count = first_row(store.con.execute(f"SELECT count(*) FROM {source} WHERE {where}"))  # noqa: S608
        rows = int(count[0]) if count else 0
        rel, path = (None, None)
        size, digest = 0, ""
        if rows:
            rel, path = _new_file(store, day)
            written = _write_file(store.con, query, {}, path)
            crash_point("rewrite-renamed")
            if written != rows:
                path.unlink(missing_ok=True)
                raise RuntimeError(f"rewriting {day}: wrote {written} events, expected {rows}")
            size, digest = _measure(path)
        try:
            with store.transaction() as con:
                retire(store, rels)
                if rel is not None:
                    con.execute(
                        "INSERT INTO lake_identities BY NAME SELECT ? AS path, identity, access_key_id, "  # noqa: S608
                        f"account_id, agent, count(*) AS events FROM {parquet_source([str(path)])} GROUP BY ALL", [rel])
                    _register(store, rel, day, rows, size, digest, raw_dropped)
                crash_point("rewrite-registered")
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
    return rows, size


# -- what readers and status see -------------------------------------------------------------------
def lake_summary(store: Store) -> dict[str, Any]:
    """Sealed days, files, events and bytes; and the registered files that cannot be read now
    (``unavailable``: path, day, reason - ``events`` leaves them out; ``missing``: their paths)."""
    row = first_row(store.con.execute(
        "SELECT count(DISTINCT day), count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0), min(day), max(day) "
        "FROM lake_files"))
    assert row is not None
    root = lake_path(store)
    broken = sorted((f for f in tiers.sealed_files(store.con, store.path) if f.problem), key=lambda f: f.path)
    unavailable = [{"day": f.day.isoformat(), "path": f.path, "reason": f.problem} for f in broken]
    hot = first_row(store.con.execute("SELECT count(*) FROM events_hot"))
    return {"sealed_days": int(row[0]), "files": int(row[1]), "sealed_events": int(row[2]),
            "sealed_bytes": int(row[3]), "first_day": row[4].isoformat() if row[4] else None,
            "last_day": row[5].isoformat() if row[5] else None, "hot_events": int(hot[0]) if hot else 0,
            "missing": [f.path for f in broken], "unavailable": unavailable,
            "unavailable_days": sorted({u["day"] for u in unavailable}), "dir": str(root)}


def unavailable_note(store: Store, first: date | None = None, last: date | None = None) -> str | None:
    """One line naming the sealed days (between ``first`` and ``last``, when given) whose files
    cannot be read and that ``events`` therefore leaves out; None when there are none. Every
    reader that covers such a day says so (``query``, ``replay``, ``detect``, ``status``)."""
    hit = sorted((f.day, f.path, f.problem) for f in tiers.sealed_files(store.con, store.path, first, last)
                 if f.problem)
    if not hit:
        return None
    listed = "; ".join(f"{day} ({why}: {path})" for day, path, why in hit)
    return f"sealed day(s) unavailable, left out of events: {listed}"
