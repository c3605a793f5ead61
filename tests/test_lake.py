"""The tiered store: sealed days in Parquet read like hot events, sealing survives kill -9, late
events and duplicates of sealed days, read-time attribution, retention of sealed days, migration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from detectors.base import Finding
from models.inventory import Attributor, Inventory
from pipeline.core.config import Retention, load_config
from pipeline.detection.findings import save_findings
from pipeline.ingest.run import ingest_files
from pipeline.store import lake
from pipeline.store.attribution import reattribute_if_changed
from pipeline.store.retention import prune
from pipeline.store.store import (
    migrations,
    open_for_reading,
    open_store,
    publish_snapshot,
    snapshot_path,
)
from pipeline.store.tiers import events_between, lake_dir
from tests.conftest import ROOT, assert_one_line_error, run_cli, write_ndjson

DAY = timedelta(days=1)


def _at(day: date, hour: int = 12) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00Z"


def _days_ago(n: int) -> date:
    return (datetime.now(UTC) - n * DAY).date()


def _user(name: str, key: str | None = None) -> dict[str, object]:
    ident: dict[str, object] = {"type": "ram-user", "principalId": "1", "accountId": "1", "userName": name}
    if key:
        ident["accessKeyId"] = key
    return ident


def _ingest(store, tmp_path, events, name="e.jsonl", inventory=None):
    write_ndjson(tmp_path / name, events)
    return ingest_files(store, [tmp_path / name], Attributor(inventory))


def _week(make_event):
    """Three events on each of the last 6 days (two users, one with an AccessKey)."""
    return [make_event(10 * d + i, eventTime=_at(_days_ago(d), 8 + i),
                       userIdentity=_user("ci" if i else "ops", "LTAIci" if i == 1 else None))
            for d in range(1, 7) for i in range(3)]


def _all(store) -> list[tuple]:
    return store.con.execute("SELECT * EXCLUDE (ingested_at) FROM events ORDER BY event_id").fetchall()


def _seal_all(store) -> lake.LakeReport:
    return lake.seal(store, timedelta(0), max_days=100)


def test_sealed_days_read_exactly_like_hot_ones(store, tmp_path, make_event):
    _ingest(store, tmp_path, _week(make_event))
    before = _all(store)
    report = _seal_all(store)
    assert len(report.days) == 6 and report.events == 18
    assert store.con.execute("SELECT count(*) FROM events_hot").fetchall() == [(0,)]
    assert _all(store) == before  # every column, the JSON payload columns too
    files = list(lake_dir(store.path).glob("day=*/*.parquet"))
    assert len(files) == 6
    assert store.con.execute("SELECT sum(rows), count(*) FROM lake_files").fetchall() == [(18, 6)]


def test_query_replay_and_backtest_give_the_same_results_after_sealing(demo_checkout, demo_copy):
    """The demo's month: `query`, `replay` and `backtest` (the detectors over a window) read the
    same before and after every day but today is sealed."""
    def outputs() -> list[object]:
        q = run_cli("--db", str(demo_copy), "query", "SELECT agent, event_name, count(*) AS n, "
                    "count(DISTINCT request_parameters) AS p FROM events GROUP BY ALL ORDER BY ALL",
                    "--format", "json", cwd=demo_checkout)
        r = run_cli("--db", str(demo_copy), "replay", "ci-deployer", "--since", "40d", "--format", "json",
                    cwd=demo_checkout)
        b = run_cli("--db", str(demo_copy), "backtest", "--since", "35d", "--format", "json", cwd=demo_checkout)
        for result in (q, r, b):
            assert result.returncode == 0, result.stderr
        replay = json.loads(r.stdout)
        backtest = json.loads(b.stdout)
        volatile = {"generated_at", "sha256", "window"}
        return [json.loads(q.stdout), {k: v for k, v in replay.items() if k not in volatile},
                backtest["findings"], backtest["totals"]]

    before = outputs()
    with open_store(demo_copy) as s:
        sealed = _seal_all(s)
        assert len(sealed.days) > 20
    assert outputs() == before


def test_a_kill_at_any_step_of_a_seal_loses_and_doubles_nothing(tmp_path, make_event):
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
        expected = _all(s)
    for step in ("copied", "renamed", "registered", "committed"):
        child = subprocess.run(
            [sys.executable, "-c", _KILL_AT, str(db), step], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr
        with open_store(db) as s:
            assert _all(s) == expected, step  # never both copies visible, nothing lost
            lake.seal(s, timedelta(0), max_days=1)  # finishes what was cut short
            assert _all(s) == expected, step
            registered = {r[0] for r in s.con.execute("SELECT path FROM lake_files").fetchall()}
        on_disk = {p.relative_to(lake_dir(db)).as_posix() for p in lake_dir(db).glob("day=*/*")}
        assert on_disk == registered, step  # orphans and temp files cleaned


def test_a_kill_at_any_step_of_a_compaction_loses_and_doubles_nothing(tmp_path, make_event):
    db = tmp_path / "s.duckdb"
    day = _days_ago(3)
    with open_store(db) as s:
        _ingest(s, tmp_path, [make_event(1, eventTime=_at(day, 1))])
        _seal_all(s)
        _ingest(s, tmp_path, [make_event(2, eventTime=_at(day, 2))], name="late.jsonl")
        _seal_all(s)
        expected = _all(s)
    for step in ("copied", "rewrite-renamed", "rewrite-registered"):
        child = subprocess.run([sys.executable, "-c", _KILL_AT.replace("lake.seal(s, timedelta(0), max_days=1)",
                                                                       "lake.compact(s)"), str(db), step],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr
        with open_store(db) as s:
            assert _all(s) == expected, step
            lake.clean(s)
            registered = {r[0] for r in s.con.execute("SELECT path FROM lake_files UNION ALL "
                                                      "SELECT path FROM lake_retired").fetchall()}
        on_disk = {p.relative_to(lake_dir(db)).as_posix() for p in lake_dir(db).glob("day=*/*")}
        assert on_disk == registered, step
    with open_store(db) as s:
        lake.compact(s)
        assert _all(s) == expected
        assert s.con.execute("SELECT count(*) FROM lake_files").fetchall() == [(1,)]


_KILL_AT = """
import os, signal, sys
from datetime import timedelta
from pipeline.store import lake
from pipeline.store.store import open_store

