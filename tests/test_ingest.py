"""Ingest: exactly once in effect, bad input quarantined, state committed with the data."""

from __future__ import annotations

import gzip
import json

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.inventory import Attributor, Inventory
from pipeline.ingest import run as ingest_mod
from pipeline.ingest.run import ingest_files
from pipeline.store.store import open_store
from tests.conftest import BASE_EVENT, REAL_ATTACKS, kill_after_commits, run_cli, write_ndjson

NOBODY = Attributor(None)


def counts(store) -> tuple[int, int]:
    row = store.con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
    return row[0], row[1]


def test_real_attack_dataset_stores_502_events_then_none(store):
    first = ingest_files(store, [REAL_ATTACKS], NOBODY)
    assert (first.new, first.duplicates, first.quarantined, first.files) == (502, 0, 0, 3)
    second = ingest_files(store, [REAL_ATTACKS], NOBODY)
    assert (second.new, second.files, second.skipped_files) == (0, 0, 3)
    assert counts(store) == (502, 502)


def test_same_events_in_a_different_file_are_duplicates_not_new_rows(store, tmp_path, make_event):
    events = [make_event(i) for i in range(50)]
    write_ndjson(tmp_path / "a.jsonl", events)
    (tmp_path / "b.json").write_text(json.dumps(list(reversed(events))))
    report = ingest_files(store, [tmp_path / "a.jsonl", tmp_path / "b.json"], NOBODY)
    assert (report.new, report.duplicates, report.files) == (50, 50, 2)
    assert counts(store) == (50, 50)
    files = dict(store.con.execute("SELECT path, duplicates FROM ingested_files").fetchall())
    assert files[str(tmp_path / "b.json")] == 50


def test_duplicates_inside_one_batch_keep_one_row(store, tmp_path, make_event):
    ev = make_event(1)
    write_ndjson(tmp_path / "dup.jsonl", [ev, ev, make_event(2), ev])
    report = ingest_files(store, [tmp_path / "dup.jsonl"], NOBODY)
    assert (report.events, report.new, report.duplicates) == (4, 2, 2)
    assert counts(store) == (2, 2)


