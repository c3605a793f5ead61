"""DuckDB-native parsing of NDJSON: DuckDB parses, validates and types the lines; Python reads
bytes and orchestrates.

A file's line-aligned chunks (cut while hashing, :func:`pipeline.ingest.sources.files.scan_file`)
are read as bytes, checked as UTF-8 and split into lines by Arrow (C++, no Python per line), and
handed to DuckDB as one ``(line_no, line)`` table per group of chunks. ONE statement per group
parses each line once (one ``json_transform`` into a struct whose string leaves are VARCHAR, the
string itself, and whose other leaves are the values' JSON text, its first character the type)
and walks it once more for the key lists of the objects checked for duplicates (``json_keys``);
it streams one row
per line to Arrow, in line order, with the typed columns and whether SQL could *decide* the
line: a JSON object, every object of it one whose keys were listed (a ``{`` count), no trailing
comma (DuckDB's parser accepts one, Python's refuses it), every typed field of the type
``normalize`` accepts, times in the strict ISO-8601 form both parsers read alike and within the
plausible bounds, not a ``ConsoleSignin`` (its MFA rule stays in Python), not a LookupEvents
body, at most :data:`MAX_BRACKETS` brackets (so never deeper than Python's parser can go), no
backslash. Then Arrow and numpy, per group: whether a string column holds a text a non-string
could have given (``true`` reads as VARCHAR as ``"true"`` does), a duplicate key in any listed
object (each distinct object's keys checked once; DuckDB's list functions cost a microsecond per
list), and
``normalize``'s own rules over the group's *distinct* values (identity, role and session names,
attribution, ``ip_version``, ``isGlobal``, the session's MFA flag: dozens per group, not one per
row) and over the ~8% of rows with references.

Lines with a backslash (escapes), and those whose values may not be strings, are read by a second
statement whose leaves are all JSON text (so types are known), decoding each string with
``json_extract_string``; a group holding a line DuckDB cannot read at all (malformed, a lone
surrogate) is read by the same statements with ``try``. A line neither decides goes through
today's Python rule (:func:`files.line_items` and ``normalize``), which quarantines it with
today's reason or, where SQL was only cautious (a float ``eventVersion``, an offset-less time),
stores it as today. Reasons therefore have one source. A chunk that is not valid UTF-8, holds a
``\\r`` line end, or is longer than :data:`files.MAX_ITEM_BYTES` is read by today's reader whole
(its per-line recovery and limits are the contract).

The typed rows come back as one Arrow table per group in the writer's batch schema, so the
writer, its transactions, dedup and the exactly-once file records are today's.

The part from a ``(line_no, line)`` table to a batch (:meth:`NativeReader.rows`) is shared: a
file's groups of lines, and an SLS batch's ``event`` texts (:meth:`NativeReader.texts`), each with
its :class:`LineOrigin` (how a line is located, and today's Python rule for a line SQL leaves:
``files.line_items`` for a file's, the SLS reader's own parse for a log's). LookupEvents pages stay
with ``normalize``: the SDK hands their events over parsed, and parsing their re-encoded text
again saves ~6 CPU-µs per event at an API rate of at most 100 events a second (README, Ingest).

The default for files since it costs at most half the Python parser's CPU; SLS batches only with
``TRAILWARDEN_INGEST_PARSER=duckdb`` (:func:`native_enabled`; README, Performance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.columns import distinct_codes
from models.inventory import Attributor
from pipeline.ingest import jsontext
from pipeline.ingest.batches import _LOCATED_SCHEMA, LOCATION, Batch, events_to_arrow, to_batches
from pipeline.ingest.events import (
    EARLIEST_EVENT_TIME,
    FUTURE_TOLERANCE,
    MalformedEvent,
    _identity,
    _opt_bool,
    _referenced_resources,
    ip_version,
)
from pipeline.ingest.parse_pool import parse_chunk
from pipeline.ingest.sources import files

GROUP_BYTES = 16 * files.MIB  # at most this many bytes of lines parsed by one statement (~12k events)
ROW_GROUP_ROWS = 122_880  # DuckDB's row group; the writer's transactions with DuckDB parsing
_ROW_GROUP_PARTS = sorted({d for i in range(1, 351) if ROW_GROUP_ROWS % i == 0 for d in (i, ROW_GROUP_ROWS // i)})
MAX_BRACKETS = 500  # more '{' and '[' than this: Python decides (its parser's depth limit)

# Every value read, as a JSON leaf of ONE json_transform (the only parse of the line): the leaf
# is the value's JSON text (SQL NULL when absent or null), so its first character is its type
# ('"' a string, 't'/'f' a boolean, a digit or '-' a number, '{' or '[' an object or array).
# Objects that typed columns come from are nested structs (a value that is not an object reads
# as a struct of NULLs, which is what ``normalize`` reads from it too, except where noted).
_LEAF = "JSON"
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
# The objects whose keys are checked for duplicates, in json_keys' order (k[1] ... k[9]). Their
# key lists also say which are objects: ``json_keys`` gives [] for an empty object, a string, a
# number or null alike, so a list with keys is an object and an empty one is left to Python
# where it matters (userIdentity, sessionContext.attributes).
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
# The leaves read as strings. The fast statement (lines without a backslash) has json_transform
# give them as VARCHAR: the string itself, unquoted, with no copy to cut its quotes off (that cut
# cost a quarter of the statement). VARCHAR says nothing of the type: a number, a boolean, an
# object reads as its JSON text. So after the statement the rows whose typed columns hold a text
# a non-string could have given (:data:`_NON_STRING`: a JSON number, NaN, true, an object...) are
# left to the statement that reads types from JSON text (:func:`_may_not_be_strings`); their
# first bytes rule out nearly every value at numpy speed (an RE2 pass over each line for the
# keys' values cost more than the copy it saved). The other leaves (booleans, references, a
# LookupEvents body) stay JSON text, as do all in that second statement.
_JSON_LEAVES = frozenset({"isGlobal", "referencedResources", "Events",
                          "userIdentity.sessionContext.attributes.mfaAuthenticated",
                          "userIdentity.sessionContext.sessionAttributes.mfaAuthenticated"})
_STRING_LEAVES = frozenset(_LEAVES) - _JSON_LEAVES
# The text json_transform gives a non-string as VARCHAR (DuckDB's parser takes NaN and Infinity)
_NON_STRING = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|NaN|-?Infinity|true|false|[{\[].*"
_NON_STRING_FIRST = np.zeros(256, dtype=bool)
_NON_STRING_FIRST[list(b"-0123456789NItf{[")] = True


def _fast_structure() -> dict[str, Any]:
    """:data:`_STRUCTURE` with the string leaves as VARCHAR."""
    def typed(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        return {key: typed(value, f"{prefix}{key}.") if isinstance(value, dict)
                else ("VARCHAR" if f"{prefix}{key}" in _STRING_LEAVES else value)
                for key, value in node.items()}
    return typed(_STRUCTURE, "")


def _leaf(path: str) -> str:
    """SQL: the column holding a leaf's JSON text (``userIdentity.userName``), NULL when absent or
    null."""
    return f"l{_LEAVES[path]}"


def _decoded(path: str) -> str:
    """SQL: the column holding the string a leaf holds, when it holds one (anything when it
    does not: read it only where the leaf's type is checked, or through :func:`_text`)."""
    return f"d{_LEAVES[path]}"


def _is_string(path: str, fast: bool) -> str:
    if fast and path in _STRING_LEAVES:  # _may_not_be_strings checks the columns it reads
        return f"({_leaf(path)} IS NOT NULL)"
    return f"starts_with({_leaf(path)}, '\"')"


def _text(path: str, fast: bool) -> str:
    """SQL: the string a leaf holds, NULL when it holds anything else."""
    if fast and path in _STRING_LEAVES:
        return _leaf(path)
    return f"CASE WHEN {_is_string(path, fast)} THEN {_decoded(path)} END"


def _keys(i: int) -> str:
    """SQL: how many keys ``_OBJECTS[i]`` has (NULL when absent; 0 when empty or not an object)."""
    return f"n{i}"


def _string(path: str, fast: bool) -> tuple[str, str]:
    """SQL (value, ok) for ``events._opt_str``: absent, null, a string, or (where exports write
    numbers) an integer as Python writes it."""
    x, d, key = _leaf(path), _decoded(path), path.rsplit(".", 1)[-1]
    if fast and path in _STRING_LEAVES:  # the string, or the number's text: _may_not_be_strings
        return x, "true"
    if key in _NUMERIC_OK:
        return (f"CASE WHEN {_is_string(path, fast)} THEN {d} ELSE {x} END",
                f"({x} IS NULL OR {_is_string(path, fast)} OR regexp_full_match({x}, '{_INT_RE}'))")
    return d, f"({x} IS NULL OR {_is_string(path, fast)})"


def _time(expr: str) -> str:
    return f"CASE WHEN regexp_full_match({expr}, '{_TIME_RE}') THEN TRY_CAST({expr} AS TIMESTAMPTZ) END"


def _read_sql(guarded: bool, escaped: bool) -> str:
    """Layers one and two: each line that may be an event parsed once into the structure, the
    key lists of the objects checked for duplicates (``json_keys``: a cheap second walk), then
    each leaf, and whether the line holds a backslash. ``guarded`` wraps the parse in ``try`` (a
    line DuckDB cannot read is NULL, left to Python); the fast statement has no ``try`` and is
    rerun guarded only when a group holds such a line. The fast statement (``escaped`` false)
    reads only lines without a backslash, its string leaves as VARCHAR (see
    :data:`_STRING_LEAVES`); the other (``escaped``) reads any line given to it, every leaf as
    JSON text, and decodes each string leaf with ``json_extract_string``."""
    objects = "[" + ", ".join(_SQL_QUOTE + p + _SQL_QUOTE for p in _OBJECTS) + "]"
    structure = json.dumps(_STRUCTURE if escaped else _fast_structure(), separators=(",", ":"))
    parse = f"json_transform(line, '{structure}')"
    keys = f"json_keys(line, {objects})"
    if guarded:
        parse, keys = f"try({parse})", f"try({keys})"
    leaves = ",\n        ".join(f"s.{path}::VARCHAR AS l{i}" for path, i in _LEAVES.items())
    # the strings of the escaped statement's leaves (the fast one's are strings already)
    decoded = "".join(f", json_extract_string(l{i}, '$') AS d{i}" for i in _LEAVES.values()) if escaped else ""
    readable = "starts_with(line, '{') AND ends_with(line, '}')" + ("" if escaped else " AND NOT contains(line, '\\')")
    counts = ", ".join(f"len(k[{i + 1}]) AS {_keys(i)}" for i in range(len(_OBJECTS)))
    return f"""
SELECT *{decoded}
FROM (
    SELECT line_no, t, k, bs, {counts}, strlen(t) - strlen(replace(t, '{{', '')) AS braces,
        {leaves}
    FROM (
        SELECT line_no, line AS t, contains(line, '\\') AS bs, CASE WHEN {readable} THEN {parse} END AS s,
            CASE WHEN {readable} THEN {keys} END AS k
        FROM _tw_lines
    )
)
"""  # noqa: S608 - fixed structure, no input


def _known_objects_sql() -> str:
    """SQL: every object of the line is one of those whose keys were listed: as many ``{`` in
    the text as objects with keys (an empty object, a brace inside a string or an object
    elsewhere only sends the line to Python). Whether a listed object repeats a key is decided
    over the lists in Arrow (:func:`_duplicate_keys`): DuckDB's list functions cost about a
    microsecond per list and row, nine lists per line."""
    objects = " + ".join(f"coalesce({_keys(i)} > 0, false)::INT" for i in range(len(_OBJECTS)))
    return f"braces = {objects}"


# The typed columns SQL computes, in the events table's order (ip_version, referenced_resources,
# raw and agent are added from Python's rules over distinct values, see _group).
_OUT_COLUMNS = (
    "event_id", "event_time", "event_name", "event_type", "event_rw", "event_source", "event_version",
    "service_name", "service_code", "acs_region", "source_ip", "secure_transport", "user_agent",
    "request_id", "api_version", "error_code", "error_message", "identity_type", "account_id",
    "principal_id", "user_name", "access_key_id", "session_created", "recipient_account_id", "vpc_id",
    "resource_type", "resource_name")
# The JSON text of the values whose rules run in Python over distinct values (_by_distinct): few
# distinct values per group, and the rules stay normalize's own.
_TEXT_COLUMNS = ("global_text", "attributes", "mfa_attributes_text", "mfa_session_text")
# The fast statement's columns read from VARCHAR leaves that normalize requires to be strings
# (a string or, where exports write numbers, an integer); times go through _TIME_RE, which no
# non-string's text matches, and ``Scheme`` counts only as https or http.
_CHECKED_STRINGS = dict(_STRINGS) | {  # column: key
    "event_id": "eventId", "service_code": "ServiceCode", "identity_type": "type", "account_id": "accountId",
    "principal_id": "principalId", "user_name": "userName", "access_key_id": "accessKeyId"}


def _parse_sql(guarded: bool, escaped: bool) -> str:
    """Layer three: the typed columns, and whether SQL decided the line; parameters: the
    earliest and the latest plausible event time."""
    fast = not escaped
    strings, oks = [], []
    for col, key in _STRINGS:
        value, ok = _string(key, fast)
        strings.append(f"{f'nullif({value}, {_SQL_QUOTE}{_SQL_QUOTE})' if col in ('error_code', 'error_message') else value} AS {col}")
        oks.append(ok)
    ident = {k: _string(f"userIdentity.{k}", fast) for k in ("type", "userName", "principalId", "accountId", "accessKeyId")}
    itype, user, pid, account = (ident[k][0] for k in ("type", "userName", "principalId", "accountId"))
    oks += [ok for _, ok in ident.values()]
    akid = f"nullif({ident['accessKeyId'][0]}, '')"
    attrs = f"coalesce({_keys(3)} > 0, false)"
    created_a, created_s = (_text(f"userIdentity.sessionContext.{n}.creationDate", fast)
                            for n in ("attributes", "sessionAttributes"))
    created_text = f"CASE WHEN {attrs} THEN {created_a} ELSE {created_s} END"
    code = _text("requestParameters.ServiceCode", fast)
    scheme = f"lower({_text('additionalEventData.Scheme', fast)})"
    refs = _leaf("referencedResources")
    event_id, event_time = _text("eventId", fast), _text("eventTime", fast)
    string_columns = ",\n        ".join(strings)
    return f"""
WITH typed AS (
    SELECT line_no, t, k, bs, braces, {_known_objects_sql()} AS known_objects,
        {event_id} AS event_id,
        {_time(event_time)} AS event_time,
        {string_columns},
        {' AND '.join(oks)} AS strings_ok,
        {itype} AS identity_type, {account} AS account_id, {pid} AS principal_id, {user} AS user_name,
        {akid} AS access_key_id,
        {_leaf("isGlobal")} AS global_text, {attrs} AS attributes,
        {_leaf("userIdentity.sessionContext.attributes.mfaAuthenticated")} AS mfa_attributes_text,
        {_leaf("userIdentity.sessionContext.sessionAttributes.mfaAuthenticated")} AS mfa_session_text,
        CASE WHEN {created_text} <> '' THEN {_time(created_text)} END AS session_created,
        coalesce({created_text} <> '', false) AS has_created,
        nullif({code}, '') AS service_code,
        CASE {scheme} WHEN 'https' THEN true WHEN 'http' THEN false END AS secure_transport,
        {refs} IS NOT NULL AS has_refs,
        {refs} AS refs_text,
        -- what only Python can judge: a userIdentity or sessionContext.attributes that may not
        -- be an object ([] from json_keys: empty, or a string, a number...), references that are
        -- neither an object nor a list, a LookupEvents body
        coalesce({_keys(1)} = 0 OR {_keys(3)} = 0, false)
            OR NOT coalesce(starts_with({refs}, '{{') OR starts_with({refs}, '['), true)
            OR coalesce(starts_with({_leaf("Events")}, '['), false) AS object_doubt
    FROM ({_read_sql(guarded, escaped)})
)
SELECT line_no, coalesce(
    known_objects AND strings_ok AND NOT object_doubt
    AND event_id <> '' AND event_time IS NOT NULL AND event_time >= $1 AND event_time <= $2
    AND (NOT has_created OR session_created IS NOT NULL)
    AND coalesce(event_name, '') <> 'ConsoleSignin'
    AND NOT regexp_matches(t, '{_TRAILING_COMMA}')
    AND braces + strlen(t) - strlen(replace(t, '[', '')) <= {MAX_BRACKETS}, false) AS decided,
    {", ".join(_OUT_COLUMNS + _TEXT_COLUMNS)}, has_refs, refs_text, k, bs AS backslash
FROM typed
"""  # noqa: S608 - fixed paths, no input


_PARSE_SQL = {(guarded, escaped): _parse_sql(guarded, escaped) for guarded in (False, True) for escaped in (False, True)}
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
        """The file's batches in order; raises ``OSError`` when it cannot be read. A batch holds a
        whole fraction of a DuckDB row group in lines (:func:`_group_lines`), so the writer's
        transactions (:data:`ROW_GROUP_ROWS` rows) fill whole row groups, which DuckDB writes
        once; a transaction ending part-way through one left a small row group that every
        checkpoint merged again (rewriting it, and leaving the old blocks free in the file: a
        1M-event store was 223 MiB instead of 129)."""
        if not chunks:  # an empty file: one empty batch records it
            yield Batch(source, partition).seal()
            return
        pending: list[pa.Table] = []  # lines read, not parsed yet
        count, per_group = 0, 0
        # every chunk is read into the same buffer: a fresh 4 MiB bytes object, then Arrow's copy of
        # it, cost two page-faulting copies per chunk (~0.6 us per event); _lines copies the lines out
        buffer = bytearray(min(max(c.end - c.start for c in chunks), files.MAX_ITEM_BYTES))
        view = memoryview(buffer)
        with path.open("rb") as fh:
            for chunk in chunks:
                fh.seek(chunk.start)
                data = None
                if chunk.end - chunk.start <= len(buffer):
                    data = view[:fh.readinto(view[:chunk.end - chunk.start])]
                if data is None or buffer.find(b"\r", 0, len(data)) >= 0 or not _utf8(data):
                    if pending:
                        yield self._group(path, pa.concat_tables(pending), source, partition)
                        pending, count = [], 0
                    yield from parse_chunk(str(path), chunk, source, partition, self.attribute, batch_size, self.now)
                    continue
                lines = _lines(chunk, data)
                per_group = per_group or _group_lines(len(data) / max(lines.num_rows, 1))
                pending.append(lines)
                count += lines.num_rows
                while count >= per_group:
                    ready = pa.concat_tables(pending)
                    rest = ready.slice(per_group)
                    pending, count = ([rest] if rest.num_rows else []), rest.num_rows
                    yield self._group(path, ready.slice(0, per_group), source, partition)
        if pending:
            yield self._group(path, pa.concat_tables(pending), source, partition)

    def _group(self, path: Path, lines: pa.Table, source: str, partition: str) -> Batch:
        """One group of a file's lines as a batch, its progress the lines' bytes."""
        batch = self.rows(lines, _file_lines(path), source, partition)
        batch.progress = pc.sum(pc.binary_length(lines["line"])).as_py() + lines.num_rows  # the bytes, with their \n
        return batch

    def texts(self, texts: list[str | None], origin: LineOrigin, source: str, partition: str) -> Batch:
        """A batch of texts that are each one event's JSON (an SLS log's ``event``), numbered
        from 0 in the table's ``line_no``; ``None`` where the caller's Python rule decides without
        SQL (no text, one over the limit). The same statements and rules as a file's lines."""
        lines = pa.table({"line_no": pa.array(np.arange(len(texts), dtype=np.int64)), "line": _strings(texts)})
        return self.rows(lines, origin, source, partition)

    def rows(self, lines: pa.Table, origin: LineOrigin, source: str, partition: str) -> Batch:
        """A ``(line_no, line)`` table as one batch: the lines SQL decides as typed rows, the
        rest (escaped lines SQL could not decide, and what it cannot read) by ``origin``'s
        Python rule, which alone quarantines, in line order."""
        located, left, again = self._decide(lines, origin, source, escaped=False)
        tables = [located]
        if again.num_rows:  # lines with a backslash, values that may not be strings: types from JSON text
            more, rest, _ = self._decide(again, origin, source, escaped=True)
            tables.append(more)
            left = pa.concat_tables([left, rest])
        fallback, bad = self._python(origin, list(zip(left["line_no"].to_pylist(), left["line"].to_pylist(),
                                                      strict=True)), source, partition)
        batch = Batch(source, partition, bad=bad)
        batch.table = _merge(tables + ([fallback] if fallback is not None else []))
        batch.count = batch.table.num_rows
        if batch.count:
            lo, hi = pc.min_max(batch.table["event_time"]).values()
            batch.first, batch.last = lo.as_py(), hi.as_py()
        return batch

    def _decide(self, lines: pa.Table, origin: LineOrigin, source: str,
                escaped: bool) -> tuple[pa.Table, pa.Table, pa.Table]:
        """The lines SQL decided, as located rows; the lines it left to Python (those it did not
        decide, and those whose references only ``normalize`` can judge); and, from the fast
        statement, the lines among them the statement reading types from JSON text may decide:
        those with a backslash, or a value that may not be a string (:func:`_may_not_be_strings`)."""
        parsed = self._parse(lines, escaped)
        duplicate = _duplicate_keys(parsed["k"]) if escaped else _duplicate_plain_keys(parsed["k"])
        decided = pc.and_(parsed["decided"], pc.invert(duplicate))
        again = pa.array(np.zeros(lines.num_rows, dtype=bool))
        if not escaped:
            doubt = pa.array(_may_not_be_strings(parsed))
            again = pc.or_(doubt, parsed["backslash"].fill_null(False))  # NULL (no line): Python's
            decided = pc.and_(decided, pc.invert(doubt))
        # the key lists are done with: filtering them (lists of lists of names) cost more than
        # filtering every other column
        rows, raws = parsed.drop_columns(["k", "backslash"]), lines["line"]
        if not pc.all(decided).as_py():  # usually all are: no copy of every column and raw event
            rows, raws = rows.filter(decided), raws.filter(decided)
        added, ok = _by_distinct(rows)
        if ok.all():
            undecided = pc.invert(decided)
        else:  # a value only normalize can judge (it quarantines it or reads it): Python reads the line
            keep = pa.array(ok)
            rows, raws = rows.filter(keep), raws.filter(keep)
            added = {name: column.filter(keep) for name, column in added.items()}
            undecided = pc.invert(pc.is_in(lines["line_no"], value_set=rows["line_no"].combine_chunks()))
        added["agent"] = self._agents(rows, added["identity"])
        located = _located(rows, raws, added, source, origin.locate(rows["line_no"]))
        again = pc.and_(undecided, again)
        return located, lines.filter(pc.and_(undecided, pc.invert(again))), lines.filter(again)

    def _parse(self, lines: pa.Table, escaped: bool = False) -> pa.Table:
        """One row per line, in line order (DuckDB keeps insertion order without ORDER BY): the
        typed columns and ``decided``. The fast statement, or, when a line in the group is one
        DuckDB cannot read at all (malformed, a lone surrogate), the guarded one. ``escaped``:
        the statement for the lines holding a backslash (the others are not decided by it)."""
        bounds = [EARLIEST_EVENT_TIME, self.now + FUTURE_TOLERANCE]
        con = self.con
        con.register("_tw_lines", lines)
        try:
            try:
                parsed = con.sql(_PARSE_SQL[False, escaped], params=bounds).to_arrow_table()
            except duckdb.InvalidInputException:
                parsed = con.sql(_PARSE_SQL[True, escaped], params=bounds).to_arrow_table()
        finally:
            con.unregister("_tw_lines")
        if parsed.num_rows != lines.num_rows or not parsed["line_no"].equals(lines["line_no"]):
            raise AssertionError("DuckDB returned the lines out of order")  # preserve_insertion_order is on
        return parsed

    def _agents(self, rows: pa.Table, identities: pa.Array) -> pa.Array:
        """The agent of each row by the inventory's rule (AccessKey first, then identity), called
        once per distinct (identity, AccessKey, account). The one place the native path
        attributes: when attribution moves to read time, this goes."""
        codes, values = distinct_codes([pa.chunked_array([identities]), rows["access_key_id"], rows["account_id"]])
        agents = np.array([self.attribute(*v) for v in values] or [""], dtype=object)
        return pa.array(agents[codes] if len(codes) else [], pa.string())

    def _python(self, origin: LineOrigin, undecided: list[tuple[int, str | None]], source: str,
                partition: str) -> tuple[pa.Table | None, list[tuple[str, str, str]]]:
        """Today's rule (``origin.items``) for the lines SQL left undecided: events (as a located
        table with their line numbers) and quarantined input."""
        if not undecided:
            return None, []
        undecided.sort()
        items: list[files.Item] = []
        line_of: dict[str, int] = {}
        for line_no, line in undecided:
            for item in origin.items(line_no, line):
                items.append(item)
                line_of[item.location] = line_no
        [batch] = list(to_batches(items, source, partition, self.attribute, len(items) + 1, self.now))
        if not batch.events:
            return None, batch.bad
        numbers = [line_of[loc] for loc in batch.locations]
        table = events_to_arrow(batch.events, batch.agents, source, datetime.now(UTC), batch.locations)
        return table.append_column("line_no", pa.array(numbers, pa.int64())), batch.bad


@dataclass(frozen=True)
class LineOrigin:
    """Where a table's lines come from: ``locate`` names each decided line (an array of
    ``line_no`` to an array of locations, as the quarantine and conflicts show them), ``items``
    is today's Python rule for a line SQL leaves: ``(line_no, line)`` to the items it reads
    (for a file's line ``files.line_items``; for an SLS log the reader's own rule)."""

    locate: Callable[[pa.ChunkedArray], pa.Array]
    items: Callable[[int, str | None], Iterable[files.Item]]


def _file_lines(path: Path) -> LineOrigin:
    """A file's lines: located ``path:line_no``, read by :func:`files.line_items`."""
    prefix = pa.scalar(f"{path}:")

    def locate(numbers: pa.ChunkedArray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(numbers, pa.string()), "")

    def items(line_no: int, line: str | None) -> Iterable[files.Item]:
        return files.line_items(f"{path}:{line_no}", (line or "").encode("utf-8"))

    return LineOrigin(locate, items)


def _strings(texts: list[str | None]) -> pa.Array:
    """``texts`` as Arrow strings; one Arrow cannot hold as UTF-8 (a lone surrogate) is NULL,
    left to the Python rule like the caller's NULLs."""
    try:
        return pa.array(texts, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([t if t is None or jsontext.encodable(t) else None for t in texts], pa.string())


def _utf8(data: memoryview) -> bool:
    if not len(data) or np.frombuffer(data, dtype=np.uint8).max() < 0x80:  # ASCII: most exports
        return True
    try:
        str(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lines(chunk: files.Chunk, data: memoryview) -> pa.Table:
    """``(line_no, line)`` for every line of a chunk, split by Arrow (the empty text after its
    last ``\\n`` is no line). ``data`` is only read: the lines are Arrow's copies (the caller
    reuses its buffer)."""
    size = len(data)
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, size], dtype=np.int64)),
                                                         pa.py_buffer(data)])
    lines = pc.split_pattern(whole.cast(pa.large_string()), "\n").flatten()
    if size and data[size - 1] == ord("\n"):
        lines = lines.slice(0, len(lines) - 1)
    numbers = pa.array(np.arange(chunk.first_line, chunk.first_line + len(lines), dtype=np.int64))
    return pa.table({"line_no": numbers, "line": lines})


