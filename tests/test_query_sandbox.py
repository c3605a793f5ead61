"""``trailwarden query`` may read the store and the retention archive, and nothing else on the host.

Every attack of issue 13 (item 8) is tried against a real store: through ``run_query`` (what the
command runs), through the sandboxed connection itself (DuckDB's own switches, should a statement
get past the check), and through the CLI where the process matters (its environment, the live
store beside a current snapshot). Legitimate queries - events, JSON operators, DESCRIBE, PIVOT,
EXPLAIN, the archive's Parquet - keep working.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml

from pipeline.core.errors import UsageError
from pipeline.store.query import run_query
from pipeline.store.store import Store, open_for_reading, open_store, publish_snapshot
from tests.conftest import REAL_ATTACKS, assert_one_line_error, run_cli

SLACK_TOKEN = "xoxb-sandbox-test-token-0123456789"
AK_SECRET = "sandbox-ak-secret-0123456789"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the real attack traffic, and a retention archive of five of its events."""
    folder = tmp_path_factory.mktemp("sandbox")
    (folder / "data" / "archive" / "day=2020-09-14").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "database": str(folder / "data" / "trailwarden.duckdb"),
        "retention": {"events": "400d", "archive_dir": str(folder / "data" / "archive")}}), encoding="utf-8")
    result = run_cli("--config", str(folder / "config.yaml"), "ingest", "--file", str(REAL_ATTACKS))
    assert result.returncode == 0, result.stderr
    duckdb.connect(str(folder / "other.duckdb")).close()  # a database a query might try to attach
    con = duckdb.connect(str(folder / "data" / "trailwarden.duckdb"))
    archived = folder / "data" / "archive" / "day=2020-09-14" / "events_0.parquet"
    con.execute(f"COPY (SELECT * FROM events ORDER BY event_id LIMIT 5) TO '{archived}' (FORMAT parquet)")
    con.close()
    return folder


@pytest.fixture
def reader(home: Path) -> Iterator[Store]:
    with open_for_reading(home / "data" / "trailwarden.duckdb", allowed_dirs=[home / "data" / "archive"]) as store:
        yield store


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: nothing may be written or replaced."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- what a query may not do -----------------------------------------------------------------------
ATTACKS = [
    ("COPY (SELECT 'x') TO '{home}/data/trailwarden.duckdb' (FORMAT csv)", "read-only"),
    ("COPY (SELECT 'x') TO '{home}/data/archive/planted.parquet' (FORMAT parquet)", "read-only"),
    ("COPY (SELECT 'x') TO '/tmp/trailwarden-sandbox-test.csv'", "read-only"),
    ("EXPLAIN ANALYZE COPY (SELECT 'x') TO '{home}/data/archive/planted.csv'", "read-only"),
    ("EXPORT DATABASE '{home}/exported'", "read-only"),
    ("SELECT * FROM read_text('/etc/passwd')", "Cannot access file"),
    ("SELECT * FROM read_blob('/proc/self/environ')", "Cannot access file"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Cannot access file"),
    ("SELECT * FROM read_json_auto('/etc/hostname')", "Cannot access file"),
    ("SELECT * FROM glob('/etc/*')", "Cannot access file"),
    ("SELECT * FROM read_blob('{home}/config.yaml')", "Cannot access file"),
    ("SELECT * FROM read_blob('{home}/data/archive/../../config.yaml')", "Cannot access file"),
    ("ATTACH '{home}/other.duckdb' AS other", "read-only"),
    ("INSTALL httpfs", "read-only"),
    ("LOAD httpfs", "read-only"),
    ("CREATE SECRET leak (TYPE s3, KEY_ID 'a', SECRET 'b')", "read-only"),
    ("SET enable_external_access = true", "read-only"),
    ("RESET lock_configuration", "read-only"),
    ("PRAGMA enable_profiling", "settings cannot be changed"),
    ("SELECT 1; SELECT 2", "one statement at a time"),
    ("", "no SQL to run"),
    ("   \n", "no SQL to run"),
    ("/* only a comment */", "no SQL to run"),
    (";", "no SQL to run"),
]


@pytest.mark.parametrize(("sql", "said"), ATTACKS, ids=[a[0][:40] or "empty" for a in ATTACKS])
def test_a_query_touches_no_file_and_no_setting(home, reader, sql, said):
    before = fingerprint(home)
    with pytest.raises(UsageError) as refused:
        run_query(reader, sql.format(home=home))
    assert refused.value.exit_code == 2 and said in str(refused.value)
    assert fingerprint(home) == before
    assert not Path("/tmp/trailwarden-sandbox-test.csv").exists()


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 'x') TO '{home}/data/trailwarden.duckdb.tmp' (FORMAT csv)",
    "EXPORT DATABASE '{home}/exported'",
    "SELECT * FROM read_blob('/proc/self/environ')",
    "ATTACH '{home}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE SECRET leak (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "SET enable_external_access = true",
    "RESET enable_external_access",
    "SET lock_configuration = false",
    "SET allowed_directories = ['/']",
    "SET autoinstall_known_extensions = true",
])
def test_the_connection_itself_refuses_even_a_statement_that_got_past_the_check(home, reader, sql):
    before = fingerprint(home)
    with pytest.raises(duckdb.Error, match=r"disabled (by|through) configuration|has been locked|Permission Error"):
        reader.con.execute(sql.format(home=home)).fetchall()
    assert fingerprint(home) == before


