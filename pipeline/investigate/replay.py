"""``trailwarden replay``: one agent's history for a responder - what it did, when, from where, to
what, and what was new.

``build_replay`` returns a plain dict (the JSON export, and what the table and HTML views
render):

* ``timeline``: the agent's events, oldest first, with its findings interleaved where they fired;
* ``blast_radius``: every resource touched (as RAM ARNs), split read/write and succeeded/failed,
  and the source IPs, user agents, regions and AccessKeys used, each with first and last seen;
* ``changes``: APIs, source IPs and regions never seen from this agent before the window (its
  whole stored history before ``since``);
* the evidence trail: each event's raw JSON, and a SHA-256 over the export (computed over the
  export without the hash, compact, keys in the order written: :func:`export_digest`), so what is
  attached to a ticket can be checked later.

Exports are redacted by default (``pipeline.core.redact``: passwords, AccessKey secrets, tokens, keys,
at any depth and inside strings): ``redaction`` says so and how many values went, and the hash
is over the redacted export, as written. ``redact=False`` (``replay --unredacted``) gives the raw
evidence as received, for who needs it; the store keeps it either way.

Only the agent's rows are read: the ``agent`` column is compared in DuckDB (dictionary-encoded,
fast even on 10M rows) and the raw JSON is fetched only for the export.

Each timeline entry's JSON is written by DuckDB (``_entry_sql``: the columns with ``to_json``, the
raw event as stored where that is already the compact JSON Python writes of it, else minified
with ``json``: ``_RAW``), with the RAM action and resources of each distinct call mapped
once (``_Call`` in Python; in SQL for a stretch of many distinct calls, ``_Window._map_in_sql``):
no event is parsed in Python unless it may hold a secret or DuckDB's text of it could differ from
Python's (``_slow``), which is then built as before. So the export costs about what reading its
rows costs, not a parse and two serialisations of every event. The blast radius' resources are
merged, sorted and written as JSON in a DuckDB of the replay's own (``_Touched``), and the
export's header is written a chunk at a time: memory grows neither with the events nor with the
distinct resources. The window is read in two passes: ``_Window.add_up`` adds it up, so the
header is known before the first entry; then ``_Window.entries`` has the entries written, and
they go straight to the export (``_Export``), hashed as they go.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import json
import re
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, overload

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.inventory import Inventory
from models.mapping import (
    PARAMETER_TARGETS,
    CallFacts,
    action,
    by_template,
    is_authorized_call,
    mapped_sql,
    resources,
)
from pipeline import __version__
from pipeline.core.errors import TerminalError
from pipeline.core.inert import HIDDEN_IN_JSON, HIDDEN_IN_JSON_RANGES, json_inert
from pipeline.core.output import to_jsonable
from pipeline.core.redact import (
    HINT_SHAPES,
    HINT_WORDS,
    NOT_SECRET,
    might_hold_secrets,
    redact_text,
)
from pipeline.core.redact import redact as redact_values
from pipeline.core.times import utcnow
from pipeline.detection.findings import list_findings
from pipeline.store.attribution import agent_filter
from pipeline.store.store import Store

EVENT_FIELDS = ("event_id", "event_time", "event_name", "event_type", "event_rw", "service_name", "service_code",
                "acs_region", "source_ip", "user_agent", "access_key_id", "error_code", "error_message",
                "identity", "referenced_resources", "resource_type", "resource_name", "recipient_account_id",
                "account_id")
BATCH = 2048  # events fetched at a time
STRETCH = 40_000  # at most this many events sorted at a time (see _stretches)
STRETCH_BYTES = 64 << 20  # and at most this many bytes of their raw events
# The target of a RAM user/role call is often only in its request parameters: read them for those
# events only. (Extracted here, in the CASE, not through the ``events`` view's virtual column: a
# view's projection is computed for every row, a JSON parse of every raw event - half of what
# adding up a stretch cost.)
_PARAMETERS = ("CASE WHEN list_contains(?, lower(event_name)) THEN json_extract(raw, '$.requestParameters')::VARCHAR "
               "END AS request_parameters")


def build_replay(store: Store, agent: str, inventory: Inventory, *, since: datetime | None = None,
                 until: datetime | None = None, with_raw: bool = True, redact: bool = True) -> dict[str, Any]:
    """The whole replay as one dict (the JSON export, parsed): for notebooks and small windows.
    Memory grows with the window; the command streams (:func:`write_replay`)."""
    buffer = io.StringIO()
    write_replay(store, agent, inventory, buffer, since=since, until=until, with_raw=with_raw, redact=redact)
    report: dict[str, Any] = json.loads(buffer.getvalue())
    return report


@dataclass
class Replay:
    """What a streamed replay keeps in memory: the export without its timeline (bounded by the
    number of distinct resources, sources and findings, not by events), its digest, and the
    extracts the views show."""

    report: dict[str, Any]  # the export; its "timeline" holds only ``shown`` entries
    sha256: str  # "" when no export was written (``digest=False``)
    shown: list[tuple[int, dict[str, Any]]]  # (position in the timeline, entry), in order
    activity: dict[datetime, list[int]]  # hour (UTC) -> [calls, failed]
    entries: int  # the timeline's length (events and findings)


def write_replay(store: Store, agent: str, inventory: Inventory, out: TextIO | None, *,
                 since: datetime | None = None, until: datetime | None = None, with_raw: bool = True,
                 redact: bool = True, last: int = 50, around: int = 0, digest: bool = True) -> Replay:
    """Write the JSON export to ``out`` (``None``: only its digest) as the agent's events are read.
    ``digest=False`` (the terminal view: no export, so no digest) adds up the window and reads
    the entries of its last stretches only, those the view's ``last`` entries are in.

    Memory stays flat in the number of events: the window is read a stretch at a time, twice.
    First each stretch's summary, blast radius and changes are added up in DuckDB and merged
    (memory in the number of distinct resources and sources, not events); then the export is
    written - its header indented, the timeline's entries as each stretch's are written, one
    compact entry a line, the redaction note and the digest last - and hashed as it is written.
    On failure ``out`` holds the export up to there. The views keep the ``last`` entries and ``around`` entries on each side of every
    finding (``Replay.shown``)."""
    with _collector_paused():
        return _write_replay(store, agent, inventory, out, since=since, until=until, with_raw=with_raw,
                             redact=redact, last=last, around=around, digest=digest)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a replay runs. Adding up a window makes
    objects per distinct call and resource (hundreds of thousands for an agent that reads an
    object per call), none of them in reference cycles, and each full collection walked all of
    them: 5 of 16 s of an export of 200,000 distinct objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_replay(store: Store, agent: str, inventory: Inventory, out: TextIO | None, *, since: datetime | None,
                  until: datetime | None, with_raw: bool, redact: bool, last: int, around: int,
                  digest: bool) -> Replay:
    until = until or utcnow()
    since = since or until - timedelta(days=90)
    findings = sorted((f for f in list_findings(store, agent=agent)
                       if f["last_seen"] >= since and f["first_seen"] < until), key=lambda f: (f["first_seen"], f["id"]))
    extract = _Extract(last, around)
    pending = deque((_us(f["first_seen"]), to_jsonable(_finding_entry(f))) for f in findings)
    inv = inventory.agent(agent)
    generated_at = utcnow()
    keep = digest or out is not None  # else only the views' last entries
    with _Window(store, agent, since, until, with_raw=with_raw, redact=redact) as window, \
            _Export(out, keep) as export:
        totals = _Totals(_history(store, agent, since), redact, window.memory_limit)
        window.add_up(totals, tail=None if keep else last)
        batches = window.entries()  # the first stretches' entries are written while the header is
        header = {**to_jsonable({
            "agent": agent,
            "registered": inv is not None,
            "purpose": inv.purpose if inv else None, "owner": inv.owner if inv else None,
            "environment": inv.environment if inv else None,
            "identities": inv.identities if inv else [agent],
            "window": {"since": since, "until": until},
            "generated_at": generated_at, "generator": f"trailwarden {__version__}",
            "summary": totals.summary(len(findings))}),
            "blast_radius": totals.blast_radius(),  # text and numbers already
            "changes": totals.changes(),
            "findings": to_jsonable(findings)}
        export.begin(header)

        def put_finding() -> None:
            when, entry = pending.popleft()
            line = _compact(entry)
            extract.add(export.count, "finding", when, entry)
            export.add([line], {0} if HIDDEN_IN_JSON.search(line) else set())

        for batch in batches:
            if isinstance(batch, _Skipped):  # a stretch whose entries no view shows: counted
                while pending and pending[0][0] < batch.until:
                    put_finding()
                export.count += batch.entries
                extract.skipped = extract.skipped or batch.entries > 0
                continue
            times = batch.times
            if not (pending and pending[0][0] <= times[-1]) and not extract.after:
                # no finding among them: the views can keep only the batch's last entries
                start = max(0, len(times) - extract.reach)
                for i, line in enumerate(batch.lines(start), start):
                    extract.add(export.count + i, "event", times[i], line)
                export.add_batch(batch)
                continue
            lines, done = batch.lines(), 0  # the events before each finding go out together
            for i, when in enumerate(times):
                if pending and pending[0][0] <= when:
                    export.add(lines[done:i], {j - done for j in batch.hidden if done <= j < i})
                    done = i
                    while pending and pending[0][0] <= when:
                        put_finding()
                extract.add(export.count + i - done, "event", when, lines[i])
            export.add(lines[done:], {j - done for j in batch.hidden if j >= done})
        while pending:
            put_finding()
        trailer = to_jsonable({"redaction": _redaction_note(redact, window.redacted)})
        sha = export.end(trailer)
    shown = extract.entries()
    report = {**header, "timeline": [entry for _, entry in shown], **trailer, "sha256": sha}
    return Replay(report, sha, shown, totals.activity, export.count)


def _us(when: datetime) -> int:
    """Microseconds since the epoch (what ``_Window.entries`` gives each event's time as)."""
    return (when - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_json_string = json.encoder.encode_basestring  # the C escaper json.dumps(..., ensure_ascii=False) uses


def _compact(value: Any) -> str:
    """The JSON the digest is over, and each timeline entry as the export writes it (before
    ``json_inert``): compact, keys in their order, text as is (``export_digest``'s)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def _pretty(value: Any) -> str:
    """The JSON of the export's trailer: as ``json_text(..., indent=2)`` writes it (``_both_parts``)."""
    return "".join(pretty.decode() for _, pretty in _both_parts(value))


def _both_parts(value: Any, indent: str = "", *, close: bool = True) -> Iterator[tuple[Any, Any]]:
    """``value``'s JSON in parts, each part in two forms (bytes, or an Arrow buffer): compact, what
    the digest is over (``_compact``'s text), and as the export writes it: indented by two, but a
    list of objects (the blast radius' resources, the findings) one compact object a line, and
    through ``json_inert``. An ``_Encoded`` list (a blast radius of a million resources is ~250 MB
    of text) goes a chunk at a time, each chunk joined in Arrow: no Python string per resource,
    and read once for both forms. ``close=False``: a dict without its closing brace."""
    inner = indent + "  "
    if isinstance(value, _Encoded):
        if not len(value):
            yield b"[]", b"[]"
            return
        compact, pretty = b"[", ("[\n" + inner).encode()
        for chunk in value.chunks():
            yield compact, pretty
            yield _joined(chunk, ","), _joined(_inert_array(chunk), ",\n" + inner)
            compact, pretty = b",", (",\n" + inner).encode()
        yield b"]", f"\n{indent}]".encode()
    elif isinstance(value, dict) and value:
        opening = "{"
        for k, v in value.items():
            key = _compact(k)
            yield f"{opening}{key}:".encode(), f"{opening}\n{inner}{key}: ".encode()
            yield from _both_parts(v, inner)
            opening = ","
        if close:
            yield b"}", f"\n{indent}}}".encode()
    elif isinstance(value, list) and value:
        yield (_compact(value).encode(),
               ("[\n" + ",\n".join(inner + _inert(_compact(v)) for v in value) + f"\n{indent}]").encode())
    else:
        text = _compact(value)
        yield text.encode(), _inert(text).encode()


def _joined(texts: pa.Array, separator: str) -> pa.Buffer:
    """The texts joined by ``separator``, by Arrow."""
    if pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.string())
    whole = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts)
    joined: pa.Buffer = pc.binary_join(whole, separator)[0].as_buffer()
    return joined


