"""The LookupEvents reader with the real alibabacloud-actiontrail20200706 client against a fake
ActionTrail endpoint on 127.0.0.1 (``tests.fakes.lookup_events``): fixed FORWARD windows paged by
NextToken, at most two requests a second, throttling, bad credentials, and crash safety.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest
from pydantic import ValidationError

from models.inventory import Attributor
from pipeline.core.config import LookupEventsSource
from pipeline.core.errors import TerminalError, TransientError
from pipeline.ingest.run import BatchWriter, ingest_batches
from pipeline.ingest.sources import credentials
from pipeline.ingest.sources.lookup_events import (
    OVERLAP,
    PAGE_INTERVAL,
    SETTLE,
    LookupReader,
    client_for,
)
from pipeline.store.store import open_store
from tests.conftest import BASE_EVENT, assert_one_line_error, kill_after_commits, run_cli
from tests.fakes.lookup_events import FakeLookupEvents
from tests.sources.conftest import SECRET, ids

NOBODY = Attributor(None)
NOW = datetime.now(UTC).replace(microsecond=0)
REGION = "cn-hangzhou"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(event_id: str, when: datetime) -> dict[str, Any]:
    return {**BASE_EVENT, "eventId": event_id, "eventTime": iso(when)}


def spaced(prefix: str, n: int, start: datetime, step: timedelta) -> list[dict[str, Any]]:
    return [event(f"{prefix}-{i:05d}", start + i * step) for i in range(n)]


def source(fake: FakeLookupEvents, **overrides: Any) -> LookupEventsSource:
    return LookupEventsSource.model_validate({"name": "history", "type": "lookup_events", "region": REGION,
                                              "endpoint": fake.endpoint, **overrides})


def run(store, fake: FakeLookupEvents, *, now: datetime = NOW, since: datetime | None = None,
        sleep=None, batch_size: int = 10_000, **reader_kw: Any):
    cfg = source(fake)
    reader = LookupReader(cfg, client_for(cfg, credentials.from_env()), store, since=since, now=now,
                          sleep=sleep or (lambda _s: None), **reader_kw)
    report = ingest_batches(store, reader.batches(NOBODY, batch_size))
    return report, reader


@pytest.fixture
def fake():
    with FakeLookupEvents() as f:
        yield f


# -- bad events -----------------------------------------------------------------------------------------
def test_an_event_with_a_lone_surrogate_is_quarantined_and_the_others_stored(store, fake):
    """Was: UnicodeEncodeError ended the run; nothing of the window was stored."""
    evs = spaced("s", 3, NOW - timedelta(hours=3), timedelta(hours=1))
    evs[1]["userIdentity"] = {**evs[1]["userIdentity"], "userName": "\ud800x"}  # sent as "\\ud800x"
    fake.add_events(evs)
    report, _ = run(store, fake)
    assert (report.new, report.quarantined) == (2, 1)
    assert ids(store)[0] == {"s-00000", "s-00002"}
    [(location, reason, raw)] = store.con.execute("SELECT location, reason, raw FROM quarantine").fetchall()
    assert location == f"{REGION} page 0 #1"
    assert reason == "string is not valid Unicode: lone surrogate in userIdentity.userName"
    assert '"userName":"\\ud800x"' in raw  # kept, written out


# -- paging -------------------------------------------------------------------------------------------
def test_pages_of_50_forward_through_one_fixed_window_store_every_event_once(store, fake):
    inside = spaced("in", 137, NOW - timedelta(days=6), timedelta(hours=1))
    outside = [event("too-old", NOW - timedelta(days=8)), event("too-new", NOW - timedelta(seconds=30))]
    fake.add_events(list(reversed(inside)) + outside)
    sleeps: list[float] = []
    report, reader = run(store, fake, sleep=sleeps.append)
    start, end = iso(NOW - SETTLE - timedelta(days=7)), iso(NOW - SETTLE)
    lookups = fake.lookups
    assert [r.events for r in lookups] == [50, 50, 37]
    for r in lookups:
        assert (r.params["StartTime"], r.params["EndTime"]) == (start, end)
        assert (r.params["MaxResults"], r.params["Direction"]) == ("50", "FORWARD")
    assert [r.params.get("NextToken") for r in lookups] == [None, lookups[0].next_token, lookups[1].next_token]
    assert (report.new, report.duplicates) == (137, 0)
    assert ids(store) == ({e["eventId"] for e in inside}, 137)
    assert sleeps == [PAGE_INTERVAL, PAGE_INTERVAL]
    assert (reader.report.pages, reader.report.events, reader.report.window) == (3, 137, (start, end))
    cursor, watermark = store.get_state("history", REGION)
    assert cursor == end and watermark == NOW - timedelta(days=6) + 136 * timedelta(hours=1)


def test_the_next_run_starts_ten_minutes_before_the_stored_cursor_and_stores_nothing_twice(store, fake):
    first = spaced("first", 60, NOW - timedelta(minutes=60), timedelta(seconds=55))  # up to NOW - 5 min
    fake.add_events(first)
    run(store, fake)
    cursor = store.get_state("history", REGION)[0]
    assert cursor == iso(NOW - SETTLE)
    late = event("late", NOW - timedelta(minutes=4))  # happened before the cursor, delivered after the run
    fresh = spaced("fresh", 3, NOW + timedelta(minutes=10), timedelta(minutes=1))
    fake.add_events([late, *fresh])
    later = NOW + timedelta(hours=1)
    report, _ = run(store, fake, now=later)
    request = fake.lookups[-1]
    assert request.params["StartTime"] == iso(NOW - SETTLE - OVERLAP)
    assert request.params["EndTime"] == iso(later - SETTLE)
    overlap = sum(datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")) >= NOW - SETTLE - OVERLAP
                  for e in first)
    assert (report.new, report.duplicates) == (4, overlap)
    assert ids(store)[1] == 64 and len(ids(store)[0]) == 64
    assert store.get_state("history", REGION)[0] == iso(later - SETTLE)


def test_a_window_never_reaches_back_more_than_90_days(store, fake):
    fake.add_events([event("d100", NOW - timedelta(days=100)), event("d89", NOW - timedelta(days=89)),
                     event("d1", NOW - timedelta(days=1))])
    run(store, fake, since=NOW - timedelta(days=200))
    request = fake.lookups[0]
    assert request.params["StartTime"] == iso(NOW - timedelta(days=90) + timedelta(minutes=5))
    assert ids(store)[0] == {"d89", "d1"}


def test_since_30d_backfills_through_the_cli(tmp_path, fake):
    fake.add_events([event("d40", NOW - timedelta(days=40)), *spaced("d20", 5, NOW - timedelta(days=20), timedelta(hours=1)),
                     *spaced("d2", 5, NOW - timedelta(days=2), timedelta(hours=1))])
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(json.dumps({"database": str(tmp_path / "s.duckdb"), "sources": [
        {"name": "history", "type": "lookup_events", "region": REGION, "endpoint": fake.endpoint}]}))
    started = datetime.now(UTC)
    result = run_cli("--config", str(cfg), "ingest", "--source", "history", "--since", "30d", "--format", "json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)["sources"]["history"]
    assert out["new"] == 10 and out["pages"] == 1
    asked = datetime.strptime(fake.lookups[0].params["StartTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(asked - (started - timedelta(days=30))) < timedelta(seconds=30)
    assert fake.lookups[0].params["Direction"] == "FORWARD"


def test_since_is_refused_where_nothing_uses_it_and_clamping_is_said(tmp_path, fake):
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(json.dumps({"database": str(tmp_path / "s.duckdb"), "sources": [
        {"name": "history", "type": "lookup_events", "region": REGION, "endpoint": fake.endpoint},
        {"name": "dumps", "type": "files", "path": str(tmp_path)}]}))
    refused = run_cli("--config", str(cfg), "ingest", "--source", "dumps", "--since", "30d")
    assert_one_line_error(refused, 2, "--since", "lookup_events sources only", "dumps")
    assert not fake.lookups
    clamped = run_cli("--config", str(cfg), "ingest", "--source", "history", "--since", "200d")
    assert clamped.returncode == 0, clamped.stderr
    assert "LookupEvents keeps 90 days: backfilling history from" in clamped.stderr


def test_status_lag_is_the_cursors_not_the_newest_events(store, fake):
    """A quiet source that is caught up: its newest event is two days old, its cursor is not."""
    from pipeline.service.status import collect_status

    now = datetime.now(UTC)
    fake.add_events([event("quiet", now - timedelta(days=2))])
    run(store, fake, now=now, since=now - timedelta(days=3))
    (row,) = [s for s in collect_status(store)["sources"] if s["source"] == "history"]
    assert row["lag_seconds"] < 600  # the window's end: a minute before now
    assert row["newest_event_age_seconds"] > timedelta(days=1).total_seconds()


# -- the request rate -----------------------------------------------------------------------------------
def _spacing(fake: FakeLookupEvents, sleeps: list[tuple[float, float]]) -> list[float]:
    """Seconds slept between each two consecutive requests."""
    lookups = fake.lookups
    return [sum(s for t, s in sleeps if a.at < t < b.at) for a, b in zip(lookups, lookups[1:], strict=False)]


def test_requests_are_never_closer_than_half_a_second(store, fake):
    fake.add_events(spaced("e", 260, NOW - timedelta(days=3), timedelta(minutes=10)))
    fake.fail_next(400, "Throttling.User", retry_after_ms=1000, after_pages=2)
    sleeps: list[tuple[float, float]] = []
    report, _ = run(store, fake, sleep=lambda s: sleeps.append((time.monotonic(), s)))
    assert report.new == 260
    assert len(fake.lookups) == 7  # six pages, one refused
    gaps = _spacing(fake, sleeps)
    assert len(gaps) == 6 and min(gaps) >= PAGE_INTERVAL, gaps


@pytest.mark.parametrize(("status", "code", "retry_after_ms", "expected"), [
    (400, "Throttling.User", 1500, [1.5, 1.5]),
    (400, "Throttling.User", None, [2 * PAGE_INTERVAL, 4 * PAGE_INTERVAL]),
    (503, "ServiceUnavailable", None, [2 * PAGE_INTERVAL, 4 * PAGE_INTERVAL]),
])
def test_throttling_backs_off_then_succeeds(store, fake, status, code, retry_after_ms, expected):
    fake.add_events(spaced("e", 120, NOW - timedelta(days=1), timedelta(minutes=5)))
    fake.fail_next(status, code, times=2, retry_after_ms=retry_after_ms, after_pages=1)
    sleeps: list[float] = []
    report, _ = run(store, fake, sleep=sleeps.append)
    assert report.new == 120
    assert [r.status for r in fake.lookups] == [200, status, status, 200, 200]
    assert sleeps == [PAGE_INTERVAL, *expected, PAGE_INTERVAL]
    assert store.get_state("history", REGION)[0] == iso(NOW - SETTLE)


def test_a_stop_while_throttled_commits_the_pages_read_without_waiting(store, fake):
    evs = spaced("e", 120, NOW - timedelta(days=1), timedelta(minutes=5))
    fake.add_events(evs)
    fake.fail_next(400, "Throttling.User", times=3, after_pages=1)
    sleeps: list[float] = []
    report, reader = run(store, fake, sleep=sleeps.append, stop=lambda: any(r.status == 400 for r in fake.lookups))
    assert reader.report.stopped and sleeps == [PAGE_INTERVAL]  # the page interval, no back-off
    assert report.new == 50 and store.get_state("history", REGION)[0] == evs[49]["eventTime"]
    rest, _ = run(store, fake)
    assert ids(store) == ({e["eventId"] for e in evs}, 120) and rest.new == 70


def test_a_short_retry_after_still_keeps_two_requests_a_second(store, fake):
    fake.add_events(spaced("e", 80, NOW - timedelta(days=1), timedelta(minutes=5)))
    fake.fail_next(400, "Throttling.User", retry_after_ms=100, after_pages=1)
    sleeps: list[tuple[float, float]] = []
    run(store, fake, sleep=lambda s: sleeps.append((time.monotonic(), s)))
    assert min(_spacing(fake, sleeps)) >= PAGE_INTERVAL


def test_throttling_that_does_not_stop_fails_the_run_without_moving_the_cursor(store, fake):
    fake.add_events(spaced("e", 30, NOW - timedelta(days=1), timedelta(minutes=5)))
    fake.fail_next(400, "Throttling.User", times=4, retry_after_ms=200)
    cfg = source(fake)
    reader = LookupReader(cfg, client_for(cfg, credentials.from_env()), store, now=NOW, sleep=lambda s: None,
                          retries=3)
    with pytest.raises(TransientError, match="throttling"):
        ingest_batches(store, reader.batches(NOBODY, 10_000))
    assert store.get_state("history", REGION) is None


def test_a_window_larger_than_max_pages_completes_over_several_runs(store, fake):
    evs = spaced("e", 250, NOW - timedelta(days=2), timedelta(minutes=10))
    fake.add_events(evs)
    for _ in range(5):
        run(store, fake, max_pages=2)
    assert ids(store) == ({e["eventId"] for e in evs}, 250)


def test_max_pages_is_a_setting_of_the_source(store, fake):
    fake.add_events(spaced("e", 250, NOW - timedelta(days=2), timedelta(minutes=10)))
    cfg = source(fake, max_pages=3)
    reader = LookupReader(cfg, client_for(cfg, credentials.from_env()), store, now=NOW, sleep=lambda _s: None)
    report = ingest_batches(store, reader.batches(NOBODY, 10_000))
    assert reader.report.pages == 3 and report.new == 150
    with pytest.raises(ValidationError):
        source(fake, max_pages=0)


def test_a_stop_ends_the_window_at_a_page_and_the_next_run_reads_the_rest_once(store, fake):
    """`serve` got SIGTERM: the reader stops after the page in hand, commits it with how far it
    read, and the next run goes on from there (less the overlap), storing each event once."""
    evs = spaced("e", 250, NOW - timedelta(days=2), timedelta(minutes=10))
    fake.add_events(evs)
    report, reader = run(store, fake, stop=lambda: len(fake.lookups) >= 2)
    assert reader.report.stopped and reader.report.pages == 2
    assert report.new == 100 and ids(store)[1] == 100
    assert store.get_state("history", REGION)[0] == evs[99]["eventTime"]  # not the window's end
    rest, _ = run(store, fake)
    assert fake.lookups[2].params["StartTime"] == iso(NOW - timedelta(days=2) + 99 * timedelta(minutes=10) - OVERLAP)
    assert rest.new == 150 and ids(store) == ({e["eventId"] for e in evs}, 250)


def test_an_unreachable_endpoint_is_transient(store, fake):
    cfg = source(fake)
    fake.stop()
    reader = LookupReader(cfg, client_for(cfg, credentials.from_env()), store, now=NOW, sleep=lambda s: None)
    with pytest.raises(TransientError):
        ingest_batches(store, reader.batches(NOBODY, 10_000))


# -- credentials --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "code"), [(403, "InvalidAccessKeyId.NotFound"), (400, "SignatureDoesNotMatch"),
                                              (403, "NoPermission")])
def test_rejected_credentials_stop_at_once(store, fake, status, code):
    fake.add_events([event("e", NOW - timedelta(hours=1))])
    fake.fail_next(status, code, times=5)
    sleeps: list[float] = []
    with pytest.raises(TerminalError) as info:
        run(store, fake, sleep=sleeps.append)
    assert credentials.ID_ENV in str(info.value) and SECRET not in str(info.value)
    assert len(fake.lookups) == 1 and sleeps == []


def test_bad_credentials_exit_1_with_one_line_and_no_secret(tmp_path, fake):
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(json.dumps({"database": str(tmp_path / "s.duckdb"), "sources": [
        {"name": "history", "type": "lookup_events", "region": REGION, "endpoint": fake.endpoint}]}))
    fake.fail_next(403, "InvalidAccessKeyId.NotFound", message="Specified access key is not found.")
    result = run_cli("--config", str(cfg), "ingest", "--source", "history")
    assert_one_line_error(result, 1, credentials.ID_ENV, credentials.SECRET_ENV, "history")
    assert SECRET not in result.stdout + result.stderr


# -- crash safety -------------------------------------------------------------------------------------
def test_a_failure_in_the_middle_of_a_window_keeps_the_cursor_and_the_rerun_stores_each_event_once(
        store, fake, monkeypatch):
    evs = spaced("e", 260, NOW - timedelta(days=2), timedelta(minutes=10))
    fake.add_events(evs)
    monkeypatch.setattr(BatchWriter, "group_rows", 1)  # every page's batch its own transaction
    fake.fail_next(400, "InvalidParameter", message="something odd", after_pages=3)
    with pytest.raises(TerminalError):
        run(store, fake, batch_size=50)
    partial = ids(store)[1]
    assert partial <= 150
    state = store.get_state("history", REGION)
    newest = store.con.execute("SELECT max(event_time) FROM events").fetchall()[0][0]
    # the cursor moved only as far as the newest event committed: the rerun starts there, less the
    # overlap for late events, and reads nothing it already has but that overlap
    assert state is not None and state[0] == iso(newest)
    report, _ = run(store, fake, batch_size=50)
    assert fake.lookups[-1].params["StartTime"] == iso(newest - OVERLAP)
    overlap = sum(1 for e in evs if newest - OVERLAP <= datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")) <= newest)
    assert (report.new, report.duplicates) == (260 - partial, overlap)
    assert ids(store) == ({e["eventId"] for e in evs}, 260)
    assert store.get_state("history", REGION)[0] == iso(NOW - SETTLE)


KILLER = """
import sys
from datetime import datetime
from pipeline.ingest import run as ingest
from pipeline.core.config import LookupEventsSource
from pipeline.ingest.sources import credentials, lookup_events
from pipeline.store.store import open_store
from models.inventory import Attributor
cfg = LookupEventsSource.model_validate_json(sys.argv[2])
with open_store(sys.argv[1]) as s:
    reader = lookup_events.LookupReader(cfg, lookup_events.client_for(cfg, credentials.from_env()), s,
                                        now=datetime.fromisoformat(sys.argv[3]), sleep=lambda _s: None)
    ingest.ingest_batches(s, reader.batches(Attributor(None), 50))
