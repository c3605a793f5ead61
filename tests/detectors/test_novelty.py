"""The novelty detector: 28 days of what each agent used learned, then a week scored.

History (Asia/Shanghai): ``ci`` (stable) lists instances and reads its artifacts bucket on
weekdays; ``explorer`` (a person) calls a new API on most days; ``newbie`` has three active days.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from detectors.base import Finding
from detectors.novelty import Novelty, NoveltyProfile
from models.baselines import Baseline
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
INVENTORY = harness.inventory(harness.agent("ci", "ram-user:ci-deploy"), harness.agent("explorer"),
                              harness.agent("newbie"))


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def ci_day(t: harness.Trail, day: date) -> None:
    t.add("ci", at(day, 10))
    t.add("ci", at(day, 10, 5), "GetObject", serviceName="Oss",
          referencedResources={"ACS::OSS::Object": ["artifacts/app.tar.gz"]})


def history() -> harness.Trail:
    t = harness.Trail(INVENTORY, batch=1)
    for i, day in enumerate(HISTORY_DAYS):
        if day.weekday() < 5:
            ci_day(t, day)
        t.add("explorer", at(day, 11), f"DescribeThing{i}")  # a new API every day
    for day in HISTORY_DAYS[-4:-1]:
        t.add("newbie", at(day, 10))
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("novelty-history"), history().events, INVENTORY, SINCE, TZ_NAME)


def score(store: Store, t: harness.Trail, baselines: dict[str, Baseline]) -> list[Finding]:
    harness.ingest(store, t.events, INVENTORY)
    return harness.score(store, Novelty(), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ, baselines=baselines)


def test_the_history_learns_what_each_agent_used_and_how_often_it_is_new(baselines: dict[str, Baseline]) -> None:
    ci = baselines["ci"].part(NoveltyProfile)
    assert ci is not None and ci.used is not None
    assert ci.used == {"service": ["Ecs", "Oss"], "api": ["Ecs:DescribeInstances", "Oss:GetObject"],
                       "resource": ["bucket:artifacts"]}
    assert ci.novelty(baselines["ci"]) == 0.0
    explorer = baselines["explorer"].part(NoveltyProfile)
    assert explorer is not None and explorer.novelty(baselines["explorer"]) == 1.0


def test_a_stable_agents_first_secrets_and_new_bucket_are_one_medium_finding_a_day(
        store: Store, baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    for day in WEEK[:5]:
        ci_day(t, day)
    ids = [t.add("ci", at(WED, 15, i), name, serviceName="Kms")["eventId"]
           for i, name in enumerate(("ListSecrets", "GetSecretValue", "GetSecretValue"))]
    ids.append(t.add("ci", at(WED, 15, 9), "GetObject", serviceName="Oss",
                     referencedResources={"ACS::OSS::Object": ["hr-payroll/2026.csv"]})["eventId"])
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity, f.event_ids, f.dedup_key) == ("ci", "medium", ids, "novelty:2026-11-25")
    assert f.evidence["sensitive_families"] == ["kms:*"]
    assert f.evidence["new"] == {"service": ["Kms"], "api": ["Kms:ListSecrets", "Kms:GetSecretValue"],
                                 "resource": ["bucket:hr-payroll"]}
    assert f.summary.startswith("ci used for the first time on 2026-11-25: sensitive kms:*; 1 service (Kms); "
                                "2 apis (Kms:ListSecrets, Kms:GetSecretValue); 1 resource (bucket:hr-payroll)")
    assert "in 20 active days it used 2 services, 2 APIs and 1 resource classes, a new API on 0 days" in f.summary


def test_a_new_api_alone_is_low_and_an_explorer_or_a_newbie_is_not_judged(store: Store,
                                                                        baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    ci_day(t, TUE)
    ids = [t.add("ci", at(TUE, 11), "DescribeImages")["eventId"]]
    t.add("explorer", at(TUE, 11), "DescribeSomethingElse")  # not stable: only sensitive families count
    t.add("newbie", at(TUE, 11), "ListSecrets", serviceName="Kms")  # under 7 active days: not judged
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity, f.event_ids) == ("ci", "low", ids)
    assert f.evidence["aspects"][0]["aspect"] == "novelty"


def test_an_unstable_agents_first_sensitive_call_is_low(store: Store, baselines: dict[str, Baseline]) -> None:
    t = harness.Trail(INVENTORY, batch=2)
    ids = [t.add("explorer", at(TUE, 11), "ListUsers", serviceName="Ims", isGlobal=True)["eventId"]]
    (f,) = score(store, t, baselines)
    assert (f.agent, f.severity, f.event_ids) == ("explorer", "low", ids)
    assert f.evidence["sensitive_families"] == ["ram:*"] and f.evidence["stable"] is False


def test_rotating_its_own_access_key_is_self_service_not_the_ram_family(store: Store,
                                                                      baselines: dict[str, Baseline]) -> None:
    """A user creating, disabling and deleting its own AccessKey (naming itself, or no user) is RAM
    self-service: new APIs (low), not the sensitive ram:* family. The same call aimed at another
    user is the family's first use (medium)."""
    t = harness.Trail(INVENTORY, batch=2)
    own = [t.add("ci", at(TUE, 11, i), name, serviceName="Ims", isGlobal=True,
                 requestParameters=params)["eventId"]
           for i, (name, params) in enumerate((("ListAccessKeys", {}), ("CreateAccessKey", {"UserName": "ci-deploy"}),
                                               ("UpdateAccessKey", {"UserName": "ci-deploy", "Status": "Inactive"})))]
    other = [t.add("ci", at(WED, 11), "CreateAccessKey", serviceName="Ims", isGlobal=True,
                   requestParameters={"UserName": "alice"})["eventId"]]
    rotated, aimed = score(store, t, baselines)
    assert (rotated.event_ids, rotated.severity, rotated.evidence["sensitive_families"]) == (own, "low", [])
    assert (aimed.event_ids, aimed.severity, aimed.evidence["sensitive_families"]) == (other, "medium", ["ram:*"])
