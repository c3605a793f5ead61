"""DuckDB-native parsing of NDJSON: DuckDB parses, validates and types the lines; Python reads
bytes and orchestrates.

A file's line-aligned chunks (cut while hashing, :func:`pipeline.ingest.sources.files.scan_file`)
are read as bytes, checked as UTF-8 and split into lines by Arrow (C++, no Python per line), and
handed to DuckDB as one ``(line_no, line)`` table per group of chunks. A first statement reads
each line with one ``json_transform`` (every value read, as text), one ``json_type`` (their types
and the objects') and one ``json_keys`` (the keys of the objects read); a second extracts every
typed column the way :func:`pipeline.ingest.events.normalize` does, and says for each line whether
SQL could *decide* it: a JSON object, no duplicate key in the objects read and no other object
(a ``{`` count; duplicates elsewhere are Python's to find), no trailing comma (DuckDB's parser accepts one,
Python's refuses it), every typed field of the type ``normalize`` accepts, times in the strict
ISO-8601 form both parsers read alike and within the plausible bounds, not a ``ConsoleSignin``
(its MFA rule stays in Python), not a LookupEvents body, at most :data:`MAX_BRACKETS` brackets
(so never deeper than Python's parser can go). Attribution, ``ip_version`` and references are
joined in before the rows are exported.

A line SQL does not decide goes through today's Python rule (:func:`files.line_items` and
``normalize``), which quarantines it with today's reason or, where SQL was only cautious (a float
``eventVersion``, an offset-less time), stores it as today. Reasons therefore have one source.
Three small pieces stay in Python over *distinct* values, not rows: attribution
(:func:`_attribution`, the inventory's own rule, kept in one place), ``ip_version`` (Python's
``ipaddress`` is the definition) and ``referenced_resources`` (its two shapes, for the ~8% of
events that have one). A chunk that is not valid UTF-8, holds a ``\\r`` line end, or is longer
than :data:`files.MAX_ITEM_BYTES` is read by today's reader whole (its per-line recovery and
limits are the contract).

The typed rows come back as one Arrow table per group in the writer's batch schema, so the
writer, its transactions, dedup and the exactly-once file records are today's.

Opt-in (``TRAILWARDEN_INGEST_PARSER=duckdb``): measured on 1M events it costs ~1.1x the Python
parser's CPU over the process tree (three parses per line and ~100 SQL expressions over strings
cost about what ``json.loads`` and ``normalize`` do), so the Python parser stays the default
(README, Performance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.inventory import Attributor
from pipeline.ingest.batches import _LOCATED_SCHEMA, LOCATION, Batch, events_to_arrow, to_batches
from pipeline.ingest.events import (
    EARLIEST_EVENT_TIME,
    FUTURE_TOLERANCE,
    MalformedEvent,
    _referenced_resources,
    ip_version,
)
from pipeline.ingest.parse_pool import parse_chunk
from pipeline.ingest.sources import files

GROUP_BYTES = 16 * files.MIB  # chunks parsed by one statement (~12k events)
MAX_BRACKETS = 500  # more '{' and '[' than this: Python decides (its parser's depth limit)

# Every value read, as a JSON leaf of one json_transform (one parse per line): the leaf's text
# says its type ('"' a string, 't'/'f' a boolean, a digit or '-' a number; SQL NULL when absent
# or null). Objects that typed columns come from are nested structs.
_LEAF = "VARCHAR"
_STRUCTURE: dict[str, Any] = {
    **dict.fromkeys((
        "eventId", "eventTime", "eventName", "eventType", "eventRW", "eventSource", "eventVersion",
        "serviceName", "acsRegion", "sourceIpAddress", "userAgent", "requestId", "apiVersion",
        "errorCode", "errorMessage", "recipientAccountId", "vpcId", "resourceType", "resourceName",
        "isGlobal", "referencedResources", "Events"), _LEAF),
    "userIdentity": {
        **dict.fromkeys(("type", "userName", "principalId", "accountId", "accessKeyId"), _LEAF),
        "sessionContext": {name: {"mfaAuthenticated": _LEAF, "creationDate": _LEAF}
                           for name in ("attributes", "sessionAttributes")},
    },
    "requestParameters": {"ServiceCode": _LEAF},
    "additionalEventData": {"Scheme": _LEAF},
}
# The objects whose keys are checked for duplicates, in json_keys' order (k[1] ... k[9]).
_OBJECTS = ("$", "$.userIdentity", "$.userIdentity.sessionContext", "$.userIdentity.sessionContext.attributes",
            "$.userIdentity.sessionContext.sessionAttributes", "$.requestParameters", "$.additionalEventData",
            "$.responseElements", "$.referencedResources")
_NUMERIC_OK = frozenset({"eventVersion", "recipientAccountId", "accountId", "principalId", "errorCode"})
_STRINGS = (  # column, key: as events._STRING_KEYS
    ("event_name", "eventName"), ("event_type", "eventType"), ("event_rw", "eventRW"),
    ("event_source", "eventSource"), ("event_version", "eventVersion"),
    ("service_name", "serviceName"), ("acs_region", "acsRegion"), ("source_ip", "sourceIpAddress"),
    ("user_agent", "userAgent"), ("request_id", "requestId"), ("api_version", "apiVersion"),
    ("error_code", "errorCode"), ("error_message", "errorMessage"),
    ("recipient_account_id", "recipientAccountId"), ("vpc_id", "vpcId"),
    ("resource_type", "resourceType"), ("resource_name", "resourceName"),
)
# The ISO-8601 form both datetime.fromisoformat and DuckDB read the same way (others: Python).
_TIME_RE = r"\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
# An integer as Python's str(int) writes it (a negative, a float or a huge one: Python decides).
_INT_RE = r"0|[1-9]\d{0,17}"
# DuckDB's parser takes a comma before a closing bracket; Python's refuses it (a string holding
# such text only sends its line to Python)
_TRAILING_COMMA = r",[ \t\n\r]*[}\]]"
_SQL_QUOTE = "'"


def _leaf_paths(structure: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``a.b.c`` for every leaf of a json_transform structure, in its order."""
    out: list[str] = []
    for key, value in structure.items():
        path = f"{prefix}{key}"
        out += _leaf_paths(value, path + ".") if isinstance(value, dict) else [path]
    return out


