"""SLS batches parsed by DuckDB (issue 18, item 4): with ``TRAILWARDEN_INGEST_PARSER=duckdb`` the
``event`` texts of a shard's pulls go through the statements that parse a file's lines, and what
is stored is exactly what the Python parser stores. What a user would notice if this broke: an
event stored with other values than its raw JSON, a bad log stored or lost instead of
quarantined with today's reason and location, a cursor committed with logs it does not cover (a
kill -9 then loses or doubles events).

Every test reads the same fake logstore (``tests.fakes.sls``, the real SDK) once per parser and
compares what each stored; each also checks that DuckDB decided most logs, so that it fails when
the reader ignores the native path.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.demo import synthetic
from pipeline.ingest import native
from pipeline.ingest.batches import Batch
from pipeline.ingest.run import ingest_batches
from pipeline.ingest.sources import credentials, sls
from pipeline.ingest.sources.sls import SlsReader, client_for
from pipeline.store.store import Store, open_store
from tests.conftest import BASE_EVENT, kill_after_commits
from tests.fakes.sls import Contents, FakeSLS
from tests.sources.conftest import ids
from tests.sources.test_sls import (
    KILLER,
    LOGSTORE,
    NOBODY,
    NOW,
    PROJECT,
    events,
    iso,
    own_connection,
    partition,
    received,
    source,
)


@pytest.fixture
def fake():
    with FakeSLS(PROJECT, LOGSTORE, shards=2) as f:
        yield f


@pytest.fixture
def sql_lines(monkeypatch) -> list[int]:
    """How many ``event`` texts DuckDB was handed and how many it left to the Python rule:
    ``[handed, left]``, summed over the run."""
    counts = [0, 0]
    texts, python = native.NativeReader.texts, native.NativeReader._python

    def counting_texts(self: Any, given: list[str | None], *args: Any) -> Any:
        counts[0] += sum(t is not None for t in given)
        return texts(self, given, *args)

    def counting_python(self: Any, origin: Any, undecided: list[Any], *args: Any) -> Any:
        counts[1] += sum(line is not None for _, line in undecided)
        return python(self, origin, undecided, *args)

    monkeypatch.setattr(native.NativeReader, "texts", counting_texts)
    monkeypatch.setattr(native.NativeReader, "_python", counting_python)
    return counts


def _event(n: int | str, **fields: Any) -> dict[str, Any]:
    return {**BASE_EVENT, "eventId": f"mixed-{n}", "eventTime": iso(NOW - timedelta(minutes=20)), **fields}


def _text(event: dict[str, Any], **dumps: Any) -> str:
    return json.dumps(event, **({"ensure_ascii": False} | dumps))


def mixed_logs() -> list[Any]:
    """One pull's logs: good events, and every kind of log the two parsers could part on."""
    good = _text(_event("good"))
    ui = BASE_EVENT["userIdentity"]
    return [
        _event(0), _event(1),
        "{\"eventId\": \"broken\", ",  # bad JSON
        _text(_event("dup-key")).replace('"ci-deploy"', '"ci-deploy", "userName": "root"'),  # a duplicate key
        good[:-1] + ', "eventName": "StopInstances"}',  # a top-level duplicate
        _text(_event("dup-escaped"))[:-1] + ', "event\\u0049d": "other"}',  # the same key, escaped
        Contents(owner_id="1384926508761234", note="no event key here"),  # a log without `event`
        _text(_event("escaped", userAgent='a"b\\c\n\u00e9 \U0001F600', userIdentity={**ui, "userName": 'x"y'}),
              ensure_ascii=True),  # escaped strings
        _text(_event("signin", eventName="ConsoleSignin", additionalEventData={"MFAUsed": "true"})),
        _text(_event("old", eventTime="2009-12-31T23:59:59Z")),  # out of range: before 2010
        _text(_event("future", eventTime=iso(NOW + timedelta(days=3)))),  # out of range: days ahead
        _text(_event("noz", eventTime="2026-11-02T03:04:05")),  # a time SQL leaves to Python
        _text(_event("surrogate", userAgent="x")).replace('"x"', '"\\ud800"'),  # a lone surrogate, escaped
        '{"eventId": "deep", "x": ' + "[" * 1200 + "]" * 1200 + "}",  # nested too deep
        good[:-1] + ",}",  # a trailing comma: DuckDB's parser takes it, ours refuses
        "", "   ", "null", "[]", "{}",
        " " + _text(_event("padded")) + "\n",  # whitespace around an event
        _text(_event("pretty"), indent=2),  # an event over several lines
        _text(_event("pretty-crlf"), indent=1).replace("\n", "\r\n"),
        "\ufeff" + _text(_event("bom")),
        good + "\n" + _text(_event("second")),  # two events in one log (one per line of a file)
        good + _text(_event("glued")), good + " {}",
        _text(_event("formfeed")).replace(", ", ",\x0c", 1), _text(_event("nbsp")).replace(", ", ",\u00a0", 1),
        _text(_event("vtab")).replace(", ", ",\x0b", 1), _text(_event("nan", responseElements={"x": float("nan")})),
        _text({"Events": [_event("lookup-1"), _event("lookup-2")]}),  # a LookupEvents body as one log
        _text(_event("ctrl", userAgent="a\u0001b")).replace("\\u0001", "\u0001"),  # a raw control character
        _text(_event("nul", userAgent="a\u0000b")).replace("\\u0000", "\u0000"),  # a raw NUL
        _text(_event("refs", referencedResources={"ACS::ECS::Instance": ["i-1", 2]})),  # refs only Python reads
        _text(_event("ui-str", userIdentity="root")),
        _text(_event("float-version", eventVersion=1.0)),
        _event(0),  # a re-delivery: stored once
        _event(1, eventTime=iso(NOW - timedelta(days=5))),  # a forged copy: quarantined as a conflict
        _text(_event("long", userAgent="x" * 6000)),  # over the (lowered) item limit
        _text(_event("latin1", userAgent="caf\u00e9")).encode("latin-1"),  # not UTF-8: bytes from the SDK
        _text(_event("utf8-bytes", userAgent="caf\u00e9")).encode(),
        _event(2),
    ]