def _group_lines(line_bytes: float) -> int:
    """Lines per group: the largest whole fraction of :data:`ROW_GROUP_ROWS` whose lines, at
    ``line_bytes`` each, fit :data:`GROUP_BYTES` (at least one line)."""
    for parts in _ROW_GROUP_PARTS:
        if ROW_GROUP_ROWS // parts * line_bytes <= GROUP_BYTES:
            return ROW_GROUP_ROWS // parts
    return 1


def _duplicate_plain_keys(keys: pa.ChunkedArray) -> pa.Array:
    """:func:`_duplicate_keys` for lines without a backslash, whose keys cannot hold a ``"`` (it
    would be escaped): each object's keys joined by ``"`` into one text, and each distinct text
    (a group's events share a few dozen) split and checked once."""
    lists = keys.combine_chunks()
    found = np.zeros(len(lists), dtype=bool)
    objects = pc.list_flatten(lists)  # one list of keys per object, in the rows' order
    if not len(objects):
        return pa.array(found)
    texts = pc.dictionary_encode(pc.binary_join(objects, '"'))
    repeats = np.array([len(set(names)) != len(names) for names in (
        text.split('"') for text in texts.dictionary.to_pylist())] + [False])
    flagged = np.flatnonzero(repeats[texts.indices.fill_null(len(repeats) - 1).to_numpy(zero_copy_only=False)])
    found[pc.list_parent_indices(lists).to_numpy()[flagged]] = True
    return pa.array(found)