_LEAVES = {path: i for i, path in enumerate(_leaf_paths(_STRUCTURE))}


def _leaf(path: str) -> str:
    """SQL: the column holding a leaf's text (``userIdentity.userName``): a string unescaped, a
    number or boolean as written, an object or array as JSON."""
    return f"l{_LEAVES[path]}"


def _type(path: str) -> str:
    """SQL: the column holding the leaf's JSON type (``VARCHAR``, ``UBIGINT``, ``NULL``...)."""
    return f"y{_LEAVES[path]}"


def _decoded(path: str) -> str:
    """SQL: the column holding the string a leaf holds (NULL when it is not a string)."""
    return f"d{_LEAVES[path]}"


def _string(path: str) -> tuple[str, str]:
    """SQL (value, ok) for ``events._opt_str``: absent, null, a string, or (where exports write
    numbers) an integer."""
    x, y, d, key = _leaf(path), _type(path), _decoded(path), path.rsplit(".", 1)[-1]
    if key in _NUMERIC_OK:
        return f"coalesce({d}, {x})", f"({y} IS NULL OR {y} IN ('NULL', 'VARCHAR', 'UBIGINT', 'BIGINT'))"
    return d, f"({y} IS NULL OR {y} IN ('NULL', 'VARCHAR'))"