def _inert_array(texts: pa.Array) -> pa.Array:
    """``_inert`` of many texts: only those not plain ASCII go through ``json_inert``. Texts all
    below DEL (nearly always) are found so by one look at their bytes (Arrow's search for DEL cost
    ~0.45 s per 1M blast radius resources)."""
    if _below_del(texts):
        return texts
    odd = pc.invert(pc.and_(pc.string_is_ascii(texts), pc.invert(pc.match_substring(texts, "\x7f"))))
    if not odd.true_count:
        return texts
    return pc.replace_with_mask(texts, odd, pa.array([json_inert(t) for t in texts.filter(odd).to_pylist()],
                                                     texts.type))


def _below_del(texts: pa.Array) -> bool:
    """Whether every byte of the texts (Arrow strings) is below DEL (0x7f)."""
    if not len(texts) or texts.buffers()[2] is None:  # none, or all empty or null
        return True
    return int(np.frombuffer(_text_view(texts), dtype=np.uint8).max(initial=0)) < 0x7F


def _inert(text: str) -> str:
    """``json_inert``, skipped when there is nothing it could change (ASCII without DEL)."""
    return text if text.isascii() and "\x7f" not in text else json_inert(text)


class _Export:
    """The JSON export as it is written to ``out`` (``None``: only hashed) and hashed: the header
    (``begin``), the timeline's entries as they come (``add``, ``add_batch``), then the trailer
    and the digest (``end``). The digest is SHA-256 of the compact export without it (what
    ``export_digest`` computes of the export once parsed), taken in a thread of its own
    (``hashlib`` lets go of the GIL over large blocks) over the compact form of each part, in
    order, while the file gets the indented one: an entry is its compact JSON on a line of its own,
    through ``json_inert`` where it has characters that escapes (the same data once parsed).
    ``keep=False``: nothing is written or hashed, the entries are only counted."""

    def __init__(self, out: TextIO | None, keep: bool) -> None:
        self.out, self.keep = out, keep
        self.count = 0  # the timeline's entries so far
        self._binary = _utf8_buffer(out)
        self._sha = hashlib.sha256()
        self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trailwarden-digest")
        self._hashed: deque[Future[None]] = deque()

    def __enter__(self) -> _Export:
        return self

    def __exit__(self, *_: object) -> None:
        self._hashing.shutdown(wait=True, cancel_futures=True)

    def _hash(self, data: Any) -> None:
        self._in_hash_thread(self._sha.update, data)

    def _in_hash_thread(self, task: Callable[..., None], *args: Any) -> None:
        """Run ``task`` in the digest's thread, after what was handed to it before."""
        while len(self._hashed) > 4:  # a few blocks ahead at most
            self._hashed.popleft().result()
        self._hashed.append(self._hashing.submit(task, *args))

    def _hash_entries(self, text: pa.Array, first: bool) -> None:
        """The compact form of entries (each followed by a comma): their text as it is, but the
        last comma."""
        if not first:
            self._sha.update(b",")
        self._sha.update(_text_view(text)[:-1])

    def _write(self, data: Any) -> None:
        if self.out is None:
            return
        if self._binary is not None:
            self._binary.write(data)
        else:
            self.out.write(bytes(data).decode())

    def begin(self, header: dict[str, Any]) -> None:
        if not self.keep:
            return
        for compact, pretty in _both_parts(header, close=False):
            self._hash(compact)
            self._write(pretty)
        self._hash(b',"timeline":[')
        self._write(b',\n  "timeline": [')

    def add(self, lines: list[str], hidden: set[int]) -> None:
        """Entries (their compact JSON); ``hidden``: those with characters ``json_inert`` escapes."""
        if lines:
            self._put(pa.array([line + "," for line in lines], pa.string()), hidden)

    def add_batch(self, batch: _Batch) -> None:
        """A batch's entries: DuckDB's text as it is when it wrote them all (no Python per entry),
        else their lines."""
        if batch.whole:
            self._put(batch.text, batch.hidden)
        else:
            self.add(batch.lines(), batch.hidden)

    def _put(self, text: pa.Array, hidden: set[int]) -> None:
        """Entries, each followed by a comma (Arrow strings): the compact form as it is, hashed in
        the digest's thread; the file's, each entry then ``_INDENT``, made by Arrow (which lets go
        of the GIL) with the ``hidden`` entries through ``json_inert``. (Arrow's
        ``replace_substring`` of a newline after each entry, for either form, cost seven times
        the join.)"""
        if self.keep:
            first = not self.count
            self._in_hash_thread(self._hash_entries, text, first)
            if self.out is not None:
                if hidden:
                    at = sorted(hidden)
                    mask = np.zeros(len(text), dtype=bool)
                    mask[at] = True
                    inert = [json_inert(t[:-1]) + "," for t in text.take(pa.array(at)).to_pylist()]
                    text = pc.replace_with_mask(text, pa.array(mask), pa.array(inert, text.type))
                self._write(_INDENT if first else _ENTRY_SEPARATOR)
                self._write(_text_view(pc.binary_join_element_wise(text, _INDENT.decode(), ""))
                            [:-len(_ENTRY_SEPARATOR)])
        self.count += len(text)

    def end(self, trailer: dict[str, Any]) -> str:
        """Write the trailer with the digest; returns the digest ("" when not ``keep``)."""
        if not self.keep:
            return ""
        self._hash(("]," + _compact(trailer)[1:]).encode())
        while self._hashed:
            self._hashed.popleft().result()
        digest = self._sha.hexdigest()
        self._write((("\n  ]" if self.count else "]") + "," + _pretty({**trailer, "sha256": digest})[1:] + "\n").encode())
        return digest


def _utf8_buffer(out: TextIO | None) -> Any:
    """The binary stream under ``out`` (flushed, so what follows keeps its order) when ``out``
    writes UTF-8 to one: the timeline's bytes then go as they are, not decoded and encoded again."""
    buffer = getattr(out, "buffer", None)
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if out is None or buffer is None or encoding != "utf8":
        return None
    out.flush()
    return buffer


