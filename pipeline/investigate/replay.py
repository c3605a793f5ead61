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
raw event minified with ``json``), with only the RAM action and resources from Python (once per
distinct call, ``_Mapping``): no event is parsed in Python unless it may hold a secret or DuckDB's
text of it could differ from Python's (``_SLOW``), which is then built as before. So the export
costs about what reading its rows costs, not a parse and two serialisations of every event.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import re
import tempfile
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from models.inventory import Inventory
from models.mapping import PARAMETER_TARGETS, CallFacts, action, is_authorized_call, resources
from pipeline import __version__
from pipeline.core.inert import HIDDEN_IN_JSON, HIDDEN_IN_JSON_RANGES, json_inert
from pipeline.core.output import to_jsonable
from pipeline.core.redact import HINT_SHAPES, HINT_WORDS, might_hold_secrets
from pipeline.core.redact import redact as redact_values
from pipeline.core.times import utcnow
from pipeline.detection.findings import list_findings
from pipeline.store.attribution import agent_filter
from pipeline.store.store import Store

EVENT_FIELDS = ("event_id", "event_time", "event_name", "event_type", "event_rw", "service_name", "service_code",
                "acs_region", "source_ip", "user_agent", "access_key_id", "error_code", "error_message",
                "identity", "referenced_resources", "resource_type", "resource_name", "recipient_account_id",
                "account_id")
# The target of a RAM user/role call is often only in its request parameters (a virtual column over
# the raw JSON): read them for those events only.
BATCH = 2048  # events fetched at a time
STRETCH = 20_000  # events sorted at a time (see _stretches)
_PARAMETERS = ("CASE WHEN list_contains(?, lower(event_name)) THEN request_parameters::VARCHAR END "
               "AS request_parameters")


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
    sha256: str
    shown: list[tuple[int, dict[str, Any]]]  # (position in the timeline, entry), in order
    activity: dict[datetime, list[int]]  # hour (UTC) -> [calls, failed]
    entries: int  # the timeline's length (events and findings)


def write_replay(store: Store, agent: str, inventory: Inventory, out: TextIO | None, *,
                 since: datetime | None = None, until: datetime | None = None, with_raw: bool = True,
                 redact: bool = True, last: int = 50, around: int = 0) -> Replay:
    """Write the JSON export to ``out`` (``None``: only its digest) as the agent's events are read.

    Memory stays flat in the number of events: each timeline entry is written to a temporary file
    as it is read (``_Timeline``), while the summary, blast radius and changes are added up; then
    the export is written (its header indented, each timeline entry compact on a line of its own)
    and hashed as it is written. The views keep the ``last`` entries and ``around`` entries on
    each side of every finding (``Replay.shown``)."""
    until = until or utcnow()
    since = since or until - timedelta(days=90)
    findings = sorted((f for f in list_findings(store, agent=agent)
                       if f["last_seen"] >= since and f["first_seen"] < until), key=lambda f: (f["first_seen"], f["id"]))
    totals = _Totals(_history(store, agent, since))
    extract = _Extract(last, around)
    inv = inventory.agent(agent)
    generated_at = utcnow()
    with _Timeline() as timeline:
        pending = iter(findings)
        finding = next(pending, None)

        def put_finding(f: dict[str, Any]) -> None:
            entry = to_jsonable(_finding_entry(f))
            extract.add(timeline.count, "finding", f["first_seen"], entry)
            line = _compact(entry)
            timeline.add(line, HIDDEN_IN_JSON.search(line) is not None)

        for row in _events(store, agent, since, until, with_raw, redact, totals):
            while finding is not None and finding["first_seen"] <= row["event_time"]:
                put_finding(finding)
                finding = next(pending, None)
            totals.add(row)
            extract.add(timeline.count, "event", row["event_time"], row["line"])
            timeline.add(row["line"], row["hidden"])
        while finding is not None:
            put_finding(finding)
            finding = next(pending, None)
        header = to_jsonable({
            "agent": agent,
            "registered": inv is not None,
            "purpose": inv.purpose if inv else None, "owner": inv.owner if inv else None,
            "environment": inv.environment if inv else None,
            "identities": inv.identities if inv else [agent],
            "window": {"since": since, "until": until},
            "generated_at": generated_at, "generator": f"trailwarden {__version__}",
            "summary": totals.summary(len(findings)),
            "blast_radius": totals.blast_radius(),
            "changes": totals.changes(),
            "findings": findings,
        })
        trailer = to_jsonable({"redaction": _redaction_note(redact, totals.redacted)})
        digest = timeline.write_export(header, trailer, out)
    shown = extract.entries()
    report = {**header, "timeline": [entry for _, entry in shown], **trailer, "sha256": digest}
    return Replay(report, digest, shown, totals.activity, timeline.count)


