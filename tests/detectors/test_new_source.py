"""The new_source detector: 28 days of each agent's sources learned, then a week scored against them.

The history is written once per module as ActionTrail events for agents with the source habits of
their kind, ingested, and fitted in the business time zone (Asia/Shanghai):

* ``ci`` (RAM user ci-deploy): weekdays from 203.0.113.x with aliyun-cli, in cn-hangzhou;
* ``fleet`` (role FleetRole): every day from instances in a different /24 (a role used from many
  VPC instances: its networks rotate), with the Python SDK, in cn-hangzhou;
* ``alice`` (RAM user alice): weekdays, signs in with a browser and works in the console;
* ``v6bot``: every day from addresses in one IPv6 /64; ``internal``: every day from "Internal";
* ``traveler``: an office network, and on two days of the history a hotel's network;
* ``newbie``: three active days.

Each test ingests the scored week's events into a fresh store, loads them as ``trailwarden detect``
does and scores them with those baselines, or runs ``run_detect`` end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import pytest

from detectors.base import Coincidence, Detector, Finding
from detectors.new_source import NewSource, SourceProfile
from models.baselines import Baseline
from models.sources import client_family, network_of
from pipeline.core.times import parse_duration
from pipeline.detection import learning
from pipeline.detection.detect import _raise_coinciding
from pipeline.detection.findings import list_findings
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
CLI, PY_SDK = "aliyun-cli/3.0.204 (linux; amd64) Go/1.21.6", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/2.14.0"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/130.0.0.0 Safari/537.36"

INVENTORY = harness.inventory(
    harness.agent("ci", "ram-user:ci-deploy"), harness.agent("fleet", "role:FleetRole"),
    harness.agent("alice"), harness.agent("v6bot"), harness.agent("internal", "ram-user:svc-internal"),
    harness.agent("traveler"), harness.agent("newbie"))


def trail(batch: int) -> harness.Trail:
    """ActionTrail events at local wall-clock times, with the aliyun CLI unless a call says otherwise."""
    return harness.Trail(INVENTORY, batch, userAgent=CLI)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def weekdays(days: Iterable[date]) -> list[date]:
    return [d for d in days if d.weekday() < 5]


def ci(t: harness.Trail, days: Iterable[date]) -> None:
    for i, day in enumerate(weekdays(days)):
        for hour in (10, 14):
            t.add("ci", at(day, hour), ip=f"203.0.113.{10 + i % 30}")


def history_trail() -> harness.Trail:
    t = trail(batch=1)
    ci(t, HISTORY_DAYS)
    for i, day in enumerate(HISTORY_DAYS):
        for k in range(3):  # a new /24 every day: instances come and go
            t.add("fleet", at(day, 9 + k), ip=f"10.{100 + i}.{k}.5", ua=PY_SDK)
        t.add("v6bot", at(day, 12), ip=f"2001:db8:1:2::{i + 1:x}", ua="python-requests/2.31.0")
        t.add("internal", at(day, 12), ip="Internal", ua="aliyun-sdk-java/3.17.4(Linux/5.10)")
    for i, day in enumerate(weekdays(HISTORY_DAYS)):
        t.add("alice", at(day, 9), "ConsoleSignin", ip="198.18.7.21", ua=BROWSER, serviceName="AasSub",
              eventType="ConsoleSignin", isGlobal=True)
        t.add("alice", at(day, 10), ip="198.18.7.21", ua="AliyunConsole")
        hotels = {6: "192.0.2.50", 13: "100.66.13.50"}  # two days of the history at hotels
        t.add("traveler", at(day, 11), ip=hotels.get(i, "198.51.100.7"))
    for day in HISTORY_DAYS[-5:-2]:
        t.add("newbie", at(day, 10))
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("new-source-history"), history_trail().events, INVENTORY,
                           SINCE, TZ_NAME)


def sources(b: Baseline) -> SourceProfile:
    learned = b.part(SourceProfile)
    assert learned is not None
    return learned


Score = Callable[..., list[Finding]]


@pytest.fixture
def score(store: Store, baselines: dict[str, Baseline]) -> Score:
    """``score(trail, baselines=..., **params)``: the week's findings, as detect would make them."""

    ingested: set[int] = set()

    def run(t: harness.Trail, learned: dict[str, Baseline] | None = None, **params: Any) -> list[Finding]:
        if id(t) not in ingested:  # a trail may be scored twice, with other parameters
            harness.ingest(store, t.events, INVENTORY)
            ingested.add(id(t))
        return harness.score(store, NewSource(**params), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ,
                             baselines=baselines if learned is None else learned)

    return run