def _bool(path: str) -> tuple[str, str]:
    """SQL (value, ok) for ``events._opt_bool``."""
    x, y = _leaf(path), _type(path)
    low = f"lower({_decoded(path)})"
    value = f"CASE WHEN {y} = 'BOOLEAN' THEN {x} = 'true' WHEN {low} IN ('true', 'false') THEN {low} = 'true' END"
    ok = f"({y} IS NULL OR {y} IN ('NULL', 'BOOLEAN') OR {low} IN ('true', 'false', ''))"
    return value, ok


def _object(i: int) -> str:
    """SQL: the JSON type of ``_OBJECTS[i]``."""
    return f"o{i}"


def _time(expr: str) -> str:
    return f"CASE WHEN regexp_full_match({expr}, '{_TIME_RE}') THEN TRY_CAST({expr} AS TIMESTAMPTZ) END"


def _fields_sql() -> str:
    """Stage one, materialized: each line that may be an event parsed once into the structure,
    and the keys of each object read (json_keys: a second, cheaper parse)."""
    objects = "[" + ", ".join(_SQL_QUOTE + p + _SQL_QUOTE for p in _OBJECTS) + "]"
    types = "[" + ", ".join([f"'$.{p}'" for p in _LEAVES] + [_SQL_QUOTE + p + _SQL_QUOTE for p in _OBJECTS]) + "]"
    structure = json.dumps(_STRUCTURE, separators=(",", ":"))
    return f"""
CREATE OR REPLACE TEMP TABLE _tw_fields AS
SELECT line_no, line AS t, try(json_transform(line, '{structure}')) AS s, try(json_type(line, {types})) AS y,
    try(json_keys(line, {objects})) AS k
FROM _tw_lines WHERE starts_with(line, '{{') AND ends_with(line, '}}')
"""  # noqa: S608 - fixed structure, no input


def _unique_sql() -> str:
    """SQL over ``_tw_fields``: no object read has a duplicate key, and every object of the line
    is one of those: as many ``{`` in the text as objects checked (a brace inside a string only
    sends the line to Python)."""
    unique = " AND ".join(f"CASE WHEN coalesce(len(k[{i}]), 0) < 2 THEN true ELSE len(k[{i}]) = list_unique(k[{i}]) END"
                          for i in range(1, len(_OBJECTS) + 1))
    objects = " + ".join(f"coalesce({_object(i)} = 'OBJECT', false)::INT" for i in range(len(_OBJECTS)))
    braces = "strlen(t) - strlen(replace(t, '{', ''))"
    return f"({unique}) AND {braces} = {objects}"