def read_with(parser: str, db: Path, fake: FakeSLS, monkeypatch: pytest.MonkeyPatch, batch_size: int,
              **cfg: Any) -> dict[str, Any]:
    """One run of the reader with ``parser`` into a fresh store: what was stored, the
    quarantine in the order it was written, the committed state, and each batch's cursor and
    state as the reader handed it over."""
    monkeypatch.setenv(native.PARSER_ENV, parser)
    handed: list[tuple[Any, ...]] = []

    def tap(batches: Any) -> Any:
        for batch in batches:
            handed.append(_handed(batch))
            yield batch

    with open_store(db) as store:
        config = source(fake, **cfg)
        reader = SlsReader(config, client_for(config, credentials.from_env()), own_connection(store), now=NOW)
        report = ingest_batches(store, tap(reader.batches(NOBODY, batch_size)))
        return {"events": _events(store), "quarantine": _quarantine(store), "state": _state(store),
                "report": report.as_dict(), "batches": handed,
                "logs": {s: r.logs for s, r in reader.report.shards.items()}}


def _handed(batch: Batch) -> tuple[Any, ...]:
    """A batch as the writer gets it: its cursor, its state, and how many logs it holds."""
    events = batch.table.num_rows if batch.table is not None else len(batch.events)
    return batch.partition, batch.cursor, sorted(batch.state), events + len(batch.bad)


def _events(store: Store) -> list[tuple[Any, ...]]:
    columns = [r[0] for r in store.con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events' AND column_name <> 'ingested_at' "
        "ORDER BY column_index").fetchall()]
    return store.con.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY event_id, event_time").fetchall()


def _quarantine(store: Store) -> list[tuple[Any, ...]]:
    return store.con.execute("SELECT source, location, reason, raw FROM quarantine ORDER BY rowid").fetchall()


def _state(store: Store) -> list[tuple[Any, ...]]:
    cursors = store.con.execute(
        "SELECT source, partition, cursor, watermark, events FROM ingest_state ORDER BY partition").fetchall()
    named = store.con.execute("SELECT name, CASE WHEN name LIKE 'sls.drained:%' THEN '' ELSE value END "
                              "FROM pipeline_state WHERE name LIKE 'sls.%' ORDER BY name").fetchall()
    return cursors + named


def test_a_mixed_pull_is_stored_and_quarantined_exactly_as_by_the_python_parser(tmp_path, fake, monkeypatch,
                                                                               sql_lines):
    monkeypatch.setattr(sls, "MAX_ITEM_BYTES", 5000)  # demo events are ~1.3 KB: only the long log is over
    demo = list(synthetic.stream(400, seed=5))
    logs = demo[:200] + mixed_logs() + demo[200:]
    fake.add_events(0, logs, receive_time=int(NOW.timestamp()))
    python = read_with("python", tmp_path / "python.duckdb", fake, monkeypatch, 10_000)
    assert sql_lines == [0, 0]
    duck = read_with("duckdb", tmp_path / "duckdb.duckdb", fake, monkeypatch, 10_000)
    assert duck == python
    handed, left = sql_lines
    # DuckDB got every text but those quarantined before parsing (no `event`, too long, not UTF-8)
    # and decided all but a few dozen odd ones
    assert handed == len(logs) - 3 and left < 40
    reasons = [(loc.rsplit(" ", 1)[1], reason.split(":")[0]) for _, loc, reason, _ in duck["quarantine"]]
    assert ("202", "malformed JSON") in reasons and ("203", 'duplicate key "userName" in userIdentity') in reasons
    assert any(r.startswith("no `event` content") for _, r in reasons)
    assert any(r.startswith("eventId already stored") for _, r in reasons)  # the forged copy, located
    assert duck["report"]["new"] > 400 and duck["report"]["quarantined"] > 15