def described(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.agent, f.dedup_key, f.summary) for f in findings]


# -- the learned sources -----------------------------------------------------------------------------
def test_the_history_learns_sources_and_how_diverse_they_are(baselines: dict[str, Baseline]) -> None:
    b = sources(baselines["ci"])
    assert b.known("network") == {"203.0.113.0/24": 40}
    assert b.known("region") == {"cn-hangzhou": 40}
    assert b.known("client") == {"aliyun-cli": 40}
    assert b.source_days == {"network": 20, "region": 20, "client": 20}
    assert b.novelty("network") == 0.0
    fleet = sources(baselines["fleet"])
    assert len(fleet.known("network")) == 28 * 3
    assert fleet.novelty("network") == 1.0  # every day after the first brought new networks
    assert fleet.novelty("region") == 0.0 and fleet.known("client") == {"alibabacloud-sdk-python": 84}
    alice = sources(baselines["alice"])
    assert alice.known("client") == {"console": 40}  # the browser and the console are one client
    assert alice.known("region") == {"cn-hangzhou": 20}  # sign-ins are global: no region
    assert sources(baselines["v6bot"]).known("network") == {"2001:db8:1:2::/64": 28}
    assert sources(baselines["internal"]).known("network") == {}
    assert sources(baselines["internal"]).novelty("network") is None  # never seen an address: not learned
    assert sources(baselines["traveler"]).novel_days == {"network": 2, "region": 0, "client": 0}
    assert sources(baselines["traveler"]).novelty("network") == pytest.approx(2 / 19)
    assert sources(baselines["newbie"]).novelty("network") is None


@pytest.mark.parametrize("ip", ["203.0.113.7", "10.1.2.255", "8.8.8.8", "2001:db8:1:2::99", "::ffff:1.2.3.4"])
def test_sql_and_python_agree_on_a_source_network(store: Store, ip: str) -> None:
    t = trail(batch=3)
    for day in HISTORY_DAYS:
        t.add("ci", at(day, 10), ip=ip)
    harness.ingest(store, t.events, INVENTORY)
    assert sources(learning.fit(store, SINCE, TZ_NAME)["ci"]).known("network") == {network_of(ip): 28}


@pytest.mark.parametrize(("agent", "expected"), [
    ("aliyun-cli/3.0.204 (linux; amd64) Go/1.21.6", "aliyun-cli"), ("aliyuncli/2.0.6", "aliyun-cli"),
    ("Terraform/1.9.8 terraform-provider-alicloud/1.235.0", "terraform"),
    ("APN/1.0 HashiCorp/1.0 Terraform/1.1.2 (+https://www.terraform.io)", "terraform"),
    ("python-requests/2.31.0", "python-requests"),
    ("AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/2.14.0 python-requests/2.31.0", "alibabacloud-sdk-python"),
    ("AlibabaCloud (Mac OS X; x86_64) Java/1.8.0_252-b09 Core/4.4.6", "alibabacloud-sdk-java"),
    ("aliyun-sdk-java/3.17.4(Linux/5.10.134-16.al8.x86_64/amd64;1.8.0_392)", "aliyun-sdk-java"),
    ("ALIYUN-SDK-JAVA", "aliyun-sdk-java"), ("AliyunConsole", "console"), ("aliyun-oss-console", "console"),
    (BROWSER, "console"), ("[Boto3/1.26.165 Python/3.10.6 Linux/5.19.0-46-generic Botocore/1.29]", "boto3"),
    ("stratus-red-team_6a7ec681-49a5-4403-99a2-d3c1229e8063", "stratus-red-team"),
    ("secretsmanager.amazonaws.com", "secretsmanager.amazonaws.com"), ("", None), ("   ", None), (None, None),
])
def test_user_agents_fold_into_client_families(agent: str | None, expected: str | None) -> None:
    assert client_family(agent) == expected