def export_digest(report: dict[str, Any], *, sort_keys: bool = False) -> str:
    """SHA-256 of the export without its own ``sha256`` field: its compact JSON (no spaces, text
    as is, keys in the order the export has them; ``json.loads`` keeps it). Exports written
    before 2026-12-06 hashed it with the keys sorted: ``sort_keys=True`` checks those."""
    body = {k: v for k, v in report.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _redaction_note(applied: bool, count: int) -> dict[str, Any]:
    if applied:
        return {"applied": True, "values_redacted": count,
                "note": "secrets in the events (passwords, AccessKey secrets, tokens, private keys) are "
                        "replaced by <redacted>; `trailwarden replay --unredacted` exports them as received"}
    return {"applied": False, "values_redacted": 0,
            "note": "UNREDACTED: the events as received, secrets included; handle as a secret"}


# A chain of role sessions lasts at most two sessions' lifetime before the window's first event
# made through it (each session lasts at most 12 hours; chains deeper than that are rare).
_CHAIN_REACH = timedelta(days=1)
# A call's facts (``CallFacts``' fields, in its order): the RAM mapping's key. Stretches are grouped
# by them and the facts table is joined on them (``IS NOT DISTINCT FROM``: NULLs match).
_FACTS = ("event_type", "event_name", "service_name", "service_code", "acs_region", "account",
          "resources_text", "resource_type", "resource_name", "request_parameters")
_CALL = (*_FACTS, "access", "outcome")  # a call's columns in the aggregates (``_Sums.calls``' first ones)
_NO_CALL = ", ".join(["NULL"] * len(_CALL))  # ... in their rows of other kinds
_FACT_JOIN = " AND ".join(f"e.{c} IS NOT DISTINCT FROM f.{c}" for c in _FACTS)
_ACCOUNT = "CASE WHEN recipient_account_id <> '' THEN recipient_account_id ELSE account_id END"
_FACTS_TABLE = "_tw_replay_facts"
_IDS_TABLE = "_tw_replay_ids"  # the facts table's rows of calls of one event, by its id
_MAPPED = ("action_json", "resources_json", "hint", "hidden")  # a facts table row's mapping
# A stretch with more distinct calls than this has those naming one object each mapped by
# template (``_Window._map_by_template``), and the rest, if still more, in SQL
# (``_Window._map_in_sql``): planning that query costs ~40 ms, mapping a call in Python ~25 µs.
_MAP_BY_TEMPLATE = 1_000
_MAP_IN_SQL = 1_000


class _Window:
    """The agent's events in the window: its own and those made through the role sessions it
    started (``role_sessions.origin_session`` is one of its ``AssumeRole`` calls, directly or
    through a chain of roles), each once, as one relation (``_source``).

    The agent's condition and its sessions are decided before any reader starts, and each query
    runs on a cursor of its own: a query on a connection while another reader on it is
    mid-stretch ends that reader's result (its events were silently lost after the first batch)."""

    AHEAD = 3  # stretches whose entries are being written ahead of the one taken (see ``entries``)

    def __init__(self, store: Store, agent: str, since: datetime, until: datetime, *, with_raw: bool,
                 redact: bool) -> None:
        self.store, self.since, self.until = store, since, until
        self.with_raw, self.redact = with_raw, redact
        self.condition = agent_filter(store, agent)
        self.sessions = self._sessions()
        self.memory_limit: str = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        self.facts: dict[tuple[Any, ...], _Call] = {}  # the RAM mapping of the calls seen lately
        self.redacted = 0
        self.stretches: list[tuple[datetime, datetime, int]] = []
        self.counts: list[int] = []  # the events of each stretch (its own and through its roles)
        self.first = 0  # the first stretch whose entries are written
        self.kept = _KeptFacts()  # each written stretch's facts table, from add_up to entries
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trailwarden-replay")

    def __enter__(self) -> _Window:
        return self

    def __exit__(self, *_: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.kept.close()

    def _sessions(self) -> list[str]:
        where, params = self.condition
        return [r[0] for r in self.store.con.execute(
            f"""
            SELECT session_id FROM role_sessions WHERE origin_status = 'known' AND origin_session IN (
                SELECT event_id FROM events WHERE {where} AND event_name = 'AssumeRole'
                  AND event_time >= ? AND event_time < ?)
            """, [*params, self.since - _CHAIN_REACH, self.until]).fetchall()]  # noqa: S608 - agent_filter's SQL

    def _source(self, start: datetime, end: datetime, *, raw: bool) -> tuple[str, list[Any]]:
        """The window's events in [start, end) with ``via`` (the roles from the agent to the one
        that acted; NULL for its own), ``account``, ``resources_text`` (the references as text: with
        the other ``_FACTS``, the RAM mapping's key) and, if ``raw``, the raw JSON."""
        where, params = self.condition
        columns = ", ".join([*EVENT_FIELDS, _PARAMETERS, "raw" if raw and self.with_raw else "NULL::VARCHAR AS raw"])
        targets = sorted(PARAMETER_TARGETS)
        sql = (f"SELECT {columns}, NULL::VARCHAR[] AS via FROM events "  # noqa: S608 - agent_filter's SQL
               f"WHERE {where} AND event_time >= ? AND event_time < ?")
        values: list[Any] = [targets, *params, start, end]
        if self.sessions:  # the events made through its roles, but those of its own role once
            sql += f"""
            UNION ALL SELECT {columns}, via FROM (
              SELECT e.*, s.chain AS via
              FROM session_links l JOIN role_sessions s USING (session_id) JOIN events e USING (event_id)
              WHERE l.status = 'linked' AND list_contains(?, l.session_id) AND l.event_time >= ? AND l.event_time < ?
                AND e.event_time >= ? AND e.event_time < ?) WHERE NOT ({where})"""  # noqa: S608
            values += [targets, self.sessions, start, end, start, end, *params]
        return (f"SELECT *, {_ACCOUNT} AS account, referenced_resources::VARCHAR AS resources_text "  # noqa: S608
                f"FROM ({sql})", values)

    def add_up(self, totals: _Totals, tail: int | None = None) -> None:
        """The first of two passes over the window: add up each stretch into ``totals``
        (``_aggregates``, ``_add_up``), and keep the RAM mapping of its calls (its facts table) for
        the second (``entries``). With ``tail``, only the stretches that hold the last ``tail``
        events will be written (``self.first`` on).

        The stretches' queries run on the two workers, each on a cursor of its own: a stretch lies
        within one of DuckDB's row groups, which one thread scans, so two at a time keep both
        cores busy. Adding up first means the export's header is known before its first entry is
        written: the entries then go straight to the export (no copy of the timeline to write and
        hash at the end), hashed while the next stretches' entries are written."""
        self.stretches = _stretches(self.store, "", self.since, self.until, self.condition)
        self.first = _tail_start(self.stretches, tail)
        sums: dict[int, Future[_Sums]] = {}

        def ahead(k: int) -> None:
            for j in range(k, min(k + 2, len(self.stretches))):
                if j not in sums:
                    sums[j] = self.pool.submit(self._aggregates, self.store.cursor(), *self.stretches[j][:2])

        with self._bounded():
            ahead(0)
            for k in range(len(self.stretches)):
                added = sums.pop(k).result()
                ahead(k + 1)
                before = totals.events
                keys = self._add_up(added, totals)
                self.counts.append(totals.events - before)
                if self.counts[k] and k >= self.first:
                    facts = _facts_table({key: self.facts[key] for key in keys})
                    self.kept.put(k, pa.concat_tables([facts, added.mapped]) if added.mapped is not None else facts)

    def entries(self) -> Iterator[_Batch | _Skipped]:
        """The second pass (after ``add_up``): the window's timeline entries, oldest first, a
        batch at a time: each event's time (µs since the epoch), its entry's JSON, and which
        entries have characters ``json_inert`` escapes; a stretch before ``self.first`` as a
        ``_Skipped``. DuckDB writes each stretch's entries (``_entries``) with the calls' actions
        and resources from its facts table; an entry that may hold a secret, or whose text DuckDB
        would write differently, is built in Python (``_slow_line``).

        The first ``AHEAD`` stretches are handed to the workers at once (they are written while the
        caller writes the export's header: with two, one core idled through most of a 1M-resource
        header); then one more each time one is taken. At most ``AHEAD + 1`` stretches' entries are
        held (~60 MB each)."""
        todo = deque(k for k in range(self.first, len(self.stretches)) if self.counts[k])
        running: deque[Future[tuple[pa.Table, dict[str, dict[str, Any]]]]] = deque()

        def submit() -> None:
            if todo:
                k = todo.popleft()
                start, end, _ = self.stretches[k]
                running.append(self.pool.submit(self._entries, self.store.cursor(), start, end, self.kept.take(k)))

        for _ in range(self.AHEAD):
            submit()
        return self._written(running, submit)

    def _written(self, running: deque[Future[tuple[pa.Table, dict[str, dict[str, Any]]]]],
                 submit: Callable[[], None]) -> Iterator[_Batch | _Skipped]:
        """``entries``' batches as the workers finish them (see there)."""
        for k in range(self.first):
            if self.counts[k]:
                yield _Skipped(self.counts[k], _us(self.stretches[k][1]))
        with self._bounded():
            while running:
                done = running.popleft().result()
                submit()
                yield from self._batches(done)

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """A stretch that does not fit the store's memory limit fails in one line that says what
        to raise."""
        try:
            yield
        except duckdb.OutOfMemoryException:
            raise TerminalError(
                f"replay ran out of the store's memory limit ({self.memory_limit}): a stretch of up to "
                f"{STRETCH_BYTES >> 20} MiB of raw events is read two at a time, and events of several KB each "
                "take several times their size; raise `memory_limit` in the config (1GB replays 12 KB "
                "events)") from None

    def _batches(self, entries: tuple[pa.Table, dict[str, dict[str, Any]]]) -> Iterator[_Batch]:
        table, rows = entries
        for batch in table.to_batches(max_chunksize=BATCH):
            if batch.num_rows:
                yield self._batch(batch, rows)

    def _entries(self, con: Any, start: datetime, end: datetime,
                 facts: pa.Table) -> tuple[pa.Table, dict[str, dict[str, Any]]]:
        """The stretch's timeline entries (``_entry_sql``), oldest first (``_in_time_order``),
        with which of them Python must build (``slow``) and those events' columns by id (a
        worker's task: it closes its cursor)."""
        try:
            source, values = self._source(start, end, raw=True)
            entries = _in_time_order(self._mapped_entries(con, source, values, facts))
            slow = _slow(entries.column("line"), entries.column("hint"), self.redact)
            ids = entries.column("event_id").filter(slow).to_pylist()
            rows = dict(con.execute(_rows_sql(source), [*values, ids]).fetchall()) if ids else {}
            return entries.append_column("slow", slow), rows
        finally:
            con.close()

    @staticmethod
    def _mapped_entries(con: Any, source: str, values: list[Any], facts: pa.Table) -> pa.Table:
        """The entry query's result, the calls' mapping joined by event id where the facts table
        gives one (a call of one event: joined on ten facts, ~30 ms more a 40k-event stretch), by
        the facts for the others. Event ids are unique in the store; if one were stored twice,
        the join by id would give it another event's mapping: the stretch is then joined by the
        facts alone."""
        ids, rest = _split(facts, pc.is_valid(facts.column("event_id")).combine_chunks())
        if ids.num_rows:
            con.register(_IDS_TABLE, ids.select(["event_id", *_MAPPED]))
            if rest.num_rows:
                con.register(_FACTS_TABLE, rest)
            entries = con.sql(_entry_sql(source, by_id=True, by_facts=rest.num_rows > 0),
                              params=values).to_arrow_table(BATCH)
            if pc.count_distinct(entries.column("event_id")).as_py() == entries.num_rows:
                return entries
        con.register(_FACTS_TABLE, facts)
        return con.sql(_entry_sql(source), params=values).to_arrow_table(BATCH)

    def _aggregates(self, con: Any, start: datetime, end: datetime) -> _Sums:
        """A stretch's aggregates in one read of its events, no raw JSON read (a worker's task:
        it closes its cursor): ``calls`` per (call, access, outcome) (its facts, access, outcome,
        count, first and last time, first event), ``seen`` per value of each kind, hour and in all.
        A stretch of many distinct calls (an agent that reads an object per call) has them mapped
        in SQL (``_map_in_sql``); Python maps the rest (``_Call``: planning the SQL mapping costs
        more than mapping a few hundred calls in Python)."""
        source, values = self._source(start, end, raw=False)
        first_event = "arg_min(event_id, {'t': event_time, 'i': event_id})"
        try:
            table = con.sql(
                f"""
                WITH k AS MATERIALIZED (
                  SELECT event_id, event_time, source_ip, user_agent, access_key_id, {', '.join(_FACTS)},
                         coalesce(error_code, '') <> '' AS bad, len(coalesce(via, [])) > 0 AS through,
                         CASE WHEN event_rw = 'Write' THEN 'write' ELSE 'read' END AS access,
                         CASE WHEN len(coalesce(via, [])) > 0
                              THEN identity || '@' || CASE WHEN account_id <> '' THEN account_id ELSE '?' END END AS role
                  FROM ({source}))
                SELECT 'call' AS kind, NULL AS value, NULL::TIMESTAMPTZ AS hour, count(*) AS count, 0 AS failed,
                       min(epoch_us(event_time)) AS first, max(epoch_us(event_time)) AS last, {first_event} AS key,
                       {', '.join(_FACTS)}, access, CASE WHEN bad THEN 'failed' ELSE 'succeeded' END AS outcome
                FROM k GROUP BY {', '.join(_FACTS)}, access, bad
                {' '.join(
                    f"UNION ALL SELECT '{kind}', {column}, NULL, count(*), 0, min(epoch_us(event_time)), "
                    f"max(epoch_us(event_time)), {first_event}, {_NO_CALL} FROM k WHERE {column} <> '' GROUP BY {column}"
                    for kind, column in _SEEN)}
                UNION ALL SELECT 'hour', NULL, date_trunc('hour', event_time) AS h, count(*),
                                 count(*) FILTER (WHERE bad), NULL, NULL, NULL, {_NO_CALL} FROM k GROUP BY h
                UNION ALL SELECT 'all', NULL, NULL, count(*), count(*) FILTER (WHERE bad), min(epoch_us(event_time)),
                                 max(epoch_us(event_time)), NULL, {_NO_CALL} FROM k
                UNION ALL SELECT 'through', NULL, NULL, count(*), 0, NULL, NULL, NULL, {_NO_CALL} FROM k WHERE through
                """, params=values).to_arrow_table()  # noqa: S608 - fixed SQL
            calls, seen = _split(table, pc.equal(table.column("kind"), "call").combine_chunks())
            sums = _Sums()
            if calls.num_rows > _MAP_BY_TEMPLATE:
                calls = self._map_by_template(calls, sums)
            if calls.num_rows > _MAP_IN_SQL:
                calls = self._map_in_sql(con, calls, sums)
        finally:
            con.close()
        sums.calls = list(zip(*(calls.column(c).to_pylist() for c in (*_CALL, "count", "first", "last", "key")),
                              strict=True))
        sums.seen = list(zip(*(seen.column(c).to_pylist()
                               for c in ("kind", "value", "hour", "count", "failed", "first", "last", "key")), strict=True))
        return sums

    def _map_in_sql(self, con: Any, calls: pa.Table, sums: _Sums) -> pa.Table:
        """Map a stretch's calls in SQL (``models.mapping.mapped_sql``): those it maps give their
        actions, the resources they touched (rows of ``_Touched``) and their rows of the facts
        table (``sums``), with no Python per call; returns the calls it does not map."""
        con.register("_tw_calls", calls.select([*_CALL, "count", "first", "last", "key"]))
        table = con.sql(f"""
            WITH m AS MATERIALIZED (
              SELECT * FROM ({mapped_sql("SELECT *, resources_text AS referenced_resources FROM _tw_calls")}))
            SELECT 'call' AS kind, NULL AS value, count, first, last, key, {', '.join(_CALL)},
                   NULL::STRUCT(access VARCHAR, outcome VARCHAR, action VARCHAR, idx INTEGER, arn_json VARCHAR) AS touched
            FROM m WHERE NOT exact
            UNION ALL SELECT 'touched', arn, count, first, last, key, {_NO_CALL},
                             {{'access': access, 'outcome': outcome, 'action': mapped_action, 'idx': idx,
                               'arn_json': to_json(arn)::VARCHAR}}
            FROM (SELECT *, unnest(mapped_resources) AS arn, unnest(range(len(mapped_resources)))::INTEGER AS idx
                  FROM m WHERE exact) WHERE NOT suffix(arn, ':*')
            UNION ALL SELECT DISTINCT 'action', mapped_action, 0, NULL, NULL, to_json(mapped_action)::VARCHAR,
                                      {_NO_CALL}, NULL
            FROM m WHERE exact
            UNION ALL SELECT 'mapped', to_json(mapped_action)::VARCHAR, 0, NULL, NULL,
                             to_json(mapped_resources)::VARCHAR, {', '.join(_FACTS)}, NULL, NULL, NULL
            FROM (SELECT DISTINCT ON ({', '.join(_FACTS)}) * FROM m WHERE exact)""").to_arrow_table()  # noqa: S608
        con.unregister("_tw_calls")
        kind = table.column("kind")
        sums.put(mapped=_facts_table_of(table.filter(pc.equal(kind, "mapped"))))
        actions = table.filter(pc.equal(kind, "action"))
        shown = self._shown_actions(actions.column("value").combine_chunks(), actions.column("key").combine_chunks(),
                                    sums)
        touched = table.filter(pc.equal(kind, "touched"))
        if touched.num_rows:
            detail = pc.struct_field  # the touched rows in _Touched's columns
            column = touched.column("touched").combine_chunks()
            arn, action = touched.column("value").combine_chunks(), detail(column, "action")
            if self.redact:
                arn = _shown_all(arn, detail(column, "arn_json"))
                if any(shown[a] != a for a in shown):
                    action = pa.array([shown[a] for a in action.to_pylist()], pa.string())
            sums.put(touched=pa.table([arn, detail(column, "access"), detail(column, "outcome"),
                                       touched.column("count"), action, touched.column("first"),
                                       touched.column("last"), touched.column("key"), detail(column, "idx")],
                                      names=list(_Touched._COLUMNS)))
        return table.filter(pc.equal(kind, "call"))

    def _map_by_template(self, calls: pa.Table, sums: _Sums) -> pa.Table:
        """Map a stretch's calls that name one object each by their template
        (``models.mapping.by_template``: the Python rules once per template, the name put back in
        Arrow), as ``_map_in_sql`` does (their actions, touched resources and facts table rows);
        returns the calls it does not map. An agent that reads an object per call has a distinct
        call per event: mapped so, a 40k-call stretch costs ~0.06 CPU-s instead of SQL's ~0.25."""
        facts = [calls.column(c).combine_chunks() for c in _FACTS]
        done = by_template(facts)
        if not len(done.rows):
            return calls
        every = len(done.rows) == calls.num_rows  # the usual case here: no copy of the calls

        def taken(column: pa.Array | pa.ChunkedArray, index: np.ndarray | None = None) -> Any:
            index = done.rows if index is None else done.rows[index]
            return column if every and len(index) == len(column) else column.take(pa.array(index))

        templates = pa.array(done.template)
        # each call's resource, and its JSON (the name needs no escape: by_template's names hold none)
        arn = pc.binary_join_element_wise(pa.array(done.heads, pa.string()).take(templates), done.names, "")
        arn_json = pc.binary_join_element_wise(
            pa.array([_json_string(h)[:-1] for h in done.heads], pa.string()).take(templates), done.names, '"', "")
        action_json = pa.array([_json_string(a) for a in done.actions], pa.string())
        # the facts table: a row per distinct facts (the same facts with another access or outcome are
        # another call), which are the template's and the references' text
        texts = pc.dictionary_encode(taken(facts[_FACTS.index("resources_text")]))
        _, first, calls_of = np.unique(done.template * (len(texts.dictionary) + 1) + texts.indices.to_numpy(),
                                       return_index=True, return_counts=True)
        order = np.argsort(first)  # in the calls' order: all of them, in order, when no facts repeat
        first, calls_of = first[order], calls_of[order]
        once = None if len(first) == len(done.rows) else pa.array(first)
        # facts of one call of one event: the entries join their row by that event's id
        single = (calls_of == 1) & (calls.column("count").to_numpy()[done.rows[first]] == 1)
        sums.put(mapped=_facts_rows(
            {c: taken(facts[i], first) for i, c in enumerate(_FACTS)}, action_json.take(pa.array(done.template[first])),
            pc.binary_join_element_wise("[", arn_json if once is None else arn_json.take(once), "]", ""),
            event_id=pc.if_else(pa.array(single), taken(calls.column("key"), first), pa.scalar(None, pa.string()))))
        shown = self._shown_actions(pa.array(done.actions, pa.string()), action_json, sums)
        named = pc.invert(pc.ends_with(arn, ":*"))  # a name of "*": nothing touched to name, as for a call with none
        if self.redact:
            arn = _shown_all(arn, arn_json)
        touched = pa.table([arn, taken(calls.column("access")), taken(calls.column("outcome")),
                            taken(calls.column("count")), pa.array([shown[a] for a in done.actions], pa.string()).take(templates),
                            taken(calls.column("first")), taken(calls.column("last")), taken(calls.column("key")),
                            pa.array(np.zeros(len(done.rows), dtype=np.int32))], names=list(_Touched._COLUMNS))
        sums.put(touched=touched if named.false_count == 0 else touched.filter(named))
        if every:
            return calls.slice(0, 0)
        rest = np.ones(calls.num_rows, dtype=bool)
        rest[done.rows] = False
        return calls.filter(pa.array(rest))

    def _shown_actions(self, names: pa.Array, names_json: pa.Array, sums: _Sums) -> dict[str, str]:
        """Each action as the blast radius shows it (redacted where it may hold a secret), added
        to the stretch's actions."""
        shown = dict(zip(names.to_pylist(), (_shown_all(names, names_json) if self.redact else names).to_pylist(),
                         strict=True))
        sums.actions += shown.values()
        return shown

    def _add_up(self, sums: _Sums, totals: _Totals) -> set[tuple[Any, ...]]:
        """Add a stretch's aggregates to ``totals``; the RAM mapping of each call Python maps and
        that is new to ``self.facts`` is computed here. Returns those calls (their facts)."""
        if len(self.facts) > _Call.LIMIT:
            self.facts.clear()
        keys = [tuple(row[:len(_FACTS)]) for row in sums.calls]
        self.facts.update(_Call.of([key for key in dict.fromkeys(keys) if key not in self.facts], self.redact))
        totals.add(keys, sums, self.facts)
        return set(keys)

    def _batch(self, batch: pa.RecordBatch, rows: dict[str, dict[str, Any]]) -> _Batch:
        slow = batch.column("slow")
        hidden = set(pc.indices_nonzero(pc.and_not(batch.column("hidden"), slow)).to_pylist())
        built: dict[int, str] = {}
        if slow.true_count:
            for i, event_id in zip(pc.indices_nonzero(slow).to_pylist(),
                                   batch.column("event_id").filter(slow).to_pylist(), strict=True):
                built[i] = self._slow_line(dict(rows[event_id]))
                if HIDDEN_IN_JSON.search(built[i]):
                    hidden.add(i)
        line = pc.if_else(slow, pa.scalar(None, batch.column("line").type), batch.column("line")) if built \
            else batch.column("line")
        return _Batch(batch.column("t").to_pylist(), line, built, hidden)

    def _slow_line(self, row: dict[str, Any]) -> str:
        """An entry built in Python, as every entry was before: the raw event parsed and, when its
        text may hold a secret, the entry redacted (the values redacted counted)."""
        key = tuple(row.pop("fkey"))
        call = self.facts.get(key) or _Call(key)  # a call SQL mapped: mapped here the same way
        row["action"], row["resources"] = call.action, call.resources
        text = "\n".join(v for v in row.values() if isinstance(v, str))  # the raw JSON too
        row["raw"] = json.loads(row["raw"], parse_constant=_null) if isinstance(row["raw"], str) else None
        if self.redact and might_hold_secrets(text):
            row, count = redact_values(row)
            self.redacted += count
        entry = _event_entry(row)
        return _compact({**entry, "event_time": to_jsonable(entry["event_time"])})


@dataclass
class _Skipped:
    """A stretch added up but not written: its ``entries`` (events) and where it ends (µs)."""

    entries: int
    until: int


def _tail_start(stretches: list[tuple[datetime, datetime, int]], tail: int | None) -> int:
    """The first of the last stretches that hold at least ``tail`` of the agent's own events (0:
    every stretch when ``tail`` is None)."""
    if tail is None:
        return 0
    held = 0
    for k in range(len(stretches) - 1, -1, -1):
        held += stretches[k][2]
        if held >= max(tail, 1):
            return k
    return 0


@dataclass
class _Batch:
    """Timeline entries as the entry query gave them: ``text`` each entry's JSON followed by a
    comma as DuckDB wrote it (null where Python ``built`` it: position -> JSON), ``hidden`` the
    entries with characters ``json_inert`` escapes."""

    times: list[int]  # µs since the epoch
    text: pa.Array
    built: dict[int, str]
    hidden: set[int]

    def lines(self, start: int = 0) -> list[str]:
        """The entries' JSON from ``start`` on."""
        texts = self.text.slice(start).to_pylist()
        return [self.built[start + i] if t is None else t[:-1] for i, t in enumerate(texts)]

    @property
    def whole(self) -> bool:
        """Whether DuckDB wrote all the entries (Python built none), as strings."""
        text = self.text
        return not self.built and not text.null_count and (pa.types.is_string(text.type)
                                                           or pa.types.is_large_string(text.type))


_INDENT = b"\n    "  # before each timeline entry in the file
_ENTRY_SEPARATOR = b"," + _INDENT  # between two


def _text_view(text: pa.Array) -> memoryview:
    """The texts of an Arrow string array as one block (a null's bytes, if any, included): a view
    of its buffer, not a copy."""
    offsets = memoryview(text.buffers()[1]).cast("i" if pa.types.is_string(text.type) else "q")
    start, end = offsets[text.offset], offsets[text.offset + len(text)]
    return memoryview(text.buffers()[2])[start:end]


_SEEN = (("source_ips", "source_ip"), ("user_agents", "user_agent"), ("regions", "acs_region"),
         ("access_keys", "access_key_id"), ("accounts", "account"), ("roles", "role"), ("apis", "event_name"))


@dataclass
class _Call:
    """The RAM request of one distinct call (its ``CallFacts``), and its JSON as an entry writes it."""

    LIMIT = 50_000  # calls kept across stretches (when every event is a call of its own, none repeat)

    action: str
    resources: list[str]
    action_json: str
    resources_json: str
    hint: bool  # may the action or resources' text hold a secret?
    hidden: bool  # has their JSON characters ``json_inert`` escapes?
    shown: tuple[str, list[str]]  # the action and resources as the blast radius shows them (redacted)

    def __init__(self, facts: Any) -> None:
        call = CallFacts(*facts)
        self.action = action(call)
        self.resources = resources(call) if is_authorized_call(call.event_type, call.service_name) else []
        # as json.dumps(..., ensure_ascii=False, separators=(",", ":")) writes them
        self.action_json = _json_string(self.action)
        self.resources_json = "[" + ",".join(map(_json_string, self.resources)) + "]"
        texts = self.action_json + self.resources_json
        self.hidden = not (texts.isascii() and "\x7f" not in texts) and HIDDEN_IN_JSON.search(texts) is not None
        self.hint, self.shown = False, (self.action, self.resources)  # see ``of``

    @classmethod
    def of(cls, keys: list[tuple[Any, ...]], redact: bool) -> dict[tuple[Any, ...], _Call]:
        """The calls of these facts. Whether their text may hold a secret is asked of the
        entries' own expression (``_HINT``, over the JSON text: what ``might_hold_secrets`` finds
        in a value and more) once over all of them in Arrow: in Python it cost ~8 µs a call, and
        an agent whose every call names an object of its own has a call per event. Those it
        matches are shown redacted."""
        calls = [cls(key) for key in keys]
        if not calls:
            return {}
        texts = pa.array([c.action_json + c.resources_json for c in calls], pa.large_string())
        for call, hint in zip(calls, pc.match_substring_regex(texts, _HINT_ANY_CASE).to_pylist(), strict=True):
            call.hint = bool(hint)
            if hint and redact:
                call.shown = (redact_text(call.action)[0], [redact_text(r)[0] for r in call.resources])
        return dict(zip(keys, calls, strict=True))


def _facts_rows(facts: dict[str, Any], action_json: Any, resources_json: Any, *, hint: Any = None,
                hidden: Any = None, event_id: Any = None) -> pa.Table:
    """Rows of a stretch's facts table: the facts (``_FACTS``' columns), the mapping (``_MAPPED``)
    and the event whose call this alone is (``_Window._mapped_entries``); ``hint`` and ``hidden``
    false and ``event_id`` null unless given."""
    n = len(action_json)
    false = pa.array(np.zeros(n, dtype=bool))
    return pa.table({**{c: facts[c] for c in _FACTS}, "action_json": action_json, "resources_json": resources_json,
                     "hint": false if hint is None else hint, "hidden": false if hidden is None else hidden,
                     "event_id": pa.nulls(n, pa.string()) if event_id is None else event_id})


def _facts_table(facts: dict[tuple[Any, ...], _Call]) -> pa.Table:
    """The facts table's rows of the calls Python mapped."""
    calls = facts.values()
    return _facts_rows({c: pa.array([key[i] for key in facts], pa.string()) for i, c in enumerate(_FACTS)},
                       pa.array([c.action_json for c in calls], pa.string()),
                       pa.array([c.resources_json for c in calls], pa.string()),
                       hint=pa.array([c.hint for c in calls], pa.bool_()),
                       hidden=pa.array([c.hidden for c in calls], pa.bool_()))


def _shown_all(texts: pa.Array, texts_json: pa.Array) -> pa.Array:
    """Actions or resources of calls SQL mapped as the blast radius shows them: redacted where
    their JSON text may hold a secret (``_HINT``, one regular expression over all of them). As
    ``_Call.shown``, but a piece at a time: a piece whose own text does not match holds nothing
    ``redact_text`` would change."""
    hint = pc.match_substring_regex(texts_json, _HINT_ANY_CASE)
    if not hint.true_count:
        return texts
    out = texts.to_pylist()
    for i in pc.indices_nonzero(hint).to_pylist():
        out[i] = redact_text(out[i])[0]
    return pa.array(out, pa.string())


def _split(table: pa.Table, mask: pa.Array) -> tuple[pa.Table, pa.Table]:
    """The rows where ``mask`` holds, and the others: slices (no copy) when the first are first,
    as DuckDB nearly always gives them."""
    n = mask.true_count
    if mask.slice(0, n).true_count == n:
        return table.slice(0, n), table.slice(n)
    return table.filter(mask), table.filter(pc.invert(mask))


def _facts_table_of(mapped: pa.Table) -> pa.Table:
    """``_facts_table``'s rows of the calls SQL mapped (``_Window._aggregates``' ``mapped`` rows:
    the facts in their columns, the action's and resources' JSON in ``value`` and ``key``)."""
    if not mapped.num_rows:
        return _facts_table({})
    return _facts_rows({c: mapped.column(c) for c in _FACTS}, mapped.column("value").cast(pa.string()),
                       mapped.column("key").cast(pa.string()))


def _stretches(store: Store, agent: str, since: datetime, until: datetime,
               condition: tuple[str, list[str]] | None = None) -> list[tuple[datetime, datetime, int]]:
    """[since, until) cut at hour boundaries into stretches of at most about STRETCH events and
    STRETCH_BYTES of raw JSON, oldest first, each with the agent's own events in it (those
    through its roles are not counted here). DuckDB sorts each stretch whole (raw JSON included)
    within its memory limit, two at a time (``_Window.batches``), and a reader cannot spill to
    disk: sorting a busy agent's 90 days at once ran out of memory at 190k events, two stretches
    of 80k of the benchmark's 1.5 KB events did too. Bounded by bytes as well, a stretch of
    10 KB events is 6,500 of them; of the usual 1-2 KB ones, the fewer the stretches the faster
    the export (each is a query of its own: 20k-event stretches took 10.2 s where 40k took 8.6)."""
    where, params = condition or agent_filter(store, agent)
    hours = store.con.execute(
        "SELECT date_trunc('hour', event_time) AS h, count(*), coalesce(sum(strlen(raw)), 0) FROM events "  # noqa: S608
        f"WHERE {where} AND event_time >= ? AND event_time < ? GROUP BY h ORDER BY h", [*params, since, until]).fetchall()
    cuts, counts, size = [since], [0], 0
    for hour, count, length in hours:
        if counts[-1] and (counts[-1] + count > STRETCH or size + length > STRETCH_BYTES) and hour > cuts[-1]:
            cuts.append(hour)
            counts.append(0)
            size = 0
        counts[-1] += count
        size += length
    return list(zip(cuts, [*cuts[1:], until], counts, strict=True))


# -- each timeline entry's JSON, written by DuckDB ----------------------------------------------
# A string column as Python's json.dumps(..., ensure_ascii=False) writes it (DuckDB's to_json
# escapes the same characters; only the hex case of \u00XX differs: see _DIFFERS).
def _j(column: str) -> str:
    return f"coalesce(to_json({column}), 'null')"


def _time_json(us: str) -> str:
    """SQL: the JSON of a time given in µs since the epoch, as ``to_jsonable`` writes it."""
    return (f"concat('\"', strftime(make_timestamp({us}), '%Y-%m-%dT%H:%M:%S'), CASE WHEN {us} % 1000000 <> 0 "
            f"THEN '.' || lpad(CAST({us} % 1000000 AS VARCHAR), 6, '0') ELSE '' END, 'Z\"')")


_TIME = _time_json("epoch_us(event_time)")
# The raw event in its entry: its text as stored (ingest keeps each event's text as received:
# valid JSON, no key twice) where that is already the compact JSON Python writes of it, which
# costs nothing; minified by DuckDB's ``json`` (a parse and a write: a third of the entry query)
# where its text holds what Python would write otherwise: the separators of ``json.dumps``'
# defaults (``": "``, ``", "``), a newline (an indented event), or an escape Python does not write
# (``\uXXXX``, ``\/``). Those strings inside a value only cost the minification. What this leaves
# (a space elsewhere outside strings, a float, ``-0``, ``NaN``) ``_RAW_NOT_AS_PYTHON`` finds.
_RAW = (r"coalesce(CASE WHEN contains(raw, ': ') OR contains(raw, ', ') OR contains(raw, chr(10)) "
        r"OR contains(raw, '\u') OR contains(raw, '\/') THEN json(raw) ELSE raw END, 'null')")
# Where DuckDB's text of an entry may differ from Python's (which ``export_digest`` recomputes);
# such an entry is built in Python. Numbers are only in the raw event (the columns before it are
# text): from its key on (which no text before it can hold: every quote there is escaped), outside
# strings, a space, a float (Python writes its own shortest form; DuckDB's ``json`` may write
# another), ``-0`` (Python: ``0``) or a constant Python reads as a float (``_RAW_NOT_AS_PYTHON``).
# Anywhere, an escape Python does not write the same: ``\uXXXX`` (``to_json`` and ``json`` write
# a control character's hex in upper case; ``_RAW`` minifies the raw events that hold one) or ``\/``.
_OUTSIDE_STRINGS = r'(?:[^"\s]|"(?:[^"\\]|\\.)*")*'
_RAW_NOT_AS_PYTHON = (r',"raw":' + _OUTSIDE_STRINGS
                      + r'(?:\s|[:\[,]-?[0-9]+[.eE]|[:\[,]-0[,\]}]|[:\[,]-?(?:NaN|Infinity))')
_DIFFERS = _RAW_NOT_AS_PYTHON + r"|(?:^|[^\\])(?:\\\\)*\\[u/]"
# ... or a character ``json_inert`` escapes in the file (not in the digest): Python marks its line.
_DIFFERS += "|[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in HIDDEN_IN_JSON_RANGES if b < 0xD800 or a > 0xDFFF) + "]"
# ``might_hold_secrets`` of any value of the entry, over its JSON text (case folded; every
# character Python's \s matches, and JSON's escapes of them): an event it matches is parsed and
# walked by ``redact`` as before. (Its raw event's text is decoded here: ``p\u0061ssword`` is seen.)
_SPACE = (r"(?:[\s\x{0b}\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}"
          r"\x{3000}]|\\[nrtbf]|\\u[0-9a-fA-F]{4})")
_HINT = ("(?:" + "|".join(HINT_WORDS) + r")s?(?:\\?[\"'])?" + _SPACE + r"*[:=]|(?:"
         + "|".join(re.escape(s) for s in HINT_SHAPES) + r")|://[^/@]*:[^/@]*@")


# A paging or idempotency token's key (``"ClientToken":``, in most Create calls) names no secret
# (``redact`` keeps its value) but matches the hint (a secret word, then ``:``): an entry whose
# only hint is such a key is checked again with those keys cut out. Exactly spelled, quoted keys
# only; ``"Client_Token":`` or an escaped key inside a string still sends the entry to Python.
_PAGING_KEYS = '(?i)"(?:' + "|".join(sorted(NOT_SECRET)) + ')"'


def _entry_sql(source: str, *, by_id: bool = False, by_facts: bool = True) -> str:
    """Each event of ``source`` as its timeline entry, in no set order (``_in_time_order`` puts
    them in theirs): ``t`` (µs since the epoch),
    ``event_id``, ``line`` (the entry's JSON then a comma: the columns written by DuckDB, the
    action and resources from the facts table (mapped by Python or by SQL, ``_aggregates``), the
    raw event (``_RAW``), in one ``concat``) and the facts' ``hint`` and ``hidden``. Parameters: the
    source's. Which entries Python must build is decided over the lines in Arrow (``_slow``: it
    also catches where DuckDB's JSON of a text differs from Python's). The mapping is joined
    ``by_id`` (``_IDS_TABLE``), ``by_facts`` (``_FACTS_TABLE``) or both (see
    ``_Window._mapped_entries``)."""
    parts = ["'{\"event_id\":'", _j("event_id"), "',\"event_time\":'", _TIME, "',\"action\":'", "action_json"]
    for c in ("event_rw", "source_ip", "acs_region", "user_agent", "access_key_id", "error_code", "error_message"):
        parts += [f"',\"{c}\":'", _j(c)]
    parts += ["',\"resources\":'", "resources_json", "',\"kind\":\"event\"'",
              f"CASE WHEN len(coalesce(via, [])) > 0 THEN concat(',\"via\":', to_json(via), ',\"identity\":', "
              f"{_j('identity')}, ',\"account\":', {_j('account')}) ELSE '' END",
              "',\"raw\":'", _RAW, "'},'"]
    joins = ([f"LEFT JOIN {_IDS_TABLE} i ON e.event_id = i.event_id"] if by_id else []) + \
        ([f"LEFT JOIN {_FACTS_TABLE} f ON {_FACT_JOIN}"] if by_facts else [])

    def mapped(c: str) -> str:
        return f"CASE WHEN i.event_id IS NULL THEN f.{c} ELSE i.{c} END" if by_id and by_facts \
            else f"{'i' if by_id else 'f'}.{c}"

    return f"""
        SELECT epoch_us(event_time) AS t, event_id, hint, hidden, concat({', '.join(parts)}) AS line
        FROM (SELECT e.*, coalesce({mapped('action_json')}, error('replay: an event whose call was not mapped'))
                            AS action_json, {', '.join(f"{mapped(c)} AS {c}" for c in _MAPPED[1:])}
              FROM ({source}) e {' '.join(joins)})"""  # noqa: S608 - fixed SQL


def _in_time_order(entries: pa.Table) -> pa.Table:
    """The entries by time, then event id. A stretch's events come in the order they were
    stored, nearly always theirs, or as runs in order that DuckDB's two threads gave interleaved,
    batch by batch (a stretch across two row groups): the runs are then put in order (slices, no
    copy). Only runs that overlap are sorted (in Arrow, which copies every entry's text: ~0.35 s
    a stretch; DuckDB's ``ORDER BY`` moved them through its sort, ~40% of the entry query's CPU)."""
    times = entries.column("t").to_numpy()
    ids = entries.column("event_id")
    steps = np.diff(times)
    after = steps > 0  # whether each entry comes after the one before it
    ties = np.flatnonzero(steps == 0)
    if len(ties):
        after[ties] = pc.less(ids.take(pa.array(ties)), ids.take(pa.array(ties + 1))).to_numpy(zero_copy_only=False)
    if after.all():
        return entries
    # the runs: cut where the order breaks and where a batch starts (a thread's batch is one run)
    batches = np.cumsum([len(c) for c in entries.column("t").chunks])[:-1]
    starts = np.union1d(np.flatnonzero(~after) + 1, batches[batches < len(times)]).tolist()
    if len(starts) < _RUNS:
        bounds = list(zip([0, *starts], [*starts, len(times)], strict=True))
        runs = sorted((int(times[a]), ids[a].as_py(), a, b) for a, b in bounds if b > a)
        if all((int(times[b - 1]), ids[b - 1].as_py()) < (t, i)
               for (_, _, _, b), (t, i, _, _) in itertools.pairwise(runs)):
            return pa.concat_tables([entries.slice(a, b - a) for _, _, a, b in runs])
    return entries.take(pc.sort_indices(entries, sort_keys=[("t", "ascending"), ("event_id", "ascending")]))


_RUNS = 256  # runs in order put in order by slices; more are sorted


def _rows_sql(source: str) -> str:
    """The columns of the events of ``source`` Python builds (``_slow_line``), by id. Parameters:
    the source's, then the ids."""
    row = ", ".join([*EVENT_FIELDS, "via", "raw", f"fkey := [{', '.join(_FACTS)}]"])
    return f"SELECT event_id, struct_pack({row}) FROM ({source}) WHERE list_contains(?, event_id)"  # noqa: S608


# The regular expressions ``_slow`` runs (RE2, in Arrow: about twice as fast as DuckDB's
# ``regexp_matches`` here, 2.2 against 4.4 µs a 1 KB entry), case folded.
_EITHER = f"(?i){_HINT}|{_DIFFERS}"
_HINT_ANY_CASE = f"(?i){_HINT}"
_DIFFERS_ANY_CASE = "(?i)" + _DIFFERS


def _slow(lines: pa.ChunkedArray, hint: pa.ChunkedArray, redact: bool) -> pa.Array:
    """Which entries Python must build: DuckDB's text of them may differ from Python's or, with
    redaction, may hold a secret (the call's ``hint``, or the secret hint over the entry's
    text). One pass of one regular expression over each entry; with redaction, a second over
    an entry it matched, with the paging tokens' keys cut out (``_PAGING_KEYS``)."""
    if not redact:
        return pc.match_substring_regex(lines, _DIFFERS_ANY_CASE).combine_chunks()
    matched = pc.match_substring_regex(lines, _EITHER).to_numpy(zero_copy_only=False)
    again = np.flatnonzero(matched)
    if len(again):
        cut = pc.replace_substring_regex(lines.take(pa.array(again)), _PAGING_KEYS, '""')
        matched[again] = pc.match_substring_regex(cut, _EITHER).to_numpy(zero_copy_only=False)
    return pc.or_(hint.combine_chunks(), pa.array(matched))


def _history(store: Store, agent: str, before: datetime) -> dict[str, set[str]]:
    where, params = agent_filter(store, agent)
    rows = store.con.execute(
        "SELECT list(DISTINCT event_name), list(DISTINCT source_ip), list(DISTINCT acs_region) "  # noqa: S608
        f"FROM events WHERE {where} AND event_time < ?", [*params, before]).fetchall()
    names, ips, regions = rows[0] if rows else (None, None, None)
    return {"apis": set(names or []), "source_ips": set(ips or []), "regions": set(regions or [])}


def _event_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry = {k: row[k] for k in ("event_id", "event_time", "action", "event_rw", "source_ip", "acs_region",
                                 "user_agent", "access_key_id", "error_code", "error_message", "resources")}
    entry["kind"] = "event"
    if row.get("via"):  # made through a role session the agent started: the roles, agent first
        entry["via"] = list(row["via"])
        entry["identity"] = row["identity"]
        entry["account"] = row["recipient_account_id"] or row["account_id"]
    entry["raw"] = row["raw"]
    return entry


def _finding_entry(f: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "finding", "event_time": f["first_seen"], "id": f["id"], "detector": f["detector"],
            "severity": f["severity"], "summary": f["summary"], "status": f["status"]}


class _Totals:
    """The summary, blast radius, changes and hourly activity, merged from each stretch's
    aggregates (``_Window._add_up``): memory in the number of distinct resources and sources, not
    events. Lists are in the order their items first occurred (time, then event id), then sorted
    as the export shows them; values are redacted as the events they came from are."""

    def __init__(self, known: dict[str, set[str]], redact: bool, memory_limit: str) -> None:
        self.known = known
        self.clean: Callable[[str], str] = (lambda v: redact_text(v)[0]) if redact else (lambda v: v)
        # times are µs since the epoch (``_iso`` writes them)
        self.events = self.failed = self.through_roles = 0
        self.first: int | None = None
        self.last: int | None = None
        self.activity: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
        self.values: dict[str, dict[str, list[Any]]] = defaultdict(dict)  # kind -> value -> [calls, first, last, order]
        self.actions: set[str] = set()
        self.touched = _Touched(memory_limit)

    def add(self, keys: list[tuple[Any, ...]], sums: _Sums, facts: dict[tuple[Any, ...], _Call]) -> None:
        """Merge one stretch's aggregates (``_Window._aggregates``; ``keys``: the facts of each of
        its ``calls``)."""
        self.actions.update(sums.actions)
        for kind, value, hour, count, failed, first, last, key in sums.seen:
            if kind == "all":
                self.events, self.failed = self.events + count, self.failed + failed
                self.first = first if self.first is None else min(self.first, first)
                self.last = last if self.last is None else max(self.last, last)
            elif kind == "through":
                self.through_roles += count
            elif kind == "hour":
                self.activity[hour][0] += count
                self.activity[hour][1] += failed
            else:
                _merge(self.values[kind], value, count, first, last, (first, key))
        rows = []
        for fkey, (*_, access, outcome, count, first, last, key) in zip(keys, sums.calls, strict=True):
            name, touched = facts[fkey].shown
            self.actions.add(name)
            for index, arn in enumerate(touched):
                if not arn.endswith(":*"):  # a call with no resource: nothing touched to name
                    rows.append((arn, access, outcome, count, name, first, last, key, index))
        self.touched.add_stretch(sums.touched, rows)

    def _items(self, kind: str) -> list[dict[str, Any]]:
        """The distinct values of one kind, redacted (values that become the same are merged),
        in the order they first occurred."""
        items: dict[str, list[Any]] = {}
        for value, (count, first, last, order) in self.values.get(kind, {}).items():
            _merge(items, self.clean(value), count, first, last, order)
        ordered = sorted(items.items(), key=lambda i: i[1][3])
        return [{"value": v, "calls": c, "first_seen": first, "last_seen": last}
                for (v, (c, *_)), (first, last) in zip(ordered, _iso_spans([(f, la) for _, (_, f, la, _) in ordered]),
                                                       strict=True)]

    def summary(self, findings: int) -> dict[str, Any]:
        return {"events": self.events, "failed": self.failed, "findings": findings,
                "first_event": _iso(self.first), "last_event": _iso(self.last), "apis": len(self.actions),
                **({"through_roles": self.through_roles} if self.through_roles else {})}

    def blast_radius(self) -> dict[str, Any]:
        touched = self.touched.resources()
        kinds = sorted((k for k, _ in _SEEN if k != "apis" and self.values.get(k)),
                       key=lambda k: min(v[3] for v in self.values[k].values()))
        return {"resources": touched, **{k: sorted(self._items(k), key=lambda i: -i["calls"]) for k in kinds}}

    def changes(self) -> dict[str, Any]:
        new: dict[str, list[dict[str, Any]]] = {}
        for kind, seen in (("new_apis", "apis"), ("new_source_ips", "source_ips"), ("new_regions", "regions")):
            firsts = sorted(((v, i) for v, i in self.values.get(seen, {}).items() if v not in self.known[seen]),
                            key=lambda v: v[1][3])
            new[kind] = [{"value": self.clean(v), "first_seen": _iso(i[1]), "event_id": i[3][1]} for v, i in firsts]
        return {**new, "history_was_empty": not any(self.known.values())}


@dataclass
class _Sums:
    """A stretch's aggregates (``_Window._aggregates``)."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    seen: list[tuple[Any, ...]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    touched: pa.Table | None = None
    mapped: pa.Table | None = None  # the facts table's rows of the calls mapped by template or in SQL

    def put(self, *, mapped: pa.Table | None = None, touched: pa.Table | None = None) -> None:
        """Add facts table rows, or touched resources."""
        if mapped is not None:
            self.mapped = mapped if self.mapped is None else pa.concat_tables([self.mapped, mapped])
        if touched is not None:
            self.touched = touched if self.touched is None else pa.concat_tables([self.touched, touched])


def _radius(unique: bool, *, group: bool = False) -> str:
    """SQL: the blast radius' resources (``_Touched``), each once per access and outcome with its
    calls, actions (sorted), first and last seen, and its compact JSON; writes before reads,
    succeeded before failed, then the most called, then in the order first touched (its first
    call's time, first event and position in the call). ``group``: only the rows of one access,
    outcome and calls (parameters), none merged and none sorted, for when no two rows name the
    same resource, access and outcome (an agent that reads an object per call) and the table holds
    them in the order first touched (grouping with the lists of actions cost ~1.4 s per 1M rows,
    sorting ~2.3 CPU-s). ``unique`` (no such two rows), without ``group``: nothing merged, all sorted."""
    if group:
        merged = ("SELECT arn, access, outcome, calls, [action] AS actions, first, last FROM touched "
                  "WHERE access = ? AND outcome = ? AND calls = ?")
    elif unique:
        merged = ("SELECT arn, access, outcome, calls, [action] AS actions, first, last, "
                  "{'f': first, 'k': key, 'i': idx} AS o FROM touched")
    else:
        merged = ("SELECT arn, access, outcome, sum(calls)::BIGINT AS calls, "
                  "list_sort(list_distinct(list(action))) AS actions, min(first) AS first, max(last) AS last, "
                  "min({'f': first, 'k': key, 'i': idx}) AS o FROM touched GROUP BY arn, access, outcome")
    order = "" if group else "ORDER BY access <> 'write', outcome <> 'succeeded', calls DESC, o"
    return f"""
        SELECT concat('{{"resource":', to_json(arn), ',"access":"', access, '","outcome":"', outcome,
                      '","calls":', calls, ',"actions":', to_json(actions), ',"first_seen":', {_time_json('first')},
                      ',"last_seen":', {_time_json('last')}, '}}') AS text
        FROM ({merged})
        {order}"""  # noqa: S608 - fixed SQL


def _page(offset: int, limit: int | None) -> str:
    """SQL: the rows from ``offset``, at most ``limit``."""
    return (f" LIMIT {int(limit)}" if limit is not None else "") + (f" OFFSET {int(offset)}" if offset else "")


class _KeptFacts:
    """Each written stretch's facts table (``_facts_table``'s columns), from the pass that adds
    the stretches up to the one that writes their entries (``_Window.add_up``, ``entries``): in
    memory up to ``KEPT`` rows in all, the rest in a temporary file (Arrow's IPC format, read
    back as it was written: no parse)."""

    KEPT = 100_000

    def __init__(self) -> None:
        self.held: dict[int, pa.Table] = {}
        self.rows = 0  # held
        self.file: Any = None  # the temporary file, once a table is put there
        self.stored: dict[int, tuple[int, int]] = {}  # stretch -> (offset, length) in the file

    def put(self, stretch: int, facts: pa.Table) -> None:
        if self.rows + facts.num_rows <= self.KEPT:
            self.held[stretch] = facts
            self.rows += facts.num_rows
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="trailwarden-replay-")  # noqa: SIM115 - closed by close
        start = self.file.seek(0, io.SEEK_END)
        with pa.ipc.new_stream(self.file, facts.schema) as writer:
            writer.write_table(facts)
        self.stored[stretch] = (start, self.file.tell() - start)

    def take(self, stretch: int) -> pa.Table:
        if stretch in self.held:
            facts = self.held.pop(stretch)
            self.rows -= facts.num_rows
            return facts
        start, length = self.stored.pop(stretch)
        self.file.seek(start)
        return pa.ipc.open_stream(self.file.read(length)).read_all()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Touched:
    """The blast radius' resources as the stretches name them, one row per (resource, access,
    outcome, call) of a stretch, kept in DuckDB (an in-memory database of its own under the
    store's memory limit, which may spill to a temporary directory), not as Python objects: an
    agent whose every call names an object of its own touches as many resources as it made
    calls, and a million of them held as dicts and sets took over a GiB. Merged, sorted and
    written as JSON as they are read, at the end (``resources``)."""

    KEPT = 100_000  # rows held in Arrow before they go to DuckDB
    GROUPS = 64  # at most so many (access, outcome, calls) groups read in the order stored
    _COLUMNS = ("arn", "access", "outcome", "calls", "action", "first", "last", "key", "idx")
    _TYPES = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.int64(), pa.int64(), pa.string(),
              pa.int32())
    _ORDER = [("first", "ascending"), ("key", "ascending"), ("idx", "ascending")]  # first touched

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit
        self._unique = False  # no resource, access and outcome in two rows (``resources`` finds out)
        self._groups: list[tuple[str, str, int, int]] | None = None  # and read group by group (see there)
        self._parts: list[pa.Table] = []  # added, not yet in DuckDB
        self._con: duckdb.DuckDBPyConnection | None = None
        self._spill: tempfile.TemporaryDirectory[str] | None = None

    def add_stretch(self, part: pa.Table | None, rows: list[tuple[Any, ...]]) -> None:
        """A stretch's rows (``part``, in ``_COLUMNS``' order, and ``rows`` mapped in Python), in
        the order first touched. The stretches come in time order, so the table holds every row in
        that order (``resources`` relies on it); they go to DuckDB every ``KEPT`` rows (each insert
        costs ~10 ms, a few hundred rows a stretch are usual)."""
        parts = [part] if part is not None and part.num_rows else []
        if rows:
            parts.append(pa.table([pa.array(c, t) for c, t in zip(zip(*rows, strict=True), self._TYPES, strict=True)],
                                  names=self._COLUMNS))
        if parts:
            stretch = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
            order = pc.sort_indices(stretch, sort_keys=self._ORDER)
            self._parts.append(stretch.take(order))
        self.flush()

    def flush(self, *, whole: bool = False) -> None:
        """Move the rows added to DuckDB when there are ``KEPT``, or all of them when ``whole``."""
        if self._parts and (whole or sum(p.num_rows for p in self._parts) >= self.KEPT):
            con = self._connection()
            con.register("_tw_part", pa.concat_tables(self._parts))
            with self._room():
                con.execute("INSERT INTO touched SELECT * FROM _tw_part")
            con.unregister("_tw_part")
            self._parts = []

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._spill = tempfile.TemporaryDirectory(prefix="trailwarden-replay-")
            self._con = duckdb.connect(config={"memory_limit": self.memory_limit, "threads": 2,
                                               "temp_directory": self._spill.name,
                                               "preserve_insertion_order": True})  # see ``resources``
            self._con.execute("CREATE TABLE touched (arn VARCHAR, access VARCHAR, outcome VARCHAR, calls BIGINT, "
                              "action VARCHAR, first BIGINT, last BIGINT, key VARCHAR, idx INTEGER)")
            self._con.execute("SET enable_external_access = false")
        return self._con

    @contextmanager
    def _room(self) -> Iterator[None]:
        """Running out of the memory limit here fails in one line that says what to raise."""
        try:
            yield
        except duckdb.OutOfMemoryException:
            raise TerminalError(
                f"replay ran out of its memory limit ({self.memory_limit}) adding up the blast radius (a row per "
                "resource touched, merged and sorted in DuckDB); raise `memory_limit` in the config") from None

    def resources(self) -> _Encoded:
        """Each resource once per access and outcome (``_radius``), as the compact JSON the export
        writes, by DuckDB; ``_Encoded`` reads them when asked (a view that shows the first few
        sorts only those out).

        When no two rows name the same resource, access and outcome (an agent that reads an object
        per call) and they fall in few groups of access, outcome and calls, each group is read in
        the order its rows were stored, which is the order first touched (``add_stretch``): no
        sort (sorting a million resources cost ~2.3 CPU-s)."""
        self.flush(whole=True)
        if self._con is None:
            return _Encoded(None, 0)
        with self._room():
            [(distinct,)] = self._con.execute(
                "SELECT count(*) FROM (SELECT DISTINCT arn, access, outcome FROM touched)").fetchall()
            groups = self._con.execute(
                "SELECT access, outcome, calls, count(*) FROM touched GROUP BY access, outcome, calls "
                "ORDER BY access <> 'write', outcome <> 'succeeded', calls DESC").fetchall()
        self._unique = distinct == sum(count for *_, count in groups)
        self._groups = groups if self._unique and len(groups) <= self.GROUPS else None
        return _Encoded(self, int(distinct))

    def texts(self, offset: int = 0, limit: int | None = None) -> Iterator[pa.Array]:
        """The resources' JSON texts in order (from ``offset``, at most ``limit``), a chunk at a
        time, sorted as they are read (or read group by group as stored, see ``resources``).
        DuckDB's text of a value differs from Python's (which the digest is recomputed with) only
        in the hex case of a ``\\u00XX`` escape: those few are written again by Python (``_checked``)."""
        assert self._con is not None
        for query, params in self._pages(offset, limit):
            with self._room():
                reader = self._con.sql(query, params=params or None).to_arrow_reader(50_000)
                for batch in reader:
                    yield self._checked(batch)

    def _pages(self, offset: int, limit: int | None) -> Iterator[tuple[str, list[Any]]]:
        """The queries (and their parameters) that read the resources from ``offset``, at most
        ``limit``: one, or one per group (``resources``) that holds some of them."""
        if self._groups is None:
            yield _radius(self._unique) + _page(offset, limit), []
            return
        for access, outcome, calls, count in self._groups:
            if limit is not None and limit <= 0:
                return
            if offset >= count:
                offset -= count
                continue
            yield _radius(True, group=True) + _page(offset, limit), [access, outcome, calls]
            if limit is not None:
                limit -= count - offset
            offset = 0

    @staticmethod
    def _checked(batch: pa.RecordBatch) -> pa.Array:
        """The texts, those DuckDB wrote otherwise than Python (a ``\\u00XX`` escape with a
        hex letter) written again by Python: read back, they are the same values."""
        text = batch.column("text")
        differs = pc.match_substring_regex(text, r"\\u00[01][A-F]")
        if not differs.true_count:
            return text
        redone = [_compact(json.loads(t)) for t in text.filter(differs).to_pylist()]
        return pc.replace_with_mask(text, differs, pa.array(redone, text.type))


class _Encoded(Sequence[dict[str, Any]]):
    """A list of objects already written as compact JSON (the blast radius' resources, kept by
    ``_Touched``): the export writes the texts as they are, a chunk at a time; the views read the
    few they show. It reads from the replay's ``_Touched``, which lives as long as it does."""

    def __init__(self, source: _Touched | None, length: int) -> None:
        self._source = source
        self._length = length

    def chunks(self) -> Iterator[pa.Array]:
        if self._source is not None:
            yield from self._source.texts()

    def texts(self) -> Iterator[str]:
        for chunk in self.chunks():
            yield from chunk.to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for text in self.texts():
            yield json.loads(text)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if self._source is None or start >= stop:
                return []
            texts = [t for chunk in self._source.texts(start, stop - start) for t in chunk.to_pylist()]
            return [json.loads(t) for t in texts[::step]]
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError(index)
        found: list[dict[str, Any]] = self[position:position + 1]
        return found[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def _iso(us: int | None) -> str | None:
    """µs since the epoch as ``to_jsonable`` writes a time."""
    return None if us is None else (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def _isos(us: list[int]) -> list[str]:
    """``_iso`` of many times at once, formatted by numpy: a blast radius of 200,000 objects has
    400,000 of them (~2 µs each through ``datetime``)."""
    text = np.datetime_as_string(np.array(us, dtype="datetime64[us]"), unit="us").tolist()
    return [t[:-7] + "Z" if t.endswith(".000000") else t + "Z" for t in text]


def _iso_spans(spans: list[tuple[int, int]]) -> list[tuple[str, str]]:
    """Each (first, last) seen as ``_iso`` writes them, all formatted at once (``_isos``)."""
    text = _isos([t for span in spans for t in span])
    return list(zip(text[0::2], text[1::2], strict=True))


def _merge(items: dict[str, list[Any]], value: str, count: int, first: int, last: int,
           order: tuple[Any, ...]) -> None:
    """Add ``count`` calls seen from ``first`` to ``last`` to ``items[value]`` ([calls, first, last, order])."""
    item = items.get(value)
    if item is None:
        items[value] = [count, first, last, order]
    else:
        item[0] += count
        item[1], item[2], item[3] = min(item[1], first), max(item[2], last), min(item[3], order)


class _Extract:
    """The timeline entries a view shows, kept as they stream by: the ``last`` events (with the
    findings among them) and ``around`` entries before and after each finding. An event is kept
    as its JSON line and parsed only when shown; times are µs since the epoch."""

    def __init__(self, last: int, around: int) -> None:
        self.last, self.around = last, around
        self.active = bool(last or around)
        self.reach = max(last, around) if self.active else 0  # entries before a finding it may keep
        self.skipped = False  # events went by unseen (older than the tail): as if trimmed
        self.tail: deque[tuple[int, str, int, Any]] = deque()
        self.tail_events = 0
        self.before: deque[tuple[int, str, int, Any]] = deque(maxlen=max(around, 1))
        self.kept: dict[int, tuple[int, str, int, Any]] = {}
        self.after = 0

    def add(self, position: int, kind: str, when: int, entry: Any) -> None:
        """``entry``: a finding's entry, or an event's JSON line."""
        if not self.active:
            return
        item = (position, kind, when, entry)
        if kind == "finding":
            if self.around:
                self.kept.update((i[0], i) for i in self.before)
                self.before.clear()
            self.kept[position] = item
            self.after = self.around
        elif self.after:
            self.kept[position] = item
            self.after -= 1
        elif self.around:
            self.before.append(item)
        if self.last:
            self.tail.append(item)
            self.tail_events += kind == "event"
            if self.tail_events > self.last:
                while self.tail_events > self.last:
                    dropped = self.tail.popleft()
                    self.tail_events -= dropped[1] == "event"
                self._drop_findings_before_the_first_event()

    def _drop_findings_before_the_first_event(self) -> None:
        first = next(i[2] for i in self.tail if i[1] == "event")
        while self.tail[0][1] == "finding" and self.tail[0][2] < first:
            self.tail.popleft()

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        if self.skipped and any(i[1] == "event" for i in self.tail):
            self._drop_findings_before_the_first_event()
        items = sorted({**self.kept, **{i[0]: i for i in self.tail}}.values()) if self.around else list(self.tail)
        return [(i[0], json.loads(i[3]) if i[1] == "event" else i[3]) for i in items]


def _null(_: str) -> None:
    """NaN and infinities in a raw event become null, as ``to_jsonable`` writes them: strict JSON."""
    return
