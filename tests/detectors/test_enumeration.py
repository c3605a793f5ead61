"""The enumeration detector: each agent's widest 10 minutes learned over 28 days, then a week scored.

History (Asia/Shanghai): ``monitor`` polls 3 APIs of 2 services every 10 minutes, day and night;
``terraform`` applies on Mondays, touching 30 APIs of 6 services in a few minutes.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from detectors.base import Finding
from detectors.enumeration import BreadthProfile, Enumeration
from models.baselines import Baseline
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
INVENTORY = harness.inventory(harness.agent("monitor"), harness.agent("terraform"))
SERVICES = ("Ecs", "Rds", "Vpc", "Slb", "Kms", "Ram", "Oss", "Cms")
POLLS = (("Ecs", "DescribeInstances"), ("Ecs", "DescribeDisks"), ("Cms", "DescribeMetricList"))


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=TZ)


def polls(t: harness.Trail, day: date) -> None:
    for slot in range(0, 24 * 6, 6):  # every hour, a 10-minute poll
        for k, (service, name) in enumerate(POLLS):
            t.add("monitor", at(day, 0) + timedelta(minutes=10 * slot, seconds=k), name, serviceName=service)


def apply(t: harness.Trail, day: date, apis: int = 30) -> list[str]:
    return [t.add("terraform", at(day, 10) + timedelta(seconds=5 * i), f"Describe{i}", serviceName=SERVICES[i % 6])["eventId"]
            for i in range(apis)]


def sweep(t: harness.Trail, start: datetime, apis: int, who: str = "monitor") -> list[str]:
    return [t.add(who, start + timedelta(seconds=6 * i), f"List{i}", serviceName=SERVICES[i % len(SERVICES)],
                  error="NoPermission" if i % 5 == 0 else None)["eventId"] for i in range(apis)]


def history() -> harness.Trail:
    t = harness.Trail(INVENTORY, batch=1)
    for day in HISTORY_DAYS:
        polls(t, day)
        if day.weekday() == 0:
            apply(t, day)
    for day in HISTORY_DAYS[-10:]:  # enough active days for terraform to be learned
        t.add("terraform", at(day, 9), "GetCallerIdentity", serviceName="Sts")
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("enumeration-history"), history().events, INVENTORY, SINCE,
                           TZ_NAME)


def score(store: Store, t: harness.Trail, baselines: dict[str, Baseline]) -> list[Finding]:
    harness.ingest(store, t.events, INVENTORY)
    return harness.score(store, Enumeration(), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ, baselines=baselines)


def test_the_history_learns_each_agents_widest_ten_minutes(baselines: dict[str, Baseline]) -> None:
    assert baselines["monitor"].part(BreadthProfile) == BreadthProfile(3, 2)
    assert baselines["terraform"].part(BreadthProfile) == BreadthProfile(30, 6)


def test_a_monitor_sweeping_forty_apis_of_eight_services_is_one_medium_finding(
        store: Store, baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    polls(t, WED)
    ids = sweep(t, at(WED, 3, 2), 40)
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity) == ("monitor", "medium")
    assert set(ids) <= set(f.event_ids)
    assert f.summary.startswith("monitor called 4") and "distinct APIs of 8 services in" in f.summary
    assert "(its widest 10 minutes in 28 days had 3 APIs of 2 services); 8 refused" in f.summary
    assert f.evidence["aspects"][0]["aspect"] == "enumeration"


def test_a_sweep_of_apis_never_used_by_a_broad_agent_is_medium(store: Store, baselines: dict[str, Baseline]) -> None:
    """An identity whose own work is broad (the Terraform role: 30 APIs of 6 services in its
    applies) sweeping 40 APIs it never called is reconnaissance, though 40 is not 2.5 times 30:
    most of the window's APIs are new to it."""
    t = harness.Trail(INVENTORY, batch=2)
    ids = sweep(t, at(WED, 15, 2), 40, who="terraform")
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity) == ("terraform", "medium") and set(ids) <= set(f.event_ids)
    assert ("40 distinct APIs of 8 services in 4 minutes, 40 of them never used in 28 days, (its widest 10 minutes "
            "in 28 days had 30 APIs of 6 services)") in f.summary
    assert len(f.evidence["never_used"]) == 40


def test_a_terraform_apply_as_wide_as_its_usual_ones_is_quiet(store: Store, baselines: dict[str, Baseline]) -> None:
    """An apply touching as many APIs as its usual ones (here twice over the week) is its norm;
    a monitor's usual polls are too."""
    t = harness.Trail(INVENTORY, batch=2)
    polls(t, WED)
    apply(t, MON, 30)
    apply(t, THU, 45)  # 1.5 times its widest: under the factor
    assert score(store, t, baselines) == []