def _parse_sql() -> str:
    """Stage two, over ``_tw_fields``: the typed columns, and whether SQL decided the line;
    parameters: the earliest and the latest plausible event time."""
    strings, oks = [], []
    for col, key in _STRINGS:
        value, ok = _string(key)
        strings.append(f"{f'nullif({value}, {_SQL_QUOTE}{_SQL_QUOTE})' if col in ('error_code', 'error_message') else value} AS {col}")
        oks.append(ok)
    ident = {k: _string(f"userIdentity.{k}") for k in ("type", "userName", "principalId", "accountId", "accessKeyId")}
    itype, user, pid, account = (ident[k][0] for k in ("type", "userName", "principalId", "accountId"))
    oks += [ok for _, ok in ident.values()]
    akid = f"nullif({ident['accessKeyId'][0]}, '')"
    glob, glob_ok = _bool("isGlobal")
    mfa_a, mfa_a_ok = _bool("userIdentity.sessionContext.attributes.mfaAuthenticated")
    mfa_s, mfa_s_ok = _bool("userIdentity.sessionContext.sessionAttributes.mfaAuthenticated")
    attrs = f"coalesce({_object(3)} = 'OBJECT', false)"
    created_a, created_s = (_decoded(f"userIdentity.sessionContext.{n}.creationDate")
                            for n in ("attributes", "sessionAttributes"))
    created_text = f"CASE WHEN {attrs} THEN {created_a} ELSE {created_s} END"
    code = _decoded("requestParameters.ServiceCode")
    scheme = f"lower({_decoded('additionalEventData.Scheme')})"
    refs, refs_type = _leaf("referencedResources"), _type("referencedResources")
    event_id, event_time = _decoded("eventId"), _decoded("eventTime")
    n = len(_LEAVES)
    leaves = ", ".join(f"s.{path} AS l{i}, y[{i + 1}] AS y{i}, CASE WHEN y[{i + 1}] = 'VARCHAR' THEN s.{path} END AS d{i}"
                       for path, i in _LEAVES.items())
    objects = ", ".join(f"y[{n + i + 1}] AS {_object(i)}" for i in range(len(_OBJECTS)))
    string_columns = ",\n        ".join(strings)
    return f"""
WITH leaves AS (
    SELECT line_no, t, k, {leaves}, {objects}
    FROM _tw_fields WHERE s IS NOT NULL AND y IS NOT NULL AND k IS NOT NULL
), typed AS (
    SELECT line_no, t, {_unique_sql()} AS unique_keys,
        {event_id} AS event_id,
        {_time(event_time)} AS event_time,
        {string_columns},
        {' AND '.join(oks)} AS strings_ok,
        {glob} AS is_global, {glob_ok} AS global_ok,
        {itype} AS identity_type, {account} AS account_id, {pid} AS principal_id, {user} AS user_name,
        {akid} AS access_key_id,
        CASE WHEN {itype} = 'assumed-role' AND {user} <> '' THEN split_part({user}, ':', 1) END AS role_name,
        CASE WHEN {itype} = 'assumed-role' AND {pid} <> '' THEN split_part({pid}, ':', 1) END AS role_id,
        CASE WHEN {itype} = 'assumed-role' AND {user} <> '' AND strpos({user}, ':') > 0
             THEN nullif(substr({user}, strpos({user}, ':') + 1), '') END AS session_name,
        CASE WHEN {itype} = 'ram-user' AND {user} <> '' THEN 'ram-user:' || {user}
             WHEN {itype} = 'assumed-role' AND ({user} <> '' OR {pid} <> '')
                 THEN 'role:' || split_part(coalesce(nullif({user}, ''), {pid}), ':', 1)
             WHEN {itype} = 'root-account'
                 THEN 'root-account:' || coalesce(nullif({account}, ''), nullif({pid}, ''), 'unknown')
             WHEN {itype} <> '' AND coalesce(nullif({user}, ''), nullif({pid}, '')) IS NOT NULL
                 THEN {itype} || ':' || coalesce(nullif({user}, ''), {pid})
             WHEN {akid} IS NOT NULL THEN 'access-key:' || {akid}
             ELSE coalesce(nullif({itype}, ''), 'unknown') || ':unknown' END AS identity,
        CASE WHEN {attrs} THEN {mfa_a} ELSE {mfa_s} END AS mfa_authenticated,
        CASE WHEN {attrs} THEN {mfa_a_ok} ELSE {mfa_s_ok} END AS mfa_ok,
        CASE WHEN {created_text} <> '' THEN {_time(created_text)} END AS session_created,
        coalesce({created_text} <> '', false) AS has_created,
        nullif({code}, '') AS service_code,
        CASE {scheme} WHEN 'https' THEN true WHEN 'http' THEN false END AS secure_transport,
        coalesce({refs_type}, 'NULL') <> 'NULL' AS has_refs,
        {refs} AS refs_text,
        -- what only Python can judge: a userIdentity that is not an object, references that
        -- are neither an object nor a list, a LookupEvents body
        coalesce({_object(1)}, 'NULL') NOT IN ('NULL', 'OBJECT')
            OR coalesce({refs_type}, 'NULL') NOT IN ('NULL', 'OBJECT', 'ARRAY')
            OR coalesce({_type("Events")} = 'ARRAY', false) AS object_doubt
    FROM leaves
)
SELECT *, coalesce(
    unique_keys AND strings_ok AND global_ok AND mfa_ok AND NOT object_doubt
    AND event_id <> '' AND event_time IS NOT NULL AND event_time >= $1 AND event_time <= $2
    AND (NOT has_created OR session_created IS NOT NULL)
    AND coalesce(event_name, '') <> 'ConsoleSignin'
    AND NOT regexp_matches(t, '{_TRAILING_COMMA}')
    AND strlen(t) - strlen(replace(replace(t, '{{', ''), '[', '')) <= {MAX_BRACKETS}, false) AS decided
FROM typed
"""  # noqa: S608 - fixed paths, no input