def _duplicate_keys(keys: pa.ChunkedArray) -> pa.Array:
    """For each row of ``json_keys`` lists (one list per object checked), whether one of its
    objects lists a key twice. Vectorized: every key is numbered by a dictionary, paired with
    the number of its object, and the pairs sorted; two equal neighbours are a duplicate."""
    lists = keys.combine_chunks()
    found = np.zeros(len(lists), dtype=bool)
    objects = pc.list_flatten(lists)
    names = pc.list_flatten(objects)
    if not len(names):
        return pa.array(found)
    row_of_object = pc.list_parent_indices(lists).to_numpy()
    object_of_name = pc.list_parent_indices(objects).to_numpy()
    encoded = pc.dictionary_encode(names)
    pairs = object_of_name * len(encoded.dictionary) + encoded.indices.to_numpy().astype(np.int64)
    pairs.sort()
    repeated = pairs[1:][pairs[1:] == pairs[:-1]] // len(encoded.dictionary)
    found[row_of_object[repeated]] = True
    return pa.array(found)


def _may_not_be_strings(parsed: pa.Table) -> np.ndarray:
    """For each row of the fast statement, whether a column it read as VARCHAR holds a text a
    JSON value other than a string may have given (:data:`_NON_STRING`; in a column exports write
    numbers for, other than an integer as Python writes it). Only values whose first byte can
    start such a text (a digit, a sign, ``t``...) are matched, each distinct one once, by RE2 in
    Arrow."""
    doubt = np.zeros(parsed.num_rows, dtype=bool)
    for name, key in _CHECKED_STRINGS.items():
        column = parsed[name].combine_chunks()
        if not len(column) or column.null_count == len(column):
            continue
        _, offsets, data = column.buffers()
        assert offsets is not None and data is not None  # a non-empty string column has both
        starts = np.frombuffer(offsets, dtype=np.int32)[column.offset:column.offset + len(column) + 1]
        text = np.frombuffer(data, dtype=np.uint8)
        if not len(text):
            continue
        present = (starts[1:] > starts[:-1]) & column.is_valid().to_numpy(zero_copy_only=False)
        candidates = np.flatnonzero(present & _NON_STRING_FIRST[text[np.minimum(starts[:-1], len(text) - 1)]])
        if not len(candidates):
            continue
        # most such columns repeat a few values (an API version, an account): each distinct one matched once
        values = pc.dictionary_encode(column.take(pa.array(candidates)))
        found = _non_string(values.dictionary, key in _NUMERIC_OK)[values.indices.to_numpy()]
        doubt[candidates[found]] = True
    return doubt


