"""Learned baselines (models/baselines.py, fitted, stored and loaded by
pipeline/detection/learning.py): fitted in SQL over the events table, in the business time zone,
on the history before a window and never after it.

Each test writes a small hand-made history as ActionTrail events (conftest's ``BASE_EVENT``
shape), ingests it, fits, and checks the numbers a detector will read: the shared part (active
days, calls, failures, observed days), odd_hours' part (observed weekdays/weekends, the
hour-of-week profile in LOCAL time) and failure_storm's (the worst five minutes, rates per hour). The business time zone is Asia/Shanghai (UTC+8, no daylight saving), so 23:30 local is
15:30 UTC the same day, and 00:30 local on a Monday is 16:30 UTC on the Sunday before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from detectors.failure_storm import FailureProfile
from detectors.new_source import SourceProfile
from detectors.odd_hours import HourProfile
from models.baselines import HISTORY, MIN_ACTIVE_DAYS, Baseline, Learned
from models.baselines import History as HistoryOfEvents
from models.inventory import Attributor, Inventory
from pipeline.detection.learning import fit, learners, load_or_fit, save
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store
from tests.conftest import ram_user_event, write_ndjson

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
# Monday 2026-11-23 00:00 local (2026-11-22T16:00Z): the history is the 28 days before it,
# Monday 2026-10-26 .. Sunday 2026-11-22 local.
END = datetime(2026, 11, 23, tzinfo=TZ)
# The hand-made history spans the last 21 of them: Monday 2026-11-02 .. Sunday 2026-11-22.
FIRST_DAY = date(2026, 11, 2)
DAYS = [FIRST_DAY + timedelta(days=i) for i in range(21)]
WEEKDAYS = [d for d in DAYS if d.weekday() < 5]  # 15
INVENTORY = Inventory()  # no agents: each event's agent is its raw identity, ram-user:NAME


# -- harness ---------------------------------------------------------------------------------------
class History:
    """ActionTrail events for a few RAM users, at local wall-clock times."""

    def __init__(self, batch: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.batch = batch  # keeps event ids unique across histories ingested into one store

    def add(self, user: str, when: datetime, *, error: str | None = None,
            name: str = "DescribeInstances", **fields: Any) -> dict[str, Any]:
        ev = ram_user_event(f"00000000-0000-4000-{8000 + self.batch}-{len(self.events):012d}", user, when, name,
                            error=error, **fields)
        self.events.append(ev)
        return ev

    def ingest(self, store: Store, path: Path) -> None:
        write_ndjson(path, self.events)
        report = ingest_files(store, [path], Attributor(INVENTORY))
        assert report.quarantined == 0
        assert report.new == len(self.events)


def local(day: date, hour: int, minute: int = 0, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, microsecond, tzinfo=TZ)


def office_history(h: History) -> None:
    """ram-user:office: every weekday at 10:00, 10:20 and 14:00, once on Saturday 11-07 at 11:00;
    on Tuesday 11-10 twelve refused calls at 10:01:00-10:01:55 (one 5-minute bucket with the
    10:00 call), and on Thursday 11-12 the 10:20 call is throttled."""
    for day in WEEKDAYS:
        h.add("office", local(day, 10))
        h.add("office", local(day, 10, 20), error="Throttling.User" if day == date(2026, 11, 12) else None)
        h.add("office", local(day, 14))
    h.add("office", local(date(2026, 11, 7), 11))
    for i in range(12):
        h.add("office", local(date(2026, 11, 10), 10, 1, 5 * i), error="NoPermission", name="GetSecretValue")


def night_history(h: History) -> None:
    """ram-user:night: Sunday 23:30 local (15:30 UTC Sunday) and Monday 00:30 local (16:30 UTC
    Sunday), on two weekends: four local days, but only two UTC days."""
    for sunday in (date(2026, 11, 8), date(2026, 11, 15)):
        h.add("night", local(sunday, 23, 30))
        h.add("night", local(sunday + timedelta(days=1), 0, 30))


def hours(b: Baseline) -> HourProfile:
    """What odd_hours learned."""
    part = b.part(HourProfile)
    assert part is not None
    return part


def failing(b: Baseline) -> FailureProfile:
    """What failure_storm learned."""
    part = b.part(FailureProfile)
    assert part is not None
    return part


def profile(b: Baseline) -> dict[tuple[int, int], int]:
    """The non-zero cells of the hour-of-week profile."""
    return {(d, hour): n for d, row in enumerate(hours(b).hour_of_week) for hour, n in enumerate(row) if n}


def fitted(tmp_path: Path, store: Store, build: Iterable[Any], end: datetime = END) -> dict[str, Baseline]:
    h = History()
    for fn in build:
        fn(h)
    h.ingest(store, tmp_path / "history.ndjson")
    return fit(store, end, TZ_NAME)


# -- fit -------------------------------------------------------------------------------------------
def test_fit_counts_a_weekday_agent_in_local_time(tmp_path: Path, store: Store) -> None:
    b = fitted(tmp_path, store, [office_history])["ram-user:office"]
    assert (b.agent, b.timezone) == ("ram-user:office", TZ_NAME)
    assert b.history_end == END and b.history_start == END - HISTORY
    assert b.active_days == 16  # 15 weekdays and one Saturday
    # observed from the first active local day (Mon 11-02) to the end (Sun 11-22): 21 days
    assert (hours(b).observed_weekdays, hours(b).observed_weekends) == (15, 6)
    assert b.observed_by_weekday == [3, 3, 3, 3, 3, 3, 3] and b.observed_days == 21
    assert b.calls == 15 * 3 + 1 + 12
    assert b.failures == 12 + 1
    assert failing(b).max_failures_5m == 12
    assert failing(b).max_calls_5m == 13  # 10:00:00 and the twelve refusals share 10:00-10:05
    assert round(b.failure_rate, 4) == round(13 / 58, 4)
    # hours are LOCAL: 10:00 local is 02:00 UTC, and the UTC hours hold nothing
    expected = {(d, 10): 3 for d in range(5)} | {(d, 14): 3 for d in range(5)} | {(5, 11): 1}
    assert profile(b) == expected
    assert b.learned
    # the profile, read the way odd_hours reads it
    assert hours(b).hour_share(1, 10) == 1.0  # every observed weekday at 10:xx
    assert hours(b).hour_share(5, 11) == pytest.approx(1 / 6)  # one Saturday out of six weekend days
    assert hours(b).hour_share(6, 3) == 0.0
    assert hours(b).near_share(2, 11) == 1.0  # 11:xx is within an hour of 10:xx
    assert hours(b).near_share(2, 12) == 0.0
    assert hours(b).weeks_active_at(0, 10) == 3
    # rates per hour of the week: Tuesdays at 10:xx hold 3 x 2 calls and the 12 refusals (3 Tuesdays)
    assert failing(b).rates_at(1, 10, 3) == {"calls_per_day": 6.0, "failure_rate": round(12 / 18, 4)}
    assert failing(b).rates_at(3, 10, 3) == {"calls_per_day": 2.0, "failure_rate": round(1 / 6, 4)}  # the throttled 10:20
    assert failing(b).rates_at(6, 3, 3) == {"calls_per_day": 0.0, "failure_rate": 0.0}
    assert Baseline.from_json(b.to_json(), learners()) == b


def test_fit_day_boundary_uses_local_days_and_weekdays(tmp_path: Path, store: Store) -> None:
    """23:30 local on Sunday is 15:30 UTC Sunday; 00:30 local on Monday is 16:30 UTC on Sunday.
    The profile and the active days follow the local clock, not UTC."""
    b = fitted(tmp_path, store, [night_history])["ram-user:night"]
    assert profile(b) == {(6, 23): 2, (0, 0): 2}  # not (6, 15) / (6, 16)
    assert b.active_days == 4  # Sun 11-08, Mon 11-09, Sun 11-15, Mon 11-16 (UTC would say 2)
    # first local day Sunday 11-08 .. Sunday 11-22: 15 days, 5 of them weekend days
    assert (hours(b).observed_weekdays, hours(b).observed_weekends) == (10, 5)
    assert (b.calls, b.failures, failing(b).max_failures_5m, failing(b).max_calls_5m) == (4, 0, 0, 1)
    assert not b.learned  # 4 active days < 7


def test_fit_separates_agents_and_can_select_some(tmp_path: Path, store: Store) -> None:
    both = fitted(tmp_path, store, [office_history, night_history])
    assert sorted(both) == ["ram-user:night", "ram-user:office"]
    only = fit(store, END, TZ_NAME, agents=["ram-user:night"])
    assert list(only) == ["ram-user:night"]
    assert only["ram-user:night"] == both["ram-user:night"]


def test_fit_on_an_empty_history_is_empty(store: Store) -> None:
    assert fit(store, END, TZ_NAME) == {}


@pytest.mark.parametrize(("days", "learned"), [(MIN_ACTIVE_DAYS - 1, False), (MIN_ACTIVE_DAYS, True)])
def test_learned_needs_seven_active_days(tmp_path: Path, store: Store, days: int, learned: bool) -> None:
    def build(h: History) -> None:
        for day in DAYS[-days:]:
            h.add("new", local(day, 10))

    b = fitted(tmp_path, store, [build])["ram-user:new"]
    assert b.active_days == days
    assert b.learned is learned


def test_only_events_before_end_count(tmp_path: Path, store: Store) -> None:
    """[end - history, end): the start is included, the end is not; a microsecond matters."""
    start = END - HISTORY

    def build(h: History) -> None:
        h.add("edge", start - timedelta(microseconds=1))  # excluded
        h.add("edge", start)  # included: Monday 10-26 00:00 local
        h.add("edge", END - timedelta(microseconds=1))  # included: Sunday 11-22 23:59:59.999999 local
        h.add("edge", END)  # excluded
        h.add("edge", END + timedelta(days=3, hours=3))  # far after: excluded
        h.add("late", END)  # an agent seen only at the end has no baseline at all

    baselines = fitted(tmp_path, store, [build])
    assert list(baselines) == ["ram-user:edge"]
    b = baselines["ram-user:edge"]
    assert b.calls == 2
    assert b.active_days == 2
    assert profile(b) == {(0, 0): 1, (6, 23): 1}
    assert (hours(b).observed_weekdays, hours(b).observed_weekends) == (20, 8)  # the whole 28 days


# -- storing ---------------------------------------------------------------------------------------
def test_json_round_trip() -> None:
    b = Baseline("a", END - HISTORY, END, TZ_NAME, 9, 100, 3, [3] * 7,
                 {HourProfile: HourProfile(15, 6), FailureProfile: FailureProfile(2, 40)})
    hours(b).hour_of_week[6][3] = 2
    again = Baseline.from_json(b.to_json(), [HourProfile, FailureProfile])
    assert again == b
    assert again.history_end.utcoffset() == END.utcoffset()


def test_save_and_load_or_fit_round_trip(tmp_path: Path, store: Store) -> None:
    baselines = fitted(tmp_path, store, [office_history, night_history])
    save(store, baselines)
    loaded = load_or_fit(store, END, TZ_NAME)
    assert loaded == baselines

    # a late event inside the history makes the stored baselines stale: refitted, and stored
    late = History(batch=1)
    late.add("office", local(date(2026, 11, 21), 3))
    late.ingest(store, tmp_path / "late.ndjson")
    again = load_or_fit(store, END, TZ_NAME)
    assert again["ram-user:office"].calls == baselines["ram-user:office"].calls + 1
    assert hours(again["ram-user:office"]).hour_of_week[5][3] == 1  # Saturday 03:00 is known now
    assert again["ram-user:night"] == baselines["ram-user:night"]
    assert _stored(store, END) == 2 and load_or_fit(store, END, TZ_NAME) == again

    # a history ending elsewhere has nothing stored: it is fitted now, and stored
    later = END + timedelta(days=1)
    assert _stored(store, later) == 0
    fresh = load_or_fit(store, later, TZ_NAME)
    assert fresh["ram-user:office"].calls == baselines["ram-user:office"].calls + 1
    assert fresh["ram-user:office"].history_end == later
    assert _stored(store, later) == 2
    assert load_or_fit(store, later, TZ_NAME) == fresh


def test_an_agent_re_attributed_away_loses_its_stored_baseline(tmp_path: Path, store: Store) -> None:
    save(store, fitted(tmp_path, store, [office_history, night_history]))
    # attributed at ingest, no mapping written yet: the view reads the stored agent
    store.con.execute("UPDATE events_hot SET agent = 'office-bot' WHERE agent = 'ram-user:office'")
    loaded = load_or_fit(store, END, TZ_NAME)
    assert set(loaded) == {"office-bot", "ram-user:night"}
    rows = store.con.execute("SELECT agent FROM baselines WHERE history_end = ? ORDER BY agent", [END]).fetchall()
    assert [r[0] for r in rows] == ["office-bot", "ram-user:night"]


def test_load_or_fit_refits_for_another_time_zone(tmp_path: Path, store: Store) -> None:
    save(store, fitted(tmp_path, store, [office_history]))
    utc = load_or_fit(store, END, "UTC")["ram-user:office"]
    assert utc.timezone == "UTC"
    assert hours(utc).hour_of_week[0][2] == 3  # 10:00 Shanghai is 02:00 UTC
    assert hours(utc).hour_of_week[0][10] == 0


# What the code before issue 14 stored for ``ci_history`` (one flat object, written by its
# models/baselines.py and copied here verbatim).
STORED_BEFORE = (
    '{"agent": "ram-user:ci", "history_start": "2026-10-26T00:00:00+08:00", "history_end": '
    '"2026-11-23T00:00:00+08:00", "timezone": "Asia/Shanghai", "active_days": 16, "observed_weekdays": 15, '
    '"observed_weekends": 6, "calls": 37, "failures": 7, "max_failures_5m": 6, "max_calls_5m": 7, '
    '"observed_by_weekday": [3, 3, 3, 3, 3, 3, 3], "hour_of_week": ['
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], "calls_by_hour": ['
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], "failures_by_hour": ['
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], '
    '[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], '
    '"sources": {"network": {"203.0.113.0/24": 36, "198.51.100.0/24": 1}, "client": {"aliyun-cli": 37}, '
    '"region": {"cn-hangzhou": 37}}, "source_days": {"network": 16, "client": 16, "region": 16}, '
    '"novel_days": {"network": 1, "client": 0, "region": 0}}')


def ci_history(h: History) -> None:
    """ram-user:ci: every weekday at 10:00 and 14:00 (Thursday 11-12's 14:00 throttled), Saturday
    11-07 at 11:00 from another network, and on Tuesday 11-10 six refusals at 10:01:00-10:01:25."""
    for day in WEEKDAYS:
        h.add("ci", local(day, 10))
        h.add("ci", local(day, 14), error="Throttling.User" if day == date(2026, 11, 12) else None)
    h.add("ci", local(date(2026, 11, 7), 11), sourceIpAddress="198.51.100.9")
    for i in range(6):
        h.add("ci", local(date(2026, 11, 10), 10, 1, 5 * i), error="NoPermission", name="GetSecretValue")


def test_a_baseline_stored_before_the_detectors_owned_their_parts_loads_and_is_stored_the_same(
        tmp_path: Path, store: Store) -> None:
    """The stored format is one flat object with the same fields: a baseline the code before stored
    loads whole (every detector's part from its own keys), and the same history fitted now is
    stored as the very same object, so the code before reads what this code stores."""
    before = Baseline.from_json(STORED_BEFORE, learners())
    assert (before.agent, before.active_days, before.calls, before.failures) == ("ram-user:ci", 16, 37, 7)
    assert (hours(before).observed_weekdays, hours(before).hour_share(1, 10)) == (15, 1.0)
    assert failing(before).max_failures_5m == 6
    assert failing(before).rates_at(1, 10, before.observed_by_weekday[1]) == {"calls_per_day": 3.0,
                                                                              "failure_rate": round(6 / 9, 4)}
    learned = before.part(SourceProfile)
    assert learned is not None and learned.known("network") == {"203.0.113.0/24": 36, "198.51.100.0/24": 1}
    stored = json.loads(STORED_BEFORE)
    # parts that detectors added since (volume, novelty, credential_misuse...) load as "not learned"
    # (their defaults) and add exactly their own keys; every key stored before is stored the same
    added = set(json.loads(before.to_json())) - set(stored)
    assert added == {f for kind in learners() if not set(kind.stored_fields()) <= set(stored)
                     for f in kind.stored_fields()}
    assert {k: v for k, v in json.loads(before.to_json()).items() if k not in added} == stored
    now = fitted(tmp_path, store, [ci_history])["ram-user:ci"]
    older = [kind for kind in learners() if set(kind.stored_fields()) <= set(stored)]
    assert {k: now.parts[k] for k in older} == {k: before.parts[k] for k in older}
    assert {k: v for k, v in json.loads(now.to_json()).items() if k not in added} == stored


@dataclass
class BusiestHour(Learned):
    """A part as a new detector would declare it in its own module: the most calls the agent made in
    one UTC hour of the history. None: not learned (a baseline stored before the detector existed)."""

    busiest_hour_calls: int | None = None

    @classmethod
    def fit(cls, history: HistoryOfEvents) -> dict[str, BusiestHour]:
        rows = history.query(
            f"SELECT agent, max(n) FROM (SELECT agent, date_trunc('hour', event_time), count(*) AS n FROM events "
            f"WHERE {history.where} GROUP BY ALL) GROUP BY agent", history.params)
        return {agent: cls(int(n)) for agent, n in rows}


def test_a_new_detector_adds_its_part_without_touching_the_shared_baseline(tmp_path: Path, store: Store) -> None:
    """Its part is fitted by the shared driver on the same learnable events, stored beside the
    others' fields in the one flat object, and read back by the part alone; a baseline stored
    before it existed loads with the part's defaults."""
    b = fitted(tmp_path, store, [office_history])["ram-user:office"]
    mine = fit(store, END, TZ_NAME, parts=[BusiestHour])["ram-user:office"]
    assert mine.part(BusiestHour) == BusiestHour(14)  # Tuesday 11-10 at 10:xx: 10:00, 10:20 and 12 refusals
    assert mine.part(HourProfile) is None  # only the parts asked for are fitted
    assert replace(mine, parts={}) == replace(b, parts={})  # the shared part is the same either way
    stored = json.loads(mine.to_json())
    assert stored["busiest_hour_calls"] == 14 and set(stored) >= {"agent", "calls", "observed_by_weekday"}
    assert Baseline.from_json(mine.to_json(), [BusiestHour]) == mine
    assert Baseline.from_json(STORED_BEFORE, [BusiestHour]).part(BusiestHour) == BusiestHour()


def _stored(store: Store, end: datetime) -> int:
    row = store.con.execute("SELECT count(*) FROM baselines WHERE history_end = ?", [end]).fetchone()
    assert row is not None
    return int(row[0])


# -- usual_hours -----------------------------------------------------------------------------------
def test_usual_hours_of_a_round_the_clock_agent(tmp_path: Path, store: Store) -> None:
    def build(h: History) -> None:
        for day in DAYS[-14:]:
            for hour in range(24):
                h.add("poller", local(day, hour, 7))

    b = fitted(tmp_path, store, [build])["ram-user:poller"]
    assert hours(b).usual_hours() == "weekdays all day, weekends all day"


def test_usual_hours_of_a_weekday_office_agent(tmp_path: Path, store: Store) -> None:
    def build(h: History) -> None:
        for day in WEEKDAYS:
            for hour in range(9, 18):  # 09:15 .. 17:15
                h.add("clerk", local(day, hour, 15))

    b = fitted(tmp_path, store, [build])["ram-user:clerk"]
    assert hours(b).usual_hours() == "weekdays 09-18, weekends none"


def test_usual_hours_of_a_nightly_job_and_a_rare_hour(tmp_path: Path, store: Store) -> None:
    """A nightly 01:xx job; one 15:xx call on one of 15 weekdays (6.7%) counts, with min_share 5%."""
    def build(h: History) -> None:
        for day in DAYS:
            h.add("backup", local(day, 1, 5))
        h.add("backup", local(WEEKDAYS[3], 15, 30))

    b = fitted(tmp_path, store, [build])["ram-user:backup"]
    assert hours(b).usual_hours() == "weekdays 01-02 15-16, weekends 01-02"
    assert hours(b).usual_hours(min_share=0.1) == "weekdays 01-02, weekends 01-02"


# -- known defects -----------------------------------------------------------------------------------
def test_worst_five_minutes_of_failures_is_a_sliding_window(tmp_path: Path, store: Store) -> None:
    def build(h: History) -> None:
        for day in WEEKDAYS:
            h.add("batch", local(day, 9))
        for i in range(16):  # 10:03:00, 10:03:15, ... 10:06:45: all within 4 minutes
            h.add("batch", local(date(2026, 11, 10), 10, 3, 0) + timedelta(seconds=15 * i), error="NoPermission")

    b = fitted(tmp_path, store, [build])["ram-user:batch"]
    assert b.failures == 16
    assert failing(b).max_failures_5m == 16


# -- what a baseline does not learn ------------------------------------------------------------------
def _finding(store: Store, fid: str, agent: str, events: list[dict[str, Any]], status: str,
             listed: int = 1000) -> None:
    """A finding on ``events``, listing at most ``listed`` of their ids as findings do (1,000)."""
    times = sorted(datetime.fromisoformat(e["eventTime"]) for e in events)
    store.con.execute(
        "INSERT INTO findings (id, detector, agent, severity, score, first_seen, last_seen, summary, event_ids, "
        "event_count, evidence, status, dedup_key, created_at, updated_at) "
        "VALUES (?, 'failure_storm', ?, 'high', 0.9, ?, ?, 's', ?, ?, '{}', ?, 'k', now(), now())",
        [fid, agent, times[0], times[-1], [e["eventId"] for e in events][:listed], len(events), status])


@pytest.mark.parametrize(("status", "learned"), [("open", False), ("acknowledged", False), ("resolved", False),
                                                 ("false_positive", True), ("suppressed", True)])
def test_events_of_true_positive_findings_are_not_learned(tmp_path: Path, store: Store, status: str,
                                                          learned: bool) -> None:
    """A storm of 1,500 failures whose finding lists only 1,000 ids is left out whole (it is short:
    every event of the agent between its first and last); a false positive or an expected
    (suppressed) one is learned like any other behaviour."""
    h = History()
    for day in WEEKDAYS:
        h.add("batch", local(day, 9))
    storm = [h.add("batch", local(date(2026, 11, 10), 10) + timedelta(milliseconds=150 * i), error="NoPermission")
             for i in range(1500)]
    h.ingest(store, tmp_path / "history.ndjson")
    _finding(store, "f1", "ram-user:batch", storm, status)
    b = fit(store, END, TZ_NAME)["ram-user:batch"]
    assert (b.failures, failing(b).max_failures_5m) == ((1500, 1500) if learned else (0, 0))
    assert b.calls == len(WEEKDAYS) + (1500 if learned else 0)
    save(store, {"ram-user:batch": b})
    assert load_or_fit(store, END, TZ_NAME)["ram-user:batch"].calls == b.calls  # stored one is current


def test_a_long_capped_finding_keeps_only_its_listed_events_out(tmp_path: Path, store: Store) -> None:
    """A finding spanning days (a new network used all week) that lists 2 of its 4 events: only
    the listed 2 are left out; the agent's other activity in that span is still learned."""
    h = History()
    calls = [h.add("vendor", local(day, 11)) for day in WEEKDAYS]
    h.ingest(store, tmp_path / "history.ndjson")
    _finding(store, "f2", "ram-user:vendor", calls[3:7], "open", listed=2)
    assert fit(store, END, TZ_NAME)["ram-user:vendor"].calls == len(WEEKDAYS) - 2


def test_triage_makes_the_stored_baseline_stale(tmp_path: Path, store: Store) -> None:
    """Marking a finding a false positive brings its events back: the stored baseline (fitted
    without them) is refitted, not reused."""
    h = History()
    for day in WEEKDAYS:
        h.add("batch", local(day, 9))
    storm = [h.add("batch", local(date(2026, 11, 10), 10, 0, i), error="NoPermission") for i in range(30)]
    h.ingest(store, tmp_path / "history.ndjson")
    _finding(store, "f3", "ram-user:batch", storm, "open")
    save(store, fit(store, END, TZ_NAME))
    assert failing(load_or_fit(store, END, TZ_NAME)["ram-user:batch"]).max_failures_5m == 0
    store.con.execute("UPDATE findings SET status = 'false_positive' WHERE id = 'f3'")
    assert failing(load_or_fit(store, END, TZ_NAME)["ram-user:batch"]).max_failures_5m == 30