_FIELDS_SQL = _fields_sql()
_PARSE_SQL = _parse_sql()
# blank lines come too (Python skips them): trimming every line in SQL cost more than the parse
_UNDECIDED_SQL = """
SELECT l.line_no, l.line FROM _tw_lines l ANTI JOIN (SELECT line_no FROM _tw_parsed WHERE decided) p USING (line_no)
ORDER BY l.line_no
"""
_EVENT_SQL = """
SELECT p.event_id, p.event_time, p.event_name, p.event_type, p.event_rw, p.event_source,
       p.event_version, p.service_name, p.service_code, p.acs_region, p.is_global, p.source_ip,
       ips.ip_version, p.secure_transport, p.user_agent, p.request_id, p.api_version, p.error_code,
       p.error_message, p.identity_type, p.identity, p.account_id, p.principal_id, p.user_name,
       p.role_name, p.role_id, p.session_name, p.access_key_id, p.mfa_authenticated,
       p.session_created, p.recipient_account_id, p.vpc_id, p.resource_type, p.resource_name,
       refs.referenced_resources, p.t AS raw, a.agent, $1 AS source, $2::TIMESTAMPTZ AS ingested_at,
       p.line_no
FROM _tw_parsed p
JOIN _tw_agents a ON a.identity = p.identity AND a.access_key_id IS NOT DISTINCT FROM p.access_key_id
    AND a.account_id IS NOT DISTINCT FROM p.account_id
LEFT JOIN _tw_ips ips ON ips.source_ip = p.source_ip
LEFT JOIN _tw_refs refs ON refs.line_no = p.line_no
WHERE p.decided AND (NOT p.has_refs OR refs.ok)
ORDER BY p.line_no
"""