def _compact(value: Any) -> str:
    """The JSON the digest is over, and each timeline entry as the export writes it (before
    ``json_inert``): compact, keys in their order, text as is (``export_digest``'s)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)


def _pretty(value: Any) -> str:
    """The JSON of the export's header and trailer (as ``json_text(..., indent=2)`` writes it)."""
    return json_inert(json.dumps(value, indent=2, ensure_ascii=False, default=str, allow_nan=False))


class _Timeline:
    """The timeline while it streams: each entry's compact JSON on a line of a temporary file (a
    compact entry holds no raw newline), so neither the events nor their text stay in memory.
    The export's header comes first and is known only at the end: the file is then read once,
    hashed and copied after it."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+b")  # noqa: SIM115 - closed by __exit__
        self.lines: list[str] = []
        self.count = 0
        self.hidden: deque[int] = deque()  # the entries with characters ``json_inert`` escapes

    def __enter__(self) -> _Timeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.file.close()

    def add(self, line: str, hidden: bool = False) -> None:
        if hidden:
            self.hidden.append(self.count)
        self.lines.append(line)
        self.count += 1
        if len(self.lines) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.lines:
            self.lines.append("")
            self.file.write("\n".join(self.lines).encode())
            self.lines = []

    def _inert(self, lines: list[str], position: int) -> str:
        """These lines (the first at ``position``), the marked ones through ``json_inert``."""
        while self.hidden and self.hidden[0] < position + len(lines):
            at = self.hidden.popleft() - position
            lines[at] = json_inert(lines[at])
        return "\n".join(lines)

    def write_export(self, header: dict[str, Any], trailer: dict[str, Any], out: TextIO | None) -> str:
        """Write the export to ``out`` (if any) - the header's keys indented, the timeline one
        entry a line, the redaction note and the digest last - and return the digest: SHA-256 of
        the compact export without it (what ``export_digest`` computes of the export once
        parsed), over the bytes as they go by."""
        self._flush()
        sha = hashlib.sha256((_compact(header)[:-1] + ',"timeline":[').encode())
        if out is not None:
            out.write(_pretty(header)[:-2] + ',\n  "timeline": [')
        self.file.seek(0)
        first, position = True, 0
        while lines := self.file.readlines(1 << 20):
            body = b"".join(lines)[:-1]  # every line ends in a newline
            sha.update(body.replace(b"\n", b",") if first else b"," + body.replace(b"\n", b","))
            if out is not None:
                text = body.decode()
                if self.hidden and self.hidden[0] < position + len(lines):
                    text = self._inert(text.split("\n"), position)
                out.write(("\n    " if first else ",\n    ") + text.replace("\n", ",\n    "))
            first, position = False, position + len(lines)
        sha.update(("]," + _compact(trailer)[1:]).encode())
        digest = sha.hexdigest()
        if out is not None:
            out.write(("\n  ]" if self.count else "]") + "," + _pretty({**trailer, "sha256": digest})[1:] + "\n")
        return digest


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


def _events(store: Store, agent: str, since: datetime, until: datetime, with_raw: bool,
            redact: bool, totals: _Totals) -> Iterator[dict[str, Any]]:
    """The agent's events in the window, oldest first, read in batches, each with its timeline
    entry's JSON (``line``); the values redacted from them are counted in ``totals``.

    Both readers run on cursors of their own, with the agent's condition decided before either
    starts: a query on the store's connection while a reader is mid-stretch would end that
    stretch's result (its events were silently lost after the first batch)."""
    condition = agent_filter(store, agent)
    mapping = _Mapping()
    own = _own_events(store, condition, since, until, with_raw, redact, totals, mapping)
    via = _via_roles(store, condition, since, until, with_raw, redact, totals, mapping)
    previous = None
    for row in heapq.merge(own, via, key=lambda r: (r["event_time"], r["event_id"])):
        if row["event_id"] != previous:  # an event of the agent's own role: once
            previous = row["event_id"]
            yield row