def crash(step):
    if step == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)

lake.crash_point = crash
with open_store(sys.argv[1]) as s:
    lake.seal(s, timedelta(0), max_days=1)
"""


def test_late_events_of_a_sealed_day_are_sealed_again_and_compacted(store, tmp_path, make_event):
    day = _days_ago(3)
    _ingest(store, tmp_path, [make_event(1, eventTime=_at(day, 1)), make_event(2, eventTime=_at(day, 2))])
    _seal_all(store)
    late = _ingest(store, tmp_path, [make_event(3, eventTime=_at(day, 3))], name="late.jsonl")
    assert late.new == 1
    assert store.con.execute("SELECT count(*) FROM events_hot").fetchall() == [(1,)]
    assert store.con.execute("SELECT count(*) FROM events WHERE event_time::DATE = ?", [day]).fetchall() == [(3,)]
    _seal_all(store)
    assert store.con.execute("SELECT count(*) FROM lake_files WHERE day = ?", [day]).fetchall() == [(2,)]
    assert lake.days_to_compact(store) == [day]
    before = _all(store)
    compacted = lake.compact(store)
    assert compacted.events == 3
    assert store.con.execute("SELECT count(*), sum(rows) FROM lake_files WHERE day = ?", [day]).fetchall() == [(1, 3)]
    assert _all(store) == before
    retired = store.con.execute("SELECT count(*) FROM lake_retired").fetchall()[0][0]
    assert retired == 2  # kept for readers of an older snapshot, deleted after the grace


def test_a_redelivered_event_of_a_sealed_day_is_not_stored_twice(store, tmp_path, make_event):
    day = _days_ago(3)
    events = [make_event(i, eventTime=_at(day, i)) for i in range(4)]
    _ingest(store, tmp_path, events)
    _seal_all(store)
    again = _ingest(store, tmp_path, events, name="again.jsonl")
    assert again.new == 0
    forged = _ingest(store, tmp_path, [make_event(0, eventTime=_at(day, 20))], name="forged.jsonl")
    assert forged.new == 0
    assert store.con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall() == [(4, 4)]
    reasons = [r[0] for r in store.con.execute("SELECT reason FROM quarantine").fetchall()]
    assert len(reasons) == 1 and "already stored with eventTime" in reasons[0]


def _inventory(**agents: list[str]) -> Inventory:
    return Inventory.model_validate({"agents": [
        {"name": name, "owner": "o", "purpose": "p", "environment": "production", "identities": ids} for name, ids in agents.items()]})


def test_an_inventory_change_writes_no_event_and_findings_keep_their_agent(store, tmp_path, make_event):
    first = _inventory(deployer=["ram-user:ci", "ram-user:ops"])
    _ingest(store, tmp_path, _week(make_event), inventory=first)
    reattribute_if_changed(store, first)
    _seal_all(store)
    when = datetime.now(UTC) - 2 * DAY
    save_findings(store, [Finding(detector="out_of_scope", agent="deployer", severity="high", score=0.8,
                                  first_seen=when, last_seen=when, summary="s", event_ids=["x"], evidence={},
                                  dedup_key="k")], {})
    _ingest(store, tmp_path, [make_event(99, userIdentity=_user("ops"))], name="hot.jsonl", inventory=first)
    files = {p: p.stat().st_mtime_ns for p in lake_dir(store.path).glob("day=*/*.parquet")}
    stored = store.con.execute("SELECT event_id, agent FROM events_hot").fetchall()
    moved = _inventory(deployer=["ram-user:ci"], operator=["ram-user:ops"], keyed=["access-key:LTAIci"])
    assert reattribute_if_changed(store, moved) == 13  # ops: 6 sealed + 1 hot; ci's keyed calls: 6
    agents = dict(store.con.execute("SELECT agent, count(*) FROM events GROUP BY 1").fetchall())
    assert agents == {"deployer": 6, "operator": 7, "keyed": 6}
    # nothing written to the events: the sealed files and the hot rows are as they were
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert store.con.execute("SELECT event_id, agent FROM events_hot").fetchall() == stored
    mapping = store.con.execute("SELECT (SELECT count(*) FROM attribution_keys) + "
                                "(SELECT count(*) FROM attribution_identities)").fetchall()
    assert mapping == [(3,)]  # O(agents): one row per identity of the inventory
    assert store.con.execute("SELECT agent FROM findings").fetchall() == [("deployer",)]


def test_the_orphan_check_counts_sealed_events(store, tmp_path, make_event):
    inv = _inventory(deployer=["ram-user:ci", "ram-user:ops"])
    _ingest(store, tmp_path, _week(make_event), inventory=inv)
    reattribute_if_changed(store, inv)
    _seal_all(store)
    from pipeline.core.errors import UsageError
    with pytest.raises(UsageError, match="18 events attributed"):
        reattribute_if_changed(store, _inventory(other=["ram-user:nobody"]), source="agents.yaml")


def test_prune_drops_sealed_days_but_keeps_cited_events(store, tmp_path, make_event):
    old = [make_event(i, eventTime=_at(_days_ago(500), i)) for i in range(5)]
    mid = [make_event(10 + i, eventTime=_at(_days_ago(100), i)) for i in range(4)]
    _ingest(store, tmp_path, old + mid + [make_event(30, eventTime=_at(_days_ago(10)))])
    _seal_all(store)
    cited = old[0]["eventId"]
    when = datetime.now(UTC) - 500 * DAY
    save_findings(store, [Finding(detector="out_of_scope", agent="ram-user:ci-deploy", severity="high", score=0.8,
                                  first_seen=when, last_seen=when, summary="open", event_ids=[cited], evidence={},
                                  dedup_key="k")], {})
    archive = tmp_path / "archive"
    report = prune(store, Retention(events=timedelta(days=400), raw_json=timedelta(days=90), archive_dir=archive))
    assert (report.archived, report.deleted, report.kept_as_evidence) == (4, 4, 1)
    assert report.raw_dropped == 4
    rows = dict(store.con.execute("SELECT event_id, raw IS NOT NULL FROM events").fetchall())
    assert len(rows) == 6 and rows[cited] is True
    assert [rows[e["eventId"]] for e in mid] == [False] * 4
    archived = duckdb.sql(f"SELECT count(DISTINCT event_id), count(*) FROM read_parquet('{archive}/*/*.parquet')")
    assert archived.fetchall() == [(4, 4)]
    again = prune(store, Retention(events=timedelta(days=400), raw_json=timedelta(days=90), archive_dir=archive))
    assert (again.archived, again.deleted, again.raw_dropped) == (0, 0, 0)


def test_the_snapshot_holds_only_the_hot_part_and_readers_see_sealed_days(tmp_path, make_event):
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
        _seal_all(s)
        s.con.execute("CHECKPOINT")
    publish_snapshot(db)
    os.utime(snapshot_path(db))  # the snapshot is current
    with open_for_reading(db) as reader:
        assert reader.read_from == str(snapshot_path(db))
        assert reader.con.execute("SELECT count(*) FROM events").fetchall() == [(18,)]


def test_a_config_with_the_store_section_seals_in_the_cycle_and_a_bad_one_exits_2(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("store: {seal_after: 3d}\n")
    assert load_config(good).store.seal_after == timedelta(days=3)
    assert load_config(None).store is None  # no key: nothing sealed, as before
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: {seal_after: soon}\n")
    result = run_cli("--config", str(bad), "status", "--db", str(tmp_path / "s.duckdb"))
    assert result.returncode == 2 and "store.seal_after" in result.stderr and str(bad) in result.stderr


def test_a_store_made_by_the_previous_version_is_migrated(tmp_path, make_event):
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL)")
    for m in migrations():
        if m.version < 20:
            con.execute(m.sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [m.version, m.name])
    con.execute(
        "INSERT INTO events (event_id, event_time, identity, access_key_id, raw, agent, source, ingested_at) VALUES "
        "('e1', now() - INTERVAL 5 DAY, 'ram-user:ci', NULL, '{\"requestParameters\": {\"a\": 1}}', 'deployer', "
        "'files', now())")
    con.close()
    with open_store(db) as s:
        rows = s.con.execute("SELECT event_id, agent, request_parameters FROM events").fetchall()
        assert rows == [("e1", "deployer", '{"a":1}')]  # the agent stored at ingest, until a mapping is written
        assert reattribute_if_changed(s, _inventory(deployer=["ram-user:ci"])) is not None
        assert s.con.execute("SELECT agent FROM events").fetchall() == [("deployer",)]
        _seal_all(s)
        assert s.con.execute("SELECT event_id, agent FROM events").fetchall() == [("e1", "deployer")]


def _sealed_week(tmp_path, make_event):
    """A store with 6 sealed days of 3 events; returns it and the lake path of 2 days ago's file."""
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
        _seal_all(s)
        [rel] = [r[0] for r in s.con.execute("SELECT path FROM lake_files WHERE day = ?", [_days_ago(2)]).fetchall()]
    return db, lake_dir(db) / rel


