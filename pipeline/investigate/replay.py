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
  export without the hash, keys sorted), so what is attached to a ticket can be checked later.

Exports are redacted by default (``pipeline.core.redact``: passwords, AccessKey secrets, tokens, keys,
at any depth and inside strings): ``redaction`` says so and how many values went, and the hash
is over the redacted export, as written. ``redact=False`` (``replay --unredacted``) gives the raw
evidence as received, for who needs it; the store keeps it either way.

Only the agent's rows are read: the ``agent`` column is compared in DuckDB (dictionary-encoded,
fast even on 10M rows) and the raw JSON is fetched only for the export.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any, TextIO

from models.inventory import Inventory
from models.mapping import PARAMETER_TARGETS, CallFacts, action, is_authorized_call, resources
from pipeline import __version__
from pipeline.core.inert import json_inert
from pipeline.core.output import to_jsonable
from pipeline.core.redact import might_hold_secrets
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

    Memory stays flat in the number of events: each timeline entry is written to temporary files
    as it is read (``_Timeline``), while the summary, blast radius and changes are added up; then
    the digest is computed and the export written (the same document ``json.dumps(report,
    indent=2)`` would give, byte for byte). The views keep the ``last`` entries and ``around`` entries on each
    side of every finding (``Replay.shown``)."""
    until = until or utcnow()
    since = since or until - timedelta(days=90)
    findings = sorted((f for f in list_findings(store, agent=agent)
                       if f["last_seen"] >= since and f["first_seen"] < until), key=lambda f: (f["first_seen"], f["id"]))
    totals = _Totals(_history(store, agent, since))
    extract = _Extract(last, around)
    inv = inventory.agent(agent)
    generated_at = utcnow()
    with _Timeline(pretty=out is not None) as timeline:
        pending = iter(findings)
        finding = next(pending, None)

        def put(entry: dict[str, Any]) -> None:
            if entry["kind"] == "event":  # text and lists of text from the store, parsed raw JSON
                jsonable = {**entry, "event_time": to_jsonable(entry["event_time"])}
            else:
                jsonable = to_jsonable(entry)
            extract.add(timeline.count, jsonable)
            timeline.add(jsonable)

        for row in _events(store, agent, since, until, with_raw, redact, totals):
            while finding is not None and finding["first_seen"] <= row["event_time"]:
                put(_finding_entry(finding))
                finding = next(pending, None)
            totals.add(row)
            put(_event_entry(row))
        while finding is not None:
            put(_finding_entry(finding))
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
        digest = timeline.digest(header, trailer)
        if out is not None:
            timeline.write_export(header, trailer, digest, out)
    shown = extract.entries()
    report = {**header, "timeline": [entry for _, entry in shown], **trailer, "sha256": digest}
    return Replay(report, digest, shown, totals.activity, timeline.count)


def _canonical(value: Any) -> str:
    """The JSON the digest is over (keys sorted, no spaces, text as is): ``export_digest``'s."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _pretty(value: Any) -> str:
    """The JSON the export shows (as ``json_text(..., indent=2)`` writes it)."""
    return json_inert(json.dumps(value, indent=2, ensure_ascii=False, default=str, allow_nan=False))


