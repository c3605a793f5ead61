"""`trailwarden query`: one statement that only reads, run on a sandboxed connection."""


from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import duckdb
from duckdb import StatementType

from pipeline.core.errors import TerminalError, UsageError
from pipeline.store.store import Store
from pipeline.store.tiers import damaged_files


def run_query(store: Store, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only statement; parameters are bound to ``?`` placeholders, never spliced.

    The store is opened sandboxed (``store.lock_down``): no file but the store and the retention
    archive, no extension, settings locked. On top of that only one statement that reads is run
    (SELECT and its kin, PRAGMA, CALL, PIVOT, EXPLAIN of those): DuckDB would let a ``COPY ... TO``
    write into the archive directory it may read."""
    check_query(store.con, sql)
    try:
        cur = store.con.execute(sql, list(params))
        columns = [d[0] for d in cur.description or []]
        return columns, cur.fetchall()
    except duckdb.PermissionException as exc:
        raise UsageError("a query reads the store and the retention archive (`retention.archive_dir`) only: "
                         + str(exc).splitlines()[0], key="SQL") from None
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        if "read-only" in first.lower() or "read only" in first.lower():
            raise UsageError("the store is opened read-only for queries; this statement writes") from None
        if "configuration has been locked" in first:
            raise UsageError(f"settings cannot be changed by a query: {first}", key="SQL") from None
        _name_damaged_files(store, exc)
        raise UsageError(f"SQL error: {first}") from None


def _name_damaged_files(store: Store, exc: duckdb.Error) -> None:
    """A query that failed reading data (not its SQL) may have met a damaged sealed file: name
    it, as ``status`` would (exit 1, one line), instead of DuckDB's error that names no file."""
    if isinstance(exc, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return
    damaged = damaged_files(store.con, store.path)
    if damaged:
        days = dict(store.con.execute("SELECT path, day FROM lake_files").fetchall())
        named = "; ".join(f"{days[p]} ({p}: {why})" for p, why in sorted(damaged.items()))
        raise TerminalError(f"a sealed day cannot be read, its file is damaged: {named}; restore the file "
                            "from a backup (`lake_files.sha256` is its checksum)") from None


_READS = frozenset({StatementType.SELECT, StatementType.PRAGMA, StatementType.CALL})
_SKIP = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_EXPLAIN = re.compile(r"explain\b", re.I)
_ANALYZE = re.compile(r"analy[sz]e\b", re.I)
_OPTIONS = re.compile(r"""\((?:[^()'"]|'[^']*'|"[^"]*")*\)""")
_WORD = re.compile(r"[A-Za-z_]+")


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Exit 2 (UsageError) unless ``sql`` is exactly one statement that only reads."""
    statements = _statements(con, sql)
    if not statements:
        raise UsageError('no SQL to run: give one statement, e.g. "SELECT count(*) FROM events"', key="SQL")
    if len(statements) > 1:
        raise UsageError(f"one statement at a time: {len(statements)} were given", key="SQL")
    if not _reads(con, statements[0], sql):
        raise UsageError(f"the store is opened read-only for queries; {_first_word(sql)} statements are not run "
                         "(one SELECT, PRAGMA, CALL, PIVOT or EXPLAIN statement)", key="SQL")


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return list(con.extract_statements(sql))
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None


def _reads(con: duckdb.DuckDBPyConnection, statement: Any, text: str, *, explained: bool = False) -> bool:
    """Does this statement only read? EXPLAIN is judged by what it explains (EXPLAIN ANALYZE runs it)."""
    if statement.type in _READS:
        return True
    if statement.type == StatementType.MULTI:  # PIVOT: a SELECT over a type it makes up on the fly
        return _first_word(text).upper() == "PIVOT"
    if statement.type != StatementType.EXPLAIN or explained:
        return False
    for inner in _explained(text):
        try:
            inner_statements = list(con.extract_statements(inner))
        except duckdb.Error:
            continue
        if len(inner_statements) == 1 and _reads(con, inner_statements[0], inner, explained=True):
            return True
    return False


def _explained(text: str) -> list[str]:
    """What an ``EXPLAIN [ANALYZE] [(options)] ...`` explains: each way of reading its prefix."""
    at = _SKIP.match(text).end()  # type: ignore[union-attr]
    explain = _EXPLAIN.match(text, at)
    if explain is None:
        return []
    at = _SKIP.match(text, explain.end()).end()  # type: ignore[union-attr]
    starts = [at]
    options = _OPTIONS.match(text, at)
    if options is not None:
        starts.append(_SKIP.match(text, options.end()).end())  # type: ignore[union-attr]
    out = []
    for start in starts:
        analyze = _ANALYZE.match(text, start)
        out.append(text[analyze.end():] if analyze else text[start:])
    return out


def _first_word(sql: str) -> str:
    word = _WORD.match(sql, _SKIP.match(sql).end())  # type: ignore[union-attr]
    return word[0].upper() if word else "this"


