"""Hostile and broken input at ingest (issue 13, items 5, 6, 7 and 10): every item and every file
stands alone. What a user would notice if these broke: a whole ingest (or every service cycle)
failing on one bad line, good events beside it never stored, events dropped or changed without
a word, the same eventId stored twice, parse workers left running after a kill -9.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from models.inventory import Attributor, Inventory
from pipeline.core.config import load_config
from pipeline.ingest import run as ingest_mod
from pipeline.ingest.run import ingest_files, ingest_sources
from pipeline.ingest.sources import files
from pipeline.service.cycle import run_cycle
from pipeline.store.store import open_store
from tests.conftest import BASE_EVENT, ROOT, kill_after_commits, write_ndjson

NOBODY = Attributor(None)
MIB = 1024 * 1024


def ev(n: int | str, **fields: Any) -> dict[str, Any]:
    event = copy.deepcopy(BASE_EVENT)
    event["eventId"] = f"ev-{n}"
    event.update(fields)
    return event


def line(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False)


def quarantine(store) -> dict[str, tuple[str, str]]:
    """location -> (reason, raw)"""
    return {loc: (reason, raw) for loc, reason, raw in
            store.con.execute("SELECT location, reason, raw FROM quarantine").fetchall()}


def stored_ids(store) -> list[str]:
    return sorted(r[0] for r in store.con.execute("SELECT event_id FROM events").fetchall())


# Poison that used to end the whole ingest (RecursionError, UnicodeEncodeError, a DuckDB
# constraint error reported as TransactionException), and an ambiguous event (duplicate key).
DEEP = '{"eventId": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
SURROGATE_USER = line(ev("surrogate-user")).replace('"ci-deploy"', '"\\ud800"')
SURROGATE_PARAM = line(ev("surrogate-param")).replace('"100"', '"x\\udfff"')
DUPLICATE_KEY = line(ev("dup")).replace('"userName": "ci-deploy"', '"userName": "ci-deploy", "userName": "root"')
POISON = {DEEP: "JSON nested too deeply",
          SURROGATE_USER: "string is not valid Unicode: lone surrogate in userIdentity.userName",
          SURROGATE_PARAM: "string is not valid Unicode: lone surrogate in requestParameters.PageSize",
          DUPLICATE_KEY: 'duplicate key "userName" in userIdentity: ambiguous'}


def poisoned_drop(folder: Path, good: int = 300) -> tuple[Path, list[str]]:
    """good.jsonl, poisoned.jsonl (good lines with the poison between them), poisoned.json (an
    array with the poison as elements); returns the folder and the good event ids."""
    folder.mkdir(parents=True, exist_ok=True)
    events = [ev(i) for i in range(good)]
    write_ndjson(folder / "good.jsonl", events[:100])
    lines = [line(e) for e in events[100:200]]
    for i, bad in enumerate(POISON):
        lines.insert(10 + 20 * i, bad)
    (folder / "poisoned.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elements = [line(e) for e in events[200:]]
    for i, bad in enumerate(POISON):
        elements.insert(5 + 10 * i, bad)
    (folder / "poisoned.json").write_text("[\n" + ",\n".join(elements) + "\n]\n", encoding="utf-8")
    return folder, [e["eventId"] for e in events]


@pytest.mark.parametrize("mode", ["here", "pool"])
def test_each_poison_item_is_quarantined_and_every_good_event_stored(tmp_path, monkeypatch, mode):
    """Was: the first poison line raised (RecursionError ...) and nothing of the ingest was kept.
    ``pool`` runs the same file through the parallel parse workers (the 53 MB case)."""
    if mode == "pool":
        monkeypatch.setattr(ingest_mod, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(ingest_mod.files, "scan_file",
                            lambda p, _orig=files.scan_file: _orig(p, chunk_bytes=16 * 1024))
    folder, good = poisoned_drop(tmp_path / "drop")
    with open_store(tmp_path / "s.duckdb") as store:
        report = ingest_files(store, [folder], NOBODY, workers=2)
        assert (report.new, report.quarantined, report.files) == (300, 8, 3)
        assert stored_ids(store) == sorted(good)
        rows = quarantine(store)
        for bad, reason in POISON.items():
            found = [(loc, r) for loc, (r, raw) in rows.items() if raw == bad]
            assert len(found) == 2, (reason, found)  # once from the NDJSON file, once from the array
            assert all(r.startswith(reason) for _, r in found), found
        assert {loc.rsplit("/", 1)[1] for loc in rows} == {
            "poisoned.jsonl:11", "poisoned.jsonl:31", "poisoned.jsonl:51", "poisoned.jsonl:71",
            "poisoned.json[5]", "poisoned.json[15]", "poisoned.json[25]", "poisoned.json[35]"}
        again = ingest_files(store, [folder], NOBODY, workers=2)  # the retry does not redo the work
        assert (again.files, again.skipped_files, again.new) == (0, 3, 0)
        assert len(quarantine(store)) == 8


def test_a_service_cycle_with_a_poison_file_stores_the_good_events_and_the_next_cycle_is_ok(tmp_path):
    """Was: 25 of 25 cycles failed under `serve`, 0 of 450 events stored."""
    folder, good = poisoned_drop(tmp_path / "incoming")
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(f"database: {tmp_path / 'tw.duckdb'}\nsources:\n  - {{name: drop, type: files, path: {folder}}}\n")
    config, db = load_config(cfg), tmp_path / "tw.duckdb"
    first = run_cycle(config, Inventory(), db, echo=lambda _m: None, snapshot=False)
    assert first.ok, [(s.name, s.error) for s in first.steps]
    assert first.steps[0].counts["drop"]["new"] == 300 and first.steps[0].counts["drop"]["quarantined"] == 8
    write_ndjson(folder / "later.jsonl", [ev("later")])
    second = run_cycle(config, Inventory(), db, echo=lambda _m: None, snapshot=False)
    assert second.ok, [(s.name, s.error) for s in second.steps]
    assert second.steps[0].counts["drop"].items() >= {"new": 1, "files": 1, "skipped_files": 3}.items()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall() == [(301, 301)]
        assert con.execute("SELECT count(*) FROM quarantine").fetchall() == [(8,)]


# -- sizes ----------------------------------------------------------------------------------------
def _peak_rss_mib(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``trailwarden *args`` under a fresh Python whose only child it is; its peak RSS."""
    probe = ("import resource, subprocess, sys, json\n"
             "r = subprocess.run([sys.executable, '-m', 'pipeline', *sys.argv[1:]], capture_output=True, text=True)\n"
             "print(json.dumps([r.returncode, r.stdout, r.stderr,"
             " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n")
    out = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=600)
    code, stdout, stderr, kib = json.loads(out.stdout)
    return subprocess.CompletedProcess(args, code, stdout, stderr), kib / 1024