# -- firing ------------------------------------------------------------------------------------------
def test_a_stolen_key_from_a_new_network_fires_once_naming_everything_new(score: Score) -> None:
    t = trail(batch=2)
    ci(t, WEEK)  # its usual calls are fine
    ids = [t.add("ci", at(SAT, 3, i), ip="185.220.101.34", ua="python-requests/2.31.0",
                 region="cn-beijing" if i == 2 else "cn-hangzhou", error="NoPermission" if i == 4 else None)["eventId"]
           for i in range(5)]
    (f,) = score(t)
    # a new place is a weak signal: low on its own (issue 15); its aspects are for anomalous_behaviour
    assert (f.agent, f.severity, f.dedup_key) == ("ci", "low", "new_source:network:185.220.101.0/24")
    aspects = {a["aspect"]: a for a in f.evidence["aspects"]}
    assert set(aspects) == {"network", "region", "client"}
    assert not any(a["declared"] for a in aspects.values())
    assert aspects["network"]["text"] == "new network 185.220.101.0/24; usual: 203.0.113.0/24"
    assert aspects["network"]["weight"] > aspects["region"]["weight"] > 0.1
    assert f.event_ids == ids
    assert f.summary == ("ci called from a never-seen network 185.220.101.0/24 (185.220.101.34): in 28 days it "
                         "used 1 network (203.0.113.0/24), a new one on 0 of 19 days; also new: region "
                         "cn-beijing; client python-requests (5 calls, 4 succeeded)")
    ev = f.evidence
    assert (ev["kind"], ev["value"]) == ("network", "185.220.101.0/24")
    assert ev["new"] == {"network": ["185.220.101.0/24"], "region": ["cn-beijing"], "client": ["python-requests"]}
    assert ev["known"]["network"] == {"203.0.113.0/24": 40} and ev["known"]["client"] == {"aliyun-cli": 40}
    assert ev["diversity"]["network"] == {"distinct": 1, "days_seen": 20, "days_with_a_new_value": 0,
                                         "novelty": 0.0, "stable": True}
    assert ev["threshold"] == {"max_novelty": 0.1, "min_days": 7}
    assert (ev["count"], ev["succeeded"], ev["failed"]) == (5, 4, 1)
    assert ev["source_ips"] == ["185.220.101.34"] and ev["error_codes"] == {"NoPermission": 1}
    assert 0.3 <= f.score <= 1


@pytest.mark.parametrize(("extra", "key"), [
    ({"region": "ap-southeast-1"}, "new_source:region:ap-southeast-1"),
    ({"ua": "Terraform/1.9.8 terraform-provider-alicloud/1.235.0"}, "new_source:client:terraform"),
], ids=["region", "client"])
def test_a_new_region_or_client_alone_fires(score: Score, extra: dict[str, str], key: str) -> None:
    t = trail(batch=2)
    t.add("ci", at(TUE, 11), ip="203.0.113.99", **extra)
    (f,) = score(t)
    assert f.dedup_key == key
    assert list(f.evidence["new"]) == [key.split(":")[1]]
    assert "also new" not in f.summary


def test_the_usual_network_region_and_client_are_quiet(score: Score) -> None:
    t = trail(batch=2)
    ci(t, WEEK)
    t.add("ci", at(SUN, 3), ip="203.0.113.250")  # odd hours are odd_hours' business; the /24 is known
    t.add("alice", at(TUE, 9), "ConsoleSignin", ip="198.18.7.21", ua=BROWSER.replace("130", "131"),
          serviceName="AasSub", eventType="ConsoleSignin", isGlobal=True)
    t.add("alice", at(TUE, 10), ip="198.18.7.21", ua="AliyunConsole")
    t.add("v6bot", at(TUE, 12), ip="2001:db8:1:2:aaaa::1", ua="python-requests/2.32.3")
    assert score(t) == []