def test_batches_commit_the_same_cursors_and_shard_state_as_with_the_python_parser(tmp_path, fake, monkeypatch,
                                                                                  sql_lines):
    """Batches of 10 logs cut across pulls of 3 groups of 7: each batch carries the cursor of the
    pulls it holds whole, the receive time, and a drained read-only parent's mark, as today."""
    evs = events("a", 150)
    bad = ["{\"eventId\": \"broken\", ", Contents(note="no event"), _text(_event("old", eventTime="2001-01-01T00:00:00Z"))]
    logs: list[Any] = [*evs[:40], *bad, *evs[40:100]]
    for start in range(0, len(logs), 7):
        fake.add_events(0, logs[start:start + 7], receive_time=received(evs[:40]))
    fake.add_events(1, evs[100:120], group_size=7, receive_time=received(evs[100:120]))
    children = fake.split(1)
    fake.add_events(children[0], evs[120:150], group_size=7, receive_time=received(evs[120:150]))
    python = read_with("python", tmp_path / "python.duckdb", fake, monkeypatch, 10)
    duck = read_with("duckdb", tmp_path / "duckdb.duckdb", fake, monkeypatch, 10)
    assert duck == python
    assert sql_lines[0] == 152 and sql_lines[1] == 2  # DuckDB read every event; Python the two bad texts
    assert len(duck["batches"]) > 15 and {cursor for _, cursor, _, _ in duck["batches"]} - {None}
    names = [row[0] for row in duck["state"] if isinstance(row[0], str) and row[0].startswith("sls.")]
    assert any(n.startswith("sls.drained:") and n.endswith(partition(1)) for n in names)
    cursors = {row[1]: row[2] for row in duck["state"] if row[0] == "trail"}
    assert fake.position(cursors[partition(0)]) == (0, fake.size(0))


# The SLS kill test's child (tests/sources/test_sls.py), which also notes in a file (argv[3]) each
# time DuckDB is handed a batch's texts: the test then knows the native path ran.
NATIVE_KILLER = """
import sys
from pipeline.ingest import native
_texts = native.NativeReader.texts
def _noting(self, *args, **kwargs):
    with open(sys.argv[3], "a") as note:
        note.write("texts\\n")
    return _texts(self, *args, **kwargs)
native.NativeReader.texts = _noting
""" + KILLER


@pytest.mark.slow  # kill -9 of a process
def test_kill_9_in_the_middle_of_a_pull_with_duckdb_parsing_then_a_retry_stores_each_event_once(
        tmp_path, fake, monkeypatch, sql_lines):
    monkeypatch.setenv(native.PARSER_ENV, "duckdb")
    evs = events("a", 238)
    bad = ["{\"eventId\": \"broken\", ", Contents(note="no event")]
    fake.add_events(0, [*evs[:10], *bad, *evs[10:38]], receive_time=received(evs))
    fake.add_events(0, evs[38:118], group_size=40, receive_time=received(evs))
    fake.add_events(1, evs[118:], group_size=40, receive_time=received(evs))
    cfg = source(fake, batch_size=3)  # one pull = a whole shard = 120 logs = batches of 50, 50, 20
    db, noted = tmp_path / "s.duckdb", tmp_path / "native.txt"
    kill_after_commits(NATIVE_KILLER, [str(db), cfg.model_dump_json(), str(noted)], 2)
    assert noted.read_text().count("texts") >= 2  # the child parsed with DuckDB
    con = duckdb.connect(str(db), read_only=True)
    partial = con.execute("SELECT count(*) FROM events").fetchone()
    quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    state = con.execute("SELECT cursor FROM ingest_state WHERE partition = ?", [partition(0)]).fetchall()
    con.close()
    assert (partial, quarantined) == ((98,), (2,))  # two batches of the pull committed ...
    assert state == [(None,)]  # ... without the pull's cursor, which rides with its last batch
    with open_store(db) as store:
        reader = SlsReader(cfg, client_for(cfg, credentials.from_env()), own_connection(store))
        report = ingest_batches(store, reader.batches(NOBODY, 50))
        assert (report.new, report.duplicates) == (140, 98)
        assert ids(store) == ({e["eventId"] for e in evs}, 238)
        assert store.con.execute("SELECT count(*) FROM quarantine").fetchone() == (2,)
        assert fake.position(store.get_state("trail", partition(0))[0]) == (0, 3)
    assert sql_lines[0] == 239  # the retry parsed with DuckDB too (the shard-0 pull again, and shard 1)