@pytest.mark.slow
def test_a_1_gib_line_in_a_small_gzip_is_quarantined_as_an_excerpt_in_bounded_memory(tmp_path):
    """Was: a 1 MB gzip of one 1 GiB line peaked at 3.5 GB and died with TransactionException."""
    path = tmp_path / "bomb.json.gz"
    head = b'{"eventId": "huge", "pad": "'
    size = 1024 * MIB
    with path.open("wb") as fh:
        packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing; fast rather than small
        fh.write(packer.compress(head))
        block = b"A" * MIB
        for _ in range(size // MIB):
            fh.write(packer.compress(block))
        fh.write(packer.compress(b'"}\n' + line(ev("after")).encode() + b"\n"))
        fh.write(packer.flush())
    assert path.stat().st_size < 8 * MIB
    db = tmp_path / "s.duckdb"
    result, peak = _peak_rss_mib(["ingest", "--file", str(path), "--db", str(db)])
    assert result.returncode == 0, result.stderr
    assert "1 new events, 0 duplicates, 1 quarantined from 1 file" in result.stdout
    assert peak < 512, f"peak RSS {peak:.0f} MiB"  # measured 368 (start-up alone: 140)
    with duckdb.connect(str(db), read_only=True) as con:
        [(location, reason, kept)] = con.execute("SELECT location, reason, length(raw) FROM quarantine").fetchall()
        assert con.execute("SELECT event_id FROM events").fetchall() == [("ev-after",)]
    assert location == f"{path}:1"
    length = len(head) + size + 2
    assert reason.startswith(f"line of {length:,} bytes at byte offset 0 of the file's content is over the 16 MiB "
                             "limit: not stored whole; its first 65,536 bytes are kept here"), reason
    assert kept == files.EXCERPT_BYTES


def test_lines_and_elements_over_the_limit_are_excerpts_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_ITEM_BYTES", 4096)
    monkeypatch.setattr(files, "EXCERPT_BYTES", 100)
    big = ev("big", userAgent="x" * 5000)
    path = tmp_path / "mixed.jsonl"
    write_ndjson(path, [ev(1), big, ev(2)])
    array = tmp_path / "array.json"
    array.write_text(json.dumps([ev(3), big, ev(4)]), encoding="utf-8")
    with open_store(tmp_path / "s.duckdb") as store:
        report = ingest_files(store, [path, array], NOBODY)
        assert (report.new, report.quarantined) == (4, 2)
        rows = quarantine(store)
    offset = len(line(ev(1))) + 1
    reason, raw = rows[f"{path}:2"]
    assert reason.startswith(f"line of {len(line(big)):,} bytes at byte offset {offset:,}"), reason
    assert raw == line(big)[:100]
    reason, raw = rows[f"{array}[1]"]
    assert reason.startswith(f"array element of {len(json.dumps(big)):,} bytes at byte offset "
                             f"{len(json.dumps([ev(3)])) + 1:,}"), reason
    assert raw == json.dumps(big)[:100]


def test_a_gzip_decompressing_past_the_limit_keeps_what_was_read_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_GZIP_BYTES", 3 * MIB)
    path = tmp_path / "big.jsonl.gz"
    events = [ev(i, userAgent="u" * 1000) for i in range(5000)]  # ~8 MiB of text
    path.write_bytes(gzip.compress(b"".join(line(e).encode() + b"\n" for e in events)))
    with open_store(tmp_path / "s.duckdb") as store:
        report = ingest_files(store, [path], NOBODY)
        [(location, reason)] = store.con.execute("SELECT location, reason FROM quarantine").fetchall()
        assert 1000 < report.new < 2500 and report.quarantined == 1
        assert store.con.execute("SELECT count(*) FROM ingested_files").fetchall() == [(1,)]
    assert location == str(path)
    assert reason.startswith("gzip decompresses to more than 3 MiB (the limit per .gz file)"), reason


# -- files that cannot be read --------------------------------------------------------------------
def _unprivileged() -> list[str]:
    """A prefix that runs a command without the right to ignore file permissions (root's)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]


@pytest.mark.slow  # a process without root's file access
def test_an_unreadable_file_and_folder_are_skipped_loudly_and_the_retry_reads_only_them(tmp_path):
    """Was: PermissionError ended the ingest (the readable sibling not stored); an unreadable
    sub-folder was skipped with exit 0 and no warning."""
    drop = tmp_path / "drop"
    (drop / "sub").mkdir(parents=True)
    write_ndjson(drop / "a.jsonl", [ev(1), ev(2)])
    secret = write_ndjson(drop / "b.jsonl", [ev(3)])
    write_ndjson(drop / "sub" / "c.jsonl", [ev(4)])
    secret.chmod(0)
    (drop / "sub").chmod(0)
    db = tmp_path / "s.duckdb"
    cmd = [*_unprivileged(), sys.executable, "-m", "pipeline", "ingest", "--file", str(drop), "--db", str(db)]
    try:
        first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
        assert first.returncode == 1, (first.stdout, first.stderr)
        assert "files: 2 new events, 0 duplicates, 0 quarantined from 1 file" in first.stdout
        assert "Traceback" not in first.stderr
        *warnings, error = first.stderr.strip().splitlines()
        assert any(f"cannot read {secret}: Permission denied" in w for w in warnings), warnings
        assert any(f"cannot read {drop / 'sub'}: Permission denied" in w for w in warnings), warnings
        assert error.startswith("trailwarden: error: source 'files': 2 file(s) or folder(s) could not be read "
                                "and were skipped: "), error
        assert "fix the access and re-run" in error
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM events").fetchall() == [(2,)]
            [(status, counts)] = con.execute("SELECT status, counts FROM runs").fetchall()
        assert status == "failed"
        assert json.loads(counts)["files"]["skipped_unreadable"] == 2
    finally:
        secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
        (drop / "sub").chmod(stat.S_IRWXU)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert "files: 2 new events, 0 duplicates, 0 quarantined from 2 files (1 already ingested, skipped)" \
        in again.stdout


def test_a_file_vanishing_mid_walk_is_reported_and_the_rest_stored(store, tmp_path):
    write_ndjson(tmp_path / "a.jsonl", [ev(1)])
    victim = write_ndjson(tmp_path / "b.jsonl", [ev(2)])
    write_ndjson(tmp_path / "c.jsonl", [ev(3)])

    calls: list[int] = []

    def vanish() -> bool:  # asked before the source, then before each file: b goes after the walk
        calls.append(1)
        if len(calls) == 2:
            victim.unlink()
        return False

    [outcome] = ingest_sources(store, [("drop", [str(tmp_path)])], NOBODY, stop=vanish)
    assert outcome.report is not None and outcome.report.new == 2
    assert outcome.report.unreadable == [(str(victim), "No such file or directory")]
    assert outcome.error is not None and f"{victim}: No such file or directory" in outcome.error
    assert stored_ids(store) == ["ev-1", "ev-3"]
    assert store.con.execute("SELECT last_error FROM ingest_state WHERE source = 'drop'").fetchall() \
        == [(outcome.error,)]


# -- silent loss or change ------------------------------------------------------------------------
def test_an_array_followed_by_ndjson_loses_nothing(store, tmp_path):
    """Was: `cat a.json b.ndjson` dropped the NDJSON events, exit 0, nothing quarantined."""
    path = tmp_path / "cat.json"
    path.write_text(json.dumps([ev(1), ev(2)], indent=1) + "\n" + line(ev(3)) + "\nnot json\n" + line(ev(4)) + "\n",
                    encoding="utf-8")
    arrays = tmp_path / "arrays.json"  # cat a.json b.json
    arrays.write_text(json.dumps([ev(5)]) + "\n\n" + json.dumps([ev(6), "oops", ev(7)], indent=1), encoding="utf-8")
    report = ingest_files(store, [path, arrays], NOBODY)
    assert (report.new, report.quarantined) == (7, 2)
    assert stored_ids(store) == [f"ev-{i}" for i in range(1, 8)]
    lines = json.dumps([ev(1), ev(2)], indent=1).count("\n") + 1
    assert sorted(quarantine(store)) == [f"{arrays}:3[1]", f"{path}:{lines + 2}"]  # located by the file's lines


@pytest.mark.parametrize("damage", ["bad-token", "unterminated-string", "invalid-utf8"])
@pytest.mark.parametrize("layout", ["one-line", "line-each", "pretty"])
def test_a_broken_array_element_is_quarantined_whole_and_reading_resumes_after_it(store, tmp_path, damage,
                                                                                    layout):
    """Was: 1 of 2,000 stored; the rest of the file (1.93 MB) one quarantine row cut at 64 KiB."""
    texts = [json.dumps(ev(i), indent=2 if layout == "pretty" else None).encode() for i in range(2000)]
    good = texts[1]
    if damage == "bad-token":
        texts[1] = good.replace(b'"Read"', b"Read")
    elif damage == "unterminated-string":
        texts[1] = good.replace(b'"ci-deploy"', b'"ci-deploy')
    else:
        texts[1] = good.replace(b"ci-deploy", b"ci-\xff-deploy")
    path = tmp_path / "events.json"
    path.write_bytes(b"[" + (b"," if layout == "one-line" else b",\n").join(texts) + b"]")
    report = ingest_files(store, [path], NOBODY)
    assert (report.new, report.quarantined) == (1999, 1)
    [(location, (reason, raw))] = quarantine(store).items()
    assert location == f"{path}[1]"
    assert raw == texts[1].decode("utf-8", "replace")  # exactly the element, whole
    assert ("not valid UTF-8" if damage == "invalid-utf8" else "malformed JSON array element") in reason
    assert "ev-1" not in stored_ids(store) and len(stored_ids(store)) == 1999
    assert store.con.execute("SELECT count(*) FROM ingested_files").fetchall() == [(1,)]


def test_invalid_utf8_is_refused_the_same_way_in_an_array_and_in_ndjson(store, tmp_path):
    """Was: U+FFFD stored in the array file's event, the same line quarantined in NDJSON."""
    bad = line(ev("bad")).replace("ci-deploy", "ci\udcffdeploy").encode("utf-8", "surrogateescape")
    (tmp_path / "a.json").write_bytes(b"[" + line(ev(1)).encode() + b"," + bad + b"]")
    (tmp_path / "b.jsonl").write_bytes(line(ev(2)).encode() + b"\n" + bad + b"\n")
    report = ingest_files(store, [tmp_path], NOBODY)
    assert (report.new, report.quarantined) == (2, 2)
    rows = quarantine(store)
    assert {loc: reason for loc, (reason, _) in rows.items()} == {
        f"{tmp_path / 'a.json'}[1]": "not valid UTF-8", f"{tmp_path / 'b.jsonl'}:2": "not valid UTF-8"}
    assert len({raw for _, raw in rows.values()}) == 1  # the same text, with U+FFFD shown for the byte


def test_one_event_per_event_id_and_a_conflicting_copy_is_quarantined(store, tmp_path):
    """Was: the same eventId with times more than a day apart stored twice."""
    first = ev("x", eventTime="2026-11-02T03:04:05Z")
    write_ndjson(tmp_path / "1.jsonl", [first, ev("y", eventTime="2026-11-20T00:00:00Z")])
    ingest_files(store, [tmp_path / "1.jsonl"], NOBODY)
    copies = [ev("x", eventTime="2026-11-09T00:00:00Z"),  # a week later, another run
              ev("x", eventTime="2026-11-02T05:00:00Z"),  # two hours later
              first,  # the same event again: a plain duplicate
              ev("y", eventTime="2026-11-01T00:00:00Z")]
    write_ndjson(tmp_path / "2.jsonl", copies[:2])
    write_ndjson(tmp_path / "3.jsonl", copies[2:])
    report = ingest_files(store, [tmp_path / "2.jsonl", tmp_path / "3.jsonl"], NOBODY)
    assert (report.new, report.duplicates, report.quarantined) == (0, 4, 3)
    assert store.con.execute("SELECT event_id, event_time FROM events ORDER BY 1").fetchall() == [
        ("ev-x", datetime(2026, 11, 2, 3, 4, 5, tzinfo=UTC)), ("ev-y", datetime(2026, 11, 20, tzinfo=UTC))]
    rows = quarantine(store)
    assert rows[f"{tmp_path / '2.jsonl'}:1"][0].startswith("eventId already stored with eventTime 2026-11-02T03:04:05Z")
    assert rows[f"{tmp_path / '2.jsonl'}:2"][0].startswith("eventId already stored with eventTime 2026-11-02T03:04:05Z")
    assert rows[f"{tmp_path / '3.jsonl'}:2"][0].startswith("eventId already stored with eventTime 2026-11-20T00:00:00Z")
    files_rows = store.con.execute("SELECT path, new, duplicates, quarantined FROM ingested_files ORDER BY 1").fetchall()
    assert files_rows[1:] == [(str(tmp_path / "2.jsonl"), 0, 2, 2), (str(tmp_path / "3.jsonl"), 0, 2, 1)]


def test_far_apart_copies_within_one_run_keep_the_first(store, tmp_path):
    write_ndjson(tmp_path / "a.jsonl", [ev("z", eventTime="2026-10-01T00:00:00Z"), ev("w")])
    write_ndjson(tmp_path / "b.jsonl", [ev("z", eventTime="2026-11-25T00:00:00Z")])
    report = ingest_files(store, [tmp_path], NOBODY)
    assert (report.new, report.duplicates, report.quarantined) == (2, 1, 1)
    assert store.con.execute("SELECT event_time FROM events WHERE event_id = 'ev-z'").fetchall() == [
        (datetime(2026, 10, 1, tzinfo=UTC),)]
    assert store.get_state("files", "")[1] is not None
    assert store.con.execute("SELECT events FROM ingest_state").fetchall() == [(2,)]


def test_duplicate_keys_are_refused_and_a_lookup_body_keeps_its_other_events(store, tmp_path):
    """Was: the typed user_name held the last value while queries over raw saw the first."""
    body = json.dumps({"RequestId": "r", "Events": [ev(1), ev(2), ev(3)]})
    body = body.replace('"eventId": "ev-2", ', '"eventId": "ev-2", "eventName": "DeleteTrail", ', 1)
    path = tmp_path / "e.jsonl"
    path.write_text(DUPLICATE_KEY + "\n" + body + "\n", encoding="utf-8")
    report = ingest_files(store, [path], NOBODY)
    assert (report.new, report.quarantined) == (2, 2)
    assert stored_ids(store) == ["ev-1", "ev-3"]
    rows = {loc: reason for loc, (reason, _) in quarantine(store).items()}
    assert rows[f"{path}:1"].startswith('duplicate key "userName" in userIdentity: ambiguous')
    assert rows[f"{path}:2[1]"].startswith('duplicate key "eventName" in the event\'s top level: ambiguous')


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "utf-8-sig", "utf-32"])
@pytest.mark.parametrize("layout", ["ndjson", "array"])
def test_files_with_a_byte_order_mark_are_read(store, tmp_path, encoding, layout):
    """Was: UTF-16 files lost every event (each line quarantined)."""
    events = [ev(i, userAgent="浏览器 é") for i in range(3)]
    text = "".join(line(e) + "\r\n" for e in events) if layout == "ndjson" else json.dumps(events, indent=2)
    data = (b"\xfe\xff" + text.encode("utf-16-be")) if encoding == "utf-16-be-bom" else text.encode(encoding)
    path = tmp_path / "e.json"
    path.write_bytes(data)
    report = ingest_files(store, [path], NOBODY)
    assert (report.new, report.quarantined) == (3, 0)
    assert store.con.execute("SELECT DISTINCT user_agent FROM events").fetchall() == [("浏览器 é",)]