class _Timeline:
    """The timeline while it streams: each entry is written to a temporary file as the digest's
    canonical JSON and, when an export is written, to another as the export shows it (indented as
    the whole export would be), so neither the events nor their text stay in memory."""

    def __init__(self, *, pretty: bool) -> None:
        self.canonical = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by __exit__
        self.pretty = tempfile.TemporaryFile("w+", encoding="utf-8") if pretty else None  # noqa: SIM115
        self.count = 0

    def __enter__(self) -> _Timeline:
        return self

    def __exit__(self, *_: object) -> None:
        self.canonical.close()
        if self.pretty is not None:
            self.pretty.close()

    def add(self, entry: dict[str, Any]) -> None:
        self.canonical.write(("," if self.count else "") + _canonical(entry))
        if self.pretty is not None:
            self.pretty.write(("," if self.count else "") + "\n    " + _pretty(entry).replace("\n", "\n    "))
        self.count += 1

    def digest(self, header: dict[str, Any], trailer: dict[str, Any]) -> str:
        """SHA-256 of the canonical export without its digest (what ``export_digest`` computes of
        the export once parsed), the timeline read back in chunks."""
        body = {**header, **trailer}
        keys = sorted([*body, "timeline"])
        sha = hashlib.sha256()
        sha.update(("{" + "".join(f"{_canonical(k)}:{_canonical(body[k])}," for k in keys if k < "timeline")
                    + '"timeline":[').encode())
        _copy(self.canonical, lambda chunk: sha.update(chunk.encode()))
        sha.update(("]" + "".join(f",{_canonical(k)}:{_canonical(body[k])}" for k in keys if k > "timeline")
                    + "}").encode())
        return sha.hexdigest()

    def write_export(self, header: dict[str, Any], trailer: dict[str, Any], digest: str, out: TextIO) -> None:
        """The export as one indented JSON document: the header's keys, the timeline, the
        redaction note and the digest last."""
        assert self.pretty is not None
        out.write(_pretty(header)[:-2] + ',\n  "timeline": [')
        _copy(self.pretty, out.write)
        out.write(("\n  ]" if self.count else "]") + "," + _pretty({**trailer, "sha256": digest})[1:] + "\n")


def _copy(source: IO[str], sink: Callable[[str], Any]) -> None:
    source.seek(0)
    while chunk := source.read(1 << 20):
        sink(chunk)