def test_garbage_lines_are_quarantined_and_the_rest_goes_on(store, tmp_path, make_event):
    good = [make_event(i) for i in range(3)]
    lines = [json.dumps(good[0]), "not json at all", json.dumps(good[1]),
             json.dumps({**make_event(9), "eventTime": "yesterday"}),
             json.dumps({k: v for k, v in make_event(8).items() if k != "eventId"}),
             json.dumps(good[2]), '{"truncated": ']
    (tmp_path / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    report = ingest_files(store, [tmp_path / "mixed.jsonl"], NOBODY)
    assert (report.new, report.quarantined) == (3, 4)
    rows = store.con.execute("SELECT location, reason FROM quarantine ORDER BY location").fetchall()
    by_line = {loc.rsplit(":", 1)[1]: reason for loc, reason in rows}
    assert set(by_line) == {"2", "4", "5", "7"}
    assert "malformed JSON" in by_line["2"]
    assert "eventTime" in by_line["4"]
    assert "eventId" in by_line["5"]
    # the same bad file again (e.g. a copy) is skipped; the quarantine does not grow
    ingest_files(store, [tmp_path / "mixed.jsonl"], NOBODY)
    assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 4


def test_quarantine_is_not_doubled_when_a_file_is_reread(store, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n")
    ingest_files(store, [path], NOBODY)
    store.con.execute("DELETE FROM ingested_files")  # as if the run died before recording the file
    ingest_files(store, [path], NOBODY)
    assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


def test_watermark_and_file_record_are_written_with_the_events(store, tmp_path, make_event):
    events = [make_event(i, eventTime=f"2026-11-0{1 + i}T00:00:00Z") for i in range(5)]
    write_ndjson(tmp_path / "e.jsonl", events)
    ingest_files(store, [tmp_path / "e.jsonl"], NOBODY, source="archive")
    cursor, watermark = store.get_state("archive", "")
    assert watermark.isoformat() == "2026-11-05T00:00:00+00:00"
    row = store.con.execute("SELECT events, new, quarantined FROM ingested_files").fetchone()
    assert row == (5, 5, 0)


def test_events_are_attributed_to_inventory_agents(store, make_event, tmp_path):
    inv = Inventory.model_validate({"agents": [
        {"name": "ci", "purpose": "p", "owner": "o", "environment": "prod",
         "identities": ["access-key:LTAI5tCiDeploy7Qx2mK"]},
        {"name": "etl", "purpose": "p", "owner": "o", "environment": "prod", "identities": ["role:EtlRole"]},
    ]})
    role = {"type": "assumed-role", "principalId": "3577:etl-1", "accountId": "1", "userName": "EtlRole:etl-1",
            "accessKeyId": "STS.x"}
    stranger = {"type": "ram-user", "principalId": "2", "accountId": "1", "userName": "ops-debug"}
    write_ndjson(tmp_path / "e.jsonl", [make_event(1), make_event(2, userIdentity=role),
                                        make_event(3, userIdentity=stranger)])
    ingest_files(store, [tmp_path / "e.jsonl"], Attributor(inv))
    agents = dict(store.con.execute("SELECT event_id, agent FROM events").fetchall())
    assert sorted(agents.values()) == ["ci", "etl", "ram-user:ops-debug"]


def test_gzip_and_oss_layout_are_read(store, tmp_path, make_event):
    folder = tmp_path / "AliyunLogs" / "Actiontrail" / "cn-hangzhou" / "2026" / "11" / "02"
    folder.mkdir(parents=True)
    events = [make_event(i) for i in range(4)]
    (folder / "Actiontrail_cn-hangzhou_20261102000000_1002_2_1_x.gz").write_bytes(
        gzip.compress(json.dumps(events[:2]).encode()))
    (folder / "Actiontrail_cn-hangzhou_20261102000500_1002_2_1_y.gz").write_bytes(
        gzip.compress("".join(json.dumps(e) + "\n" for e in events[2:]).encode()))
    (tmp_path / "README.md").write_text("not events")
    report = ingest_files(store, [tmp_path], NOBODY)
    assert (report.files, report.new, report.quarantined) == (2, 4, 0)


def _drop_with_a_damaged_gzip(tmp_path, make_event, damage):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "arr.json").write_text(json.dumps([make_event(1), make_event(2)]))
    (folder / "zz.json").write_text(json.dumps(make_event(3)))
    packed = bytearray(gzip.compress("".join(json.dumps(make_event(i)) + "\n" for i in range(10, 14)).encode()))
    if damage == "crc":
        packed[-8] ^= 0xFF  # the CRC32 in the trailer
    else:
        del packed[-8:]  # cut off: the stream ends before its trailer
    bad = folder / f"{damage}.gz"
    bad.write_bytes(bytes(packed))
    return folder, bad


def _json_query(db, sql):
    return json.loads(run_cli("query", sql, "--db", db, "--format", "json").stdout)


@pytest.mark.parametrize(("damage", "reason"), [("crc", "corrupt gzip: CRC check failed"),
                                                ("truncated", "truncated gzip")])
def test_a_damaged_gzip_is_quarantined_once_and_the_other_files_go_in(tmp_path, make_event, damage, reason):
    folder, bad = _drop_with_a_damaged_gzip(tmp_path, make_event, damage)
    db = str(tmp_path / "s.duckdb")
    first = run_cli("ingest", "--file", str(folder), "--db", db)
    assert first.returncode == 0, first.stderr  # was exit 1 (BadGzipFile) / 130 ("aborted"), 0 events
    assert "1 quarantined from 3 files" in first.stdout
    [row] = _json_query(db, "SELECT location, reason FROM quarantine")
    assert row["location"] == str(bad) and row["reason"].startswith(reason), row
    stored = {r["event_id"][-2:] for r in _json_query(db, "SELECT event_id FROM events")}
    assert {"01", "02", "03"} <= stored  # the good files
    assert stored <= {"01", "02", "03", "10", "11", "12", "13"}
    again = run_cli("ingest", "--file", str(folder), "--db", db)
    assert again.returncode == 0, again.stderr
    assert "0 new events, 0 duplicates, 0 quarantined from 0 files (3 already ingested, skipped)" in again.stdout
    assert _json_query(db, "SELECT count(*) AS n FROM quarantine") == [{"n": 1}]
    assert _json_query(db, "SELECT count(*) AS n FROM events") == [{"n": len(stored)}]


def test_a_damaged_gzip_does_not_fail_every_service_cycle(tmp_path, make_event):
    folder, _ = _drop_with_a_damaged_gzip(tmp_path, make_event, "crc")
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(f"database: {tmp_path / 'tw.duckdb'}\n"
                   f"sources:\n  - {{name: drop, type: files, path: {folder}}}\n")
    for _ in range(2):
        result = run_cli("--config", str(cfg), "run")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-3].split()[-1] == "ok", result.stdout  # the ingest step
    assert _json_query(str(tmp_path / "tw.duckdb"), "SELECT count(*) AS n FROM quarantine") == [{"n": 1}]


