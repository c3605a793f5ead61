"""The DuckDB store: one file holding events, quarantine, source state, runs and (later) findings.

The schema is created by the SQL files in ``pipeline/store/migrations`` and every applied file is
recorded in ``schema_migrations`` (sqlite-utils style). A write and the state describing it are
committed in one transaction, so a kill -9 at any point leaves either both or neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import TerminalError, TrailwardenError, TransientError, UsageError, scrub
from pipeline.core.times import utcnow
from pipeline.store.tiers import (
    lake_root,
    near_events,
    readable_view,
    recorded_unavailable,
    refresh_events_view,
    unavailable_files,
)

DEFAULT_MEMORY_LIMIT = "256MB"
_LOCK_RETRY_SECONDS = 10.0
_ARROW_TARGETS = frozenset({"events_hot", "quarantine", "ingested_files"})


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found = []
    for entry in resources.files("pipeline.store.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def first_row(cursor: Any) -> tuple[Any, ...] | None:
    """The first row of a result, which is then read to the end: DuckDB 2 keeps a connection busy
    until its last result is finished, so ``fetchone()`` would leave it unusable for some calls."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


RECENT = timedelta(hours=1)


def _recent(stored: str | None, now: datetime) -> dict[int, int]:
    """A partition's per-minute counts (JSON ``{"<unix minute>": n}``) within the hour before ``now``."""
    try:
        counts = {int(k): int(v) for k, v in json.loads(stored or "{}").items()}
    except (ValueError, AttributeError):
        counts = {}
    oldest = int(now.timestamp()) // 60 - int(RECENT.total_seconds()) // 60
    return {minute: n for minute, n in counts.items() if minute > oldest}


def recent_counts(stored: str | None, now: datetime, new_events: int) -> str:
    """The per-minute counts with ``new_events`` added at ``now``, minutes older than an hour dropped."""
    counts = _recent(stored, now)
    if new_events:
        minute = int(now.timestamp()) // 60
        counts[minute] = counts.get(minute, 0) + new_events
    return json.dumps({str(k): v for k, v in sorted(counts.items())})


def recent_total(stored: str | None, now: datetime) -> int | None:
    """Events in the last hour from a partition's ``recent`` counts; None when never recorded."""
    return None if stored is None else sum(_recent(stored, now).values())


LOCATION = "location"  # pipeline.ingest.batches.LOCATION: where each event of a batch was read
_EMPTY_KEPT = pa.table({"event_id": pa.array([], pa.string()),
                        "event_time": pa.array([], pa.timestamp("us", tz="UTC")),
                        "source": pa.array([], pa.string()), LOCATION: pa.array([], pa.string())})


@dataclass(frozen=True, slots=True)
class Inserted:
    """What :meth:`Store.store_events` did with one batch."""

    new: int  # events stored
    conflicts: int  # eventIds already stored with another eventTime: quarantined
    kept: pa.Table  # the stored ones: event_id, event_time, source, location


def _conflict_reason(first: datetime) -> str:
    return (f"eventId already stored with eventTime {first.astimezone(UTC).isoformat().replace('+00:00', 'Z')}"
            " (this copy says otherwise): the first one stored is kept")


