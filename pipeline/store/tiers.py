"""Where the tiers of the store are and how to read them: shared by the store and the lake.

Pure helpers over a connection and a store path (no :class:`~pipeline.store.store.Store`), so
that both :mod:`pipeline.store.store` (dedup looks at the sealed days of a batch) and
:mod:`pipeline.store.lake` (sealing, compaction) can use them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import duckdb

from pipeline.core.errors import TerminalError
from pipeline.core.times import utcnow

# The stored columns of events_hot and of the sealed files, in order (the ``events`` view adds
# the derived agent and the JSON payload columns; ``agent`` here is the one stored at ingest).
STORED_COLUMNS = (
    "event_id", "event_time", "event_name", "event_type", "event_rw", "event_source", "event_version",
    "service_name", "service_code", "acs_region", "is_global", "source_ip", "ip_version",
    "secure_transport", "user_agent", "request_id", "api_version", "error_code", "error_message",
    "identity_type", "identity", "account_id", "principal_id", "user_name", "role_name", "role_id",
    "session_name", "access_key_id", "mfa_authenticated", "session_created", "recipient_account_id",
    "vpc_id", "resource_type", "resource_name", "referenced_resources", "raw", "agent", "source",
    "ingested_at",
)
STORED = ", ".join(STORED_COLUMNS)


def lake_dir(store_path: str | os.PathLike[str]) -> Path:
    """The lake directory beside a store file (sealed days, :mod:`pipeline.store.lake`):
    ``data/trailwarden.duckdb`` -> ``data/trailwarden.lake``."""
    p = Path(store_path).absolute()
    return p.with_name(p.stem + ".lake")


LAKE_STATE = "lake.path"  # pipeline_state: where this store's sealed files are, when not beside it
UNAVAILABLE_STATE = "lake.unavailable"  # pipeline_state: the registered files the view leaves out, why
PARQUET_MAGIC = b"PAR1"


def lake_root(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str]) -> Path:
    """The store's lake directory: the configured ``lake.path`` recorded when it first sealed
    (:func:`pipeline.store.lake.use_root`), else :func:`lake_dir` beside the store."""
    rows = con.execute("SELECT value FROM pipeline_state WHERE name = ?", [LAKE_STATE]).fetchall()
    return Path(rows[0][0]) if rows and rows[0][0] else lake_dir(store_path)


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parquet_source(files: Sequence[str]) -> str:
    """A FROM-able ``read_parquet`` of these files (``union_by_name``: a file sealed before a
    column was added reads it as NULL), or nothing when there are none."""
    if not files:
        return ""
    return f"read_parquet([{', '.join(sql_text(f) for f in files)}], union_by_name = true)"


class SealedFile(NamedTuple):
    path: str  # under the lake
    day: date
    absolute: str
    problem: str | None  # why it cannot be read now (:func:`file_problem`), or None


def sealed_files(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str],
                 first: date | None = None, last: date | None = None) -> list[SealedFile]:
    """The registered files (of the UTC days ``first``..``last``, when given), in day order, each
    checked (:func:`file_problem`: a stat and 8 bytes)."""
    root = lake_root(con, store_path)
    rows = con.execute("SELECT path, day, bytes FROM lake_files WHERE (? IS NULL OR day >= ?) AND "
                       "(? IS NULL OR day <= ?) ORDER BY day, path", [first, first, last, last]).fetchall()
    return [SealedFile(path, day, str(root / path), file_problem(root / path, size)) for path, day, size in rows]


def day_files(con: duckdb.DuckDBPyConnection, store_path: str, first: date, last: date) -> list[str]:
    """Absolute paths of the registered files of the UTC days ``first``..``last``. A day among
    them whose file is unavailable (:func:`unavailable_files`) fails (:class:`UnavailableDay`):
    a caller reading those days (dedup) must not take the rest for all of them."""
    files = sealed_files(con, store_path, first, last)
    broken = {f.path: (f.day, f.problem) for f in files if f.problem}
    if broken:
        raise UnavailableDay(broken)
    return [f.absolute for f in files]


class UnavailableDay(TerminalError):
    """Sealed days whose files cannot be read: {path: (day, reason)}."""

    def __init__(self, files: dict[str, tuple[date, str]]):
        self.files = files
        super().__init__("; ".join(f"sealed day {day} is unavailable ({why}: {path})"
                                   for path, (day, why) in sorted(files.items()))
                         + ": restore the file (`trailwarden status` lists the days)")


def file_problem(path: Path, size: int | None) -> str | None:
    """Why a registered file cannot be read, or None: ``missing``, ``unreadable`` (permissions, an
    I/O error), ``truncated or replaced`` (its size is not the size sealed), ``not a Parquet file``
    (no Parquet magic at its start and end). A stat and 8 bytes per file: cheap enough for every
    open. What it misses: damage inside a file of the right size with intact ends - a query that
    reaches it fails, naming the file (DuckDB's error)."""
    try:
        with path.open("rb") as f:
            actual = os.fstat(f.fileno()).st_size
            if size is not None and actual != size:
                return f"truncated or replaced: {actual:,} bytes, sealed {size:,}"
            head = f.read(4)
            f.seek(max(0, actual - 4))
            tail = f.read(4)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return "not a Parquet file"
    return None


def unavailable_files(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str]) -> dict[str, str]:
    """The registered files that cannot be read now: {path under the lake: reason}."""
    return {f.path: f.problem for f in sealed_files(con, store_path) if f.problem}


