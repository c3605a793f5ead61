"""The replay streams (issue 18 item 5): an export written as the events are read, the same
document as before, whose digest checks; an HTML page that leads with the incident in a long window,
with a time axis; a file written in place only when complete."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor
from pipeline.core.output import written
from pipeline.ingest.run import ingest_files
from pipeline.investigate.replay import build_replay, export_digest, write_replay
from pipeline.investigate.replay_views import HTML_AROUND, HTML_LAST, as_text, write_html
from pipeline.store.store import Store
from tests.detectors.harness import Trail, agent, detect, ingest, inventory

START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
READ_ONLY = [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"}]}]
AFTER = 1500  # routine calls after the incident: more than the HTML shows at the end


@pytest.fixture
def long_window(store: Store):
    """monitor reads instances for a month; on day 3 it creates a RAM user (outside its scope, a
    finding), then goes on reading for 1,500 more calls."""
    inv = inventory(agent("monitor", policies=READ_ONLY))
    trail = Trail(inv)
    for i in range(300):
        trail.add("monitor", START + timedelta(minutes=10 * i))
    trail.add("monitor", START + timedelta(days=3), "CreateUser", rw="Write", serviceName="Ram")
    for i in range(AFTER):
        trail.add("monitor", START + timedelta(days=3, minutes=1 + 20 * i))
    ingest(store, trail.events, inv)
    report = detect(store, inv, START, START + timedelta(days=30))
    assert report.new >= 1
    return store, inv, trail


def _window(**kw):
    return {"since": START, "until": START + timedelta(days=30), **kw}


def _verified_export(store, inv):
    """The monitor's export over the window: its text, its document (whose digest checks) and the replay."""
    out = io.StringIO()
    replay = write_replay(store, "monitor", inv, out, **_window())
    text = out.getvalue()
    export = json.loads(text)
    assert export_digest(export) == export["sha256"] == replay.sha256
    return text, export, replay


def test_the_streamed_export_is_the_whole_document_and_its_digest_checks(long_window):
    store, inv, trail = long_window
    text, export, replay = _verified_export(store, inv)
    assert export["summary"]["events"] == len(trail.events) == replay.report["summary"]["events"]
    assert len(export["timeline"]) == len(trail.events) + export["summary"]["findings"] == replay.entries
    # the header indented (a list's items one a line), each timeline entry compact on a line of its
    # own (grep-able, and the bytes the digest is over), the redaction note and the digest last
    start = text.index('\n  "timeline": [\n') + len('\n  "timeline": [\n')
    lines = text[start:text.index("\n  ],\n", start)].split(",\n")
    assert [json.loads(line) for line in lines] == export["timeline"]
    assert all(line.startswith("    {") and "\n" not in line for line in lines)
    assert text.endswith(f'"sha256": "{export["sha256"]}"\n}}\n')
    assert json.loads(text[:text.index('\n  "timeline"')].rstrip(",") + "}") | {"timeline": export["timeline"]} \
        == {k: v for k, v in export.items() if k not in ("redaction", "sha256")}
    assert list(export)[-3:] == ["timeline", "redaction", "sha256"]
    assert build_replay(store, "monitor", inv, **_window()) | {"generated_at": None, "sha256": None} == \
        export | {"generated_at": None, "sha256": None}


def test_a_tampered_entry_no_longer_matches_the_digest(long_window):
    store, inv, _ = long_window
    out = io.StringIO()
    write_replay(store, "monitor", inv, out, **_window())
    export = json.loads(out.getvalue())
    export["timeline"][-1]["source_ip"] = "10.0.0.1"
    assert export_digest(export) != export["sha256"]


def test_an_empty_window_is_valid_json_with_a_digest(long_window):
    store, inv, _ = long_window
    out = io.StringIO()
    write_replay(store, "monitor", inv, out, since=START - timedelta(days=60), until=START - timedelta(days=30))
    export = json.loads(out.getvalue())
    assert export["timeline"] == [] and export["summary"]["events"] == 0
    assert export_digest(export) == export["sha256"]


def test_the_html_leads_with_the_incident_in_a_long_window(long_window):
    store, inv, trail = long_window
    page = io.StringIO()
    with io.StringIO() as export:
        replay = write_replay(store, "monitor", inv, export, last=HTML_LAST, around=HTML_AROUND, **_window())
        export.seek(0)
        write_html(replay, export, page)
    html = page.getvalue()
    timeline = html[html.index("<h2>Timeline</h2>"):html.index("<h2>Evidence</h2>")]
    # the finding is shown in the timeline though 1,500 calls came after it, with the calls around it
    assert "out_of_scope" in timeline and "ram:CreateUser" in timeline
    rows = timeline.count("<tr>") + timeline.count("<tr class='finding'>")
    assert rows <= HTML_LAST + 2 * HTML_AROUND + 2 + 1
    gaps = [int(n.replace(",", "")) for n in re.findall(r"… ([\d,]+) entries not shown …", timeline)]
    shown = len(replay.shown)
    assert sum(gaps) + shown == replay.entries == len(trail.events) + replay.report["summary"]["findings"]
    # the chart: a bar per active hour over the whole window, and a labelled time axis in UTC
    bars = re.findall(r": (\d+) calls, (\d+) failed", html)
    assert sum(int(c) for c, _ in bars) == len(trail.events)
    ticks = re.findall(r">(Oct \d\d)</text>", html)
    assert ticks == ["Oct 02", "Oct 09", "Oct 16", "Oct 23", "Oct 30"] and "Times in UTC" in html
    # the complete export is embedded, and checks
    embedded = json.loads(html[html.index(">", html.index("id='trailwarden-export'")) + 1:html.rindex("</script>")])
    assert len(embedded["timeline"]) == replay.entries and export_digest(embedded) == replay.sha256