def test_cr_only_line_endings_are_lines(store, tmp_path, monkeypatch):
    """Was: a CR-only file was one line: every event lost."""
    text = "\r".join([line(ev(1)), "", "garbage", line(ev(2)), line(ev(3))]) + "\r"
    path = tmp_path / "mac.jsonl"
    path.write_bytes(text.encode())
    report = ingest_files(store, [path], NOBODY)
    assert (report.new, report.quarantined) == (3, 1)
    assert list(quarantine(store)) == [f"{path}:3"]
    # the parallel path counts lines the same way, across its chunks
    monkeypatch.setattr(ingest_mod, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_mod.files, "scan_file", lambda p, _orig=files.scan_file: _orig(p, chunk_bytes=2048))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(("\n".join(line(ev(f"m{i}")) for i in range(50)) + "\r" + "oops\r\n" + line(ev("m-last"))).encode())
    assert ingest_files(store, [mixed], NOBODY, workers=1).quarantined == 1
    assert f"{mixed}:51" in quarantine(store)


# -- event times that cannot be real --------------------------------------------------------------
def test_implausible_event_times_are_quarantined_and_old_real_ones_kept(store, tmp_path):
    """Was: 1970 or 2020 moved the detect window; 9999 or year 1 made every later detect fail."""
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    times = {"epoch": "1970-01-01T00:00:00Z", "year-1": "0001-01-01T00:00:00Z", "last": "9999-12-31T23:59:59.999999Z",
             "2009": "2009-12-31T23:59:59Z", "tomorrow+": "2026-12-02T12:00:01Z",
             "2010": "2010-01-01T00:00:00Z", "2020": "2020-01-01T00:00:00Z", "tomorrow": "2026-12-02T12:00:00Z"}
    write_ndjson(tmp_path / "t.jsonl", [ev(name, eventTime=when) for name, when in times.items()])
    report = ingest_files(store, [tmp_path / "t.jsonl"], NOBODY, now=now)
    assert (report.new, report.quarantined) == (3, 5)
    assert stored_ids(store) == ["ev-2010", "ev-2020", "ev-tomorrow"]
    reasons = [r for r, _ in quarantine(store).values()]
    assert sum(r.endswith("before Alibaba Cloud kept audit logs: a wrong clock or a forged event") for r in reasons) == 3
    assert sum("is more than a day after now (2026-12-01T12:00:00Z)" in r for r in reasons) == 2