def damaged_files(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str]) -> dict[str, str]:
    """The registered files whose Parquet footer cannot be read: {path under the lake: DuckDB's
    reason}. One footer read per file: for the error path of a query that failed reading the
    view, to name the file (DuckDB's own error does not); data pages damaged under a sound
    footer are not found (their sha256, in ``lake_files``, would tell)."""
    root = lake_root(con, store_path)
    damaged = {}
    for (path,) in con.execute("SELECT path FROM lake_files ORDER BY path").fetchall():
        try:
            con.execute("SELECT count(*) FROM parquet_file_metadata(?)", [str(root / path)]).fetchall()
        except duckdb.Error as exc:
            damaged[path] = str(exc).strip().splitlines()[0]
    return damaged


def recorded_unavailable(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The files the stored ``events`` view leaves out (as of its last rebuild)."""
    rows = con.execute("SELECT value FROM pipeline_state WHERE name = ?", [UNAVAILABLE_STATE]).fetchall()
    return dict(json.loads(rows[0][0])) if rows and rows[0][0] else {}


def near_events(con: duckdb.DuckDBPyConnection, store_path: str, lo: datetime, hi: datetime) -> str:
    """A FROM-able source of the stored events that may lie between ``lo`` and ``hi``: the hot
    table and the files of those UTC days only (not every sealed day: the dedup probe's cost is
    the hot table plus the batch's days, never history)."""
    files = day_files(con, store_path, lo.astimezone(UTC).date(), hi.astimezone(UTC).date())
    if not files:
        return "events_hot"
    return f"(SELECT {STORED} FROM events_hot UNION ALL SELECT {STORED} FROM {parquet_source(files)})"  # noqa: S608


def events_view_sql(files: Sequence[str], *, temp: bool = False) -> str:
    """``CREATE OR REPLACE VIEW events`` over ``events_hot`` and the given Parquet files (absolute
    paths). Every file has :data:`STORED_COLUMNS` (DuckDB takes the schema from the first file
    and opens the others only when a query reaches them; ``union_by_name`` would open every
    file's footer to bind each query). A migration that adds a column to ``events_hot`` must
    add it here and read older files with ``union_by_name`` or rewrite them. ``temp``: a
    connection's own view, shadowing the stored one (a reader's, over the files it can read)."""
    return f"CREATE OR REPLACE {'TEMP ' if temp else ''}VIEW events AS {_events_select(files)}"


def events_between(con: duckdb.DuckDBPyConnection, store_path: str, lo: datetime, hi: datetime) -> str:
    """A FROM-able relation with the columns of ``events`` (the agent derived at read time) that
    holds every readable stored event of [lo, hi): the hot table and the files of those UTC days
    only. A query of ``events`` with a time condition still opens every sealed file to skip it by
    its statistics (~8 ms a file: 2.4 s a scan at 300 sealed days); one that knows its range
    names only the days it can hold. Unavailable files are left out, as ``events`` leaves them."""
    files = sealed_files(con, store_path, lo.astimezone(UTC).date(), hi.astimezone(UTC).date())
    return f"({_events_select([f.absolute for f in files if not f.problem])})"


def _events_select(files: Sequence[str]) -> str:
    """The ``events`` view's SELECT over ``events_hot`` and these Parquet files."""
    sources = f"SELECT {STORED} FROM events_hot"  # noqa: S608 - fixed names
    if files:
        listed = ", ".join(sql_text(f) for f in files)
        sources += f" UNION ALL SELECT {STORED} FROM read_parquet([{listed}])"  # noqa: S608
    shown = ", ".join(f"e.{c}" for c in STORED_COLUMNS[:-3])
    return f"""
SELECT {shown},
       CASE WHEN v.ready THEN coalesce(kb.agent, k.agent, nb.agent, n.agent, e.identity) ELSE e.agent END AS agent,
       e.source, e.ingested_at,
       json_extract(e.raw, '$.requestParameters') AS request_parameters,
       json_extract(e.raw, '$.responseElements') AS response_elements,
       json_extract(e.raw, '$.additionalEventData') AS additional_event_data
FROM ({sources}) AS e
CROSS JOIN (SELECT count(*) > 0 AS ready FROM attribution_version) AS v
LEFT JOIN attribution_keys_bound kb ON kb.key = e.access_key_id AND kb.account = e.account_id
LEFT JOIN attribution_keys k ON k.key = e.access_key_id
LEFT JOIN attribution_identities_bound nb ON nb.identity = e.identity AND nb.account = e.account_id
LEFT JOIN attribution_identities n ON n.identity = e.identity
"""  # noqa: S608 - fixed names and quoted paths


def refresh_events_view(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str]) -> None:
    """Rebuild ``events`` from the registered files that can be read (after sealing, compaction,
    retention, migrations that change what the view reads, and when a file went missing or came
    back), recording the ones it leaves out (:data:`UNAVAILABLE_STATE`) for ``status`` and the
    readers. Call inside the transaction that changed them."""
    files = sealed_files(con, store_path)
    unavailable = {f.path: f.problem for f in files if f.problem}
    con.execute(events_view_sql([f.absolute for f in files if not f.problem]))
    if unavailable or recorded_unavailable(con):
        con.execute("INSERT INTO pipeline_state VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "value = excluded.value, updated_at = excluded.updated_at",
                    [UNAVAILABLE_STATE, json.dumps(unavailable, sort_keys=True), utcnow()])


def readable_view(con: duckdb.DuckDBPyConnection, store_path: str | os.PathLike[str]) -> str | None:
    """A reader's ``events`` over the files it can read now: when they differ from those the
    stored view was built over (a file went missing or came back since the writer last looked),
    a temporary view shadows it for this connection; its SQL is returned, for the connection's
    cursors (a temporary view is a cursor's own), else None."""
    files = sealed_files(con, store_path)
    if {f.path: f.problem for f in files if f.problem} == recorded_unavailable(con):
        return None
    sql = events_view_sql([f.absolute for f in files if not f.problem], temp=True)
    con.execute(sql)
    return sql