def test_a_missing_sealed_file_is_named_as_unavailable_and_the_rest_stays_readable(tmp_path, make_event):
    db, path = _sealed_week(tmp_path, make_event)
    kept = path.read_bytes()
    path.unlink()
    day = _days_ago(2).isoformat()
    status = run_cli("status", "--db", str(db))
    assert status.returncode == 0, status.stderr
    assert f"UNAVAILABLE: {day} (missing" in status.stdout
    query = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout) == [{"n": 15}]  # the 5 other days
    assert f"sealed day(s) unavailable, left out of events: {day} (missing: day={day}/" in query.stderr
    replay = run_cli("replay", "ram-user:ops", "--since", "3d", "--db", str(db))
    assert replay.returncode == 0 and f"{day} (missing" in replay.stderr
    quiet = run_cli("replay", "ram-user:ops", "--since", "1d", "--db", str(db))
    assert quiet.returncode == 0 and "unavailable" not in quiet.stderr  # its window does not cover the day
    with open_store(db) as s:  # a writer rebuilds the stored view over what is there, and records why
        assert s.con.execute("SELECT count(*) FROM events").fetchall() == [(15,)]
        assert json.loads(s.read_state("lake.unavailable") or "{}") == {path.relative_to(lake_dir(db)).as_posix():
                                                                      "missing"}
    path.write_bytes(kept)  # restored: read again, by readers and by the writer
    query = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert json.loads(query.stdout) == [{"n": 18}] and "unavailable" not in query.stderr
    with open_store(db) as s:
        assert s.con.execute("SELECT count(*) FROM events").fetchall() == [(18,)]
        assert s.read_state("lake.unavailable") == "{}"