# -- kill -9 --------------------------------------------------------------------------------------
KILLED_WITH_WORKERS = """
import os, sys
from pipeline.ingest import run as ingest
from pipeline.ingest.sources import files
from pipeline.store.store import open_store
from models.inventory import Attributor
os.environ["TRAILWARDEN_INGEST_PARSER"] = "python"  # the pool is the Python parser's
ingest.PARALLEL_MIN_BYTES = 0
_scan = files.scan_file
files.scan_file = lambda p: _scan(p, chunk_bytes=64 * 1024)
open(sys.argv[3], "w").write(str(os.getpid()))
with open_store(sys.argv[1]) as s:
    ingest.ingest_files(s, [sys.argv[2]], Attributor(None), batch_size=100, workers=2)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for PID 1 to reap it


@pytest.mark.slow  # kill -9 of a process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parse_workers_and_the_resource_tracker_die_with_a_killed_ingest(tmp_path):
    """Was: after a kill -9 the two workers (~200 MiB each) and the resource tracker lived on."""
    path = write_ndjson(tmp_path / "e.jsonl", [ev(i, userAgent="u" * 500) for i in range(3000)])
    pid_file = tmp_path / "pid"
    orphans: list[int] = []

    def workers_running() -> bool:
        if not pid_file.exists() or not pid_file.read_text():
            return False
        orphans[:] = _children(int(pid_file.read_text()))
        return len(orphans) >= 3  # two spawn workers and the resource tracker

    kill_after_commits(KILLED_WITH_WORKERS, [str(tmp_path / "s.duckdb"), str(path), str(pid_file)], commits=1,
                       ready=workers_running)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in orphans) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in orphans if _alive(pid)] == []


class DiesInAWorker(Attributor):
    """Attributes as usual, except that a parse worker (not the ingesting process) that meets
    the identity ``ram-user:oom`` dies on the spot, as one killed for its memory would."""

    def __init__(self) -> None:
        super().__init__(None)
        self.parent = os.getpid()

    def __call__(self, identity: str, access_key_id: str | None, home: str | None = None) -> str:
        if identity == "ram-user:oom" and os.getpid() != self.parent:
            os._exit(9)
        return super().__call__(identity, access_key_id)


def test_a_parse_worker_that_dies_does_not_fail_the_file(store, tmp_path, monkeypatch, caplog):
    """A worker killed mid-file (BrokenProcessPool) used to end the ingest; its chunk is now
    parsed in the ingesting process and every event is stored once. (The pool is the Python
    parser's: DuckDB parsing has no workers.)"""
    monkeypatch.setenv("TRAILWARDEN_INGEST_PARSER", "python")
    monkeypatch.setattr(ingest_mod, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_mod.files, "scan_file", lambda p, _orig=files.scan_file: _orig(p, chunk_bytes=16 * 1024))
    identity = {"type": "ram-user", "principalId": "1", "accountId": "1", "userName": "oom"}
    events = [ev(i, userIdentity=identity) if i == 150 else ev(i) for i in range(400)]
    path = write_ndjson(tmp_path / "e.jsonl", events)
    report = ingest_files(store, [path], DiesInAWorker(), workers=2)
    assert (report.new, report.quarantined, report.files) == (400, 0, 1)
    assert stored_ids(store) == sorted(e["eventId"] for e in events)
    assert "a parse worker died while reading" in caplog.text