def test_the_sandbox_cannot_be_lifted_in_a_query_and_the_live_store_beside_a_snapshot_is_safe(tmp_path):
    """While the snapshot is current the reader has the snapshot open, not the store: the issue's
    8-byte overwrite of the live store went through there."""
    db = tmp_path / "trailwarden.duckdb"
    assert run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(db)).returncode == 0
    publish_snapshot(db)
    before = fingerprint(tmp_path)
    with open_for_reading(db) as store:
        assert store.read_from.endswith(".snapshot.duckdb")
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            store.con.execute(f"COPY (SELECT 'x') TO '{db}' (FORMAT csv)")
    result = run_cli("query", f"COPY (SELECT 'x') TO '{db}' (FORMAT csv)", "--db", str(db))
    assert_one_line_error(result, 2, "read-only")
    assert fingerprint(tmp_path) == before
    with open_store(db) as store:  # the live store is whole and writable
        assert store.con.execute("SELECT count(*) FROM events").fetchall() == [(502,)]


def test_the_cli_reads_the_archive_as_documented_but_not_the_process_environment(home):
    env = {"SLACK_BOT_TOKEN": SLACK_TOKEN, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET}
    result = run_cli("--config", str(home / "config.yaml"), "query",
                     "SELECT content FROM read_blob('/proc/self/environ')", env=env)
    assert_one_line_error(result, 2, "Cannot access file", "/proc/self/environ")
    assert SLACK_TOKEN not in result.stdout + result.stderr and AK_SECRET not in result.stdout + result.stderr
    archive = run_cli("--config", str(home / "config.yaml"), "query", "--format", "json",
                      f"SELECT count(*) AS n FROM read_parquet('{home}/data/archive/*/*.parquet')")
    assert archive.returncode == 0, archive.stderr
    assert json.loads(archive.stdout) == [{"n": 5}]


@pytest.mark.parametrize("sql", ["", "SELECT 1; SELECT 2", "/* nothing */"])
def test_empty_and_several_statements_are_usage_errors_not_internal_errors(home, sql):
    assert_one_line_error(run_cli("--config", str(home / "config.yaml"), "query", sql), 2, "SQL")


# -- what a query still does -----------------------------------------------------------------------
def test_events_json_operators_and_the_archive_stay_queryable(home, reader):
    _, [(count,)] = run_query(reader, "SELECT count(*) FROM events")
    assert count == 502
    _, rows = run_query(reader, "SELECT request_parameters->>'$.bucketName', json_extract_string(raw, '$.eventName') "
                                "FROM events WHERE event_name = ? LIMIT 1", ["GetBucketAcl"])
    assert rows and rows[0][1] == "GetBucketAcl"
    for sql in ("SELECT count(*) FROM read_parquet('{home}/data/archive/*/*.parquet')",
                "SELECT count(*) FROM read_parquet('{home}/data/archive/**/*.parquet')"):
        assert run_query(reader, sql.format(home=home))[1] == [(5,)]
    for sql in ("DESCRIBE events", "SHOW TABLES", "PRAGMA table_info('events')", "CALL pragma_version()",
                "EXPLAIN SELECT count(*) FROM events", "EXPLAIN ANALYZE SELECT count(*) FROM events",
                "PIVOT (SELECT agent, event_rw FROM events) ON event_rw USING count(*)",
                "SUMMARIZE SELECT event_rw FROM events", "SELECT 1 AS one; -- done"):
        columns, rows = run_query(reader, sql)
        assert columns and rows, sql



def test_a_second_reader_of_a_locked_instance_in_the_same_process_works_in_utc(home, reader):
    """DuckDB shares one database instance among a process's connections to a file (a notebook
    holding a reader and opening another, or the snapshot held open): the second reader must not
    fail on the locked settings, reads in UTC and is as sandboxed as the first."""
    with open_for_reading(home / "data" / "trailwarden.duckdb") as second:
        assert second.con.execute("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
        assert run_query(second, "SELECT count(*) FROM events")[1] == [(502,)]
        with pytest.raises(UsageError, match="Cannot access file"):
            run_query(second, "SELECT * FROM read_blob('/proc/self/environ')")