def test_a_redelivered_event_of_an_unavailable_day_fails_its_ingest_naming_the_day(tmp_path, make_event):
    db, path = _sealed_week(tmp_path, make_event)
    path.unlink()
    write_ndjson(tmp_path / "again.jsonl", [make_event(20, eventTime=_at(_days_ago(2), 8))])  # stored and sealed
    result = run_cli("ingest", "--file", str(tmp_path / "again.jsonl"), "--db", str(db))
    assert result.returncode == 1 and f"sealed day {_days_ago(2)} is unavailable (missing" in result.stderr
    with open_store(db) as s:  # not stored a second time, to be doubled when the file is restored
        assert s.con.execute("SELECT count(*) FROM events_hot").fetchall() == [(0,)]


def test_the_cycle_says_its_detect_ran_without_an_unavailable_day(tmp_path, make_event):
    db, path = _sealed_week(tmp_path, make_event)
    path.unlink()
    config = tmp_path / "tw.yaml"
    config.write_text(f"database: {db}\nstore: {{seal_after: 2d}}\n")
    result = run_cli("--config", str(config), "run")
    assert result.returncode == 0, result.stderr
    [detect] = [line for line in result.stdout.splitlines() if line.startswith("detect")]
    assert f"ok (sealed day(s) unavailable, left out of events: {_days_ago(2)} (missing" in detect