def test_the_table_shows_the_last_events_and_counts_them_all(long_window):
    store, inv, trail = long_window
    text = as_text(write_replay(store, "monitor", inv, None, with_raw=False, last=50, **_window()))
    assert f"Timeline (last 50 of {len(trail.events)} events" in text
    assert text.count("ecs:DescribeInstances") >= 50


def test_a_file_is_replaced_only_when_written_whole(tmp_path: Path):
    target = tmp_path / "evidence.json"
    target.write_text("the previous export")
    with pytest.raises(RuntimeError), written(target) as out:
        out.write('{"half": ')
        raise RuntimeError("the store went away")
    assert target.read_text() == "the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["evidence.json"]
    with written(target) as out:
        out.write("{}\n")
    assert target.read_text() == "{}\n"


def test_a_busy_agent_is_read_in_stretches_without_losing_or_reordering_an_event(long_window, monkeypatch):
    """DuckDB sorts a stretch at a time (a reader cannot spill to disk: a busy agent's whole window
    ran out of memory): cut small, the export is the same, every event once, in order."""
    from pipeline.investigate import replay as module

    store, inv, trail = long_window
    whole = io.StringIO()
    write_replay(store, "monitor", inv, whole, **_window())
    monkeypatch.setattr(module, "STRETCH", 7)
    assert len(module._stretches(store, "monitor", START, START + timedelta(days=30))) > 100
    cut = io.StringIO()
    write_replay(store, "monitor", inv, cut, **_window())
    a, b = json.loads(whole.getvalue()), json.loads(cut.getvalue())
    assert a["timeline"] == b["timeline"] and a["sha256"] != "" and len(a["timeline"]) == len(trail.events) + 1
    times = [e["event_time"] for e in b["timeline"]]
    assert times == sorted(times, key=datetime.fromisoformat)


def test_stretches_are_cut_by_the_bytes_of_their_raw_events_too(long_window, monkeypatch):
    """Two stretches are sorted at once within the store's memory limit: a stretch of big events
    holds fewer of them. Cut by bytes (each stretch at most two hours of events, whatever its
    count), the export is the same."""
    from pipeline.investigate import replay as module

    store, inv, trail = long_window
    whole = io.StringIO()
    write_replay(store, "monitor", inv, whole, **_window())
    sizes = [len(json.dumps(e, separators=(",", ":"))) for e in trail.events]
    monkeypatch.setattr(module, "STRETCH_BYTES", max(sizes) * 6)  # at most 6 events, so ~2 hours
    stretches = module._stretches(store, "monitor", START, START + timedelta(days=30))
    assert len(stretches) > 100 and max(count for _, _, count in stretches) <= 12
    cut = io.StringIO()
    write_replay(store, "monitor", inv, cut, **_window())
    assert json.loads(whole.getvalue())["timeline"] == json.loads(cut.getvalue())["timeline"]


def test_every_event_is_exported_however_small_the_batches(long_window, monkeypatch):
    """The agent's own events and those through its roles are read on cursors of their own: a
    query on the store's connection while a stretch was being read used to end that stretch after
    its first batch, and the export (and its summary) silently held only those events."""
    from pipeline.investigate import replay as module

    store, inv, trail = long_window
    monkeypatch.setattr(module, "BATCH", 5)
    out = io.StringIO()
    replay = write_replay(store, "monitor", inv, out, **_window())
    export = json.loads(out.getvalue())
    events = [e["event_id"] for e in export["timeline"] if e["kind"] == "event"]
    assert len(events) == len(set(events)) == len(trail.events) == export["summary"]["events"]
    assert export_digest(export) == replay.sha256


ODD = {"float": 2.5, "tiny": 1e-07, "huge": 1e20, "exact": 12345678901234567890123, "neg": -0.0,
       "text": "caf\u00e9 \u202egnp.exe \u007f\u0085 \U0001f600 \u001f tab\there </script> back\\slash \"q\"",
       "NextToken": "page-2", "nested": {"list": [1, 2.0, None, True, {"z": "1e5", "a": []}]}}


MAPPINGS = {"python": (10**9, 10**9), "sql": (10**9, 0), "template": (0, 0)}  # _MAP_BY_TEMPLATE, _MAP_IN_SQL


def _map_by(monkeypatch, way: str) -> None:
    import pipeline.investigate.replay as module

    by_template, in_sql = MAPPINGS[way]
    monkeypatch.setattr(module, "_MAP_BY_TEMPLATE", by_template)
    monkeypatch.setattr(module, "_MAP_IN_SQL", in_sql)


@pytest.fixture(params=list(MAPPINGS))
def mapping(request, monkeypatch):
    """The three ways replay maps a stretch's calls: in Python (a few distinct calls), and for
    many (here every stretch) by template (the calls naming one object each) then in SQL (the
    rest), or in SQL alone."""
    _map_by(monkeypatch, request.param)
    return request.param


@pytest.fixture
def odd_values(store: Store, mapping):
    """Events whose text DuckDB and Python could write differently (floats Python writes with an
    exponent, control and hidden characters, non-ASCII, big integers), each to an object of its
    own, some failed, and one whose request holds a password."""
    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    for i in range(40):
        fields = {"requestParameters": {**ODD, "i": i}} if i % 4 == 0 else {}
        trail.add("monitor", START + timedelta(minutes=i), "GetObject", serviceName="Oss",
                  error="AccessDenied" if i % 5 == 0 else None, ua=f"agent/{i % 3} \u202e\u200b",
                  referencedResources={"ACS::OSS::Object": [f"bucket/obj-{i % 7}"]}, **fields)
    trail.add("monitor", START + timedelta(hours=2), "CreateLoginProfile", serviceName="Ims", rw="Write",
              requestParameters={"UserName": "bob", "Password": "Odd-Pw-9"})
    ingest(store, trail.events, inv)
    return store, inv, trail


