"""The store: migrations recorded in the file, read-only opening, clear errors."""

from __future__ import annotations

import duckdb
import pytest

from pipeline.core.errors import UsageError
from pipeline.store.store import migrations, open_store, store_needs_migration


def test_migrations_are_recorded_and_applied_once(tmp_path):
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:
        applied = s.con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [(m.version, m.name) for m in migrations()]
        tables = {r[0] for r in s.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {"events_hot", "lake_files", "quarantine", "ingest_state", "ingested_files", "runs"} <= tables
        views = {r[0] for r in s.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert "events" in views  # every event, hot and sealed (pipeline/store/lake.py)
    with open_store(db) as s:  # reopening applies nothing twice
        assert s.migrate() == []
        assert s.con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(migrations())


def test_a_migration_numbered_below_the_newest_applied_one_is_still_applied(tmp_path):
    """Numbers can be reserved and land late (0009 before 0008): a store must not skip one."""
    db = tmp_path / "s.duckdb"
    with open_store(db) as s:  # as if 0007 had shipped after the newest migration was applied
        s.con.execute("ALTER TABLE ingest_state DROP COLUMN recent")
        s.con.execute("DELETE FROM schema_migrations WHERE version = 7")
        assert s.schema_version() == migrations()[-1].version > 7
    with pytest.raises(UsageError, match="migrate"):
        open_store(db, read_only=True)
    with open_store(db) as s:
        columns = {r[0] for r in s.con.execute("SELECT column_name FROM duckdb_columns() "
                                               "WHERE table_name = 'ingest_state'").fetchall()}
        assert "recent" in columns and not store_needs_migration(s)


def test_read_only_open_of_a_missing_store_says_what_to_do(tmp_path):
    with pytest.raises(UsageError, match="trailwarden ingest"):
        open_store(tmp_path / "nothing.duckdb", read_only=True)


def test_read_only_refuses_a_store_from_before_the_migrations(tmp_path):
    db = tmp_path / "old.duckdb"
    duckdb.connect(str(db)).close()
    with pytest.raises(UsageError, match="migrate"):
        open_store(db, read_only=True)
    with open_store(db) as s:  # a writer migrates it
        assert not store_needs_migration(s)


def test_read_only_store_rejects_writes(tmp_path):
    db = tmp_path / "s.duckdb"
    open_store(db).close()
    with open_store(db, read_only=True) as s, pytest.raises(duckdb.Error):
        s.con.execute("DELETE FROM events")


def test_session_time_zone_is_utc_whatever_the_machine_says(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    with open_store(tmp_path / "s.duckdb") as s:
        assert s.con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"


def test_bad_memory_limit_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="memory_limit"):
        open_store(tmp_path / "s.duckdb", memory_limit="lots")


def test_runs_record_counts_and_errors(store):
    ok = store.start_run("ingest")
    store.finish_run(ok, {"new": 3})
    bad = store.start_run("ingest")
    store.finish_run(bad, {}, error="boom")
    rows = store.con.execute("SELECT status, counts->>'$.new', error FROM runs ORDER BY id").fetchall()
    assert rows == [("ok", "3", None), ("failed", None, "boom")]


def test_recent_counts_keep_one_hour_per_minute():
    from datetime import UTC, datetime, timedelta

    from pipeline.store.store import recent_counts, recent_total

    t0 = datetime(2026, 11, 29, 10, 0, 30, tzinfo=UTC)
    recent = recent_counts(None, t0, 40)
    recent = recent_counts(recent, t0 + timedelta(seconds=20), 2)  # the same minute: added up
    recent = recent_counts(recent, t0 + timedelta(minutes=30), 5)
    assert recent_total(recent, t0 + timedelta(minutes=30)) == 47
    assert recent_total(recent, t0 + timedelta(minutes=61)) == 5  # the first minute has left the hour
    assert recent_total(recent_counts(recent, t0 + timedelta(hours=3), 0), t0 + timedelta(hours=3)) == 0
    assert recent_total(None, t0) is None  # never recorded: unknown, not zero


_PAYLOAD = ("request_parameters", "response_elements", "additional_event_data")


def test_hot_events_keep_the_payload_only_in_raw_and_the_view_still_shows_it(tmp_path, monkeypatch, make_event):
    """DuckDB computes a table's generated columns on every INSERT: the payload columns over
    ``raw`` parsed each ingested event three more times. A store from before (migrations up to
    0027) keeps its events, and ``events`` shows the payload columns for old and new events."""
    from models.inventory import Attributor
    from pipeline.ingest.run import ingest_files
    from pipeline.store import store as store_mod
    from tests.conftest import write_ndjson

    db = tmp_path / "s.duckdb"
    shipped = store_mod.migrations
    params = {"RoleArn": "acs:ram::1:role/r"}
    old, new = (make_event(i, requestParameters=params, responseElements={"Id": str(i)},
                           additionalEventData={"Scheme": "https"}) for i in (1, 2))
    monkeypatch.setattr(store_mod, "migrations", lambda: [m for m in shipped() if m.version < 28])
    with open_store(db) as s:
        ingest_files(s, [write_ndjson(tmp_path / "old.jsonl", [old])], Attributor(None))
    monkeypatch.setattr(store_mod, "migrations", shipped)
    with open_store(db) as s:
        ingest_files(s, [write_ndjson(tmp_path / "new.jsonl", [new])], Attributor(None))
        hot = {r[0] for r in s.con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events_hot'").fetchall()}
        assert not hot & set(_PAYLOAD) and "raw" in hot
        rows = s.con.execute("SELECT event_id, request_parameters->>'$.RoleArn', response_elements->>'$.Id', "
                             "additional_event_data->>'$.Scheme' FROM events ORDER BY event_id").fetchall()
    assert rows == [(old["eventId"], "acs:ram::1:role/r", "1", "https"), (new["eventId"], "acs:ram::1:role/r", "2", "https")]
