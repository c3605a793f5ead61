"""The odd_hours detector: 28 days of each agent's own history, then a week scored against it.

The history is written once per module as ActionTrail events for seven registered agents with the
habits of their kind (a daytime weekday ETL role, a 24/7 poller, a nightly backup, a human admin
who sometimes stays until 20:xx, an agent with 3 active days, a vendor with declared hours and
3 days of history, a night shift with declared overnight hours and no history), ingested, and the
baselines are fitted on it in the business time zone (Asia/Shanghai). Each test then ingests the
scored week's events into a fresh store, loads them as ``trailwarden detect`` does and scores them
with those baselines (and the test's inventory), or runs ``run_detect`` end to end.

The scored week is Monday 2026-11-23 .. Sunday 2026-11-29 local; the history is the four weeks
before it (20 weekdays, 8 weekend days).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pipeline.detection.detect
from detectors.base import Finding
from detectors.odd_hours import HourProfile, OddHours
from models.baselines import Baseline
from models.inventory import Inventory
from pipeline.detection.findings import list_findings
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

LATER = UNTIL + timedelta(days=35)  # "now" after the last week written: ingest refuses events dated in the future
MON, TUE, WED, THU, FRI, SAT, SUN = WEEK

# agent name -> the RAM user it acts as
USERS = {"etl-pipeline": "etl", "monitor": "cms-reader", "nightly-backup": "backup", "admin-alice": "alice",
         "newbie": "newbie", "vendor": "vendor-acme", "night-shift": "night-ops"}
DECLARED = {"vendor": {"days": "mon-fri", "from": "09:00", "to": "18:00"},
            "night-shift": {"days": "daily", "from": "22:00", "to": "06:00"}}


def inventory(**hours: dict[str, str] | None) -> Inventory:
    """The seven agents; ``hours`` overrides declared hours by agent name (None: none)."""
    declared = {**DECLARED, **{k.replace("_", "-"): v for k, v in hours.items()}}
    return harness.inventory(*(harness.agent(name, f"ram-user:{user}", **({"hours": declared[name]}
                                                                         if declared.get(name) else {}))
                               for name, user in USERS.items()))


INVENTORY = inventory()


# -- events ----------------------------------------------------------------------------------------
def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=TZ)


def weekdays(days: Iterable[date]) -> Iterator[date]:
    return (d for d in days if d.weekday() < 5)


def etl(t: harness.Trail, days: Iterable[date]) -> None:
    """Weekdays, every hour 08:05-19:05: read the database list and a lake object."""
    for day in weekdays(days):
        for hour in range(8, 20):
            t.add("etl-pipeline", at(day, hour, 5), "DescribeDBInstances")
            t.add("etl-pipeline", at(day, hour, 5, 30), "GetObject")


def monitor(t: harness.Trail, days: Iterable[date]) -> None:
    """Every 20 minutes, day and night, weekends too."""
    for day in days:
        for slot in range(72):
            t.add("monitor", at(day, 0) + timedelta(minutes=20 * slot, seconds=7))


def backup(t: harness.Trail, days: Iterable[date]) -> None:
    """Every night 01:00-01:40: snapshots."""
    for day in days:
        for minute in (0, 10, 25, 40):
            t.add("nightly-backup", at(day, 1, minute), "CreateSnapshot", rw="Write")


def alice(t: harness.Trail, days: Iterable[date]) -> None:
    """Weekdays 09:10-18:30; one weekday in three until 20:20."""
    for i, day in enumerate(weekdays(days)):
        for hour, minute in ((9, 10), (11, 30), (14, 0), (16, 45), (18, 30)):
            t.add("admin-alice", at(day, hour, minute), "DescribeInstances")
        if i % 3 == 0:
            t.add("admin-alice", at(day, 19, 40), "ModifyInstanceAttribute", rw="Write")
            t.add("admin-alice", at(day, 20, 20), "DescribeInstances")


def history_trail() -> harness.Trail:
    t = harness.Trail(INVENTORY, batch=1)
    etl(t, HISTORY_DAYS)
    monitor(t, HISTORY_DAYS)
    backup(t, HISTORY_DAYS)
    alice(t, HISTORY_DAYS)
    for day in HISTORY_DAYS[-5:-2]:  # Wed 11-18 .. Fri 11-20: three active days
        t.add("newbie", at(day, 10))
    for day in HISTORY_DAYS[-6:-3]:  # Tue 11-17 .. Thu 11-19
        t.add("vendor", at(day, 11), "DescribeInstanceAttribute")
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("odd-hours-history"), history_trail().events, INVENTORY,
                           SINCE, TZ_NAME, now=LATER)


def profile(b: Baseline) -> HourProfile:
    learned = b.part(HourProfile)
    assert learned is not None
    return learned


Score = Callable[..., list[Finding]]


@pytest.fixture
def score(store: Store, baselines: dict[str, Baseline]) -> Score:
    """``score(trail, inventory=..., **params)``: the week's findings, as detect would make them."""

    def run(trail: harness.Trail, inv: Inventory = INVENTORY, **params: Any) -> list[Finding]:
        harness.ingest(store, trail.events, inv, now=LATER)
        return harness.score(store, OddHours(**params), inv, since=SINCE, until=UNTIL, timezone=TZ,
                             baselines=baselines)

    return run


