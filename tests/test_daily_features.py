"""Baselines from daily aggregates (issue 18 item 3): a refit that reads the per-day rows kept as
days sealed learns exactly what a fit from the raw events learns - over an organisation's month
with incidents and open findings (tainted cells), late events of a sealed day, a time zone with a
half-hour offset, a triage that turns a finding into a false positive, and an inventory change."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from models.inventory import Attributor
from pipeline.core.config import load_config
from pipeline.core.times import day_start
from pipeline.detection import features, learning
from pipeline.ingest.run import ingest_files
from pipeline.store import lake
from pipeline.store.store import Store, open_store
from pipeline.store.tiers import lake_dir
from tests.conftest import detected_organisation, run_cli, write_ndjson


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A month of a 24-agent organisation with its incidents, ingested and detected (findings
    open), every day but the last two sealed."""
    root = tmp_path_factory.mktemp("org")
    detected_organisation(root, agents=24, weeks=4, seed=3, volume=0.01)
    cfg = load_config(root / "config" / "trailwarden.yaml")
    db = root / cfg.database
    with open_store(db) as store:
        lake.seal(store, timedelta(days=2), max_days=100)
    return {"root": root, "db": db, "tz": cfg.timezone, "end": day_start(datetime.now(UTC))}


def _raw(store: Store, end: datetime, tz: str) -> dict[str, Any]:
    """The fit from raw events only: the same fit with no stored day (rolled back)."""
    store.con.execute("BEGIN TRANSACTION")
    try:
        store.con.execute("DELETE FROM feature_days")
        return _fit(store, end, tz)
    finally:
        store.con.execute("ROLLBACK")


def _fit(store: Store, end: datetime, tz: str) -> dict[str, Any]:
    """Every agent's fitted baseline as stored (its JSON object: the order of its maps' keys is
    the order rows came, not a property of the baseline)."""
    return {agent: json.loads(b.to_json()) for agent, b in learning.fit(store, end, tz).items()}


def _stored_days(store: Store, end: datetime, tz: str) -> dict[str, int]:
    where, params = learning.learnable(end - learning.HISTORY, end)
    plan = features.plan(store, end - learning.HISTORY, end, tz, where, params, learning.UNLEARNED_STATUSES)
    return {key: len(days) for (key, _), days in plan.stored.items()}


@pytest.mark.slow
def test_a_refit_from_stored_days_learns_what_the_raw_events_teach(org: dict[str, Any]) -> None:
    with open_store(org["db"]) as store:
        built = features.refresh(store, org["tz"], max_days=100)
        assert len(built.days) >= 24 and built.stale_days == 0
        stored = _stored_days(store, org["end"], org["tz"])
        # every part read most of the 28 days from its stored rows, not from events
        assert set(stored) == {p.key for p in features.parts()} and min(stored.values()) >= 24
        assert features.plan(store, org["end"] - learning.HISTORY, org["end"], org["tz"], "true", [],
                             learning.UNLEARNED_STATUSES).tainted, "the scenario's findings taint some cells"
        fitted = _fit(store, org["end"], org["tz"])
        assert fitted == _raw(store, org["end"], org["tz"])
        assert len(fitted) >= 24