class NativeReader:
    """Parses NDJSON chunks with DuckDB on its own cursor of the store's database (the writer
    thread keeps the store's connection)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, attribute: Attributor, now: datetime | None = None):
        self.con = con.cursor()
        self.con.execute("SET TimeZone = 'UTC'")
        self.attribute = attribute
        self.now = now or datetime.now(UTC)

    def close(self) -> None:
        self.con.close()

    def batches(self, path: Path, chunks: list[files.Chunk], source: str, partition: str,
                batch_size: int) -> Iterator[Batch]:
        """The file's batches in order; raises ``OSError`` when it cannot be read."""
        group: list[tuple[files.Chunk, bytes]] = []
        size = 0
        if not chunks:  # an empty file: one empty batch records it
            yield Batch(source, partition).seal()
            return
        with path.open("rb") as fh:
            for chunk in chunks:
                fh.seek(chunk.start)
                data = fh.read(chunk.end - chunk.start) if chunk.end - chunk.start <= files.MAX_ITEM_BYTES else None
                if data is None or b"\r" in data or not _utf8(data):
                    if group:
                        yield self._group(path, group, source, partition)
                        group, size = [], 0
                    yield from parse_chunk(str(path), chunk, source, partition, self.attribute, batch_size, self.now)
                    continue
                group.append((chunk, data))
                size += len(data)
                if size >= GROUP_BYTES:
                    yield self._group(path, group, source, partition)
                    group, size = [], 0
        if group:
            yield self._group(path, group, source, partition)

    def _group(self, path: Path, group: list[tuple[files.Chunk, bytes]], source: str, partition: str) -> Batch:
        lines = _lines(group)
        con = self.con
        con.register("_tw_lines", lines)
        try:
            con.execute(_FIELDS_SQL)
            con.execute(f"CREATE OR REPLACE TEMP TABLE _tw_parsed AS {_PARSE_SQL}",
                        [EARLIEST_EVENT_TIME, self.now + FUTURE_TOLERANCE])
            undecided = con.sql(_UNDECIDED_SQL).fetchall()
            undecided += self._register_lookups()
            table = con.sql(_EVENT_SQL, params=[source, datetime.now(UTC)]).to_arrow_table()
        finally:
            con.unregister("_tw_lines")
            for name in ("_tw_agents", "_tw_ips", "_tw_refs"):
                con.unregister(name)
        located = _located(table, str(path))
        fallback, bad = self._python(path, undecided, source, partition)
        batch = Batch(source, partition, bad=bad)
        batch.table = _merge(located, fallback)
        batch.count = batch.table.num_rows
        if batch.count:
            lo, hi = pc.min_max(batch.table["event_time"]).values()
            batch.first, batch.last = lo.as_py(), hi.as_py()
        batch.progress = sum(len(data) for _, data in group)
        return batch

    def _register_lookups(self) -> list[tuple[int, str]]:
        """Attribution, ``ip_version`` and ``referenced_resources``: Python over distinct values
        (references: over the rows that have one). Returns the lines whose references only
        ``normalize`` can judge."""
        con = self.con
        con.register("_tw_agents", _attribution(con, self.attribute))
        ips = [r[0] for r in con.execute(
            "SELECT DISTINCT source_ip FROM _tw_parsed WHERE decided AND source_ip IS NOT NULL").fetchall()]
        con.register("_tw_ips", pa.table({"source_ip": pa.array(ips, pa.string()),
                                          "ip_version": pa.array([ip_version(ip) for ip in ips], pa.int8())}))
        rows = con.execute("SELECT line_no, refs_text, t FROM _tw_parsed WHERE decided AND has_refs").fetchall()
        line_nos, values, oks = [], [], []
        rejected: list[tuple[int, str]] = []
        for line_no, text, raw in rows:
            value, ok = _refs(text)
            line_nos.append(line_no)
            values.append(value)
            oks.append(ok)
            if not ok:
                rejected.append((line_no, raw))
        con.register("_tw_refs", pa.table({"line_no": pa.array(line_nos, pa.int64()),
                                           "referenced_resources": pa.array(values, pa.string()),
                                           "ok": pa.array(oks, pa.bool_())}))
        return rejected

    def _python(self, path: Path, undecided: list[tuple[int, str]], source: str,
                partition: str) -> tuple[pa.Table | None, list[tuple[str, str, str]]]:
        """Today's rule for the lines SQL left undecided: events (as a located table with their
        line numbers) and quarantined input."""
        if not undecided:
            return None, []
        undecided.sort()
        items: list[files.Item] = []
        line_of: dict[str, int] = {}
        for line_no, line in undecided:
            for item in files.line_items(f"{path}:{line_no}", line.encode("utf-8")):
                items.append(item)
                line_of[item.location] = line_no
        [batch] = list(to_batches(items, source, partition, self.attribute, len(items) + 1, self.now))
        if not batch.events:
            return None, batch.bad
        numbers = [line_of[loc] for loc in batch.locations]
        table = events_to_arrow(batch.events, batch.agents, source, datetime.now(UTC), batch.locations)
        return table.append_column("line_no", pa.array(numbers, pa.int64())), batch.bad


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lines(group: list[tuple[files.Chunk, bytes]]) -> pa.Table:
    """``(line_no, line)`` for every line of the chunks, split by Arrow."""
    texts, numbers = [], []
    for chunk, data in group:
        text = pa.array([data], pa.large_binary()).cast(pa.large_string())
        lines = pc.split_pattern(text, "\n").flatten()
        texts.append(lines)
        numbers.append(pa.array(np.arange(chunk.first_line, chunk.first_line + len(lines), dtype=np.int64)))
    return pa.table({"line_no": pa.chunked_array(numbers), "line": pa.chunked_array(texts)})