def described(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.agent, f.severity, f.summary) for f in findings]


def burst_of(t: harness.Trail, agent: str, start: datetime, n: int = 40, name: str = "GetObject",
                **kw: Any) -> list[str]:
    return [t.add(agent, start + timedelta(seconds=3 * i), name, **kw)["eventId"] for i in range(n)]


# -- the learned rhythm ------------------------------------------------------------------------------
def test_the_history_is_learned_in_local_time(baselines: dict[str, Baseline]) -> None:
    etl_b = baselines["etl-pipeline"]
    assert etl_b.learned and etl_b.active_days == 20
    assert (profile(etl_b).observed_weekdays, profile(etl_b).observed_weekends) == (20, 8)
    assert profile(etl_b).hour_share(1, 10) == 1.0 and profile(etl_b).hour_share(6, 3) == 0.0
    assert profile(baselines["monitor"]).hour_share(6, 3) == 1.0
    assert profile(baselines["admin-alice"]).hour_share(2, 20) == pytest.approx(7 / 20)
    assert not baselines["newbie"].learned and baselines["newbie"].active_days == 3
    assert not baselines["vendor"].learned
    assert "night-shift" not in baselines


# -- firing ----------------------------------------------------------------------------------------
def test_daytime_agent_at_0310_on_sunday_fires_once(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    etl(t, WEEK)  # its usual weekdays, which are fine
    burst = burst_of(t, "etl-pipeline", at(SUN, 3, 10))
    findings = score(t)
    assert len(findings) == 1, described(findings)
    f = findings[0]
    # no declared hours: an unusual hour is a weak signal, low on its own (issue 15), listed as an
    # aspect for anomalous_behaviour to weigh with the agent's others
    assert (f.detector, f.agent, f.severity) == ("odd_hours", "etl-pipeline", "low")
    (hour,) = f.evidence["aspects"]
    assert hour["aspect"] == "hour" and hour["outside_declared_hours"] is False
    assert hour["text"].startswith("in 28 days it was active 02:00-05:00 on 0 of 8 weekend days")
    assert f.event_ids == burst  # one finding for the burst, not one per event
    assert f.first_seen == at(SUN, 3, 10) and f.last_seen == at(SUN, 3, 10) + timedelta(seconds=117)
    assert "03:10" in f.summary and "Sun" in f.summary and "2026-11-29" in f.summary
    assert "in 28 days it was active 02:00-05:00 on 0 of 8 weekend days" in f.summary
    assert "declared hours" not in f.summary
    ev = f.evidence
    assert ev["hour_of_week"] == "Sun 03:00"
    assert ev["local_time"].startswith("2026-11-29T03:10:00")
    assert ev["timezone"] == TZ_NAME
    assert ev["count"] == 40
    assert ev["apis"] == {"GetObject": 40}
    assert ev["declared_hours"] is None and ev["outside_declared_hours"] is False
    assert ev["baseline"] == {"active_days": 20, "history_days": 28, "weekends_observed": 8,
                              "weekends_active_this_hour": 0, "share_near_this_hour": 0.0, "learned": True,
                              "Suns_observed": 4, "Suns_active_at_03": 0}
    assert ev["threshold"] == {"min_share": 0.05, "spread_hours": 1}
    assert 0.3 <= f.score <= 0.5


def test_daytime_agent_at_its_usual_tuesday_1000_does_not_fire(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    burst_of(t, "etl-pipeline", at(TUE, 10, 0), n=20)
    assert score(t) == []


def test_round_the_clock_poller_at_0300_does_not_fire(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    monitor(t, WEEK)  # 03:00 every day, weekend included
    t.add("monitor", at(SUN, 3, 0, 30), "DescribeDBInstances")
    assert score(t) == []


def test_nightly_backup_at_0120_does_not_fire(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    for day in WEEK:  # weekday and weekend nights
        for minute in (20, 21, 35):
            t.add("nightly-backup", at(day, 1, minute), "CreateSnapshot", rw="Write")
    assert score(t) == []


def test_human_who_sometimes_stays_late_is_usual_at_2030(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    alice(t, WEEK)
    t.add("admin-alice", at(TUE, 20, 30), "DescribeInstances")
    t.add("admin-alice", at(TUE, 20, 44), "ModifyInstanceAttribute", rw="Write")
    assert score(t) == []


def test_human_signing_in_at_2340_fires(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    alice(t, WEEK)
    ids = [t.add("admin-alice", at(WED, 23, 40), "ConsoleSignin", rw="Write")["eventId"],
           t.add("admin-alice", at(WED, 23, 41), "DescribeTrails")["eventId"]]
    findings = score(t)
    assert [f.event_ids for f in findings] == [ids], described(findings)
    f = findings[0]
    assert "23:40 Wed" in f.summary
    assert "in 28 days it was active 22:00-01:00 on 0 of 20 weekdays" in f.summary
    assert f.evidence["hour_of_week"] == "Wed 23:00"
    assert f.evidence["baseline"]["weekdays_observed"] == 20
    assert f.evidence["baseline"]["weekdays_active_this_hour"] == 0
    # a person's late evening with no declared hours is a weak signal: low, even though the sign-in
    # wrote (issue 15: humans' evening work no longer raised at high)
    assert f.severity == "low"


def test_a_write_in_an_unusual_burst_is_low_inside_declared_hours_and_high_outside(score: Score) -> None:
    """Writing at an unusual hour the inventory allows is still one weak signal (low); writing
    outside the declared hours is a breach of what was declared (high)."""
    t = harness.Trail(INVENTORY, batch=2)
    burst_of(t, "etl-pipeline", at(SAT, 3, 0), n=3, name="PutObject", rw="Write", error="AccessDenied")
    burst_of(t, "etl-pipeline", at(SUN, 3, 0), n=3, name="PutObject", rw="Write")
    refused, wrote = score(t)
    assert (refused.severity, wrote.severity) == ("low", "low")
    t = harness.Trail(INVENTORY, batch=3)
    t.add("vendor", at(SAT, 11, 5), "PutObject", rw="Write")  # declared mon-fri 09:00-18:00, not learned
    t.add("vendor", at(SUN, 11, 5), "PutObject", rw="Write", error="AccessDenied")
    wrote, refused = [f for f in score(t) if f.agent == "vendor"]
    assert (wrote.severity, refused.severity) == ("high", "medium")


def test_an_alibaba_cloud_service_identity_gets_no_odd_hours(store: Store, baselines: dict[str, Baseline]) -> None:
    """``system:...`` is the cloud acting for itself (ActionTrail identity type ``system``): it
    keeps no office hours, so nothing it does at any hour is odd, even with a learned daytime
    rhythm (here the ETL role's, under its name)."""
    t = harness.Trail(INVENTORY, batch=2)
    ids = burst_of(t, "etl-pipeline", at(SUN, 3, 10), n=5)
    for event in t.events:
        event["userIdentity"] = {"type": "system", "userName": "AliyunServiceRoleForEcs",
                                 "accountId": harness.ACCOUNT}
    harness.ingest(store, t.events, INVENTORY, now=LATER)
    service = "system:AliyunServiceRoleForEcs"
    learned = {**baselines, service: baselines["etl-pipeline"]}
    assert harness.frame(store, OddHours())["agent"].unique().tolist() == [service] and len(ids) == 5
    assert harness.score(store, OddHours(), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ, baselines=learned) == []


# -- too little history --------------------------------------------------------------------------------
def test_three_active_days_and_no_declared_hours_is_never_scored(score: Score,
                                                                  baselines: dict[str, Baseline]) -> None:
    assert baselines["newbie"].active_days == 3  # it has a baseline, just not a learned one
    t = harness.Trail(INVENTORY, batch=2)
    burst_of(t, "newbie", at(SUN, 3, 10))
    burst_of(t, "newbie", at(TUE, 23, 50), n=5)
    assert score(t) == []


def test_declared_hours_judge_an_agent_with_little_history(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    t.add("vendor", at(TUE, 11, 0), "DescribeInstanceAttribute")  # inside mon-fri 09:00-18:00
    ids = [t.add("vendor", at(SAT, 11, 5 + i), "DescribeInstanceAttribute")["eventId"] for i in range(3)]
    findings = score(t)
    assert [f.event_ids for f in findings] == [ids], described(findings)
    f = findings[0]
    assert (f.agent, f.severity) == ("vendor", "medium")
    assert "11:05 Sat" in f.summary
    assert "outside its declared hours mon-fri 09:00-18:00" in f.summary
    assert "too little history to learn its rhythm (3 active days)" in f.summary
    assert "it was active" not in f.summary  # no claim about a rhythm it has not learned
    assert f.evidence["declared_hours"] == "mon-fri 09:00-18:00"
    assert f.evidence["outside_declared_hours"] is True
    assert f.evidence["baseline"]["learned"] is False


def test_declared_hours_include_both_ends_to_the_minute(score: Score) -> None:
    """mon-fri 09:00-18:00: 09:00 and 18:00 are inside, 08:59 and 18:01 outside."""
    t = harness.Trail(INVENTORY, batch=2)
    early = t.add("vendor", at(TUE, 8, 59))["eventId"]
    t.add("vendor", at(TUE, 9, 0))
    t.add("vendor", at(TUE, 18, 0, 40))
    late = t.add("vendor", at(TUE, 18, 1))["eventId"]
    findings = score(t)
    assert [f.event_ids for f in findings] == [[early], [late]], described(findings)


def test_declared_hours_judge_an_agent_with_no_history(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    t.add("night-shift", at(TUE, 12, 0))
    (f,) = score(t)
    assert f.agent == "night-shift" and f.severity == "medium"
    assert "outside its declared hours daily 22:00-06:00" in f.summary
    assert "baseline" not in f.evidence
    assert f.evidence["outside_declared_hours"] is True


def test_declared_hours_can_be_switched_off(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    t.add("vendor", at(SAT, 11, 5), "DescribeInstanceAttribute")
    t.add("night-shift", at(TUE, 12, 0))
    assert score(t, check_declared_hours=False) == []


def test_overnight_declared_hours(score: Score) -> None:
    """daily 22:00-06:00 wraps midnight: 22:30, 02:00 and 05:50 are inside; 12:00 and 21:00 not."""
    t = harness.Trail(INVENTORY, batch=2)
    for when in (at(MON, 22, 30), at(TUE, 2, 0), at(TUE, 5, 50), at(SUN, 23, 59)):
        t.add("night-shift", when)
    noon = t.add("night-shift", at(TUE, 12, 0))["eventId"]
    evening = t.add("night-shift", at(WED, 21, 0))["eventId"]
    findings = score(t)
    assert [f.event_ids for f in findings] == [[noon], [evening]], described(findings)


def test_overnight_declared_hours_on_weekdays_belong_to_the_evening_they_start(score: Score) -> None:
    """mon-fri 22:00-06:00: Saturday 02:00 is Friday's night (inside); Monday 02:00 is Sunday's
    night, and Saturday 22:30 starts Saturday's (both outside)."""
    inv = inventory(night_shift={"days": "mon-fri", "from": "22:00", "to": "06:00"})
    t = harness.Trail(INVENTORY, batch=2)
    t.add("night-shift", at(FRI, 23, 0))
    t.add("night-shift", at(SAT, 2, 0))
    monday = t.add("night-shift", at(MON, 2, 0))["eventId"]
    saturday = t.add("night-shift", at(SAT, 22, 30))["eventId"]
    findings = score(t, inv)
    assert [f.event_ids for f in findings] == [[monday], [saturday]], described(findings)


# -- bursts and severity -----------------------------------------------------------------------------
def test_two_odd_bursts_three_hours_apart_make_two_findings(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    first = burst_of(t, "etl-pipeline", at(SUN, 2, 0), n=10)
    second = burst_of(t, "etl-pipeline", at(SUN, 5, 0), n=10)
    findings = score(t)
    assert [f.event_ids for f in findings] == [first, second], described(findings)
    assert [f.evidence["hour_of_week"] for f in findings] == ["Sun 02:00", "Sun 05:00"]
    assert len({f.id for f in findings}) == 2


def test_odd_calls_within_an_hour_make_one_finding(score: Score) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    first = burst_of(t, "etl-pipeline", at(SUN, 3, 0), n=10)
    second = burst_of(t, "etl-pipeline", at(SUN, 3, 50), n=10)
    findings = score(t)
    assert [f.event_ids for f in findings] == [first + second], described(findings)
    assert findings[0].evidence["count"] == 20


def test_high_when_both_unusual_and_outside_declared_hours(score: Score) -> None:
    inv = inventory(etl_pipeline={"days": "mon-fri", "from": "08:00", "to": "20:00"})
    t = harness.Trail(INVENTORY, batch=2)
    etl(t, WEEK)
    burst_of(t, "etl-pipeline", at(SUN, 3, 10))
    (f,) = score(t, inv)
    assert f.severity == "high"
    assert "in 28 days it was active 02:00-05:00 on 0 of 8 weekend days" in f.summary
    assert "outside its declared hours mon-fri 08:00-20:00" in f.summary
    assert f.evidence["outside_declared_hours"] is True and f.evidence["baseline"]["learned"] is True


@pytest.mark.parametrize(("hours", "when", "unusual", "undeclared"), [
    ({"days": "mon-fri", "from": "06:00", "to": "22:00"}, (TUE, 6, 30), True, False),
    ({"days": "mon-fri", "from": "09:00", "to": "17:00"}, (WED, 8, 5), False, True),
], ids=["unusual-inside-declared-hours", "usual-outside-declared-hours"])
def test_when_only_one_of_the_two_says_odd(score: Score, hours: dict[str, str], when: tuple[date, int, int],
                                           unusual: bool, undeclared: bool) -> None:
    """Unusual for its rhythm but inside declared hours (06:30 in 06:00-22:00): low, activity inside
    what the inventory declares is never by itself above low (issue 15); usual for its rhythm but
    outside declared hours (08:05 outside 09:00-17:00): medium."""
    t = harness.Trail(INVENTORY, batch=2)
    t.add("etl-pipeline", at(*when), "GetObject")
    (f,) = score(t, inventory(etl_pipeline=hours))
    assert f.severity == ("medium" if undeclared else "low")
    assert ("in 28 days it was active" in f.summary) is unusual
    assert ("outside its declared hours" in f.summary) is undeclared
    assert f.evidence["outside_declared_hours"] is undeclared


# -- end to end ---------------------------------------------------------------------------------------
def test_run_detect_scores_the_window_against_the_history_before_it(tmp_path: Path, store: Store) -> None:
    """History, the week, and four later weeks in which the ETL role does run at 03:10 on Sundays:
    detect over the week learns only from before it, so 03:10 Sunday is still odd, and nothing
    outside the week is scored."""
    t = history_trail()
    t.add("etl-pipeline", at(HISTORY_DAYS[5], 23, 0), "GetObject")  # odd, but history: not scored
    etl(t, WEEK)
    burst = burst_of(t, "etl-pipeline", at(SUN, 3, 10))
    for week in range(1, 5):
        burst_of(t, "etl-pipeline", at(SUN + timedelta(days=7 * week), 3, 10), n=5)
    harness.ingest(store, t.events, INVENTORY, now=LATER)

    report = harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    assert report.detectors["odd_hours"]["error"] is None
    found = list_findings(store, detector="odd_hours")
    assert [(f["agent"], f["event_ids"]) for f in found] == [("etl-pipeline", burst)], found
    assert found[0]["evidence"]["baseline"]["share_near_this_hour"] == 0.0
    # one baseline a day: fitted on history ending at the start of the UTC day SINCE falls in
    ((history_end,),) = store.con.execute("SELECT DISTINCT history_end FROM baselines").fetchall()
    assert history_end <= SINCE and SINCE - history_end < timedelta(days=1)


# -- known defects -----------------------------------------------------------------------------------
def test_a_burst_across_a_scoring_chunk_keeps_a_whole_summary(tmp_path: Path, store: Store,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    t = history_trail()
    burst = [t.add("etl-pipeline", at(SUN, 7, 40) + timedelta(minutes=2 * i), "GetObject")["eventId"]
             for i in range(21)]  # Sunday 07:40-08:20 local = Saturday 23:40 - Sunday 00:20 UTC
    harness.ingest(store, t.events, INVENTORY, now=LATER)
    monkeypatch.setattr(pipeline.detection.detect, "CHUNK_EVENTS", 10)  # as a busy account's days are
    harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    (f,) = list_findings(store, detector="odd_hours")
    assert f["event_ids"] == burst and f["event_count"] == 21
    assert f["first_seen"] == at(SUN, 7, 40)
    assert f["evidence"]["count"] == 21
    assert "made 21 calls (GetObject) at 07:40 Sun" in f["summary"]