def test_a_file_gone_after_the_snapshot_leaves_its_day_out_of_the_readers_view(tmp_path, make_event):
    db, path = _sealed_week(tmp_path, make_event)
    publish_snapshot(db)
    os.utime(snapshot_path(db))  # current: readers open it, with the stored view naming every file
    path.unlink()
    with open_for_reading(db) as reader:
        assert reader.read_from == str(snapshot_path(db))
        assert reader.con.execute("SELECT count(*) FROM events").fetchall() == [(15,)]


@pytest.mark.parametrize("damage", ["truncated", "not parquet", "unreadable"])
def test_an_unreadable_sealed_file_is_named_with_why_and_the_rest_stays_readable(tmp_path, make_event, damage):
    db, path = _sealed_week(tmp_path, make_event)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "not parquet":
        path.write_bytes(b"x" * len(data))
    else:
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reads")
    reason = {"truncated": "truncated or replaced", "not parquet": "not a Parquet file", "unreadable": "unreadable"}
    status = run_cli("status", "--db", str(db), "--format", "json")
    lake_status = json.loads(status.stdout)["lake"]
    assert lake_status["unavailable_days"] == [_days_ago(2).isoformat()]
    assert lake_status["unavailable"][0]["reason"].startswith(reason[damage])
    query = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert json.loads(query.stdout) == [{"n": 15}] and reason[damage] in query.stderr
    path.chmod(0o644)


def test_damage_inside_a_sealed_file_fails_the_query_in_one_line_naming_the_file(tmp_path, make_event):
    db, path = _sealed_week(tmp_path, make_event)
    data = bytearray(path.read_bytes())
    data[4:-8] = b"\x00" * (len(data) - 12)  # the magic at both ends intact, the rest zeroed
    path.write_bytes(bytes(data))
    query = run_cli("query", "SELECT count(*), max(raw) FROM events", "--db", str(db))
    assert_one_line_error(query, 1, f"{_days_ago(2).isoformat()} (day={_days_ago(2).isoformat()}/", "damaged")


_FULL_DISK = """
import resource, signal, sys
from pipeline.cli.main import main
from pipeline.store import lake

real = lake._write_file
def full(*args, **kwargs):  # the disk fills while the day is written: the kernel refuses the write
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        return real(*args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
lake._write_file = full
main(["--config", sys.argv[1], "run"])
"""