# -- rotating sources --------------------------------------------------------------------------------
def test_a_role_used_from_ever_new_instances_is_quiet_about_networks(score: Score) -> None:
    t = trail(batch=2)
    for i, day in enumerate(WEEK):
        for k in range(3):
            t.add("fleet", at(day, 9 + k), ip=f"172.{16 + i}.{k}.9", ua=PY_SDK)
    assert score(t) == []


def test_a_rotating_role_in_a_never_seen_region_fires_as_a_region(score: Score) -> None:
    t = trail(batch=2)
    ids = [t.add("fleet", at(WED, 2, i), ip="172.31.0.9", ua=PY_SDK, region="eu-central-1")["eventId"]
           for i in range(3)]
    (f,) = score(t)
    assert f.dedup_key == "new_source:region:eu-central-1" and f.event_ids == ids
    assert f.evidence["new"] == {"region": ["eu-central-1"]}  # its new network is not news
    assert f.evidence["diversity"]["network"]["stable"] is False
    assert f.evidence["diversity"]["network"]["novelty"] == 1.0
    assert "worked in a never-seen region eu-central-1" in f.summary


def test_max_novelty_decides_which_agents_rotate(score: Score) -> None:
    """The traveler brought a new network on 2 of 19 days (0.105): rotating at the default 0.1,
    stable at 0.2."""
    t = trail(batch=2)
    t.add("traveler", at(TUE, 11), ip="192.0.2.200")  # the hotel again: known
    t.add("traveler", at(WED, 11), ip="100.64.8.1")  # somewhere new
    assert score(t) == []
    (f,) = score(t, max_novelty=0.2)
    assert f.dedup_key == "new_source:network:100.64.8.0/24"
    assert f.evidence["threshold"]["max_novelty"] == 0.2


# -- not judged -------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["Internal", "192.168.XX.XX", "", "ecs.aliyuncs.com", "255.18.064.253"])
def test_sources_that_are_not_addresses_have_no_network(score: Score, source: str) -> None:
    t = trail(batch=2)
    t.add("ci", at(TUE, 11), ip=source)
    t.add("internal", at(TUE, 12), ip=source, ua="aliyun-sdk-java/3.17.4(Linux/5.10)")
    assert score(t) == []


def test_an_agent_never_seen_at_an_address_is_not_judged_on_networks(score: Score) -> None:
    t = trail(batch=2)
    t.add("internal", at(TUE, 12), ip="185.220.101.34", ua="aliyun-sdk-java/3.17.4(Linux/5.10)")
    assert score(t) == []


def test_ipv6_is_judged_by_its_64(score: Score) -> None:
    t = trail(batch=2)
    t.add("v6bot", at(TUE, 12), ip="2001:db8:1:2::ffff", ua="python-requests/2.31.0")
    t.add("v6bot", at(TUE, 13), ip="2001:db8:9:9::1", ua="python-requests/2.31.0")
    (f,) = score(t)
    assert f.dedup_key == "new_source:network:2001:db8:9:9::/64"


def test_too_little_history_is_not_judged(score: Score) -> None:
    t = trail(batch=2)
    t.add("newbie", at(TUE, 3), ip="185.220.101.34", ua="python-requests/2.31.0", region="ap-southeast-1")
    assert score(t) == []


def test_a_baseline_stored_before_sources_were_learned_loads_and_is_not_judged(
        score: Score, store: Store, baselines: dict[str, Baseline]) -> None:
    old = json.loads(baselines["ci"].to_json())
    for key in ("sources", "source_days", "novel_days"):
        del old[key]
    loaded = Baseline.from_json(json.dumps(old), learning.learners())
    assert sources(loaded).sources is None and sources(loaded).novelty("network") is None
    # the rest is intact
    assert loaded == replace(baselines["ci"], parts={**baselines["ci"].parts, SourceProfile: SourceProfile()})
    # as stored by an earlier version, on the history the store holds: detect loads it rather than refitting
    harness.ingest(store, history_trail().events, INVENTORY)
    day = datetime(2026, 11, 22, 16, tzinfo=UTC)
    assert day == SINCE
    for agent, b in baselines.items():
        stored = json.loads(b.to_json())
        for key in ("sources", "source_days", "novel_days"):
            del stored[key]
        store.con.execute("INSERT INTO baselines VALUES (?, ?, ?, ?, now(), ?)",
                          [agent, day - timedelta(days=28), day, TZ_NAME, json.dumps(stored)])
    assert sources(learning.load_or_fit(store, day, TZ_NAME)["ci"]).sources is None
    t = trail(batch=2)
    t.add("ci", at(SAT, 3), ip="185.220.101.34", ua="python-requests/2.31.0")
    assert score(t, {"ci": loaded}) == []