"""


@pytest.mark.slow  # kill -9 of a process
def test_kill_9_in_the_middle_of_a_window_then_a_rerun_stores_each_event_once(tmp_path, fake):
    evs = spaced("e", 300, NOW - timedelta(days=2), timedelta(minutes=5))
    fake.add_events(evs)
    db = tmp_path / "s.duckdb"
    cfg = json.dumps({"name": "history", "type": "lookup_events", "region": REGION, "endpoint": fake.endpoint})
    kill_after_commits(KILLER, [str(db), cfg, NOW.isoformat()], commits=2)
    con = duckdb.connect(str(db), read_only=True)
    partial = con.execute("SELECT count(*) FROM events").fetchone()[0]
    state = con.execute("SELECT cursor FROM ingest_state WHERE source = 'history'").fetchall()
    newest = con.execute("SELECT max(event_time) FROM events").fetchall()[0][0]
    con.close()
    # two pages in; the cursor marks the newest event committed, not the window's end
    assert partial == 100 and state == [(iso(newest),)]
    with open_store(db) as s:
        report, _ = run(s, fake, batch_size=50)
        assert fake.lookups[-1].params["StartTime"] == iso(newest - OVERLAP)
        overlap = sum(1 for e in evs[:100] if datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00"))
                      >= newest - OVERLAP)
        assert (report.new, report.duplicates) == (200, overlap)
        assert ids(s) == ({e["eventId"] for e in evs}, 300)
        assert s.get_state("history", REGION)[0] == iso(NOW - SETTLE)