def test_a_full_disk_while_sealing_fails_the_cycle_in_one_line_and_the_next_run_seals(tmp_path, make_event):
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
        expected = _all(s)
    config = tmp_path / "tw.yaml"
    config.write_text(f"database: {db}\nstore: {{seal_after: 2d, seal_days_per_cycle: 1}}\n")
    child = subprocess.run([sys.executable, "-c", _FULL_DISK, str(config)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert_one_line_error(child, 1, "seal:", "could not write", "File too large", "nothing was written")
    assert not [p for p in lake_dir(db).rglob("*") if p.is_file()]  # nothing half-written
    with open_store(db) as s:
        assert _all(s) == expected
        assert s.con.execute("SELECT count(*) FROM lake_files").fetchall() == [(0,)]
        assert s.con.execute("SELECT status FROM runs WHERE command = 'cycle.seal'").fetchall() == [("failed",)]
    again = run_cli("--config", str(config), "run")
    assert again.returncode == 0, again.stderr
    with open_store(db) as s:
        assert _all(s) == expected
        assert s.con.execute("SELECT count(*) FROM lake_files").fetchall() == [(1,)]


def test_the_service_cycle_seals_a_bounded_number_of_days(tmp_path, make_event):
    from pipeline.core.config import Config
    from pipeline.service.cycle import run_cycle

    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
    config = Config.model_validate({"store": {"seal_after": "2d", "seal_days_per_cycle": 2}})
    result = run_cycle(config, Inventory(), db, echo=lambda _: None)
    [seal] = [step for step in result.steps if step.name == "seal"]
    assert seal.ok, seal.error
    assert len(seal.counts["sealed"]["days"]) == 2 and seal.counts["waiting"] == 2  # days 6..3 sealable
    run_cycle(config, Inventory(), db, echo=lambda _: None)
    with open_store(db, read_only=True) as s:
        assert s.con.execute("SELECT count(DISTINCT day) FROM lake_files").fetchall() == [(4,)]
        assert s.con.execute("SELECT count(*) FROM events").fetchall() == [(18,)]
        assert s.con.execute("SELECT count(*) FROM events_hot").fetchall() == [(6,)]  # the last 2 days


def test_a_configured_lake_path_is_where_days_are_sealed_and_read_from(tmp_path, make_event):
    from pipeline.core.config import Config
    from pipeline.service.cycle import run_cycle

    db = tmp_path / "s.duckdb"
    shared = tmp_path / "shared-lake"
    with open_store(db) as s:
        _ingest(s, tmp_path, _week(make_event))
    config = Config.model_validate({"store": {"seal_days_per_cycle": 5}, "lake": {"path": str(shared)}})
    [seal] = [x for x in run_cycle(config, Inventory(), db, echo=lambda _: None).steps if x.name == "seal"]
    assert seal.ok, seal.error
    assert len(list(shared.glob("day=*/*.parquet"))) == 4 and not lake_dir(db).exists()
    query = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert json.loads(query.stdout) == [{"n": 18}], query.stderr  # a reader finds them without the config
    moved = Config.model_validate({"store": {}, "lake": {"path": str(tmp_path / "elsewhere")}})
    [seal] = [x for x in run_cycle(moved, Inventory(), db, echo=lambda _: None).steps if x.name == "seal"]
    assert not seal.ok and "lake.path" in seal.error and str(shared) in seal.error


def test_a_range_of_days_reads_like_events_from_only_those_days_files(store, tmp_path, make_event):
    """``events_between`` (what a fit reads its computed cells through) holds exactly the events
    ``events`` holds in its range, every column the same, naming only the files of its days (a
    scan of ``events`` opens every sealed day's file); a missing file is left out as ``events``
    leaves it out."""
    _ingest(store, tmp_path, _week(make_event))
    _seal_all(store)
    lo = datetime.combine(_days_ago(4), datetime.min.time(), UTC)
    hi = lo + 2 * DAY
    ranged = events_between(store.con, store.path, lo, hi)
    assert ranged.count(".parquet") == 3  # days -4, -3 and the day `hi` falls on
    query = "SELECT * EXCLUDE (ingested_at) FROM {} AS e WHERE event_time >= ? AND event_time < ? ORDER BY event_id"
    expected = store.con.execute(query.format("events"), [lo, hi]).fetchall()
    assert len(expected) == 6
    assert store.con.execute(query.format(ranged), [lo, hi]).fetchall() == expected
    gone = next(lake_dir(store.path).glob(f"day={_days_ago(4).isoformat()}/*.parquet"))
    gone.unlink()
    left = store.con.execute(query.format(events_between(store.con, store.path, lo, hi)), [lo, hi]).fetchall()
    assert left == [row for row in expected if row[1] >= lo + DAY]