def _non_string(values: pa.Array, numeric: bool) -> np.ndarray:
    """Whether each text is one :data:`_NON_STRING` describes (with ``numeric``, and is not an
    integer as Python writes it)."""
    found = pc.match_substring_regex(values, f"^({_NON_STRING})$").to_numpy(zero_copy_only=False)
    if numeric:  # an integer as Python writes it is a string's text too
        found &= ~pc.match_substring_regex(values, f"^({_INT_RE})$").to_numpy(zero_copy_only=False)
    return found


_IDENTITY_COLUMNS = ("identity", "role_name", "role_id", "session_name")


def _by_distinct(rows: pa.Table) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The columns whose rule is ``normalize``'s own, run once per distinct value in a group (an
    identity, an address, a flag's JSON text...), and which rows SQL may keep (False: a value
    only ``normalize`` can judge). References run per row that has them (~8% of events)."""
    ok = np.ones(rows.num_rows, dtype=bool)
    added: dict[str, pa.Array] = {}
    idents = _per_distinct([rows["identity_type"], rows["user_name"], rows["principal_id"], rows["account_id"],
                            rows["access_key_id"]], _identity_of, ok, len(_IDENTITY_COLUMNS))
    for i, name in enumerate(_IDENTITY_COLUMNS):
        added[name] = pa.array(idents[:, i], pa.string())
    added["ip_version"] = pa.array(_per_distinct([rows["source_ip"]], lambda ip: (ip_version(ip),), ok)[:, 0],
                                   pa.int8())
    added["is_global"] = pa.array(_per_distinct([rows["global_text"]], _global_of, ok)[:, 0], pa.bool_())
    added["mfa_authenticated"] = pa.array(_per_distinct(
        [rows["attributes"], rows["mfa_attributes_text"], rows["mfa_session_text"]], _mfa_of, ok)[:, 0], pa.bool_())
    values: list[str | None] = [None] * rows.num_rows
    with_refs = pc.indices_nonzero(rows["has_refs"])
    for i, text in zip(with_refs.to_pylist(), rows["refs_text"].take(with_refs).to_pylist(), strict=True):
        values[i], ok[i] = _refs(text)
    added["referenced_resources"] = pa.array(values, pa.string())
    return added, ok


def _per_distinct(columns: list[pa.ChunkedArray], rule: Callable[..., tuple[Any, ...]], ok: np.ndarray,
                  width: int = 1) -> np.ndarray:
    """``rule`` over each distinct combination of ``columns``, as a row-aligned object matrix
    (one column per value the rule returns); a combination it refuses (``MalformedEvent``)
    clears ``ok`` for its rows."""
    codes, combos = distinct_codes(columns)
    results: list[tuple[Any, ...] | None] = []
    refused: list[int] = []
    for i, combo in enumerate(combos):
        try:
            results.append(rule(*combo))
        except MalformedEvent:
            results.append(None)
            refused.append(i)
    table = np.empty((max(len(combos), 1), width), dtype=object)
    for i, result in enumerate(results):
        if result is not None:
            table[i, :] = result
    if refused:
        ok &= ~np.isin(codes, refused)
    return table[codes] if len(codes) else np.empty((0, width), dtype=object)


def _identity_of(itype: str | None, user: str | None, pid: str | None, account: str | None,
                 akid: str | None) -> tuple[Any, ...]:
    """``normalize``'s identity columns from ``userIdentity``'s values (as SQL read them)."""
    ident = _identity({"type": itype, "userName": user, "principalId": pid, "accountId": account, "accessKeyId": akid})
    return tuple(ident[name] for name in _IDENTITY_COLUMNS)


def _global_of(text: str | None) -> tuple[Any, ...]:
    """``isGlobal`` by ``normalize``'s rule, from its JSON text."""
    return (_opt_bool(None if text is None else json.loads(text), "isGlobal"),)