# -- one finding per source per dedup window -----------------------------------------------------------
def test_one_finding_per_agent_and_source_per_dedup_window(score: Score) -> None:
    t = trail(batch=2)
    first = [t.add("ci", at(TUE, 11), ip="185.220.101.34")["eventId"],
             t.add("ci", at(TUE, 15), ip="185.220.101.77")["eventId"]]  # same /24, 4 hours later
    later = t.add("ci", at(THU, 11), ip="185.220.101.34")["eventId"]  # 48 hours later
    other = t.add("ci", at(TUE, 12), ip="45.83.64.12")["eventId"]
    findings = score(t)
    assert [(f.dedup_key, f.event_ids) for f in findings] == [
        ("new_source:network:185.220.101.0/24", first), ("new_source:network:45.83.64.0/24", [other]),
        ("new_source:network:185.220.101.0/24", [later])]
    assert len({f.id for f in findings}) == 3


def test_failed_calls_from_a_new_source_still_fire(score: Score) -> None:
    t = trail(batch=2)
    t.add("ci", at(TUE, 11), ip="185.220.101.34", error="InvalidAccessKeyId.NotFound")
    (f,) = score(t)
    assert f.evidence["failed"] == 1 and "(1 call, all failed)" in f.summary


def test_score_is_order_insensitive(store: Store, baselines: dict[str, Baseline]) -> None:
    t = trail(batch=2)
    for i in range(6):
        t.add("ci", at(TUE, 11, i), ip=f"185.220.{101 + i % 2}.34", ua="python-requests/2.31.0")
        t.add("fleet", at(TUE, 11, i), ip=f"172.20.{i}.1", ua=PY_SDK, region="eu-central-1")
    harness.ingest(store, t.events, INVENTORY)
    df = harness.frame(store, NewSource(), since=SINCE, until=UNTIL)
    models = harness.models(INVENTORY, TZ, baselines)

    def signature(found: list[Finding]) -> list[tuple[Any, ...]]:
        return sorted((f.id, f.dedup_key, tuple(f.event_ids), f.summary) for f in found)

    first = signature(NewSource().score(df, models, UNTIL))
    assert len(first) == 3
    for seed in (0, 1):
        assert signature(NewSource().score(df.sample(frac=1, random_state=seed), models, UNTIL)) == first