def _storable(text: str) -> str:
    """``text``, or with any lone surrogate written out as ``\\udXXX`` (Arrow and DuckDB take
    valid UTF-8 only)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class Store:
    """A connection to the store file. Open with :func:`open_store`; close when done."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool):
        self.con = con
        self.path = path
        self.read_from = path  # the file open: a reader may be given the snapshot of ``path``
        self.read_only = read_only
        self.write_lock = threading.RLock()
        self._in_transaction = False
        self.reader_view: str | None = None  # a reader's own ``events`` (tiers.readable_view)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Another cursor on the store that reads the same ``events`` as ``con``."""
        cur = self.con.cursor()
        if self.reader_view:
            cur.execute(self.reader_view)
        return cur

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction at a time per store: writers in this process take turns."""
        self.begin()
        try:
            yield self.con
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def begin(self) -> None:
        """Start a transaction, holding the store's write lock until commit or rollback."""
        self.write_lock.acquire()
        try:
            self.con.execute("BEGIN TRANSACTION")
        except BaseException:
            self.write_lock.release()
            raise
        self._in_transaction = True

    def commit(self) -> None:
        try:
            self.con.execute("COMMIT")
        finally:  # a failed COMMIT ends the transaction too (DuckDB rolls it back)
            self._end_transaction()

    def rollback(self) -> None:
        if not self._in_transaction:
            return
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failure that brought us here already ended it
        finally:
            self._end_transaction()

    def _end_transaction(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            self.write_lock.release()

    def schema_version(self) -> int:
        row = first_row(self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        return int(row[0]) if row else 0

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in its own transaction; return the versions applied."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        # every shipped migration not yet recorded, not only those above the highest one: numbers
        # can be reserved and land later (0009 before 0008), and a store must not skip one
        done = {int(r[0]) for r in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for mig in migrations():
            if mig.version in done:
                continue
            with self.transaction() as con:
                con.execute(mig.sql)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", [mig.version, mig.name, utcnow()]
                )
            applied.append(mig.version)
        if applied and first_row(self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'events_hot'"))[0]:  # type: ignore[index]
            with self.transaction():  # the view reads what the migrations changed
                refresh_events_view(self.con, self.path)
        if applied:
            # Never leave schema changes only in the WAL: DuckDB 2.0.1 cannot replay an ALTER of a
            # table whose generated columns use JSON functions (it tries to download the built-in
            # json extension and fails offline), so a kill -9 right after would brick the store.
            self.con.execute("CHECKPOINT")
        return applied

    # -- events ------------------------------------------------------------------------------
    def insert_events(self, tables: Sequence[pa.Table]) -> list[int]:
        """Insert the events of several :func:`events_to_arrow` batches that are not stored yet;
        return how many of each batch were new. Call inside :meth:`transaction`. See
        :meth:`store_events` for what is kept."""
        return [inserted.new for inserted in self.store_events(tables)]

    def store_events(self, tables: Sequence[pa.Table]) -> list[Inserted]:
        """Insert the events of several :func:`events_to_arrow` batches that are not stored yet.
        Call inside :meth:`transaction`.

        One row per ``eventId``: the first stored wins. A later copy with the same eventTime is a
        duplicate (a re-delivery) and is dropped; one with another eventTime is a conflict
        (forged, or damaged) and is quarantined naming the eventTime kept, so the disagreement is
        visible. There is no unique index: on this data DuckDB's ART index cost 40% of load speed
        and ~180 bytes per event of memory, and on a 10M-event store it did not fit the default
        256 MB at all. Instead the new ids are checked here against stored events within the
        batches' time span (+- a day: a re-delivered event carries the same eventTime, and the
        time filter lets DuckDB skip every row group outside the span), and once per transaction
        against every hot event (:meth:`remove_conflicts`). Sealed days are looked at only for the
        batch's days +- one (their files' ``event_time`` and ``event_id`` columns): new events go
        to the hot table, never into a sealed file. The store's single writer
        (:attr:`write_lock`) makes check-then-insert safe. A batch may carry a ``location``
        column (where each event was read): named in quarantine rows, not stored.
        """
        sizes = [t.num_rows for t in tables]
        total = sum(sizes)
        if not total:
            return [Inserted(0, 0, _EMPTY_KEPT) for _ in tables]
        table = pa.concat_tables(tables)
        locations = table[LOCATION] if LOCATION in table.column_names else None
        if locations is not None:
            table = table.drop_columns([LOCATION])
        keep, conflicts = self._new_rows(table)
        if conflicts:
            self._quarantine_conflicts(table, locations, conflicts)
        mask = np.zeros(total, dtype=bool)
        mask[keep] = True
        self._insert_arrow("events_hot", table.filter(mask) if len(keep) < total else table)
        where = locations if locations is not None else pa.nulls(total, pa.string())
        kept = pa.table({"event_id": table["event_id"], "event_time": table["event_time"],
                         "source": table["source"], LOCATION: where}).filter(mask)
        lost = np.zeros(total, dtype=np.int64)
        lost[[row for row, _ in conflicts]] = 1
        kept_before = np.concatenate(([0], np.cumsum(mask)))  # not reduceat: it mishandles empty batches
        out, start = [], 0
        for size in sizes:
            end = start + size
            new = int(kept_before[end] - kept_before[start])
            out.append(Inserted(new, int(lost[start:end].sum()), kept.slice(int(kept_before[start]), new)))
            start = end
        return out

    def _new_rows(self, table: pa.Table) -> tuple[np.ndarray, list[tuple[int, datetime]]]:
        """Row numbers of ``table`` whose eventId is neither stored (within the batch's span +- a
        day) nor earlier in the table; and the rows whose eventId is, with another eventTime
        (each with the eventTime kept).

        DuckDB is asked only which of these ids it already holds (a semi-join probing the stored
        ids against the batch's, which keeps the hash table batch-sized); when it holds none and
        no id repeats (the usual batch) every row is new, else the rest is a dict walk.
        """
        lo, hi = (t.as_py() for t in pc.min_max(table["event_time"]).values())
        near = self._near(lo, hi)
        self.con.register("_tw_ids", pa.table({"event_id": table["event_id"]}))
        try:
            stored = self.con.execute(
                f"""
                SELECT event_id, min(event_time) FROM {near}
                WHERE event_time BETWEEN ? - INTERVAL 1 DAY AND ? + INTERVAL 1 DAY
                  AND event_id IN (SELECT event_id FROM _tw_ids)
                GROUP BY event_id
                """,  # noqa: S608 - fixed names and registered paths
                [lo, hi],
            ).fetchall()
        finally:
            self.con.unregister("_tw_ids")
        if not stored and pc.count_distinct(table["event_id"], mode="all").as_py() == table.num_rows:
            return np.arange(table.num_rows, dtype=np.int64), []  # the usual batch: all new, each once
        ids = table["event_id"].to_pylist()
        seen: dict[str, Any] = dict(stored)
        keep: list[int] = []
        conflicts: list[tuple[int, datetime]] = []
        times: list[datetime] | None = None
        for i, event_id in enumerate(ids):
            first = seen.get(event_id)
            if first is None:
                seen[event_id] = i  # its time is looked up only if a second copy comes
                keep.append(i)
                continue
            times = times or table["event_time"].to_pylist()
            first = times[first] if isinstance(first, int) else first
            if first != times[i]:
                conflicts.append((i, first))
        return np.asarray(keep, dtype=np.int64), conflicts

    def _quarantine_conflicts(self, table: pa.Table, locations: Any, conflicts: list[tuple[int, datetime]]) -> None:
        rows = [i for i, _ in conflicts]
        picked = table.select(["event_id", "raw", "source"]).take(rows).to_pylist()
        where = locations.take(rows).to_pylist() if locations is not None else [None] * len(rows)
        for (_, first), row, loc in zip(conflicts, picked, where, strict=True):
            self.quarantine(row["source"], [(loc or f"eventId {row['event_id']}", _conflict_reason(first),
                                             row["raw"] or "")])

    def remove_conflicts(self, inserted: pa.Table) -> list[int]:
        """Check this transaction's new events (``event_id``, ``event_time``, ``source``,
        ``location``: :attr:`Inserted.kept`) against every hot event and the sealed days of their
        span +- a day: a copy whose eventId was already stored with an eventTime more than a day
        away (:meth:`store_events` looks a day around) is deleted again and quarantined. Returns
        the row numbers of ``inserted`` removed.

        Costs one scan of the hot ``event_id`` column per transaction (measured: 0.23 s at 10M
        events on one thread), plus the batch's sealed days, and a second only when a conflict is
        found. What is missed: a forged copy of an event of a sealed day further than a day from
        the batch's events (scanning every sealed day per transaction would cost the history).
        Call inside the transaction that inserted them, before COMMIT."""
        if not inserted.num_rows:
            return []
        lo, hi = (t.as_py() for t in pc.min_max(inserted["event_time"]).values())
        near = self._near(lo, hi)
        self.con.register("_tw_new", inserted.select(["event_id"]))
        try:
            doubled = {r[0] for r in self.con.execute(
                f"SELECT event_id FROM {near} WHERE event_id IN (SELECT event_id FROM _tw_new) "  # noqa: S608
                "GROUP BY event_id HAVING count(*) > 1").fetchall()}
        finally:
            self.con.unregister("_tw_new")
        return self._remove_copies(inserted, doubled, near) if doubled else []

    def _near(self, lo: datetime, hi: datetime) -> str:
        """Where stored copies of events of ``lo``..``hi`` can be: the hot table, and the sealed
        files of those days +- one (see :func:`pipeline.store.tiers.near_events`)."""
        return near_events(self.con, self.path, lo - timedelta(days=1), hi + timedelta(days=1))

    def _remove_copies(self, inserted: pa.Table, doubled: set[str], near: str) -> list[int]:
        """Delete this transaction's copies of the ``doubled`` ids, except the first stored one,
        and quarantine them."""
        rows = inserted.to_pylist()
        ours = [(i, row) for i, row in enumerate(rows) if row["event_id"] in doubled]
        self.con.register("_tw_doubled", pa.table({"event_id": pa.array(sorted(doubled), pa.string())}))
        try:
            copies = self.con.execute(
                f"SELECT event_id, event_time, raw::VARCHAR FROM {near} "  # noqa: S608
                "WHERE event_id IN (SELECT event_id FROM _tw_doubled)").fetchall()
        finally:
            self.con.unregister("_tw_doubled")
        mine = {(row["event_id"], row["event_time"]) for _, row in ours}
        first: dict[str, datetime] = {}
        for eid, when, _ in copies:
            if (eid, when) not in mine:  # stored before this transaction
                first[eid] = min(first.get(eid, when), when)
        raw = {(eid, when): text for eid, when, text in copies}
        removed: list[int] = []
        for i, row in ours:  # in insertion order: with no earlier copy, our first one stays
            eid, when = row["event_id"], row["event_time"]
            if eid not in first:
                first[eid] = when
                continue
            removed.append(i)
            self.con.execute("DELETE FROM events_hot WHERE event_id = ? AND event_time = ?", [eid, when])
            self.quarantine(row["source"], [(row[LOCATION] or f"eventId {eid}", _conflict_reason(first[eid]),
                                             raw.get((eid, when)) or "")])
        return removed

    def quarantine(self, source: str, rows: Sequence[tuple[str, str, str]]) -> None:
        """Record input that could not be parsed: ``(location, reason, raw)`` rows.

        Keyed by a hash of source, location and text, so the same bad input read twice (a retry
        after a crash) is recorded once. Text that is not valid Unicode (a lone surrogate from a
        hostile ``\\ud800``) is kept with the surrogate written out as ``\\udXXX``, so it cannot
        fail the transaction that records it.
        """
        if not rows:
            return
        now = utcnow()
        rows = [(_storable(loc), _storable(reason), _storable(raw)) for loc, reason, raw in rows]
        table = pa.table({
            "id": [hashlib.sha256(f"{source}\0{loc}\0{raw}".encode()).hexdigest() for loc, _, raw in rows],
            "source": [source] * len(rows),
            "location": [r[0] for r in rows],
            "reason": [r[1] for r in rows],
            "raw": [r[2] for r in rows],
            "received_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
        })
        self._insert_arrow("quarantine", table)

    def _insert_arrow(self, target: str, table: pa.Table) -> tuple[Any, ...] | None:
        """Insert an Arrow table whose columns are the target's stored columns, in order."""
        if target not in _ARROW_TARGETS:
            raise ValueError(f"not a bulk-insert table: {target}")
        verb = "INSERT" if target == "events_hot" else "INSERT OR IGNORE"
        sql = f"{verb} INTO {target} SELECT * FROM _tw_batch"  # noqa: S608 - fixed names
        self.con.register("_tw_batch", table)
        try:
            return first_row(self.con.execute(sql))
        finally:
            self.con.unregister("_tw_batch")

    def save_state(self, source: str, partition: str, *, cursor: str | None,
                   watermark: datetime | None, new_events: int) -> None:
        """Upsert a partition's cursor; the watermark only moves forward; an error is cleared; the
        new events are added to its per-minute counts of the last hour (``recent``)."""
        now = utcnow()
        row = first_row(self.con.execute(
            "SELECT recent FROM ingest_state WHERE source = ? AND partition = ?", [source, partition]))
        recent = recent_counts(row[0] if row else None, now, new_events)
        self.con.execute(
            """
            INSERT INTO ingest_state AS s (source, partition, cursor, watermark, events, updated_at, recent)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (source, partition) DO UPDATE SET
                cursor = coalesce(excluded.cursor, s.cursor),
                watermark = greatest(s.watermark, excluded.watermark),
                events = s.events + excluded.events,
                updated_at = excluded.updated_at,
                recent = excluded.recent,
                last_error = NULL, last_error_at = NULL
            """,
            [source, partition, cursor, watermark, new_events, now, recent],
        )

    def record_source_error(self, source: str, partition: str, message: str) -> None:
        """Show ``message`` (scrubbed of the process's secrets) as the partition's last error."""
        now = utcnow()
        message = scrub(message)
        self.con.execute(
            """
            INSERT INTO ingest_state AS s (source, partition, events, updated_at, last_error, last_error_at)
            VALUES (?, ?, 0, ?, ?, ?)
            ON CONFLICT (source, partition) DO UPDATE SET last_error = excluded.last_error,
                last_error_at = excluded.last_error_at
            """, [source, partition, now, message, now])

    def clear_source_errors(self, source: str) -> None:
        """A source ran cleanly: no partition of it shows an error any more, and the placeholder
        row an error left for a source that had not stored anything yet goes."""
        with self.transaction():
            self.con.execute("UPDATE ingest_state SET last_error = NULL, last_error_at = NULL "
                             "WHERE source = ? AND last_error IS NOT NULL", [source])
            self.con.execute("DELETE FROM ingest_state WHERE source = ? AND partition = '' AND cursor IS NULL "
                             "AND watermark IS NULL AND events = 0", [source])

    def get_state(self, source: str, partition: str) -> tuple[str | None, datetime | None] | None:
        row = first_row(self.con.execute(
            "SELECT cursor, watermark FROM ingest_state WHERE source = ? AND partition = ?",
            [source, partition],
        ))
        return (row[0], row[1]) if row else None

    def record_files(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Mark files ingested: ``(sha256, source, path, bytes, events, new, duplicates,
        quarantined)`` rows, in the transaction that wrote their last events."""
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        now = utcnow()
        table = pa.table({
            "sha256": cols[0], "source": cols[1], "path": cols[2], "bytes": pa.array(cols[3], pa.int64()),
            "events": pa.array(cols[4], pa.int64()), "new": pa.array(cols[5], pa.int64()),
            "duplicates": pa.array(cols[6], pa.int64()), "quarantined": pa.array(cols[7], pa.int64()),
            "ingested_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
        })
        self._insert_arrow("ingested_files", table)

    def read_state(self, name: str) -> str | None:
        """A named value in ``pipeline_state`` (e.g. how far detect has scored)."""
        row = first_row(self.con.execute("SELECT value FROM pipeline_state WHERE name = ?", [name]))
        return row[0] if row else None

    def write_state(self, name: str, value: str) -> None:
        self.con.execute(
            "INSERT INTO pipeline_state VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "value = excluded.value, updated_at = excluded.updated_at", [name, value, utcnow()])

    def ingested_file_hashes(self) -> set[str]:
        """Content hashes of every file ingested so far (the files source's cursor)."""
        return {r[0] for r in self.con.execute("SELECT sha256 FROM ingested_files").fetchall()}

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        row = first_row(self.con.execute(
            "INSERT INTO runs (command, started_at, status, pid) VALUES (?, ?, 'running', ?) RETURNING id",
            [command, utcnow(), os.getpid()],
        ))
        assert row is not None
        return int(row[0])

    def record_run(self, command: str, started: datetime, finished: datetime, counts: dict[str, Any],
                   error: str | None = None) -> None:
        """A run that happened while the store could not be written (e.g. a cycle that found it
        locked), recorded afterwards with its own times."""
        self.con.execute(
            "INSERT INTO runs (command, started_at, finished_at, status, counts, error, pid) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [command, started, finished, "failed" if error else "ok", json.dumps(counts, default=str),
             scrub(error) if error else error, os.getpid()])

    def finish_run(self, run_id: int, counts: dict[str, Any], error: str | None = None) -> None:
        """End a run: ok, or failed with ``error`` (scrubbed of the process's secrets)."""
        self.con.execute(
            "UPDATE runs SET finished_at = ?, status = ?, counts = ?, error = ? WHERE id = ?",
            [utcnow(), "failed" if error else "ok", json.dumps(counts, default=str), scrub(error) if error else error,
             run_id],
        )


def snapshot_path(path: str | os.PathLike[str]) -> Path:
    """Where the service publishes the read-only copy analysts open while it runs."""
    p = Path(path)
    return p.with_name(p.stem + ".snapshot" + (p.suffix or ".duckdb"))


def publish_snapshot(path: str | os.PathLike[str]) -> Path:
    """Copy the (closed, checkpointed) store to its snapshot, atomically: a reader holding the old
    snapshot keeps it, the next one opens the new one. Call only while no connection is open."""
    target = snapshot_path(path)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    return target


def open_for_reading(path: str | os.PathLike[str], *, memory_limit: str = DEFAULT_MEMORY_LIMIT,
                     on_snapshot: Callable[[str], None] | None = None,
                     allowed_dirs: Sequence[str | os.PathLike[str]] = ()) -> Store:
    """Read-only access that never waits on the service and never holds it up, sandboxed
    (:func:`lock_down`: readers run user SQL; ``allowed_dirs``, e.g. the retention archive, stay
    readable; the store's lake directory always is). See :func:`_open_reader` for which file is read."""
    store = _open_reader(path, memory_limit=memory_limit, on_snapshot=on_snapshot)
    try:
        lock_down(store.con, [*allowed_dirs, lake_root(store.con, path)])
    except BaseException:
        store.close()
        raise
    return store


# DuckDB's own switches, set in this order (the last locks the others): no file but the open
# database (and the allowed directories), no extension installed or loaded (json, parquet and icu
# are built in), no community extension. TimeZone stays settable: it is per connection, and the
# next reader of the same database instance in this process (DuckDB shares it) sets it to UTC.
_SANDBOX = ("SET allowed_configs = ['TimeZone']", "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false", "SET autoload_known_extensions = false",
            "SET allow_community_extensions = false", "SET lock_configuration = true")


def lock_down(con: duckdb.DuckDBPyConnection, allowed_dirs: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Make a reading connection safe for user SQL: it reads the database it has open and files
    under ``allowed_dirs`` (DuckDB lets a query write there too: ``run_query`` admits no COPY),
    nothing else - no ``COPY ... TO``, ``EXPORT DATABASE``, ``read_text('/etc/passwd')``,
    ``ATTACH``, ``INSTALL``/``LOAD``, persistent ``CREATE SECRET`` - and its settings are locked,
    so a query cannot ``SET`` or ``RESET`` its way out. Spilling to DuckDB's temp directory
    still works. The writer's connection is never locked down: ingest and retention need files.

    DuckDB shares one database instance among a process's connections to a file: one locked
    down earlier (a notebook's second reader) is left as it is, its allowed directories too."""
    if _locked(con):
        return
    # as written (made absolute) and with symlinks resolved: a query may name either
    dirs = sorted({p.rstrip(os.sep) + os.sep for d in allowed_dirs for p in (os.path.abspath(d), str(Path(d).resolve()))})
    if dirs:
        con.execute("SET allowed_directories = ?", [dirs])
    for statement in _SANDBOX:
        con.execute(statement)


def _locked(con: duckdb.DuckDBPyConnection) -> bool:
    row = first_row(con.execute("SELECT current_setting('lock_configuration')"))
    return bool(row and row[0])


def _open_reader(path: str | os.PathLike[str], *, memory_limit: str,
                 on_snapshot: Callable[[str], None] | None) -> Store:
    """Read-only access that never waits on the service and never holds it up.

    The snapshot the service publishes after each cycle is read whenever it holds everything the
    store does (nothing was written to the store since it was copied) or the service is
    publishing a newer one; a reader may then keep it open as long as it likes. Otherwise the live
    store is read when it is free (a writing command ran since the last snapshot, or there is
    none), else the snapshot (the service is mid-cycle: at most one cycle old). ``on_snapshot`` is
    told the snapshot's path whenever what is read may lag the store. The returned store's
    ``path`` is the store's own file; ``read_from`` is the file actually open.
    """
    snap = snapshot_path(path)
    state = _snapshot_state(Path(path), snap)
    if state != "stale":
        try:
            store = _open_snapshot(path, snap, memory_limit)
        except TrailwardenError:
            pass  # replaced or removed meanwhile, or from an older schema: the live store it is
        else:
            if state == "publishing" and on_snapshot:
                on_snapshot(str(snap))
            return store
    try:
        return open_store(path, read_only=True, memory_limit=memory_limit, lock_wait=0.0)
    except TransientError:
        if not snap.exists():
            raise
        if on_snapshot:
            on_snapshot(str(snap))
        return _open_snapshot(path, snap, memory_limit)


def _open_snapshot(path: str | os.PathLike[str], snap: Path, memory_limit: str) -> Store:
    store = open_store(snap, read_only=True, memory_limit=memory_limit, lake_of=path)
    store.path, store.read_from = str(path), str(snap)
    return store


_PUBLISHING_SECONDS = 10.0  # a snapshot copy written to this recently is still being written


def _snapshot_state(path: Path, snap: Path) -> str:
    """``current`` (the snapshot holds all the store does: neither the store's file nor its WAL
    changed after the copy was taken), ``publishing`` (the service is copying a newer one right
    now), or ``stale`` (no snapshot, or the store was written since)."""
    try:
        taken = snap.stat().st_mtime_ns
    except OSError:
        return "stale"
    written = [p.stat().st_mtime_ns for p in (path, Path(f"{path}.wal")) if p.exists()]
    if written and max(written) <= taken:
        return "current"
    tmp = snap.with_name(snap.name + ".tmp")
    try:
        if time.time() - tmp.stat().st_mtime < _PUBLISHING_SECONDS:
            return "publishing"
    except OSError:
        pass
    return "stale"


def open_store(path: str | os.PathLike[str], *, read_only: bool = False,
               memory_limit: str = DEFAULT_MEMORY_LIMIT, lock_wait: float | None = None,
               stop: Callable[[], bool] | None = None,
               on_wait: Callable[[str], None] | None = None,
               lake_of: str | os.PathLike[str] | None = None) -> Store:
    """Open (creating and migrating when writable) the store at ``path``.

    A store held by another process is retried for ``lock_wait`` seconds (default 10), then
    reported as transient; ``on_wait`` is told once when the wait starts, and ``stop`` returning
    true ends it early (as transient too). ``events`` reads the sealed files that can be read
    (:func:`pipeline.store.tiers.readable_view`); ``lake_of`` is the store whose lake they are
    in, when ``path`` is its snapshot.
    """
    path = str(path)
    if read_only and not Path(path).exists():
        raise UsageError(
            "no store here yet; run `trailwarden ingest` or `trailwarden demo` first", path=path)
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = _connect(path, read_only, _LOCK_RETRY_SECONDS if lock_wait is None else lock_wait, stop, on_wait)
    try:
        con.execute("SET TimeZone = 'UTC'")
        limit = _checked_size(memory_limit)
        if not _locked(con):  # else a reader locked this (shared) instance, its settings already set
            con.execute(f"SET memory_limit = '{limit}'")
            # the sealed files' footers kept between queries: every query of ``events`` with a time
            # condition reads each file's footer to skip it by its statistics (~4 ms a file, per
            # query, without the cache). Safe: a sealed file is never rewritten in place (a rewrite
            # is a new part-<uuid> file), and DuckDB checks the file's modification time.
            con.execute("SET parquet_metadata_cache = true")
        store = Store(con, path, read_only)
        if not read_only:
            store.migrate()
            _view_over_readable_files(store)
        elif store_needs_migration(store):
            raise UsageError("the store's schema is older than this trailwarden; run any "
                             "writing command (e.g. `trailwarden ingest`) to migrate it", path=path)
        else:
            store.reader_view = readable_view(con, str(lake_of or path))
    except BaseException:
        con.close()
        raise
    return store


def _view_over_readable_files(store: Store) -> None:
    """A sealed file that went missing or unreadable since the view was built (or came back):
    rebuild ``events`` over the readable ones and record the others (``status`` names them)."""
    if unavailable_files(store.con, store.path) != recorded_unavailable(store.con):
        with store.transaction():
            refresh_events_view(store.con, store.path)


def store_needs_migration(store: Store) -> bool:
    tables = {r[0] for r in store.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "schema_migrations" not in tables:
        return True
    done = {int(r[0]) for r in store.con.execute("SELECT version FROM schema_migrations").fetchall()}
    return any(m.version not in done for m in migrations())


def _connect(path: str, read_only: bool, wait: float, stop: Callable[[], bool] | None = None,
             on_wait: Callable[[str], None] | None = None) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" not in message.lower():
                raise TerminalError(f"{path}: cannot open the store: {message.splitlines()[0]}") from None
            pid = re.search(r"PID (\d+)", message)
            holder = f" (held by PID {pid[1]})" if pid else ""
            if stop is not None and stop():
                raise TransientError(f"{path}: stopped while waiting for the store{holder}") from None
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"{path}: the store is locked by another process{holder}; retry when it "
                    f"finishes, or read the snapshot {snapshot_path(path)}") from None
            if on_wait is not None and delay == 0.05:
                on_wait(f"{path}: the store is locked by another process{holder}; waiting up to {wait:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        except duckdb.Error as exc:
            raise TerminalError(f"{path}: cannot open the store: {str(exc).splitlines()[0]}") from None


def _checked_size(value: str) -> str:
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", value, re.I):
        raise UsageError(f"not a memory size: {value!r} (write e.g. 512MB or 2GB)", key="memory_limit")
    return value.strip()
