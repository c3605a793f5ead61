"""Where the tiers of the store are and how to read them: shared by the store and the lake.

Pure helpers over a connection and a store path (no :class:`~pipeline.store.store.Store`), so
that both :mod:`pipeline.store.store` (dedup looks at the sealed days of a batch) and
:mod:`pipeline.store.lake` (sealing, compaction) can use them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

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


def day_files(con: duckdb.DuckDBPyConnection, store_path: str, first: date, last: date) -> list[str]:
    """Absolute paths of the registered files of the UTC days ``first``..``last``."""
    root = lake_root(con, store_path)
    rows = con.execute("SELECT path FROM lake_files WHERE day BETWEEN ? AND ? ORDER BY path", [first, last]).fetchall()
    return [str(root / r[0]) for r in rows]


def near_events(con: duckdb.DuckDBPyConnection, store_path: str, lo: datetime, hi: datetime) -> str:
    """A FROM-able source of the stored events that may lie between ``lo`` and ``hi``: the hot
    table and the files of those UTC days only (not every sealed day: the dedup probe's cost is
    the hot table plus the batch's days, never history)."""
    files = day_files(con, store_path, lo.astimezone(UTC).date(), hi.astimezone(UTC).date())
    if not files:
        return "events_hot"
    return f"(SELECT {STORED} FROM events_hot UNION ALL SELECT {STORED} FROM {parquet_source(files)})"  # noqa: S608


def events_view_sql(files: Sequence[str]) -> str:
    """``CREATE OR REPLACE VIEW events`` over ``events_hot`` and the given Parquet files (absolute
    paths). Every file has :data:`STORED_COLUMNS` (DuckDB takes the schema from the first file
    and opens the others only when a query reaches them; ``union_by_name`` would open every
    file's footer to bind each query). A migration that adds a column to ``events_hot`` must
    add it here and read older files with ``union_by_name`` or rewrite them."""
    sources = f"SELECT {STORED} FROM events_hot"  # noqa: S608 - fixed names
    if files:
        listed = ", ".join(sql_text(f) for f in files)
        sources += f" UNION ALL SELECT {STORED} FROM read_parquet([{listed}])"  # noqa: S608
    shown = ", ".join(f"e.{c}" for c in STORED_COLUMNS[:-3])
    return f"""
CREATE OR REPLACE VIEW events AS
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
    """Rebuild ``events`` from the registered files (after sealing, compaction, retention, and
    migrations that change what the view reads). Call inside the transaction that changed them."""
    root = lake_root(con, store_path)
    files = [str(root / r[0]) for r in con.execute("SELECT path FROM lake_files ORDER BY day, path").fetchall()]
    con.execute(events_view_sql(files))