@pytest.mark.parametrize(("params", "message"), [
    ({"max_novelty": 1.5}, "max_novelty"), ({"min_days": 1}, "min_days"),
    ({"coincidence_severity": "urgent"}, "coincidence_severity"), ({"coincidence_window": "soon"}, "not a duration"),
])
def test_parameters_are_validated(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NewSource(**params)


# -- coinciding with another detector -------------------------------------------------------------------
def _finding(detector: str, agent: str, minute: int, severity: str = "medium") -> Finding:
    when = datetime(2026, 11, 28, 3, 0, tzinfo=UTC) + timedelta(minutes=minute)
    return Finding(detector, agent, severity, 0.5, when, when + timedelta(minutes=2), f"{detector} says so",
                   [f"{detector}-{agent}-{minute}"], {}, f"{detector}:{minute}")


def test_a_new_source_coinciding_with_another_detector_is_raised() -> None:
    new = _finding("new_source", "ci", 0)
    odd = _finding("odd_hours", "ci", 61, "high")  # starts 59 minutes after the new source's last call
    far = _finding("failure_storm", "ci", 200)
    elsewhere = _finding("out_of_scope", "etl", 0, "critical")
    _raise_coinciding([new, odd, far, elsewhere], [NewSource()])
    assert new.severity == "high" and new.score >= 0.75
    assert new.evidence["coincides_with"] == [
        {"detector": "odd_hours", "id": odd.id, "severity": "high", "first_seen": "2026-11-28T04:01:00Z"}]
    assert new.summary == "new_source says so; coincides with odd_hours"
    assert (odd.severity, far.severity, elsewhere.severity) == ("high", "medium", "critical")  # others untouched


def test_a_lone_new_source_or_another_new_source_keeps_medium() -> None:
    a, b = _finding("new_source", "ci", 0), _finding("new_source", "ci", 5)
    _raise_coinciding([a, b, _finding("odd_hours", "ci", 180)], [NewSource()])
    assert (a.severity, b.severity) == ("medium", "medium") and "coincides_with" not in a.evidence
    c = _finding("new_source", "ci", 0)
    _raise_coinciding([c, _finding("odd_hours", "ci", 30)], [NewSource(coincidence_severity="critical")])
    assert c.severity == "critical"


class _Paired(Detector):
    """A detector whose findings matter more beside another's, whatever its parameters are called."""

    id, severity = "paired", "low"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "60m", "pair_within": "10m"}

    @property
    def coincidence(self) -> Coincidence:
        return Coincidence(parse_duration(self.params["pair_within"]), "critical")

    def score(self, events: Any, models: Any, now: datetime) -> list[Finding]:
        return []


def test_the_coincidence_a_detector_declares_is_what_raises_its_findings() -> None:
    """detect reads the declared rule, not a parameter name: 10 minutes and critical here."""
    near, far = _finding("paired", "ci", 0, "low"), _finding("paired", "ci", 100, "low")
    _raise_coinciding([near, far, _finding("odd_hours", "ci", 11)], [_Paired()])
    assert (near.severity, far.severity) == ("critical", "low")
    assert [c["detector"] for c in near.evidence["coincides_with"]] == ["odd_hours"]
    assert NewSource(coincidence_window="2h", coincidence_severity="critical").coincidence == Coincidence(
        timedelta(hours=2), "critical")


def test_detect_tells_one_story_of_a_new_source_at_odd_hours(store: Store) -> None:
    """End to end: the CI key used from a new network with a new client at 03:00 on a Sunday is
    three weak signals (network, client, hour): each finding stays low, and anomalous_behaviour
    stores one medium story listing all three with their baselines. A new region at a usual hour
    alone stays low, with no story (issue 15: a single weak signal is low on its own)."""
    t = history_trail()
    ci(t, WEEK)
    ids = [t.add("ci", at(SUN, 3, i), ip="185.220.101.34", ua="python-requests/2.31.0")["eventId"]
           for i in range(3)]
    t.add("ci", at(TUE, 11), ip="203.0.113.5", region="ap-southeast-1")  # new region at a usual hour
    harness.ingest(store, t.events, INVENTORY)
    report = harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    assert not report.failed, report.detectors
    found = {f["evidence"]["value"]: f for f in list_findings(store, detector="new_source")}
    assert set(found) == {"185.220.101.0/24", "ap-southeast-1"}
    stolen, region = found["185.220.101.0/24"], found["ap-southeast-1"]
    assert stolen["event_ids"] == ids and stolen["severity"] == "low" and region["severity"] == "low"
    (odd,) = list_findings(store, detector="odd_hours")
    assert odd["severity"] == "low"
    (story,) = list_findings(store, detector="anomalous_behaviour")
    assert story["severity"] == "medium" and story["event_ids"] == ids
    assert [a["aspect"] for a in story["evidence"]["aspects"]] == ["hour", "network", "client"]
    assert {f["id"] for f in story["evidence"]["findings"]} == {stolen["id"], odd["id"]}
    assert stolen["evidence"]["story"] == story["id"] and "story" not in region["evidence"]
    assert "new network 185.220.101.0/24; usual: 203.0.113.0/24" in story["summary"]
