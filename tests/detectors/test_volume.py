"""The volume detector: 28 days of each agent's calls per kind learned, then a week scored.

History (Asia/Shanghai): ``ci`` reads 20 objects of its artifacts bucket at 10:00 on weekdays (and
lists its instances); ``backup`` deletes 2 old snapshots and takes 3 new ones at 01:00 every night;
``newbie`` has three active days.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from detectors.base import Finding
from detectors.volume import Volume, VolumeProfile
from models.baselines import Baseline
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
INVENTORY = harness.inventory(harness.agent("ci", "ram-user:ci-deploy"), harness.agent("backup", "ram-user:backup-bot"),
                              harness.agent("newbie"))
SNAPSHOT = {"ACS::ECS::Snapshot": ["s-bp1old"]}


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=TZ)


def reads(t: harness.Trail, who: str, start: datetime, n: int, bucket: str = "artifacts") -> list[str]:
    return [t.add(who, start + timedelta(seconds=i), "GetObject", serviceName="Oss",
                  referencedResources={"ACS::OSS::Object": [f"{bucket}/build/{i:05d}.tar.gz"]})["eventId"]
            for i in range(n)]


def deletes(t: harness.Trail, start: datetime, n: int) -> list[str]:
    return [t.add("backup", start + timedelta(seconds=5 * i), "DeleteSnapshot", rw="Write",
                  referencedResources={"ACS::ECS::Snapshot": [f"s-bp1{i:04d}"]})["eventId"] for i in range(n)]


def usual(t: harness.Trail, days: list[date]) -> None:
    for day in days:
        if day.weekday() < 5:
            reads(t, "ci", at(day, 10), 20)
            t.add("ci", at(day, 10, 30))
        deletes(t, at(day, 1), 2)
        for k in range(3):
            t.add("backup", at(day, 1, 5, k), "CreateSnapshot", rw="Write", referencedResources=SNAPSHOT)


def history() -> harness.Trail:
    t = harness.Trail(INVENTORY, batch=1)
    usual(t, HISTORY_DAYS)
    for day in HISTORY_DAYS[-4:-1]:
        t.add("newbie", at(day, 10))
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("volume-history"), history().events, INVENTORY, SINCE, TZ_NAME)


def score(store: Store, t: harness.Trail, baselines: dict[str, Baseline], **params: object) -> list[Finding]:
    harness.ingest(store, t.events, INVENTORY)
    return harness.score(store, Volume(**params), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ,
                         baselines=baselines)


def test_the_history_learns_each_kind_of_calls_busiest_hour_and_day(baselines: dict[str, Baseline]) -> None:
    ci = baselines["ci"].part(VolumeProfile)
    assert ci is not None and ci.hour_peaks is not None and ci.day_peaks is not None
    assert ci.hour_peaks["GetObject on bucket:artifacts"] == 20 and ci.day_peaks["GetObject on bucket:artifacts"] == 20
    assert ci.kind_days["GetObject on bucket:artifacts"] == 20  # weekdays of the 28 days
    assert ci.hour_peaks["DescribeInstances"] == 1
    backup = baselines["backup"].part(VolumeProfile)
    assert backup is not None and backup.day_peaks == {"DeleteSnapshot on ACS::ECS::Snapshot": 2,
                                                       "CreateSnapshot on ACS::ECS::Snapshot": 3}


def test_thousands_of_reads_from_a_never_touched_bucket_are_one_medium_finding(
        store: Store, baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    usual(t, WEEK)
    ids = reads(t, "ci", at(WED, 3, 0), 1500, bucket="finance-reports")
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity, f.event_ids) == ("ci", "medium", ids)
    assert f.summary == "ci made 1500 GetObject on bucket:finance-reports in one hour (never seen in 28 days)"
    (kind,) = f.evidence["kinds"]
    assert (kind["observed"], kind["usual_peak"], kind["days_seen"]) == (1500, 0, 0)
    (volume,) = f.evidence["aspects"]
    assert volume["aspect"] == "volume" and volume["weight"] == 1.0


def test_dozens_of_snapshot_deletions_where_two_are_usual_are_medium(store: Store,
                                                                     baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    usual(t, WEEK)
    ids = deletes(t, at(THU, 14, 0), 30)
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity, f.event_ids) == ("backup", "medium", ids)
    assert "30 DeleteSnapshot on ACS::ECS::Snapshot in one hour (its busiest hour in 28 days had 2)" in f.summary
    assert f.evidence["kinds"][0]["destructive"] is True


def test_two_dozen_snapshot_deletions_where_two_are_usual_are_medium(store: Store,
                                                                    baselines: dict[str, Baseline]) -> None:
    """A mass deletion does its damage well under ``min_calls`` (30): 24 deletions by a role that
    deletes two a night (12 times its peak) is medium on its own."""
    t = harness.Trail(INVENTORY, batch=2)
    usual(t, WEEK)
    ids = deletes(t, at(THU, 1, 30), 24)  # right after its own run: the hour holds its usual two too
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity) == ("backup", "medium") and set(ids) <= set(f.event_ids)
    assert "26 DeleteSnapshot on ACS::ECS::Snapshot in one hour (its busiest hour in 28 days had 2)" in f.summary


def test_a_dozen_deletions_are_a_low_weak_signal(store: Store, baselines: dict[str, Baseline]) -> None:
    """Twelve deletions (6 times the usual two, under ``strong_calls_destructive``): voluminous,
    low, an aspect for anomalous_behaviour to weigh with others."""
    t = harness.Trail(INVENTORY, batch=2)
    usual(t, WEEK)
    ids = deletes(t, at(THU, 14, 0), 12)
    (f,) = score(store, t, baselines)
    assert (f.severity, f.event_ids) == ("low", ids)


def test_twice_the_usual_and_a_busy_catch_up_day_are_quiet(store: Store, baselines: dict[str, Baseline]) -> None:
    """A catch-up day doing twice the usual work, and three times the usual deletions (6, under
    min_calls), are not voluminous; nor is anything a brand-new agent does (not learned)."""
    t = harness.Trail(INVENTORY, batch=2)
    usual(t, WEEK)
    reads(t, "ci", at(TUE, 15), 40)
    deletes(t, at(WED, 1, 30), 4)
    reads(t, "newbie", at(WED, 11), 2000, bucket="finance-reports")
    assert score(store, t, baselines) == []


def test_a_mid_sized_burst_is_a_low_weak_signal(store: Store, baselines: dict[str, Baseline]) -> None:
    """Five times the usual reads (100): voluminous, but under the strong factor: low, an aspect
    for anomalous_behaviour to weigh with others."""
    t = harness.Trail(INVENTORY, batch=2)
    ids = reads(t, "ci", at(TUE, 15), 100)
    (f,) = score(store, t, baselines)
    assert (f.severity, f.event_ids) == ("low", ids)
    assert 0.35 <= f.evidence["aspects"][0]["weight"] < 1.0


def test_a_baseline_with_no_successful_calls_is_judged_without_dividing_by_zero(
        store: Store, baselines: dict[str, Baseline]) -> None:
    """A learned agent whose history kept no kind at all (every call failed; all in one hour):
    each kind counts as never seen, and a big burst is still reported."""
    broken = {"ci": replace(baselines["ci"], parts={VolumeProfile: VolumeProfile({}, {}, {})})}
    t = harness.Trail(INVENTORY, batch=2)
    ids = reads(t, "ci", at(TUE, 15), 400)
    (f,) = score(store, t, broken)
    assert f.event_ids == ids and f.evidence["kinds"][0]["usual_peak"] == 0
