"""The replay streams (issue 18 item 5): an export written as the events are read, the same
document as before, whose digest checks; an HTML page that leads with the incident in a long window,
with a time axis; a file written in place only when complete."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.core.output import json_text, written
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


def test_the_streamed_export_is_the_whole_document_and_its_digest_checks(long_window):
    store, inv, trail = long_window
    out = io.StringIO()
    replay = write_replay(store, "monitor", inv, out, **_window())
    text = out.getvalue()
    export = json.loads(text)
    assert export_digest(export) == export["sha256"] == replay.sha256
    assert export["summary"]["events"] == len(trail.events) == replay.report["summary"]["events"]
    assert len(export["timeline"]) == len(trail.events) + export["summary"]["findings"] == replay.entries
    # the header indented, each timeline entry compact on a line of its own (grep-able, and the
    # bytes the digest is over), the redaction note and the digest last
    head = {k: v for k, v in export.items() if k not in ("timeline", "redaction", "sha256")}
    entries = ",".join("\n    " + json_text(e, separators=(",", ":")) for e in export["timeline"])
    trailer = {"redaction": export["redaction"], "sha256": export["sha256"]}
    assert text == (json_text(head, indent=2)[:-2] + ',\n  "timeline": [' + entries + "\n  ],"
                    + json_text(trailer, indent=2)[1:] + "\n")
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
