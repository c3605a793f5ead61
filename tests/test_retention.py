"""Retention: old events to Parquet and out of the store, old raw JSON dropped, evidence kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from detectors.base import Finding
from models.inventory import Attributor
from pipeline.core.config import Retention
from pipeline.detection.findings import save_findings
from pipeline.ingest.run import ingest_files
from pipeline.store.retention import prune
from tests.conftest import run_cli, write_ndjson


def _ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store(store, tmp_path, make_event):
    events = ([make_event(i, eventTime=_ago(500)) for i in range(5)]
              + [make_event(10 + i, eventTime=_ago(100)) for i in range(4)]
              + [make_event(20 + i, eventTime=_ago(10)) for i in range(3)])
    write_ndjson(tmp_path / "e.jsonl", events)
    ingest_files(store, [tmp_path / "e.jsonl"], Attributor(None))
    cited = events[0]["eventId"]
    when = datetime.now(UTC) - timedelta(days=500)
    save_findings(store, [Finding(detector="out_of_scope", agent="ram-user:ci-deploy", severity="high", score=0.8,
                                  first_seen=when, last_seen=when, summary="old but open", event_ids=[cited],
                                  evidence={}, dedup_key="k")], {})
    return events, cited


def test_prune_archives_deletes_and_drops_raw_but_keeps_evidence(store, tmp_path, make_event):
    events, cited = _store(store, tmp_path, make_event)
    archive = tmp_path / "archive"
    report = prune(store, Retention(events=timedelta(days=400), raw_json=timedelta(days=90), archive_dir=archive))
    assert (report.archived, report.deleted, report.kept_as_evidence) == (4, 4, 1)
    assert report.raw_dropped == 4  # the 100-day-old events; the cited 500-day-old one keeps its raw
    rows = dict(store.con.execute("SELECT event_id, raw IS NOT NULL FROM events").fetchall())
    assert rows[cited] is True and len(rows) == 8
    assert [rows[e["eventId"]] for e in events[5:9]] == [False] * 4
    assert all(rows[e["eventId"]] for e in events[9:])
    typed = store.con.execute("SELECT count(*) FROM events WHERE raw IS NULL AND event_name IS NOT NULL")
    assert typed.fetchall()[0][0] == 4  # typed columns stay
    parquet = store.con.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{archive}/*/*.parquet')").fetchall()
    assert parquet == [(4, 4)]
    assert len(list(archive.glob("day=*"))) == 1
    again = prune(store, Retention(events=timedelta(days=400), raw_json=timedelta(days=90), archive_dir=archive))
    assert (again.archived, again.deleted, again.raw_dropped) == (0, 0, 0)


def test_prune_command_and_archive_queryable(tmp_path, make_event):
    db = tmp_path / "s.duckdb"
    events = [make_event(i, eventTime=_ago(800)) for i in range(3)] + [make_event(9, eventTime=_ago(1))]
    write_ndjson(tmp_path / "e.jsonl", events)
    assert run_cli("ingest", "--file", str(tmp_path / "e.jsonl"), "--db", str(db)).returncode == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"retention: {{events: 400d, archive_dir: {tmp_path / 'arch'}}}\n")
    out = run_cli("--config", str(cfg), "prune", "--db", str(db), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["archived"] == 3
    # the archive is readable by `query` as the config's `retention.archive_dir` (the only
    # files besides the store a query may read), so the query runs with that config
    q = run_cli("--config", str(cfg), "query", f"SELECT count(*) AS n FROM read_parquet('{tmp_path / 'arch'}/*/*.parquet')",
                "--db", str(db), "--format", "json")
    assert json.loads(q.stdout) == [{"n": 3}], q.stderr
    elsewhere = run_cli("query", f"SELECT count(*) AS n FROM read_parquet('{tmp_path / 'arch'}/*/*.parquet')",
                        "--db", str(db))
    assert elsewhere.returncode == 2 and "retention.archive_dir" in elsewhere.stderr
    left = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert json.loads(left.stdout) == [{"n": 1}]


def test_prune_without_a_retention_policy_is_a_usage_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("timezone: UTC\n")
    out = run_cli("--config", str(cfg), "prune", "--db", str(tmp_path / "s.duckdb"))
    assert out.returncode == 2 and "retention" in out.stderr
