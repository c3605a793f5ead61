"""The credential_misuse detector: 28 days of each agent's places learned, then a week scored.

The history (business time zone Asia/Shanghai), per agent:

* ``etl`` (role EtlRole): every day two runs, each its own STS session, from a job host in a VPC
  (172.16.5.9, ``vpcId``) with the Java SDK: cloud-only;
* ``fc`` (role FcRole): Function Compute, from "Internal" and Alibaba's service addresses
  (11.x, 100.104.x), a new session every three hours: cloud-only;
* ``dev`` (RAM user with AccessKey LTAI5tDev): weekdays from the office (198.51.100.7) with the
  aliyun CLI, on Fridays also from the VPN (192.0.2.0/24 ... a different /16) in the same half hour;
* ``hosted`` (CI key): every day from a different /16 of a hosted runner pool (it rotates);
* ``vendor``: from its office, inside the CIDR the inventory declares;
* ``flat``: a broken baseline, every call of the history at 03:00 from one address;
* ``newbie``: three active days.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from detectors.base import Finding
from detectors.credential_misuse import CredentialMisuse, CredentialProfile
from models.baselines import Baseline
from models.places import CLOUD, family_of
from pipeline.detection import learning
from pipeline.detection.findings import list_findings, save_findings
from pipeline.store.store import Store
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
JAVA = "AlibabaCloud (Linux; x86_64) Java/1.8.0_392 Core/4.6.4"
CLI = "aliyun-cli/3.0.204 (linux; amd64) Go/1.21.6"
REQUESTS = "python-requests/2.32.3"
THIEF = "185.220.101.34"
ACCOUNT = harness.ACCOUNT

INVENTORY = harness.inventory(
    harness.agent("etl", "role:EtlRole"), harness.agent("fc", "role:FcRole"),
    harness.agent("dev", "ram-user:dev", "access-key:LTAI5tDev"), harness.agent("hosted", "ram-user:hosted-ci"),
    harness.agent("vendor", "ram-user:vendor", source_ips=["58.246.8.0/22"]),
    harness.agent("flat", "ram-user:flat"), harness.agent("newbie", "ram-user:newbie"))


def at(day: date, hour: float, minute: float = 0) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TZ) + timedelta(hours=hour, minutes=minute)


def role(name: str, session: str, created: datetime) -> dict[str, Any]:
    """An assumed-role identity with its session's STS key (one key for the session's life)."""
    return {"type": "assumed-role", "accountId": ACCOUNT, "principalId": f"3000{len(name)}:{session}",
            "userName": f"{name}:{session}", "accessKeyId": f"STS.{name}{session}".replace("-", ""),
            "sessionContext": {"attributes": {"mfaAuthenticated": "false",
                                              "creationDate": created.astimezone(TZ).strftime("%Y-%m-%dT%H:%M:%S%z")}}}


def user(name: str, key: str) -> dict[str, Any]:
    return {"type": "ram-user", "accountId": ACCOUNT, "principalId": f"2000{len(name)}", "userName": name,
            "accessKeyId": key}


def etl_run(t: harness.Trail, start: datetime, calls: int = 6) -> list[str]:
    ident = role("EtlRole", f"etl-{start:%m%d%H}", start)
    return [t.add("etl", start + timedelta(minutes=k), "GetObject", ip="172.16.5.9", ua=JAVA, vpcId="vpc-bp1etl",
                  userIdentity=ident)["eventId"] for k in range(calls)]


def fc_calls(t: harness.Trail, day: date) -> None:
    for block in range(0, 24, 3):
        ident = role("FcRole", f"fc-{day:%m%d}{block:02d}", at(day, block))
        for k, ip in enumerate(("Internal", f"11.168.{block}.{day.day}", f"100.104.{day.day}.{block + 1}")):
            t.add("fc", at(day, block, 10 + k), "PutObject", ip=ip, ua=JAVA, userIdentity=ident)


def dev_day(t: harness.Trail, day: date, vpn: bool = False) -> None:
    ident = user("dev", "LTAI5tDev")
    for hour in (10, 11, 15):
        t.add("dev", at(day, hour), ip="198.51.100.7", ua=CLI, userIdentity=ident)
    if vpn:
        t.add("dev", at(day, 15, 10), ip="192.0.2.40", ua=CLI, userIdentity=ident)


def history_trail() -> harness.Trail:
    t = harness.Trail(INVENTORY, 1)
    for i, day in enumerate(HISTORY_DAYS):
        etl_run(t, at(day, 2, 5))
        etl_run(t, at(day, 14, 5))
        fc_calls(t, day)
        if day.weekday() < 5:
            dev_day(t, day, vpn=day.weekday() == 4)
        t.add("hosted", at(day, 11), ip=f"20.{40 + i}.3.4", ua=CLI, userIdentity=user("hosted-ci", "LTAI5tHosted"))
        if day.weekday() < 5:
            t.add("vendor", at(day, 10), ip="58.246.8.20", ua=CLI, userIdentity=user("vendor", "LTAI5tVendor"))
        t.add("flat", at(day, 3), ip="198.18.0.1", ua=CLI, userIdentity=user("flat", "LTAI5tFlat"))
    for day in HISTORY_DAYS[-5:-2]:
        t.add("newbie", at(day, 10), ip="198.51.100.9", ua=CLI, userIdentity=user("newbie", "LTAI5tNew"))
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("credential-history"), history_trail().events, INVENTORY,
                           SINCE, TZ_NAME)


Score = Callable[..., list[Finding]]


@pytest.fixture
def score(store: Store, baselines: dict[str, Baseline]) -> Score:
    def run(t: harness.Trail, learned: dict[str, Baseline] | None = None, **params: Any) -> list[Finding]:
        harness.ingest(store, t.events, INVENTORY)
        return harness.score(store, CredentialMisuse(**params), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ,
                             baselines=baselines if learned is None else learned)

    return run


def profile(b: Baseline) -> CredentialProfile:
    part = b.part(CredentialProfile)
    assert part is not None
    return part


# -- what is learned ------------------------------------------------------------------------------
def test_the_history_learns_places_pairs_and_cloud_only_agents(baselines: dict[str, Baseline]) -> None:
    etl, fc, dev = profile(baselines["etl"]), profile(baselines["fc"]), profile(baselines["dev"])
    assert etl.places == {CLOUD: [28 * 12, 28]} and etl.cloud_only(7)
    assert fc.places == {CLOUD: [28 * 24, 28]} and fc.cloud_only(7)  # service addresses are all "cloud"
    assert dev.places == {"198.51.0.0/16": [20 * 3, 20], "192.0.0.0/16": [4, 4]} and not dev.cloud_only(7)
    assert dev.pairs() == {("192.0.0.0/16", "198.51.0.0/16")}  # office and VPN went together on Fridays
    assert dev.novelty(7) == pytest.approx(1 / 19)
    assert profile(baselines["hosted"]).novelty(7) == 1.0  # a new /16 every day: it rotates
    assert profile(baselines["flat"]).places == {"198.18.0.0/16": [28, 28]}
    assert profile(baselines["flat"]).novelty(7) == 0.0


@pytest.mark.parametrize(("ip", "vpc"), [
    ("203.0.113.7", None), ("172.16.5.9", None), ("172.32.0.1", None), ("11.168.3.4", None), ("100.104.1.2", None),
    ("100.128.0.1", None), ("10.0.0.1", None), ("192.168.1.1", None), ("8.8.8.8", "vpc-1"), ("Internal", None),
    ("ess.aliyuncs.com", None), ("192.168.XX.XX", None), ("2001:db8:1:2::9", None), ("fd00::1", None)])
def test_sql_and_python_agree_on_a_place(store: Store, ip: str, vpc: str | None) -> None:
    t = harness.Trail(INVENTORY, 3)
    for day in HISTORY_DAYS:
        t.add("dev", at(day, 10), ip=ip, userIdentity=user("dev", "LTAI5tDev"), **({"vpcId": vpc} if vpc else {}))
    harness.ingest(store, t.events, INVENTORY)
    places = profile(learning.fit(store, SINCE, TZ_NAME)["dev"]).places
    expected = family_of(ip, vpc)
    assert places == ({expected: [28, 28]} if expected else {})


# -- firing ----------------------------------------------------------------------------------------
def test_an_etl_session_reused_from_outside_with_another_client_is_high(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    for day in WEEK:
        etl_run(t, at(day, 2, 5))
    start = at(WED, 14, 5)
    etl_run(t, start, calls=20)  # the real job, from its host
    ident = role("EtlRole", f"etl-{start:%m%d%H}", start)
    stolen = [t.add("etl", start + timedelta(minutes=12, seconds=2 * k), "GetObject", ip=THIEF, ua=REQUESTS,
                    userIdentity=ident)["eventId"] for k in range(40)]
    (f,) = score(t)
    assert (f.agent, f.severity) == ("etl", "high")
    assert f.event_ids == stolen
    assert f.evidence["reasons"] == ["outside_cloud", "mid_session_change"]
    assert f.evidence["clients"] == ["python-requests"] and f.evidence["usual_clients"] == ["alibabacloud-sdk-java"]
    assert f.evidence["new_place"] is True and f.evidence["together_with"] == [CLOUD]
    assert f.summary.startswith("etl's STS session STS.EtlRolee… was used from the internet, 185.220.0.0/16 "
                                "(185.220.101.34) with python-requests (40 calls): in 28 days it only ever called "
                                "from inside Alibaba Cloud; etl's STS session STS.EtlRolee… its session moved "
                                "mid-session from cloud and 185.220.0.0/16")
    assert "client alibabacloud-sdk-java -> python-requests" in f.summary


def test_an_etl_token_used_after_the_job_ended_is_still_one_session(score: Score) -> None:
    """A token does not move on its own: hours later, from elsewhere, is the same session reused."""
    t = harness.Trail(INVENTORY, 2)
    start = at(TUE, 2, 5)
    etl_run(t, start)
    ident = role("EtlRole", f"etl-{start:%m%d%H}", start)
    stolen = t.add("etl", start + timedelta(hours=3), "ListObjects", ip=THIEF, ua=JAVA, userIdentity=ident)
    (f,) = score(t)
    assert f.severity == "high" and f.event_ids == [stolen["eventId"]]
    assert f.evidence["reasons"] == ["outside_cloud", "concurrent"]  # same client: not a client change


def test_a_function_role_token_used_from_the_internet_is_high(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    for day in WEEK:
        fc_calls(t, day)
    ident = role("FcRole", "fc-stolen", at(THU, 3))
    ids = [t.add("fc", at(THU, 4, k), "GetObject", ip="45.141.215.9", ua=CLI, userIdentity=ident)["eventId"]
           for k in range(5)]
    (f,) = score(t)
    assert (f.agent, f.severity, f.event_ids) == ("fc", "high", ids)
    assert f.evidence["reasons"] == ["outside_cloud"]
    assert "it only ever called from inside Alibaba Cloud" in f.summary


@pytest.mark.parametrize(("ua", "severity"), [(CLI, "medium"), (REQUESTS, "high")])
def test_a_persons_key_from_two_distant_networks_within_minutes(score: Score, ua: str, severity: str) -> None:
    t = harness.Trail(INVENTORY, 2)
    for day in WEEK[:5]:
        dev_day(t, day)
    ident = user("dev", "LTAI5tDev")
    ids = [t.add("dev", at(TUE, 15, 5 + k), ip="45.77.160.3", ua=ua, userIdentity=ident)["eventId"] for k in range(3)]
    (f,) = score(t)
    assert (f.agent, f.severity, f.event_ids) == ("dev", severity, ids)
    assert f.evidence["reasons"] == ["concurrent"] and f.evidence["together_with"] == ["198.51.0.0/16"]
    assert f.dedup_key == "credential_misuse:LTAI5tDev:45.77.0.0/16"
    assert "dev's AccessKey LTAI5tDev was used at once from 198.51.0.0/16 and 45.77.0.0/16 (45.77.160.3), a place " \
           "new to it (3 calls)" in f.summary
    assert "never these together" in f.summary


def test_a_console_session_used_from_a_second_place_is_one_credential(score: Score) -> None:
    """A console session has no AccessKey: it is the user and its sign-in time (a stolen cookie)."""
    t = harness.Trail(INVENTORY, 2)
    signed_in = at(TUE, 9)
    console = {"type": "ram-user", "accountId": ACCOUNT, "principalId": "20003", "userName": "dev",
               "sessionContext": {"attributes": {"mfaAuthenticated": "true",
                                                 "creationDate": signed_in.astimezone(TZ).strftime("%Y-%m-%dT%H:%M:%S%z")}}}
    for k in range(3):
        t.add("dev", at(TUE, 9, 5 + k), ip="198.51.100.7", ua="AliyunConsole", userIdentity=console)
    t.add("dev", at(TUE, 9, 6), ip="198.51.100.7", ua=CLI, userIdentity=user("dev", "LTAI5tDev"))
    stolen = t.add("dev", at(TUE, 9, 20), ip=THIEF, ua="AliyunConsole", userIdentity=console)
    (f,) = score(t)
    assert (f.agent, f.severity, f.event_ids) == ("dev", "medium", [stolen["eventId"]])
    assert f.evidence["key_or_session"] == "console:dev@2026-11-24T01:00:00Z"
    assert "dev's console session was used at once from 198.51.0.0/16 and 185.220.0.0/16" in f.summary


def test_end_to_end_detect_stores_the_finding(store: Store, baselines: dict[str, Baseline], tmp_path: Any) -> None:
    t = harness.Trail(INVENTORY, 2)
    for day in HISTORY_DAYS:
        etl_run(t, at(day, 2, 5))
    start = at(WED, 2, 5)
    etl_run(t, start)
    ident = role("EtlRole", f"etl-{start:%m%d%H}", start)
    t.add("etl", start + timedelta(minutes=3), "GetObject", ip=THIEF, ua=REQUESTS, userIdentity=ident)
    harness.ingest(store, t.events, INVENTORY)
    report = harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    assert report.detectors["credential_misuse"]["error"] is None
    found = list_findings(store, detector="credential_misuse")
    assert [(f["agent"], f["severity"]) for f in found] == [("etl", "high")]


# -- quiet -----------------------------------------------------------------------------------------
def test_an_ordinary_week_is_quiet(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    for i, day in enumerate(WEEK):
        etl_run(t, at(day, 2, 5))
        etl_run(t, at(day, 14, 5))
        fc_calls(t, day)  # new service addresses every call: all inside the cloud
        if day.weekday() < 5:
            dev_day(t, day, vpn=day.weekday() == 4)  # office and VPN together, as learned
        t.add("hosted", at(day, 11), ip=f"20.{90 + i}.3.4", ua=CLI, userIdentity=user("hosted-ci", "LTAI5tHosted"))
    dev_day(t, TUE)  # and home on another day: a new place, never at once with another
    t.add("dev", at(TUE, 20), ip="115.192.36.7", ua=CLI, userIdentity=user("dev", "LTAI5tDev"))
    assert score(t) == []


def test_a_rotating_agent_at_two_networks_at_once_is_itself_unless_the_client_changes(score: Score) -> None:
    """A hosted CI pool hands out a new /16 most days: two of them in one half hour is that agent
    being itself; the same with a client it never used is not."""
    t = harness.Trail(INVENTORY, 2)
    ident = user("hosted-ci", "LTAI5tHosted")
    t.add("hosted", at(MON, 11), ip="20.40.3.4", ua=CLI, userIdentity=ident)
    t.add("hosted", at(MON, 11, 2), ip="52.234.3.4", ua=CLI, userIdentity=ident)
    assert score(t) == []
    t = harness.Trail(INVENTORY, 3)
    t.add("hosted", at(TUE, 11), ip="20.40.3.4", ua=CLI, userIdentity=ident)
    odd = t.add("hosted", at(TUE, 11, 2), ip="45.141.215.9", ua=REQUESTS, userIdentity=ident)
    (f,) = score(t)
    assert (f.agent, f.severity, f.event_ids) == ("hosted", "medium", [odd["eventId"]])
    assert f.evidence["public_novelty"] == 1.0


def test_inside_the_declared_source_ips_is_never_above_low(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    ident = user("vendor", "LTAI5tVendor")
    t.add("vendor", at(MON, 10), ip="58.246.8.20", ua=CLI, userIdentity=ident)
    t.add("vendor", at(MON, 10, 5), ip="58.247.10.9", ua=REQUESTS, userIdentity=ident)  # outside: new, other client
    t.add("vendor", at(TUE, 10), ip="58.246.8.20", ua=CLI, userIdentity=ident)
    inside = t.add("vendor", at(TUE, 10, 5), ip="58.246.11.3", ua=REQUESTS, userIdentity=ident)  # same /16: one place
    found = score(t)
    assert [(f.severity, f.evidence["source_ips"]) for f in found] == [("high", ["58.247.10.9"])]
    assert inside["eventId"] not in found[0].event_ids


def test_a_declared_network_in_another_family_stays_low(store: Store, baselines: dict[str, Baseline]) -> None:
    inv = harness.inventory(*[a.model_dump(by_alias=True, exclude_none=True) for a in INVENTORY.agents
                              if a.name != "vendor"],
                            harness.agent("vendor", "ram-user:vendor", source_ips=["58.246.8.0/22", "61.0.0.0/24"]))
    t = harness.Trail(inv, 2)
    ident = user("vendor", "LTAI5tVendor")
    t.add("vendor", at(MON, 10), ip="58.246.8.20", ua=CLI, userIdentity=ident)
    t.add("vendor", at(MON, 10, 5), ip="61.0.0.9", ua=REQUESTS, userIdentity=ident)
    harness.ingest(store, t.events, inv)
    (f,) = harness.score(store, CredentialMisuse(), inv, since=SINCE, until=UNTIL, timezone=TZ, baselines=baselines)
    assert (f.severity, f.evidence["declared"]) == ("low", True)
    assert f.summary.endswith("(inside its declared source_ips)")


def test_a_new_agent_is_never_above_low(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    ident = user("newbie", "LTAI5tNew")
    t.add("newbie", at(MON, 10), ip="198.51.100.9", ua=CLI, userIdentity=ident)
    t.add("newbie", at(MON, 10, 3), ip=THIEF, ua=REQUESTS, userIdentity=ident)
    (f,) = score(t)
    assert (f.agent, f.severity, f.evidence["learned"]) == ("newbie", "low", False)
    assert f.summary.endswith("(too little history to judge: low)")


def test_a_broken_baseline_is_judged_without_dividing_by_zero(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    ident = user("flat", "LTAI5tFlat")
    t.add("flat", at(MON, 3), ip="198.18.0.1", ua=CLI, userIdentity=ident)
    t.add("flat", at(MON, 3, 1), ip=THIEF, ua=CLI, userIdentity=ident)
    (f,) = score(t)
    assert (f.agent, f.severity) == ("flat", "medium")  # a new place at once with the only one it knows
    assert f.evidence["public_novelty"] == 0.0


def test_a_baseline_fitted_before_this_part_existed_is_not_judged(score: Score,
                                                                  baselines: dict[str, Baseline]) -> None:
    old = {k: Baseline.from_json(b.to_json(), []) for k, b in baselines.items()}
    t = harness.Trail(INVENTORY, 2)
    start = at(WED, 14, 5)
    etl_run(t, start)
    t.add("etl", start + timedelta(minutes=2), ip=THIEF, ua=REQUESTS,
          userIdentity=role("EtlRole", f"etl-{start:%m%d%H}", start))
    (f,) = score(t, learned=old)
    assert f.severity == "low"


def test_the_events_of_an_open_finding_are_not_learned(store: Store) -> None:
    """An incident never becomes the norm: calls a finding still holds open stay out of the fit."""
    t = harness.Trail(INVENTORY, 4)
    for day in HISTORY_DAYS:
        dev_day(t, day)
    stolen = [t.add("dev", at(HISTORY_DAYS[-3], 15, 5 + k), ip=THIEF, ua=REQUESTS,
                    userIdentity=user("dev", "LTAI5tDev"))["eventId"] for k in range(3)]
    harness.ingest(store, t.events, INVENTORY)
    when = at(HISTORY_DAYS[-3], 15, 5)
    open_one = Finding(detector="credential_misuse", agent="dev", severity="high", score=0.9, first_seen=when,
                       last_seen=when + timedelta(minutes=2), summary="stolen", event_ids=stolen, evidence={},
                       dedup_key="credential_misuse:test")
    save_findings(store, [open_one], {"credential_misuse": timedelta(hours=1)})
    learned = profile(learning.fit(store, SINCE, TZ_NAME)["dev"])
    assert set(learned.places or {}) == {"198.51.0.0/16"}
    assert learned.pairs() == set()