def _mfa_of(attributes: bool | None, from_attributes: str | None, from_session: str | None) -> tuple[Any, ...]:
    """``sessionContext``'s ``mfaAuthenticated`` by ``normalize``'s rule: ``attributes`` when it
    is an object, else ``sessionAttributes``."""
    text = from_attributes if attributes else from_session
    return (_opt_bool(None if text is None else json.loads(text), "userIdentity.sessionContext.mfaAuthenticated"),)


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


def _located(rows: pa.Table, raws: pa.ChunkedArray, added: dict[str, pa.Array], source: str,
             locations: pa.Array) -> pa.Table:
    """SQL's decided rows in the writer's located schema (``raw`` and ``referenced_resources``
    as Arrow JSON without a copy), with ``line_no`` last."""
    n = rows.num_rows
    added = {**added, "raw": raws, "source": pa.repeat(pa.scalar(source, pa.string()), n),
             "ingested_at": pa.repeat(pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC")), n),
             LOCATION: locations}
    columns = []
    for field in _LOCATED_SCHEMA:
        col = added.get(field.name)
        if col is None:
            col = rows[field.name]
        if isinstance(col, pa.Array):
            col = pa.chunked_array([col], type=col.type)
        if isinstance(field.type, pa.ExtensionType):
            col = pa.chunked_array([pa.ExtensionArray.from_storage(field.type, c.cast(pa.string()))
                                    for c in col.chunks], type=field.type)
        elif col.type != field.type:
            col = col.cast(field.type)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=_LOCATED_SCHEMA).append_column("line_no", rows["line_no"])