def test_parallel_parse_matches_parsing_in_process(tmp_path, make_event, monkeypatch):
    """Large NDJSON files go through the process pool; the result must be identical."""
    events = [make_event(i, eventTime=f"2026-11-{1 + i % 28:02d}T00:00:{i % 60:02d}Z") for i in range(3000)]
    lines = [json.dumps(e) for e in events]
    lines.insert(1500, "garbage in the middle")
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    results = {}
    for mode, threshold in (("pool", 0), ("here", 10**12)):
        monkeypatch.setattr(ingest_mod, "PARALLEL_MIN_BYTES", threshold)
        monkeypatch.setattr(ingest_mod.files, "scan_file",
                            lambda p, _orig=ingest_mod.files.scan_file: _orig(p, chunk_bytes=64 * 1024))
        with open_store(tmp_path / f"{mode}.duckdb") as st_:
            report = ingest_files(st_, [path], NOBODY, workers=2)
            rows = st_.con.execute("SELECT event_id, event_time, raw FROM events ORDER BY event_id").fetchall()
            bad = st_.con.execute("SELECT location, reason FROM quarantine").fetchall()
        monkeypatch.undo()
        results[mode] = (report.new, report.quarantined, rows, bad)
    assert results["pool"][0] == 3000 and results["pool"][1] == 1
    assert results["pool"] == results["here"]
    assert results["pool"][3][0][0].endswith(":1501")


# -- property: ingesting twice is ingesting once --------------------------------------------------
event_ids = st.integers(min_value=0, max_value=40)
file_plans = st.lists(st.lists(event_ids, min_size=0, max_size=15), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=file_plans, again=st.lists(st.integers(0, 3), max_size=3))
def test_ingest_twice_is_ingest_once(tmp_path_factory, plans, again):
    """Any split of events into files, with repeats and re-deliveries, stores each eventId once,
    and re-ingesting any of the files (or copies of them) never adds a row."""
    tmp = tmp_path_factory.mktemp("prop")
    paths = []
    for i, ids in enumerate(plans):
        evs = [{**BASE_EVENT, "eventId": f"ev-{n}", "eventTime": f"2026-11-{1 + n % 28:02d}T00:00:00Z"} for n in ids]
        paths.append(write_ndjson(tmp / f"f{i}.jsonl", evs))
    expected = {f"ev-{n}" for ids in plans for n in ids}
    with open_store(tmp / "s.duckdb") as s:
        first = ingest_files(s, paths, NOBODY)
        for k in again:
            copy = tmp / f"copy{k}.jsonl"
            copy.write_text(paths[k % len(paths)].read_text() + "\n")  # same events, new content hash
            ingest_files(s, [copy, *paths], NOBODY)
        stored = {r[0] for r in s.con.execute("SELECT event_id FROM events").fetchall()}
        total = s.con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert first.new == len(expected)
    assert stored == expected and total == len(expected)


# -- crash safety ---------------------------------------------------------------------------------
KILLER = """
import sys
from pipeline.ingest import native, run as ingest
native.GROUP_BYTES = 64 * 1024  # DuckDB parsing: batches of ~100 lines, as batch_size=100 below
from pipeline.store.store import open_store
from models.inventory import Attributor
with open_store(sys.argv[1]) as s:
    ingest.ingest_files(s, [sys.argv[2]], Attributor(None), batch_size=100, workers=1)
"""


@pytest.mark.slow  # kill -9 of a process
def test_kill_9_mid_ingest_then_retry_stores_each_event_once(tmp_path, make_event):
    events = [make_event(i) for i in range(1000)]
    path = write_ndjson(tmp_path / "e.jsonl", events)
    db = tmp_path / "s.duckdb"
    kill_after_commits(KILLER, [str(db), str(path)], commits=2)
    con = duckdb.connect(str(db), read_only=True)
    partial = con.execute("SELECT count(*) FROM events").fetchone()[0]
    files = con.execute("SELECT count(*) FROM ingested_files").fetchone()[0]
    con.close()
    assert 0 < partial < 1000 and files == 0  # committed batches survived, the file is not done
    with open_store(db) as s:
        report = ingest_files(s, [path], NOBODY)
        assert report.new == 1000 - partial and report.duplicates == partial
        assert counts(s) == (1000, 1000)


def test_a_failing_write_leaves_nothing_half_written(store, tmp_path, make_event, monkeypatch):
    write_ndjson(tmp_path / "e.jsonl", [make_event(i) for i in range(10)])

    def boom(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "record_files", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_files(store, [tmp_path / "e.jsonl"], NOBODY)
    assert counts(store) == (0, 0)
    assert store.con.execute("SELECT count(*) FROM ingest_state").fetchone()[0] == 0