def export_digest(report: dict[str, Any]) -> str:
    """SHA-256 of the export without its own ``sha256`` field (canonical JSON, keys sorted)."""
    body = {k: v for k, v in report.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
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
    """The agent's events in the window, oldest first, read in batches; the values redacted from
    them are counted in ``totals``. Only the rare event whose text may hold a secret
    (``might_hold_secrets``) is walked."""
    own = _own_events(store, agent, since, until, with_raw, redact, totals)
    via = _via_roles(store, agent, since, until, with_raw, redact, totals)
    previous = None
    for row in heapq.merge(own, via, key=lambda r: (r["event_time"], r["event_id"])):
        if row["event_id"] != previous:  # an event of the agent's own role: once
            previous = row["event_id"]
            yield row


def _own_events(store: Store, agent: str, since: datetime, until: datetime, with_raw: bool,
                redact: bool, totals: _Totals) -> Iterator[dict[str, Any]]:
    columns = [*EVENT_FIELDS, _PARAMETERS, "raw" if with_raw else "NULL AS raw"]
    where, params = agent_filter(store, agent)
    for start, end in _stretches(store, agent, since, until, (where, params)):
        result = store.con.execute(
            f"SELECT {', '.join(columns)} FROM events WHERE {where} AND event_time >= ? AND event_time < ? "  # noqa: S608
            "ORDER BY event_time, event_id", [sorted(PARAMETER_TARGETS), *params, start, end])
        yield from _rows(result, redact, totals)


# A chain of role sessions lasts at most two sessions' lifetime before the window's first event
# made through it (each session lasts at most 12 hours; chains deeper than that are rare).
_CHAIN_REACH = timedelta(days=1)


def _via_roles(store: Store, agent: str, since: datetime, until: datetime, with_raw: bool,
               redact: bool, totals: _Totals) -> Iterator[dict[str, Any]]:
    """The events made through the role sessions ``agent`` started (directly, or through a chain
    of roles: ``role_sessions.origin_session`` is one of its ``AssumeRole`` calls), oldest first,
    each with ``via``: the roles (``role@account``) from the agent to the one that acted. Read on
    a cursor of its own, beside the agent's own events."""
    where, params = agent_filter(store, agent)
    con = store.cursor()
    try:
        sessions = [r[0] for r in con.execute(
            f"""
            SELECT session_id FROM role_sessions WHERE origin_status = 'known' AND origin_session IN (
                SELECT event_id FROM events WHERE {where} AND event_name = 'AssumeRole'
                  AND event_time >= ? AND event_time < ?)
            """, [*params, since - _CHAIN_REACH, until]).fetchall()]  # noqa: S608 - agent_filter's SQL
        if not sessions:
            return
        columns = [f"e.{c}" for c in EVENT_FIELDS] + [
            _PARAMETERS.replace("event_name", "e.event_name").replace("request_parameters", "e.request_parameters", 1),
            "e.raw" if with_raw else "NULL AS raw", "s.chain AS via"]
        result = con.execute(
            f"""
            SELECT {', '.join(columns)}
            FROM session_links l JOIN role_sessions s USING (session_id) JOIN events e USING (event_id)
            WHERE l.status = 'linked' AND list_contains(?, l.session_id) AND l.event_time >= ? AND l.event_time < ?
              AND e.event_time >= ? AND e.event_time < ?
            ORDER BY e.event_time, e.event_id
            """, [sorted(PARAMETER_TARGETS), sessions, since, until, since, until])  # noqa: S608 - fixed text
        yield from _rows(result, redact, totals)
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


def _rows(result: Any, redact: bool, totals: _Totals) -> Iterator[dict[str, Any]]:
    names = [d[0] for d in result.description or []]
    while batch := result.fetchmany(BATCH):
        for values in batch:
            row = dict(zip(names, values, strict=True))
            facts = CallFacts(row["event_type"], row["event_name"], row["service_name"], row["service_code"],
                              row["acs_region"], row["recipient_account_id"] or row["account_id"],
                              row["referenced_resources"], row["resource_type"], row["resource_name"],
                              row.pop("request_parameters"))  # only for the mapping: not exported
            row["action"] = action(facts)
            row["resources"] = resources(facts) if is_authorized_call(row["event_type"], row["service_name"]) else []
            text = "\n".join(v for v in row.values() if isinstance(v, str))  # the raw JSON too
            row["raw"] = json.loads(row["raw"], parse_constant=_null) if isinstance(row["raw"], str) else None
            if redact and might_hold_secrets(text):
                row, count = redact_values(row)
                totals.redacted += count
            yield row


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
    findings among them) and ``around`` entries before and after each finding."""

    def __init__(self, last: int, around: int) -> None:
        self.last, self.around = last, around
        self.tail: deque[tuple[int, dict[str, Any]]] = deque()
        self.tail_events = 0
        self.before: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(around, 1))
        self.kept: dict[int, dict[str, Any]] = {}
        self.after = 0

    def add(self, position: int, entry: dict[str, Any]) -> None:
        if entry["kind"] == "finding":
            if self.around:
                self.kept.update(self.before)
                self.before.clear()
            self.kept[position] = entry
            self.after = self.around
        elif self.after:
            self.kept[position] = entry
            self.after -= 1
        elif self.around:
            self.before.append((position, entry))
        if self.last:
            self.tail.append((position, entry))
            self.tail_events += entry["kind"] == "event"
            if self.tail_events > self.last:
                while self.tail_events > self.last:
                    _, dropped = self.tail.popleft()
                    self.tail_events -= dropped["kind"] == "event"
                self._drop_findings_before_the_first_event()

    def _drop_findings_before_the_first_event(self) -> None:
        first = next(e["event_time"] for _, e in self.tail if e["kind"] == "event")
        while self.tail[0][1]["kind"] == "finding" and _time(self.tail[0][1]["event_time"]) < _time(first):
            self.tail.popleft()

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        return sorted({**self.kept, **dict(self.tail)}.items()) if self.around else list(self.tail)


def _null(_: str) -> None:
    """NaN and infinities in a raw event become null, as ``to_jsonable`` writes them: strict JSON."""
    return


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