@pytest.mark.slow
def test_a_half_hour_time_zone_a_late_event_and_a_triage_change_learn_the_same(org: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    zone = "Asia/Kolkata"  # local days and hours straddle the UTC days' pieces
    with open_store(org["db"]) as store:
        features.refresh(store, zone, max_days=100)
        assert min(_stored_days(store, org["end"], zone).values()) >= 24
        # a late event of a sealed day waits in the hot table: that day is read from its events
        sealed = store.con.execute("SELECT min(day) + 10 FROM lake_files").fetchone()[0]
        first_file = sorted((org["root"] / "events").rglob("*.ndjson.gz"))[0]
        late = json.loads(gzip.decompress(first_file.read_bytes()).decode().splitlines()[0])
        late["eventId"] = "late-event-1"
        late["eventTime"] = f"{sealed.isoformat()}T23:58:00Z"
        write_ndjson(tmp_path / "late.jsonl", [late])
        assert ingest_files(store, [tmp_path / "late.jsonl"], Attributor(None)).new == 1
        # a finding called a false positive is learned again
        store.con.execute("UPDATE findings SET status = 'false_positive' WHERE id = (SELECT min(id) FROM findings "
                          "WHERE status = 'open')")
        fitted = _fit(store, org["end"], zone)
        assert fitted == _raw(store, org["end"], zone)
        where, params = learning.learnable(org["end"] - learning.HISTORY, org["end"])
        plan = features.plan(store, org["end"] - learning.HISTORY, org["end"], zone, where, params,
                             learning.UNLEARNED_STATUSES)
        assert all(sealed not in days and len(days) >= 23 for days in plan.stored.values())


@pytest.mark.slow
def test_stale_days_are_read_from_events_and_rebuilt_a_bounded_step_at_a_time(org: dict[str, Any]) -> None:
    with open_store(org["db"]) as store:
        features.refresh(store, org["tz"], max_days=100)
        assert not features.stale_days(store, org["tz"])
        # an inventory change: every stored day is stale, nothing wrong is read meanwhile
        store.con.execute("DELETE FROM attribution_version")
        store.con.execute("INSERT INTO attribution_version VALUES ('another-inventory', now())")
        assert _stored_days(store, org["end"], org["tz"]) == {}
        stale = len(features.stale_days(store, org["tz"]))
        step = features.refresh(store, org["tz"], max_days=2)
        assert len(step.days) == 2 and step.stale_days == stale - 2
        assert _stored_days(store, org["end"], org["tz"])["shared"] == 2


def _days_ago(n: int) -> str:
    return (datetime.now(UTC) - timedelta(days=n)).strftime("%Y-%m-%dT10:00:00Z")


def test_the_cycle_keeps_ended_days_rows_and_a_day_with_late_events_is_rebuilt(tmp_path: Path, make_event) -> None:
    """With ``store:`` configured, each cycle keeps the rows of the UTC days that ended, before it
    detects; a late event makes its day (and the next: sliding windows look back across midnight)
    stale until a cycle rebuilds them from all their events, sealed or not."""
    cfg = tmp_path / "tw.yaml"
    cfg.write_text(f"database: {tmp_path / 'tw.duckdb'}\ntimezone: Asia/Shanghai\nstore: {{seal_after: 3d, "
                   f"seal_days_per_cycle: 5}}\nsources: [{{name: drop, type: files, path: {tmp_path / 'in'}}}]\n")
    (tmp_path / "in").mkdir()
    write_ndjson(tmp_path / "in" / "a.jsonl", [make_event(i, eventTime=_days_ago(1 + i % 4)) for i in range(12)])
    done = run_cli("--config", str(cfg), "run")
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[-5:]] == ["ingest", "features", "detect", "alert",
                                                                           "seal"]
    calls = f"SELECT sum(calls) FROM {features.parts()[0].table} WHERE feature_day = ?"
    with open_store(tmp_path / "tw.duckdb") as store:
        kept = dict(store.con.execute("SELECT day, events FROM feature_days WHERE part = 'shared'").fetchall())
        assert sorted(kept.values()) == [3, 3, 3, 3]  # 4 ended days, sealed (the oldest) or hot
        assert store.con.execute("SELECT count(*) FROM lake_files").fetchone()[0] == 1
        assert not features.stale_days(store, "Asia/Shanghai")
        late_day = min(kept)  # the sealed one
        before = store.con.execute(calls, [late_day]).fetchone()[0]
    write_ndjson(tmp_path / "in" / "b.jsonl", [make_event(50, eventTime=f"{late_day.isoformat()}T23:59:00Z")])
    with open_store(tmp_path / "tw.duckdb") as store:
        assert ingest_files(store, [tmp_path / "in" / "b.jsonl"], Attributor(None)).new == 1
        assert features.stale_days(store, "Asia/Shanghai") == [late_day, late_day + timedelta(days=1)]
    done = run_cli("--config", str(cfg), "run")
    assert done.returncode == 0, done.stderr
    with open_store(tmp_path / "tw.duckdb") as store:
        assert not features.stale_days(store, "Asia/Shanghai")
        assert store.con.execute(calls, [late_day]).fetchone()[0] == before + 1


@pytest.mark.slow
def test_a_refit_reads_no_sealed_day_it_does_not_compute(org: dict[str, Any], tmp_path: Path) -> None:
    """What a fit computes from events (tainted cells, days not kept) is read through one time
    range that the sealed files' statistics prune: a sealed day before it is not read at all, so
    a fit of a long history costs the cells it computes (an OR of ranges used to read every
    sealed file of the history whole: 340 s instead of 33 s at 10M events). Shown with a sealed
    day whose data pages are destroyed (its footer intact): the refit never touches them."""
    root = tmp_path / "copy"
    shutil.copytree(org["db"].parent, root)
    db = root / org["db"].name
    with open_store(db) as store:
        with store.transaction():
            lake.refresh_view(store)  # the copy's view reads the copy's files
        features.refresh(store, org["tz"], max_days=100)
        before = _fit(store, org["end"], org["tz"])
        where, params = learning.learnable(org["end"] - learning.HISTORY, org["end"])
        plan = features.plan(store, org["end"] - learning.HISTORY, org["end"], org["tz"], where, params,
                             learning.UNLEARNED_STATUSES)
        assert plan.tainted, "the scenario's findings taint some cells"
        first_computed = min(plan.tainted) - timedelta(days=1)
        files = store.con.execute("SELECT day, path FROM lake_files WHERE day >= ? AND day < ? ORDER BY day",
                                  [(org["end"] - learning.HISTORY).date(), first_computed]).fetchall()
    assert files, "a sealed day of the history before any computed cell"
    target = lake_dir(db) / files[0][1]
    data = bytearray(target.read_bytes())
    footer = len(data) - 8 - struct.unpack("<I", data[-8:-4])[0]
    data[4:footer] = b"\xff" * (footer - 4)  # every data page unreadable; magic and statistics intact
    target.write_bytes(bytes(data))
    with open_store(db) as store:
        with pytest.raises(duckdb.Error):  # the day cannot be read...
            store.con.execute("SELECT count(*), max(length(raw)) FROM events WHERE event_time >= ? AND event_time < ?",
                              [day_start(datetime.combine(files[0][0], datetime.min.time(), UTC)),
                               day_start(datetime.combine(files[0][0], datetime.min.time(), UTC)) + timedelta(days=1)]
                              ).fetchall()
        assert _fit(store, org["end"], org["tz"]) == before  # ... and the refit did not need to