def _attribution(con: duckdb.DuckDBPyConnection, attribute: Attributor) -> pa.Table:
    """The agent of each distinct (identity, AccessKey) of the decided rows, by the inventory's
    rule (AccessKey first, then identity). The one place the native path attributes: when
    attribution moves to read time, this and its join go."""
    pairs = con.execute("SELECT DISTINCT identity, access_key_id, account_id FROM _tw_parsed WHERE decided").fetchall()
    return pa.table({"identity": pa.array([p[0] for p in pairs], pa.string()),
                     "access_key_id": pa.array([p[1] for p in pairs], pa.string()),
                     "account_id": pa.array([p[2] for p in pairs], pa.string()),
                     "agent": pa.array([attribute(p[0], p[1], p[2]) for p in pairs], pa.string())})


def _refs(text: str) -> tuple[str | None, bool]:
    """``referenced_resources`` as ``normalize`` writes it, and whether SQL's row may keep it: only
    values of the documented shapes holding strings (anything else goes to ``normalize``)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None, False
    if isinstance(value, dict):
        clean = all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(n, str) for n in v))
                    for v in value.values())
    elif isinstance(value, list):
        clean = all(isinstance(item, dict) and all(isinstance(v, str) for v in item.values()) for item in value)
    else:
        clean = False
    if not clean:
        return None, False
    try:
        return _referenced_resources(value), True
    except MalformedEvent:
        return None, False


def _located(table: pa.Table, path: str) -> pa.Table:
    """DuckDB's rows in the writer's located schema (``raw`` and ``referenced_resources`` as
    Arrow JSON without a copy), with ``line_no`` last."""
    prefix = pa.scalar(f"{path}:")
    location = pc.binary_join_element_wise(prefix, pc.cast(table["line_no"], pa.string()), "")
    columns = []
    for field in _LOCATED_SCHEMA:
        if field.name == LOCATION:
            columns.append(location)
            continue
        col = table[field.name]
        if isinstance(field.type, pa.ExtensionType):
            col = pa.chunked_array([pa.ExtensionArray.from_storage(field.type, c.cast(pa.string()))
                                    for c in col.chunks], type=field.type)
        elif col.type != field.type:
            col = col.cast(field.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=_LOCATED_SCHEMA).append_column("line_no", table["line_no"])


def _merge(located: pa.Table, fallback: pa.Table | None) -> pa.Table:
    """Both sets of rows in line order (the first copy of an eventId in the file is the one
    kept), without the ``line_no`` column."""
    if fallback is not None and fallback.num_rows:
        merged = pa.concat_tables([located, fallback.cast(located.schema)])
        merged = merged.take(pc.sort_indices(merged, [("line_no", "ascending")]))
    else:
        merged = located
    return merged.drop_columns(["line_no"])


PARSER_ENV = "TRAILWARDEN_INGEST_PARSER"


def native_enabled() -> bool:
    """Whether DuckDB parses NDJSON: only with ``TRAILWARDEN_INGEST_PARSER=duckdb``. Measured
    (README, Performance) it costs more CPU than the Python parser and, on one core where the
    Python parser has a process per core, takes longer; it stays opt-in until it does not."""
    return os.environ.get(PARSER_ENV, "python").strip().lower() == "duckdb"


def native_eligible(path: Path) -> bool:
    """Uncompressed NDJSON in UTF-8 (not a UTF-16/32 file whose first line happens to parse)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head == b"\x00\x00\xfe\xff":
        return False
    return files.is_ndjson(path)