def _own_events(store: Store, condition: tuple[str, list[str]], since: datetime, until: datetime, with_raw: bool,
                redact: bool, totals: _Totals, mapping: _Mapping) -> Iterator[dict[str, Any]]:
    where, params = condition
    stretches = _stretches(store, "", since, until, condition)
    con = store.con.cursor()
    try:
        for start, end in stretches:
            result = con.execute(_query("", with_raw, redact, "NULL::VARCHAR[]",
                                        f"FROM events WHERE {where} AND event_time >= ? AND event_time < ?"),
                                 [*_query_params(redact), *params, start, end])
            yield from _rows(result, redact, totals, mapping)
    finally:
        con.close()


# A chain of role sessions lasts at most two sessions' lifetime before the window's first event
# made through it (each session lasts at most 12 hours; chains deeper than that are rare).
_CHAIN_REACH = timedelta(days=1)


def _via_roles(store: Store, condition: tuple[str, list[str]], since: datetime, until: datetime, with_raw: bool,
               redact: bool, totals: _Totals, mapping: _Mapping) -> Iterator[dict[str, Any]]:
    """The events made through the role sessions the agent started (directly, or through a chain
    of roles: ``role_sessions.origin_session`` is one of its ``AssumeRole`` calls), oldest first,
    each with ``via``: the roles (``role@account``) from the agent to the one that acted. Read on
    a cursor of its own, beside the agent's own events."""
    where, params = condition
    con = store.con.cursor()
    try:
        sessions = [r[0] for r in con.execute(
            f"""
            SELECT session_id FROM role_sessions WHERE origin_status = 'known' AND origin_session IN (
                SELECT event_id FROM events WHERE {where} AND event_name = 'AssumeRole'
                  AND event_time >= ? AND event_time < ?)
            """, [*params, since - _CHAIN_REACH, until]).fetchall()]  # noqa: S608 - agent_filter's SQL
        if not sessions:
            return
        result = con.execute(_query("e.", with_raw, redact, "s.chain", """
            FROM session_links l JOIN role_sessions s USING (session_id) JOIN events e USING (event_id)
            WHERE l.status = 'linked' AND list_contains(?, l.session_id) AND l.event_time >= ? AND l.event_time < ?
              AND e.event_time >= ? AND e.event_time < ?"""), [*_query_params(redact), sessions, since, until, since, until])
        yield from _rows(result, redact, totals, mapping)
    finally:
        con.close()


def _stretches(store: Store, agent: str, since: datetime, until: datetime,
               condition: tuple[str, list[str]] | None = None) -> list[tuple[datetime, datetime]]:
    """[since, until) cut at hour boundaries into stretches of about STRETCH events, oldest first.
    DuckDB sorts each stretch whole (raw JSON included) within its memory limit, and a reader
    cannot spill to disk: sorting a busy agent's 90 days at once ran out of memory at 190k events."""
    where, params = condition or agent_filter(store, agent)
    hours = store.con.execute(
        "SELECT date_trunc('hour', event_time) AS h, count(*) FROM events "  # noqa: S608 - agent_filter's SQL
        f"WHERE {where} AND event_time >= ? AND event_time < ? GROUP BY h ORDER BY h", [*params, since, until]).fetchall()
    cuts = [since]
    held = 0
    for hour, count in hours:
        if held and held + count > STRETCH and hour > cuts[-1]:
            cuts.append(hour)
            held = 0
        held += count
    return list(zip(cuts, [*cuts[1:], until], strict=True))