def _merge(tables: list[pa.Table]) -> pa.Table:
    """All rows, without the ``line_no`` column: each table's in line order, and the tables in
    line order too when an eventId is in more than one (the first copy of an eventId in the file
    is the one kept). Reordering copies every column: most groups (a few lines left to Python,
    with their own ids) skip it."""
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if len(tables) > 1:
        merged = pa.concat_tables([t.cast(tables[0].schema) for t in tables])
        if _ids_shared(tables):
            merged = merged.take(pc.sort_indices(merged, [("line_no", "ascending")]))
    else:
        merged = tables[0]
    return merged.drop_columns(["line_no"])


def _ids_shared(tables: list[pa.Table]) -> bool:
    """Whether an eventId is in more than one of ``tables``."""
    seen = tables[0]["event_id"]
    for table in tables[1:]:
        ids = table["event_id"]
        if pc.any(pc.is_in(ids, value_set=seen.combine_chunks())).as_py():
            return True
        seen = pa.chunked_array(seen.chunks + ids.chunks, seen.type)
    return False


PARSER_ENV = "TRAILWARDEN_INGEST_PARSER"


def native_enabled(source: str = "files") -> bool:
    """Whether DuckDB parses the NDJSON of ``source`` (``files`` or ``sls``): as
    ``TRAILWARDEN_INGEST_PARSER`` says (``duckdb`` or ``python``, for both), else for files and
    not for SLS. Measured on 1M events (README, Performance): on files it is faster than the
    Python parser and costs 44-47% of its CPU over the process tree (issue 18's target: at most
    half); on SLS 82-106% (the Python parser there has no worker processes to save), so SLS
    batches keep the Python parser unless asked."""
    chosen = os.environ.get(PARSER_ENV, "").strip().lower()
    return chosen == "duckdb" if chosen else source == "files"


def native_eligible(path: Path) -> bool:
    """Uncompressed NDJSON in UTF-8 (not a UTF-16/32 file whose first line happens to parse)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head == b"\x00\x00\xfe\xff":
        return False
    return files.is_ndjson(path)