def test_the_three_mappings_give_the_same_export(store: Store, monkeypatch):
    """An agent that reads an object per call, with hostile names (hidden and non-ASCII
    characters, a name of ``*``, secrets), references of other shapes, resource fields that
    repeat or add to them, RAM calls whose target is in the parameters, and a sign-in: the same
    document (digest aside) whichever way its calls are mapped. (Quotes and backslashes in a
    region, a secret in an API's name.)"""
    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    names = ["b/k", "*", "b/\u202eexe.txt", "b/\u007f", "b/中文", "b/password=Hunter-22", "", "b/k"]
    for i in range(48):
        name = f"{names[i % len(names)]}-{i // 16}" if i % 8 != 1 else "*"
        refs: dict[str, Any] = {"ACS::OSS::Object": [name]} if i % 6 else {"ACS::ECS::Instance": [f"i-{i}", "i-x"]}
        fields: dict[str, Any] = {"resourceType": "ACS::OSS::Object", "resourceName": name} if i % 5 == 0 else {}
        trail.add("monitor", START + timedelta(minutes=i), "GetObject" if i % 3 else "PutObject", serviceName="Oss",
                  rw="Write" if i % 3 == 0 else "Read", error="AccessDenied" if i % 7 == 0 else None,
                  region='cn-"q\\' if i % 4 == 3 else None, referencedResources=refs, **fields)
    trail.add("monitor", START + timedelta(hours=1), "Get?password=Hunter-23", serviceName="Oss",
              referencedResources={"ACS::OSS::Object": ["b/x"]})
    for i, user in enumerate(("alice", "bob")):
        trail.add("monitor", START + timedelta(hours=2, minutes=i), "GetUser", serviceName="Ims",
                  referencedResources={"ACS::RAM::User": [user]}, requestParameters={"UserName": "alice"})
    trail.add("monitor", START + timedelta(hours=3), "ConsoleSignin", serviceName="AasSub", eventType="ConsoleSignin",
              referencedResources={"ACS::RAM::User": ["monitor"]})
    ingest(store, trail.events, inv)
    exports = {}
    for way in MAPPINGS:
        _map_by(monkeypatch, way)
        exports[way] = _normalised(_verified_export(store, inv)[0])
    assert exports["template"] == exports["python"] == exports["sql"]
    export = json.loads(exports["template"])
    shown = {r["resource"] for r in export["blast_radius"]["resources"]}
    assert any(r.endswith(":b/k-0") for r in shown) and any("\u202e" in r for r in shown)
    assert not any(r.endswith(":*") for r in shown) and "Hunter-2" not in exports["template"]
    assert "\u202e" not in exports["template"] and "\u007f" not in exports["template"]  # inert in the file


def test_odd_values_export_verifiably_inert_and_as_received(odd_values):
    store, inv, trail = odd_values
    text, export, replay = _verified_export(store, inv)
    assert "\u202e" not in text and "\u007f" not in text and "\u200b" not in text  # inert in the file...
    events = [e for e in export["timeline"] if e["kind"] == "event"]
    received = {e["eventId"]: e for e in trail.events}
    for entry in events[:-1]:  # ... and every value as received once parsed
        assert entry["raw"] == received[entry["event_id"]], entry["event_id"]
    assert "Odd-Pw-9" not in text and export["redaction"]["values_redacted"] == 1
    assert events[-1]["raw"]["requestParameters"] == {"UserName": "bob", "Password": "<redacted>"}