# -- each timeline entry's JSON, written by DuckDB ----------------------------------------------
# A string column as Python's json.dumps(..., ensure_ascii=False) writes it (DuckDB's to_json
# escapes the same characters; only the hex case of \u00XX differs: see _SLOW).
def _j(column: str) -> str:
    return f"coalesce(to_json({column}), 'null')"


_TIME = ("'\"' || strftime(timezone('UTC', event_time), '%Y-%m-%dT%H:%M:%S') || CASE WHEN epoch_us(event_time) "
         "% 1000000 <> 0 THEN '.' || lpad(CAST(epoch_us(event_time) % 1000000 AS VARCHAR), 6, '0') ELSE '' END "
         "|| 'Z\"'")
# Where DuckDB's text of an entry may differ from Python's (which ``export_digest`` recomputes): a
# \u00XX escape with an upper-case hex digit, and floats Python writes with an exponent (below
# 1e-4, from 1e16) or that overflow (in DuckDB's compact text a number follows ``:``, ``[`` or
# ``,``; text in strings that looks so only costs a parse). Such an entry is built in Python.
_DIFFERS = r"\\u00[01][A-F]|[:\[,]-?[0-9.]+[eE]|[:\[,]-?[0-9]{17,}\.|[:\[,]-?0\.0000"
# ... or a character ``json_inert`` escapes in the file (not in the digest): Python marks its line.
_DIFFERS += "|[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in HIDDEN_IN_JSON_RANGES if b < 0xD800 or a > 0xDFFF) + "]"
# A superset of ``might_hold_secrets`` (case folded, and every character Python's \s matches):
# an event it matches is parsed and walked by ``redact`` as before.
_SPACE = r"[\s\x{0b}\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_HINT = (r"(?i)(?:" + "|".join(HINT_WORDS) + r")s?(?:\\?[\"'])?" + _SPACE + r"*[:=]|(?i)(?:"
         + "|".join(re.escape(s) for s in HINT_SHAPES) + r")|://[^/@]*:[^/@]*@")
_TEXT_COLUMNS = [c for c in EVENT_FIELDS if c != "event_time"]


def _query(p: str, with_raw: bool, redact: bool, via: str, source: str) -> str:
    """A reader's query of the events ``source`` (``FROM ... WHERE ...``, columns prefixed
    ``p``), oldest first: the call's facts (for the RAM mapping and the totals), the entry's JSON
    in three parts around the action and the resources (``head``, ``middle``, ``tail``), whether
    Python must build it instead (``slow``), and only then the raw text. Parameters:
    ``_query_params`` then the source's."""
    account = "CASE WHEN recipient_account_id <> '' THEN recipient_account_id ELSE account_id END"
    raw = f"{p}raw" if with_raw else "NULL::VARCHAR"
    head = "'{\"event_id\":' || " + _j("event_id") + " || ',\"event_time\":' || " + _TIME + " || ',\"action\":'"
    middle = " || ".join(f"',\"{c}\":' || {_j(c)}" for c in (
        "event_rw", "source_ip", "acs_region", "user_agent", "access_key_id", "error_code", "error_message")) + \
        " || ',\"resources\":'"
    tail = (f"',\"kind\":\"event\"' || CASE WHEN len(coalesce(via, [])) > 0 THEN ',\"via\":' || to_json(via) || "
            f"',\"identity\":' || {_j('identity')} || ',\"account\":' || {_j(account)} ELSE '' END || "
            "',\"raw\":' || coalesce(json(raw_text), 'null') || '}'")
    hint = f"regexp_matches(concat_ws(chr(10), {', '.join(_TEXT_COLUMNS)}, raw_text), ?)" if redact else "false"
    parameters = _PARAMETERS.replace("event_name", f"{p}event_name").replace("request_parameters::",
                                                                            f"{p}request_parameters::")
    inner = ", ".join([*(f"{p}{c}" for c in EVENT_FIELDS), parameters, f"{via} AS via", f"{raw} AS raw_text"])
    return f"""
        SELECT * EXCLUDE (raw_text), CASE WHEN slow THEN raw_text END AS raw FROM (
          SELECT *, {hint} OR regexp_matches(head || middle || tail, ?) AS slow FROM (
            SELECT *, {head} AS head, {middle} AS middle, {tail} AS tail FROM (
              SELECT {inner} {source})))
        ORDER BY event_time, event_id"""  # noqa: S608 - fixed SQL


def _query_params(redact: bool) -> list[Any]:
    return [*([_HINT] if redact else []), _DIFFERS, sorted(PARAMETER_TARGETS)]


class _Mapping:
    """The RAM action and resources of each distinct call (its facts), computed once and kept for
    the next events of the same call; forgotten past ``LIMIT`` distinct calls, so memory stays
    bounded when every event names a resource of its own."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.known: dict[tuple[Any, ...], tuple[str, list[str], str, str, bool, bool]] = {}

    def __call__(self, key: tuple[Any, ...]) -> tuple[str, list[str], str, str, bool, bool]:
        """(action, resources, their JSON as the entry writes them, whether the action's text may
        hold a secret, whether that JSON has characters ``json_inert`` escapes) of the call whose
        ``CallFacts`` are ``key``."""
        found = self.known.get(key)
        if found is None:
            facts = CallFacts(*key)
            name = action(facts)
            touched = resources(facts) if is_authorized_call(facts.event_type, facts.service_name) else []
            texts = (_compact(name), _compact(touched))
            found = (name, touched, *texts, might_hold_secrets(name), HIDDEN_IN_JSON.search("".join(texts)) is not None)
            if len(self.known) >= self.LIMIT:
                self.known.clear()
            self.known[key] = found
        return found


def _rows(result: Any, redact: bool, totals: _Totals, mapping: _Mapping) -> Iterator[dict[str, Any]]:
    """The reader's rows as dicts with ``action``, ``resources`` and ``line`` (the entry's JSON):
    DuckDB's text with the action and resources put in, or, for an event that may hold a secret
    or whose text DuckDB writes differently, the entry built and redacted in Python."""
    names = [d[0] for d in result.description or []]
    while batch := result.fetchmany(BATCH):
        for values in batch:
            row = dict(zip(names, values, strict=True))
            facts = (row["event_type"], row["event_name"], row["service_name"], row["service_code"],
                     row["acs_region"], row["recipient_account_id"] or row["account_id"],
                     row["referenced_resources"], row["resource_type"], row["resource_name"],
                     row.pop("request_parameters"))  # only for the mapping: not exported
            row["action"], row["resources"], action_json, resources_json, hint, hidden = mapping(facts)
            if row["slow"] or (redact and hint):
                row = _parsed(row, redact, totals)
                entry = _event_entry(row)
                row["line"] = _compact({**entry, "event_time": to_jsonable(entry["event_time"])})
                row["hidden"] = HIDDEN_IN_JSON.search(row["line"]) is not None
            else:
                row["line"] = row["head"] + action_json + row["middle"] + resources_json + row["tail"]
                row["hidden"] = hidden
            yield row


def _parsed(row: dict[str, Any], redact: bool, totals: _Totals) -> dict[str, Any]:
    """The row with its raw event parsed and, when its text may hold a secret, redacted (the
    values redacted counted in ``totals``): how every event was exported before."""
    row = {k: v for k, v in row.items() if k not in ("head", "middle", "tail", "slow")}
    text = "\n".join(v for v in row.values() if isinstance(v, str))  # the raw JSON too
    row["raw"] = json.loads(row["raw"], parse_constant=_null) if isinstance(row["raw"], str) else None
    if redact and might_hold_secrets(text):
        row, count = redact_values(row)
        totals.redacted += count
    return row


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
    """The summary, blast radius, changes and hourly activity, added up one event at a time: memory
    in the number of distinct resources and sources, not events."""

    def __init__(self, known: dict[str, set[str]]) -> None:
        self.known = known
        self.events = self.failed = self.redacted = self.through_roles = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.actions: set[str] = set()
        self.touched: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.seen: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.new: dict[str, list[dict[str, Any]]] = {"new_apis": [], "new_source_ips": [], "new_regions": []}
        self.firsts: set[tuple[str, str]] = set()
        self.activity: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, r: dict[str, Any]) -> None:
        when = r["event_time"]
        self.events += 1
        self.failed += bool(r["error_code"])
        self.first = self.first or when
        self.last = when
        self.actions.add(r["action"])
        self.through_roles += bool(r.get("via"))
        hour = self.activity[when.replace(minute=0, second=0, microsecond=0)]
        hour[0] += 1
        hour[1] += bool(r["error_code"])
        access = "write" if r["event_rw"] == "Write" else "read"
        outcome = "failed" if r["error_code"] else "succeeded"
        for arn in r["resources"]:
            if arn.endswith(":*"):
                continue  # a call with no resource: nothing touched to name
            entry = self.touched.setdefault((arn, access, outcome), {
                "resource": arn, "access": access, "outcome": outcome, "calls": 0,
                "actions": set(), "first_seen": when, "last_seen": when})
            entry["calls"] += 1
            entry["actions"].add(r["action"])
            entry["last_seen"] = when
        for key, value in (("source_ips", r["source_ip"]), ("user_agents", r["user_agent"]),
                           ("regions", r["acs_region"]), ("access_keys", r["access_key_id"]),
                           ("accounts", r["recipient_account_id"] or r["account_id"]),
                           ("roles", "@".join((r["identity"], r["account_id"] or "?")) if r.get("via") else None)):
            if value:
                item = self.seen[key].setdefault(value, {"value": value, "calls": 0, "first_seen": when})
                item["calls"] += 1
                item["last_seen"] = when
        for kind, key, value in (("new_apis", "apis", r["event_name"]), ("new_source_ips", "source_ips", r["source_ip"]),
                                 ("new_regions", "regions", r["acs_region"])):
            if value and value not in self.known[key] and (kind, value) not in self.firsts:
                self.firsts.add((kind, value))
                self.new[kind].append({"value": value, "first_seen": when, "event_id": r["event_id"]})

    def summary(self, findings: int) -> dict[str, Any]:
        return {"events": self.events, "failed": self.failed, "findings": findings, "first_event": self.first,
                "last_event": self.last, "apis": len(self.actions),
                **({"through_roles": self.through_roles} if self.through_roles else {})}

    def blast_radius(self) -> dict[str, Any]:
        touched = sorted(({**e, "actions": sorted(e["actions"])} for e in self.touched.values()),
                         key=lambda e: (e["access"] != "write", e["outcome"] != "succeeded", -e["calls"]))
        return {"resources": touched,
                **{k: sorted(v.values(), key=lambda i: -i["calls"]) for k, v in self.seen.items()}}

    def changes(self) -> dict[str, Any]:
        return {**self.new, "history_was_empty": not any(self.known.values())}


class _Extract:
    """The timeline entries a view shows, kept as they stream by: the ``last`` events (with the
    findings among them) and ``around`` entries before and after each finding. An event is kept
    as its JSON line and parsed only when shown."""

    def __init__(self, last: int, around: int) -> None:
        self.last, self.around = last, around
        self.tail: deque[tuple[int, str, datetime, Any]] = deque()
        self.tail_events = 0
        self.before: deque[tuple[int, str, datetime, Any]] = deque(maxlen=max(around, 1))
        self.kept: dict[int, tuple[int, str, datetime, Any]] = {}
        self.after = 0

    def add(self, position: int, kind: str, when: datetime, entry: Any) -> None:
        """``entry``: a finding's entry, or an event's JSON line."""
        if not (self.last or self.around):
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
        items = sorted({**self.kept, **{i[0]: i for i in self.tail}}.values()) if self.around else list(self.tail)
        return [(i[0], json.loads(i[3]) if i[1] == "event" else i[3]) for i in items]


def _null(_: str) -> None:
    """NaN and infinities in a raw event become null, as ``to_jsonable`` writes them: strict JSON."""
    return