def _compact(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


# The text an event's JSON may arrive as (each a function of the event, whose parameters hold a
# "__N__" for a number), and what Python reads it as.
NUMBERS = {"2.50": 2.5, "1e5": 100000.0, "-0": 0, "1.0": 1.0, "12345678901234567890123": 12345678901234567890123,
           "-0.0": -0.0, "1E-7": 1e-07, "NaN": None, "7": 7}  # NaN: null, as the export writes it
RAW_TEXTS = {
    "compact": _compact,  # as LookupEvents' events are stored
    "json.dumps' defaults": json.dumps,  # ", " and ": ", non-ASCII as \uXXXX
    "slashes escaped": lambda e: _compact(e).replace("/", "\\/"),
    "a space after a brace": lambda e: _compact(e).replace('{"', '{ "', 1),
    "a space before a comma": lambda e: _compact(e).replace(',"eventName"', ' ,"eventName"'),
    "a tab": lambda e: _compact(e).replace(',"eventName"', '\t,"eventName"'),
    **{f"the number {n}": (lambda e, n=n: _compact(e).replace('"__N__"', n)) for n in NUMBERS},
}


def test_a_raw_event_is_exported_as_python_writes_it_however_its_text_was_spaced_and_escaped(store: Store,
                                                                                           tmp_path: Path):
    """DuckDB writes a raw event into its entry as stored when that is Python's compact JSON of
    it, and minifies or hands to Python the others: whichever way an event's text was written
    (spaced, indented, escaped, numbers in other forms), its entry is what Python writes of it, so
    the digest checks, and it reads back as received; a secret in a compact event is still redacted."""
    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    texts: dict[str, str] = {}
    for i, write in enumerate([*RAW_TEXTS.values(), _compact]):  # the last one indented below
        params: dict[str, Any] = {"Path": "a/b", "Note": "café", "Key": f"k-{i}", "N": "__N__"}
        event = trail.add("monitor", START + timedelta(minutes=i), "GetObject", serviceName="Oss", ua="sdk/1.0 (linux)",
                          referencedResources={"ACS::OSS::Object": [f"b/{i}"]}, requestParameters=params)
        texts[event["eventId"]] = write(event)
    indented = trail.events[-1]
    secret = trail.add("monitor", START + timedelta(hours=1), "CreateLoginProfile", serviceName="Ims", rw="Write",
                       requestParameters={"UserName": "bob", "Password": "Compact-Pw-7"})
    texts[secret["eventId"]] = _compact(secret)
    path = tmp_path / "shapes.ndjson"
    path.write_text("".join(t + "\n" for t in texts.values()), encoding="utf-8")
    report = ingest_files(store, [path], Attributor(inv))
    assert (report.new, report.quarantined) == (len(texts), 0), report
    texts[indented["eventId"]] = json.dumps(indented, indent=2, ensure_ascii=False)  # as an SLS log's event may be
    store.con.execute("UPDATE events_hot SET raw = ? WHERE event_id = ?", [texts[indented["eventId"]], indented["eventId"]])
    text, export, _ = _verified_export(store, inv)
    entries = {e["event_id"]: e for e in export["timeline"] if e["kind"] == "event"}
    assert len(entries) == len(texts)
    for event_id, received in texts.items():
        raw = json.loads(received, parse_constant=lambda _: None)
        if event_id == secret["eventId"]:
            raw["requestParameters"]["Password"] = "<redacted>"
        assert entries[event_id]["raw"] == raw, event_id
    shapes = len(RAW_TEXTS) - len(NUMBERS)  # the events before the numbers'
    numbers = [entries[e["eventId"]]["raw"]["requestParameters"]["N"] for e in trail.events[shapes:shapes + len(NUMBERS)]]
    assert numbers == list(NUMBERS.values()) and str(numbers[5]) == "-0.0"
    assert "Compact-Pw-7" not in text and export["redaction"]["values_redacted"] == 1


def test_the_blast_radius_and_summary_add_up_the_timeline(odd_values):
    """The totals are added up in DuckDB, apart from the timeline: they must say what it holds."""
    store, inv, _ = odd_values
    out = io.StringIO()
    write_replay(store, "monitor", inv, out, **_window())
    export = json.loads(out.getvalue())
    events = [e for e in export["timeline"] if e["kind"] == "event"]
    summary = export["summary"]
    assert (summary["events"], summary["failed"]) == (len(events), sum(bool(e["error_code"]) for e in events))
    assert (summary["first_event"], summary["last_event"]) == (events[0]["event_time"], events[-1]["event_time"])
    assert summary["apis"] == len({e["action"] for e in events})
    expected: dict[tuple[str, str, str], list[str]] = {}
    for e in events:
        for arn in e["resources"]:
            if not arn.endswith(":*"):
                key = (arn, "write" if e["event_rw"] == "Write" else "read", "failed" if e["error_code"] else "succeeded")
                expected.setdefault(key, []).append(e["event_time"])
    radius = export["blast_radius"]
    assert {(r["resource"], r["access"], r["outcome"]): (r["calls"], r["first_seen"], r["last_seen"])
            for r in radius["resources"]} == {k: (len(v), v[0], v[-1]) for k, v in expected.items()}
    calls = [r["calls"] for r in radius["resources"] if (r["access"], r["outcome"]) == ("read", "succeeded")]
    assert calls == sorted(calls, reverse=True)
    agents = {}
    for e in events:
        agents.setdefault(e["user_agent"], []).append(e["event_time"])
    assert [(i["value"], i["calls"], i["first_seen"], i["last_seen"]) for i in radius["user_agents"]] == sorted(
        ((v, len(t), t[0], t[-1]) for v, t in agents.items()), key=lambda i: -i[1])


def _normalised(text: str) -> str:
    """An export without what differs from run to run (when it was made, hence its digest)."""
    return re.sub(r'"(generated_at|sha256)": "[^"]*"', r'"\1": ""', text)


def test_a_file_gets_the_same_export_as_a_text_stream(odd_values, tmp_path: Path):
    """A file (UTF-8) is written the timeline's bytes as they are, not through Python's text
    layer: the same document, as inert, whose digest checks."""
    store, inv, _ = odd_values
    with written(tmp_path / "evidence.json") as out:
        on_file = write_replay(store, "monitor", inv, out, **_window())
    text = (tmp_path / "evidence.json").read_text(encoding="utf-8")
    assert "\u202e" not in text and "\u007f" not in text and "Odd-Pw-9" not in text
    assert export_digest(json.loads(text)) == on_file.sha256
    stream, _, _ = _verified_export(store, inv)
    assert _normalised(text) == _normalised(stream)


def test_the_views_keep_the_same_entries_whatever_the_batches(long_window, monkeypatch):
    """Batches without a finding hand the views only their last entries: the HTML's extract (the
    end, and the entries around each finding) is the same as when every entry is looked at."""
    from pipeline.investigate import replay as module

    store, inv, _ = long_window
    whole = write_replay(store, "monitor", inv, None, last=HTML_LAST, around=HTML_AROUND, **_window())
    monkeypatch.setattr(module, "BATCH", 7)
    small = write_replay(store, "monitor", inv, None, last=HTML_LAST, around=HTML_AROUND, **_window())
    assert [p for p, _ in small.shown] == [p for p, _ in whole.shown]
    assert any(e["kind"] == "finding" for _, e in small.shown)
    assert small.shown[-1][0] == small.entries - 1


def test_a_paging_token_alone_does_not_send_an_event_to_python(store: Store, monkeypatch, mapping):
    """``"ClientToken":`` (in most Create calls) looks like a secret's key to the cheap hint but
    names none: such events are written by DuckDB as they are, while a secret inside a paging
    token's value, or a key spelled otherwise, is still found and redacted."""
    from pipeline.investigate import replay as module

    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    for i in range(30):
        trail.add("monitor", START + timedelta(minutes=i), "RunInstances", rw="Write",
                  requestParameters={"ClientToken": f"0c593ea1-3bea-11e9-b96b-88e9fe63{i:04d}", "NextToken": "p2"})
    trail.add("monitor", START + timedelta(hours=1), "RunInstances", rw="Write",
              requestParameters={"ClientToken": "url?password=Hunter-22"})
    trail.add("monitor", START + timedelta(hours=2), "RunInstances", rw="Write",
              requestParameters={"Security_Token": "CAISfake-but-secret"})
    ingest(store, trail.events, inv)
    built: list[str] = []
    slow_line = module._Window._slow_line

    def counted(self, row):
        built.append(row["event_id"])
        return slow_line(self, row)

    monkeypatch.setattr(module._Window, "_slow_line", counted)
    text, export, _ = _verified_export(store, inv)
    assert len(built) == 2  # only the two that may hold a secret went through Python
    assert "Hunter-22" not in text and "CAISfake-but-secret" not in text
    assert export["redaction"]["values_redacted"] == 2
    tokens = [e["raw"]["requestParameters"].get("ClientToken") for e in export["timeline"] if e["kind"] == "event"]
    assert tokens[:30] == [f"0c593ea1-3bea-11e9-b96b-88e9fe63{i:04d}" for i in range(30)]  # as received


def test_the_table_reads_the_entries_of_its_last_stretches_only(long_window, monkeypatch):
    """The terminal view shows the totals and the last events, and writes no export (so shows no
    digest): it adds up every stretch and writes the entries of the last ones only - the same
    view as from the whole timeline."""
    from pipeline.investigate import replay as module

    store, inv, _ = long_window
    monkeypatch.setattr(module, "STRETCH", 40)  # ~45 stretches in the window
    written_stretches: list[bool] = []
    source = module._Window._source

    def counted(self, start, end, *, raw):
        written_stretches.append(raw)
        return source(self, start, end, raw=raw)

    monkeypatch.setattr(module._Window, "_source", counted)
    whole = write_replay(store, "monitor", inv, None, with_raw=False, last=30, **_window())
    entries_read = sum(written_stretches)
    written_stretches.clear()
    table = write_replay(store, "monitor", inv, None, with_raw=False, last=30, digest=False, **_window())
    assert sum(written_stretches) <= 2 < entries_read  # the last stretch or two, not ~45
    assert table.sha256 == "" and whole.sha256
    assert [e for _, e in table.shown] == [e for _, e in whole.shown] and len(table.shown) >= 30
    assert table.entries == whole.entries
    assert {k: v for k, v in table.report.items() if k not in ("sha256", "generated_at")} == \
        {k: v for k, v in whole.report.items() if k not in ("sha256", "generated_at")}
    assert "sha256" not in as_text(table)


def test_the_terminal_and_html_reports_cut_a_wide_blast_radius_and_say_how_much_they_leave_out(store: Store,
                                                                                               monkeypatch):
    """An agent that touched 40 buckets (one written) and came from 30 addresses: the terminal shows
    the first TEXT_ROWS of each, the write first, and how many more there are; the HTML cuts at
    HTML_ROWS; the JSON export keeps every one."""
    from pipeline.investigate.replay_views import HTML_ROWS, TEXT_ROWS

    inv = inventory(agent("monitor", policies=READ_ONLY))
    trail = Trail(inv)
    for i in range(40):
        trail.add("monitor", START + timedelta(minutes=i), "GetBucketInfo", serviceName="Oss", ip=f"198.51.100.{i % 30}",
                  referencedResources={"ACS::OSS::Bucket": [f"bucket-{i:02d}"]})
    trail.add("monitor", START + timedelta(hours=1), "PutBucketAcl", rw="Write", serviceName="Oss", ip="198.51.100.0",
              referencedResources={"ACS::OSS::Bucket": ["bucket-39"]})
    ingest(store, trail.events, inv)
    replay = write_replay(store, "monitor", inv, None, **_window(), digest=False)
    radius = replay.report["blast_radius"]
    assert len(radius["resources"]) == 41 and len(radius["source_ips"]) == 30  # the export: every one
    text = as_text(replay)
    table = text[text.index("Blast radius: resources touched"):text.index("Source IPs")]
    assert table.count("bucket-") == TEXT_ROWS
    assert table.index("write") < table.index("read")  # the write is the first row
    assert f"... and {41 - TEXT_ROWS} more resources" in table
    assert f"... and {30 - TEXT_ROWS} more source IPs" in text
    assert "more regions" not in text  # one region: nothing cut
    page = io.StringIO()
    write_html(replay, io.StringIO("{}"), page)
    assert HTML_ROWS >= 41 and "more (the first" not in page.getvalue()
    monkeypatch.setattr("pipeline.investigate.replay_views.HTML_ROWS", 10)
    page = io.StringIO()
    write_html(replay, io.StringIO("{}"), page)
    radius_html = page.getvalue()[page.getvalue().index("<h2>Blast radius</h2>"):]
    assert radius_html[:radius_html.index("<h2>Source IPs")].count("bucket-") == 10
    assert "… and 31 more (the first 10 shown" in radius_html and "… and 20 more" in radius_html


def test_a_replay_that_outgrows_the_memory_limit_says_which_setting_to_raise(store: Store):
    """Big events take several times their size while a stretch is sorted: out of DuckDB's memory
    limit, the replay fails in one line that names `memory_limit`, not with an internal error."""
    from pipeline.core.errors import TerminalError

    inv = inventory(agent("monitor", policies=READ_ONLY))
    trail = Trail(inv)
    for i in range(40):
        trail.add("monitor", START + timedelta(minutes=i), requestParameters={"Filter": f"{i}-" + "x" * 400_000})
    ingest(store, trail.events, inv)
    store.con.execute("SET memory_limit = '24MB'")
    with pytest.raises(TerminalError, match=r"raise `memory_limit` in the config"):
        write_replay(store, "monitor", inv, io.StringIO(), **_window())
    store.con.execute("SET memory_limit = '1GB'")  # and with room, the same replay is whole
    export = json.loads(_verified_export(store, inv)[0])
    assert export["summary"]["events"] == 40


def test_the_blast_radius_times_written_at_once_read_as_each_written_alone():
    """The blast radius' first and last seen are formatted together (numpy): the same text as one
    at a time, with and without microseconds, before 1970 and in year 9999."""
    import random

    from pipeline.investigate.replay import _iso, _isos

    rng = random.Random(18)
    times = [0, 1, 999_999, 1_000_000, -1, -1_000_000, 1_764_547_200_000_000, 253_402_300_799_999_999]
    times += [rng.randrange(-10**16, 2 * 10**17) for _ in range(2000)]
    times += [t - t % 1_000_000 for t in times[:1000]]  # whole seconds: no fraction written
    assert _isos(times) == [_iso(t) for t in times]
    assert _isos([]) == []


def test_a_secret_inside_a_resource_name_is_redacted_in_the_blast_radius_and_the_timeline(store: Store, mapping):
    """An object named with a password in it: the blast radius (terminal and export) and the
    entry's resources show it redacted; nothing of the secret is written."""
    inv = inventory(agent("monitor", policies=READ_ONLY))
    trail = Trail(inv)
    trail.add("monitor", START, "GetObject", serviceName="Oss",
              referencedResources={"ACS::OSS::Object": ["exports/dump?password=hunter2-leaked"]})
    trail.add("monitor", START + timedelta(minutes=1), "GetObject", serviceName="Oss",
              referencedResources={"ACS::OSS::Object": ["exports/plain.csv"]})
    trail.add("monitor", START + timedelta(minutes=2), "Probe?token=hunter3-leaked", serviceName="Oss",
              referencedResources={"ACS::OSS::Object": ["exports/probed.csv"]})
    ingest(store, trail.events, inv)
    text, export, replay = _verified_export(store, inv)
    assert "hunter2" not in text and "hunter2" not in as_text(replay)
    assert "hunter3" not in text and "hunter3" not in as_text(replay)
    shown = [r["resource"] for r in export["blast_radius"]["resources"]]
    assert any(r.endswith("exports/dump?password=<redacted>") for r in shown)
    assert any(r.endswith("exports/plain.csv") for r in shown)
    probed = next(r for r in export["blast_radius"]["resources"] if r["resource"].endswith("exports/probed.csv"))
    assert probed["actions"] == ["oss:Probe?token=<redacted>"]
    first = next(e for e in export["timeline"] if e.get("kind") == "event")
    assert first["resources"][0].endswith("password=<redacted>")


def test_the_embedded_export_escapes_what_would_end_its_script_element():
    """`</script>`, `<!--` and `&` in the embedded export are written as JSON escapes (the same
    JSON once parsed), wherever they are in the text."""
    from pipeline.investigate.replay_views import _script_safe

    text = '{"a":"</script><!--<script>&amp;","b":["x>y", "&&"]}'
    safe = _script_safe(text)
    assert not any(c in safe for c in "<>&") and json.loads(safe) == json.loads(text)
    assert _script_safe('{"plain":"text"}') == '{"plain":"text"}'


@pytest.mark.parametrize("objects", ["shared", "own"])
def test_the_blast_radius_is_merged_across_stretches_and_ordered_as_first_touched(store: Store, monkeypatch,
                                                                                   mapping, objects):
    """Resources are kept in DuckDB and written as JSON texts (an agent may touch a million
    objects): each (resource, access, outcome) once, with its calls, sorted actions and first and
    last times over every stretch; writes first, then succeeded, then the most called, ties in the
    order first touched (time, event, position in the call); odd names written as Python writes
    them (the digest checks)."""
    import pipeline.investigate.replay as module

    monkeypatch.setattr(module, "STRETCH", 7)
    names = ['b/plain', 'b/"quoted"', "b/caf\u00e9 \u2028 \u001f \U0001f600", "b/back\\slash", "b/z-last", "b/a-first"]
    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    for i in range(60):
        picked = [names[(i * 5) % 6], names[(i + 1) % 6]] if i % 3 else [names[i % 6]]
        if objects == "own":  # each call an object of its own: nothing to merge
            picked = [f"{names[i % 6]}-{i}"]
        trail.add("monitor", START + timedelta(minutes=7 * i), ("GetObject", "HeadObject", "PutObject")[i % 3],
                  serviceName="Oss", rw="Write" if i % 3 == 2 else "Read", error="AccessDenied" if i % 4 == 0 else None,
                  referencedResources={"ACS::OSS::Object": list(dict.fromkeys(picked))})
    ingest(store, trail.events, inv)
    _, export, _ = _verified_export(store, inv)
    expected: dict[tuple[str, str, str], list[Any]] = {}
    for e in (e for e in export["timeline"] if e["kind"] == "event"):
        key_of = ("write" if e["event_rw"] == "Write" else "read", "failed" if e["error_code"] else "succeeded")
        for index, arn in enumerate(e["resources"]):
            item = expected.setdefault((arn, *key_of), [0, set(), e["event_time"], e["event_time"],
                                                        (e["event_time"], e["event_id"], index)])
            item[0] += 1
            item[1].add(e["action"])
            item[3] = e["event_time"]
            item[4] = min(item[4], (e["event_time"], e["event_id"], index))
    ordered = sorted(expected.items(), key=lambda kv: (kv[0][1] != "write", kv[0][2] != "succeeded", -kv[1][0], kv[1][4]))
    assert [(r["resource"], r["access"], r["outcome"], r["calls"], r["actions"], r["first_seen"], r["last_seen"])
            for r in export["blast_radius"]["resources"]] == [
        (arn, access, outcome, calls, sorted(actions), first, last)
        for (arn, access, outcome), (calls, actions, first, last, _) in ordered]
    assert len({r["calls"] for r in export["blast_radius"]["resources"]}) < len(ordered)  # ties were ordered
    assert (len(ordered) == 60) == (objects == "own")


def test_a_blast_radius_too_wide_for_the_memory_limit_fails_in_one_line_naming_the_setting():
    """The blast radius' resources are merged in a DuckDB of the replay's own, under the store's
    memory limit: running out says which setting to raise, it is no internal error."""
    import pyarrow as pa

    from pipeline.core.errors import TerminalError
    from pipeline.investigate.replay import _Touched

    n = 300_000
    touched = _Touched("16MB")
    part = pa.table([pa.array([f"acs:oss:cn-hangzhou:1:bucket/exports/object-{i:09d}.parquet" for i in range(n)]),
                     pa.array(["read"] * n), pa.array(["succeeded"] * n), pa.array([1] * n, pa.int64()),
                     pa.array(["oss:GetObject"] * n), pa.array(range(n), pa.int64()), pa.array(range(n), pa.int64()),
                     pa.array([f"event-{i:030d}" for i in range(n)]), pa.array([0] * n, pa.int32())],
                    names=list(_Touched._COLUMNS))
    touched.add_stretch(part, [])
    with pytest.raises(TerminalError, match=r"memory limit \(16MB\).*blast radius.*raise `memory_limit`"):
        radius = touched.resources()
        list(radius.chunks())


def test_findings_among_entries_with_hidden_characters_are_written_in_place_and_inert(odd_values):
    """The events before a finding go out together, then the finding: the timeline keeps its
    order, the entries with hidden characters are escaped in the file, and the digest checks."""
    store, inv, trail = odd_values
    detect(store, inv, START - timedelta(days=1), START + timedelta(days=1))
    text, export, replay = _verified_export(store, inv)
    timeline = export["timeline"]
    findings = [i for i, e in enumerate(timeline) if e["kind"] == "finding"]
    assert any(0 < i < len(timeline) - 1 for i in findings)  # a finding between events
    assert [e["event_time"] for e in timeline] == sorted(e["event_time"] for e in timeline)
    assert len(timeline) == len(trail.events) + len(findings) == replay.entries
    assert "\u202e" not in text and "\u200b" not in text
    escaped = [line for line in text.split("\n") if '"kind":"event"' in line and "\\u202e" in line]
    assert len(escaped) == len(trail.events) - 1  # all but the password's event (no user agent)


def test_the_calls_mapping_kept_on_disk_between_the_two_passes_gives_the_same_export(long_window, monkeypatch,
                                                                                      mapping):
    """Each stretch's RAM mapping is kept from the pass that adds the window up to the one that
    writes its entries: in memory while small, then in a file (an agent that reads an object per
    call has a mapping per event). Either way, the same export."""
    from pipeline.investigate import replay as module

    store, inv, _ = long_window
    monkeypatch.setattr(module, "STRETCH", 50)  # ~36 stretches
    held, _, _ = _verified_export(store, inv)
    monkeypatch.setattr(module._KeptFacts, "KEPT", 0)
    on_disk, export, _ = _verified_export(store, inv)
    assert _normalised(on_disk) == _normalised(held)
    assert len(export["timeline"]) > 1800


def test_events_stored_out_of_time_order_are_exported_in_it(store: Store):
    """The entries come from DuckDB in the order they were stored and are sorted only when that
    is not theirs: a trail delivered backwards, with events sharing a second, still exports
    oldest first, ties by event id, the same document as the trail delivered in order."""
    inv = inventory(agent("monitor", policies=READ_ONLY))
    trail = Trail(inv)
    for i in range(60):
        trail.add("monitor", START + timedelta(seconds=10 * (i // 3)))  # three events a second
    ingest(store, list(reversed(trail.events)), inv)
    text, export, _ = _verified_export(store, inv)
    keys = [(e["event_time"], e["event_id"]) for e in export["timeline"]]
    assert keys == sorted(keys) and len(keys) == 60
    assert len({t for t, _ in keys}) == 20


def test_a_blast_radius_read_as_stored_is_the_sorted_one_and_pages_alike(monkeypatch):
    """Resources named once each are read group by group (access, outcome, calls) in the order
    stored, which is the order first touched; the same as sorting them, whole or a page at a time
    (the views read pages), across groups and stretches."""
    import pyarrow as pa

    from pipeline.investigate.replay import _Touched

    def stretch(k: int) -> pa.Table:
        rows = [(f"acs:oss:cn-hangzhou:1:b/{k}-{i}", "write" if i % 3 == 0 else "read",
                 "failed" if i % 4 == 0 else "succeeded", 1 + i % 2, "oss:GetObject",
                 k * 1000 + (37 * i) % 50, k * 1000 + 60, f"e-{k}-{(37 * i) % 50:03d}", 0) for i in range(50)]
        columns = zip(zip(*rows, strict=True), _Touched._TYPES, strict=True)
        return pa.table([pa.array(c, t) for c, t in columns], names=list(_Touched._COLUMNS))

    def read(groups: int) -> tuple[list[str], dict[tuple[int, int], list[str]]]:
        monkeypatch.setattr(_Touched, "GROUPS", groups)
        monkeypatch.setattr(_Touched, "KEPT", 60)  # several inserts
        touched = _Touched("256MB")
        for k in (0, 1, 2):
            touched.add_stretch(stretch(k), [])
        radius = touched.resources()
        assert (touched._groups is not None) == (groups > 0)
        pages = {(start, size): [t for c in touched.texts(start, size) for t in c.to_pylist()]
                 for start in (0, 1, 24, 37, 38, 75, 149, 150) for size in (1, 13, 40, 200)}
        return list(radius.texts()), pages

    as_stored, sorted_ = read(64), read(0)
    assert len(as_stored[0]) == 150 and as_stored == sorted_
    firsts = [json.loads(t)["first_seen"] for t in as_stored[0]][:20]
    assert firsts == sorted(firsts)  # within the first group, as first touched


@pytest.mark.parametrize("case", ["in order", "runs interleaved", "runs overlapping", "out of order in a batch",
                                  "ties across batches", "ties out of order"])
def test_a_stretch_s_entries_come_out_oldest_first_ties_by_event_id_whatever_order_duckdb_gave(case: str):
    """DuckDB gives a stretch's entries as stored, or as runs in order from its two threads
    interleaved batch by batch: whatever it gave, the entries come out by time then event id,
    each once, with the texts that went in."""
    import pyarrow as pa

    from pipeline.investigate.replay import _in_time_order

    rows = [(1000 + 10 * i, f"e-{i:03d}") for i in range(40)]
    if case.startswith("ties"):
        rows = [(1000 + 10 * (i // 4), f"e-{i:03d}") for i in range(40)]
    runs = {"in order": [rows[:10], rows[10:20], rows[20:30], rows[30:]],
            "runs interleaved": [rows[20:30], rows[:10], rows[30:], rows[10:20]],
            "runs overlapping": [rows[:10:2], rows[1:10:2] + rows[10:20], rows[20:]],  # each row once
            "out of order in a batch": [rows[:10], rows[10:15] + rows[25:30] + rows[15:25], rows[30:]],
            "ties across batches": [rows[2:6], rows[:2], rows[6:]],
            "ties out of order": [sorted(rows, key=lambda r: (r[0], -int(r[1][2:])))]}[case]  # ids descending
    batches = [pa.record_batch({"t": pa.array([t for t, _ in run], pa.int64()), "event_id": [e for _, e in run],
                                "line": [f"{{{e}}}," for _, e in run]}) for run in runs]
    out = _in_time_order(pa.Table.from_batches(batches))
    got = list(zip(out.column("t").to_pylist(), out.column("event_id").to_pylist(), strict=True))
    assert got == sorted(rows)
    assert out.column("line").to_pylist() == [f"{{{e}}}," for _, e in sorted(rows)]


def test_a_stretch_s_calls_are_told_from_its_other_aggregates_wherever_duckdb_put_them():
    """The aggregate query gives the calls' rows and the other kinds' in one result, the calls
    first nearly always: either way, each row lands on its side once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.investigate.replay import _split

    for kinds in (["call", "call", "hour", "all"], ["hour", "call", "all", "call"], ["all"], ["call"]):
        table = pa.table({"kind": kinds, "n": list(range(len(kinds)))})
        calls, others = _split(table, pc.equal(table.column("kind"), "call").combine_chunks())
        assert calls.column("n").to_pylist() == [i for i, k in enumerate(kinds) if k == "call"]
        assert others.column("n").to_pylist() == [i for i, k in enumerate(kinds) if k != "call"]


def test_an_event_id_stored_twice_still_gets_each_event_its_own_resources(store: Store, monkeypatch):
    """Calls of one event are joined to their mapping by event id. Ids are unique in a sound
    store; were one stored twice, for two objects, the join by id would give one of them the
    other's resource: each event still shows its own, as when the calls are mapped by facts."""
    inv = inventory(agent("monitor"))
    trail = Trail(inv)
    for i in range(30):
        trail.add("monitor", START + timedelta(minutes=i), "GetObject", serviceName="Oss",
                  referencedResources={"ACS::OSS::Object": [f"b/obj-{i}"]})
    ingest(store, trail.events, inv)
    twice = trail.events[7]["eventId"]
    store.con.execute(
        "INSERT INTO events_hot SELECT * REPLACE (event_time + INTERVAL 30 SECOND AS event_time, "
        "replace(referenced_resources::VARCHAR, 'b/obj-7', 'b/other-7') AS referenced_resources) "
        "FROM events_hot WHERE event_id = ?", [twice])
    exports = {}
    for way in ("template", "python"):
        _map_by(monkeypatch, way)
        exports[way] = _normalised(_verified_export(store, inv)[0])
    assert exports["template"] == exports["python"]
    entries = [e for e in json.loads(exports["template"])["timeline"] if e["event_id"] == twice]
    assert sorted(r.rsplit(":", 1)[1] for e in entries for r in e["resources"]) == ["b/obj-7", "b/other-7"]
