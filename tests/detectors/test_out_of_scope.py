"""The out_of_scope detector, end to end: ActionTrail events -> ingest -> load_events -> score.

Each test builds the events in ActionTrail shape (conftest's ``make_event``: a RAM user
``ci-deploy`` calling ECS with an AccessKey from 203.0.113.7 in cn-hangzhou), ingests them into a
fresh store with the test's inventory, loads them the way ``trailwarden detect`` does and checks
the finding a user would see: severity, summary, evidence and event ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from detectors.base import Finding, Models
from detectors.out_of_scope import OutOfScope
from models.inventory import Inventory, load_inventory
from pipeline.demo import synthetic
from pipeline.store.store import Store
from tests.conftest import REAL_ATTACKS, ROOT
from tests.detectors import harness

ACCOUNT = "1384926508761234"  # conftest BASE_EVENT's account
SINCE, UNTIL = harness.EVER
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 2, 3, 0, 0, tzinfo=UTC)

MakeEvent = Callable[..., dict[str, Any]]


def agent(name: str = "ci-deployer", *, policies: list[dict[str, Any]] | None = None,
          identities: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return harness.agent(name, *(identities or ["ram-user:ci-deploy"]), policies=policies, **extra)


def doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "1", "Statement": list(statements)}


def allow(actions: str | list[str], resource: str | list[str] = "*", **cond: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if cond:
        st["Condition"] = cond
    return st


def deny(actions: str | list[str], resource: str | list[str] = "*") -> dict[str, Any]:
    return {"Effect": "Deny", "Action": actions, "Resource": resource}


# The CI agent: may stop staging instances only.
CI_POLICY = doc(allow("ecs:StopInstance", "acs:ecs:*:*:instance/i-staging*"),
                allow(["ecs:Describe*"], "*"))


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def stop_instance(make_event: MakeEvent, n: int, instance: str, minutes: float = 0, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "eventName": "StopInstance", "eventRW": "Write", "eventTime": at(minutes),
        "referencedResources": {"ACS::ECS::Instance": [instance]},
        "requestParameters": {"RegionId": kw.get("acsRegion", "cn-hangzhou"), "InstanceId": instance},
    }
    fields.update(kw)
    return make_event(n, **fields)


def describe(make_event: MakeEvent, n: int, minutes: float = 0, **kw: Any) -> dict[str, Any]:
    return make_event(n, eventTime=at(minutes), **kw)


def load(store: Store, events: list[dict[str, Any]], inventory: Inventory) -> pd.DataFrame:
    harness.ingest(store, events, inventory)
    return harness.frame(store, OutOfScope())


def models_for(inventory: Inventory) -> Models:
    return harness.models(inventory, TZ)


def run(store: Store, events: list[dict[str, Any]], agents: list[dict[str, Any]], **params: Any) -> list[Finding]:
    inventory = harness.inventory(*agents)
    harness.ingest(store, events, inventory)
    return harness.score(store, OutOfScope(**params), inventory, timezone=TZ)


def kinds(findings: list[Finding]) -> list[str]:
    return sorted(f.evidence["kind"] for f in findings)


def only(findings: list[Finding], kind: str) -> Finding:
    matching = [f for f in findings if f.evidence["kind"] == kind]
    assert len(matching) == 1, [(f.evidence["kind"], f.summary) for f in findings]
    return matching[0]


def arn(instance: str) -> str:
    return f"acs:ecs:cn-hangzhou:{ACCOUNT}:instance/{instance}"


# -- the cases -----------------------------------------------------------------------------
def test_ci_stops_production_instance_is_critical(store: Store, make_event: MakeEvent) -> None:
    """In-scope action, out-of-scope resource, and it succeeded: a critical finding."""
    ev = stop_instance(make_event, 1, "i-prod-web-01")
    findings = run(store, [ev], [agent(policies=[CI_POLICY])])
    assert len(findings) == 1
    f = findings[0]
    assert (f.detector, f.agent, f.severity) == ("out_of_scope", "ci-deployer", "critical")
    assert "ecs:StopInstance" in f.summary
    assert "outside its declared scope" in f.summary
    assert f.event_ids == [ev["eventId"]]
    assert f.first_seen == f.last_seen == T0
    ev_ = f.evidence
    assert ev_["kind"] == "out_of_scope"
    assert ev_["action"] == "ecs:StopInstance"
    assert ev_["decision"] == "ImplicitDeny"
    assert ev_["rule"] == "no statement allows it"
    assert ev_["statement"] is None
    assert ev_["resources"] == [arn("i-prod-web-01")]
    assert (ev_["count"], ev_["succeeded"], ev_["failed"]) == (1, 1, 0)
    assert f.dedup_key == "out_of_scope:ecs:stopinstance"


def test_ci_stops_staging_instance_is_fine(store: Store, make_event: MakeEvent) -> None:
    events = [stop_instance(make_event, 1, "i-staging-3"), describe(make_event, 2, 1)]
    assert run(store, events, [agent(policies=[CI_POLICY])]) == []


def test_ci_creates_access_key_for_another_user(store: Store, make_event: MakeEvent) -> None:
    ev = make_event(1, serviceName="Ims", eventName="CreateAccessKey", eventRW="Write",
                    eventSource="ims.aliyuncs.com", apiVersion="2015-05-01", isGlobal=True, eventTime=at(0),
                    requestParameters={"UserName": "admin-bob", "AcsProduct": "Ims"})
    findings = run(store, [ev], [agent(policies=[CI_POLICY])])
    f = only(findings, "out_of_scope")
    assert len(findings) == 1
    assert f.severity == "critical"
    assert "ram:CreateAccessKey" in f.summary
    assert f.evidence["action"] == "ram:CreateAccessKey"
    assert f.evidence["decision"] == "ImplicitDeny"
    assert f.evidence["resources"] == [f"acs:ram::{ACCOUNT}:user/admin-bob"]
    assert f.event_ids == [ev["eventId"]]


def test_no_statement_is_null_even_beside_allowed_calls(store: Store, make_event: MakeEvent) -> None:
    """An allowed call names its statement, an implicitly denied one has none: in one frame pandas
    made that None a NaN, and `findings --format json` printed ``"statement": NaN`` (issue 13, 12)."""
    events = [describe(make_event, 1), stop_instance(make_event, 2, "i-prod-web-01", 1)]
    f = only(run(store, events, [agent(policies=[CI_POLICY])]), "out_of_scope")
    assert f.evidence["decision"] == "ImplicitDeny"
    assert f.evidence["statement"] is None
    json.dumps(f.evidence, allow_nan=False)  # strict JSON


# -- decisions and kinds ---------------------------------------------------------------------------
def test_explicit_deny_names_the_statement(store: Store, make_event: MakeEvent) -> None:
    policy = doc(allow("ecs:*"), deny("ecs:DeleteInstance", "acs:ecs:*:*:instance/i-prod*"))
    ev = make_event(1, eventName="DeleteInstance", eventRW="Write", eventTime=at(0),
                    referencedResources={"ACS::ECS::Instance": ["i-prod-db-02"]})
    ok = make_event(2, eventName="DeleteInstance", eventRW="Write", eventTime=at(1),
                    referencedResources={"ACS::ECS::Instance": ["i-staging-9"]})
    (f,) = run(store, [ev, ok], [agent(policies=[policy])])
    assert f.severity == "critical"
    assert f.evidence["decision"] == "ExplicitDeny"
    assert f.evidence["statement"] == "ci-deployer:policies[0]#Statement[1]"
    assert "ci-deployer:policies[0]#Statement[1]" in f.evidence["rule"]
    assert "ci-deployer:policies[0]#Statement[1]" in f.summary
    assert f.evidence["resources"] == [arn("i-prod-db-02")]
    assert f.event_ids == [ev["eventId"]]


def test_out_of_scope_read_is_high(store: Store, make_event: MakeEvent) -> None:
    ev = make_event(1, serviceName="Kms", eventName="ListSecrets", eventRW="Read", eventTime=at(0))
    (f,) = run(store, [ev], [agent(policies=[CI_POLICY])])
    assert f.severity == "high"
    assert f.evidence["action"] == "kms:ListSecrets"
    assert f.evidence["resources"] == [f"acs:kms:cn-hangzhou:{ACCOUNT}:*"]


def test_refused_in_scope_call_is_medium_refused(store: Store, make_event: MakeEvent) -> None:
    """RAM refused a call the declared scope allows: the declared scope is wider than the real one."""
    ev = stop_instance(make_event, 1, "i-staging-3", errorCode="NoPermission",
                       errorMessage="You are not authorized.")
    findings = run(store, [ev], [agent(policies=[CI_POLICY])])
    f = only(findings, "refused")
    assert len(findings) == 1
    assert f.severity == "medium"
    assert "ecs:StopInstance" in f.summary
    assert "NoPermission" in f.summary
    assert f.evidence["action"] == "ecs:StopInstance"
    assert (f.evidence["count"], f.evidence["succeeded"], f.evidence["failed"]) == (1, 0, 1)
    assert f.evidence["error_codes"] == {"NoPermission": 1}
    assert f.event_ids == [ev["eventId"]]


def test_refused_out_of_scope_call_is_counted_in_the_out_of_scope_finding(
        store: Store, make_event: MakeEvent) -> None:
    refused = stop_instance(make_event, 1, "i-prod-web-01", 0, errorCode="NoPermission",
                            errorMessage="You are not authorized.")
    done = stop_instance(make_event, 2, "i-prod-web-02", 5)
    findings = run(store, [refused, done], [agent(policies=[CI_POLICY])])
    assert kinds(findings) == ["out_of_scope"]
    f = findings[0]
    assert f.severity == "critical"  # one of them succeeded and wrote
    assert (f.evidence["count"], f.evidence["succeeded"], f.evidence["failed"]) == (2, 1, 1)
    assert f.evidence["error_codes"] == {"NoPermission": 1}
    assert f.evidence["resources"] == [arn("i-prod-web-01"), arn("i-prod-web-02")]
    assert f.event_ids == [refused["eventId"], done["eventId"]]


def test_all_refused_out_of_scope_is_high_not_critical(store: Store,
                                                       make_event: MakeEvent) -> None:
    ev = stop_instance(make_event, 1, "i-prod-web-01", errorCode="Forbidden.RAM", errorMessage="denied")
    (f,) = run(store, [ev], [agent(policies=[CI_POLICY])])
    assert f.evidence["kind"] == "out_of_scope"
    assert f.severity == "high"
    assert "all refused" in f.summary


def test_other_errors_on_in_scope_calls_are_not_refusals(store: Store,
                                                         make_event: MakeEvent) -> None:
    ev = describe(make_event, 1, errorCode="Throttling.User", errorMessage="Request was denied due to flow control.")
    assert run(store, [ev], [agent(policies=[CI_POLICY])]) == []


def test_resource_tag_condition_is_possibly_out_of_scope(store: Store,
                                                         make_event: MakeEvent) -> None:
    policy = doc(allow("ecs:StopInstance", "*", StringEquals={"acs:ResourceTag/env": "staging"}),
                 allow("ecs:Describe*"))
    ev = stop_instance(make_event, 1, "i-0abc")
    (f,) = run(store, [ev, describe(make_event, 2, 1)], [agent(policies=[policy])])
    assert f.evidence["kind"] == "possibly_out_of_scope"
    assert f.severity == "medium"
    assert "possibly" in f.summary
    assert "ecs:StopInstance" in f.summary
    assert f.evidence["decision"] == "Unknown"
    assert f.evidence["statement"] == "ci-deployer:policies[0]#Statement[0]"
    assert f.evidence["resources"] == [arn("i-0abc")]
    assert f.dedup_key == "possibly_out_of_scope:ecs:stopinstance"


def test_service_tag_condition_is_possibly_out_of_scope(store: Store,
                                                        make_event: MakeEvent) -> None:
    policy = doc(allow("ecs:StopInstance", "*", StringEquals={"ecs:tag/team": "platform"}))
    (f,) = run(store, [stop_instance(make_event, 1, "i-0abc")], [agent(policies=[policy])])
    assert f.evidence["kind"] == "possibly_out_of_scope"
    assert f.severity == "medium"


def test_supplied_condition_key_decides(store: Store, make_event: MakeEvent) -> None:
    """acs:SourceIp is in the log: a policy that requires the CI network decides definitely."""
    policy = doc(allow("ecs:*", "*", IpAddress={"acs:SourceIp": "203.0.113.0/24"}))
    inside = describe(make_event, 1, 0)
    outside = describe(make_event, 2, 1, sourceIpAddress="185.220.101.34")
    (f,) = run(store, [inside, outside], [agent(policies=[policy])])
    assert f.evidence["kind"] == "out_of_scope"
    assert f.evidence["decision"] == "ImplicitDeny"
    assert f.event_ids == [outside["eventId"]]


# -- regions and source networks ----------------------------------------------------------------------
def test_foreign_region_is_medium(store: Store, make_event: MakeEvent) -> None:
    ev = describe(make_event, 1, acsRegion="cn-beijing", eventSource="ecs.cn-beijing.aliyuncs.com")
    findings = run(store, [ev, describe(make_event, 2, 1)],
                   [agent(policies=[CI_POLICY], regions=["cn-hangzhou"])])
    f = only(findings, "region")
    assert len(findings) == 1
    assert f.severity == "medium"
    assert "cn-beijing" in f.summary and "cn-hangzhou" in f.summary
    assert f.evidence["region"] == "cn-beijing"
    assert f.evidence["declared"] == ["cn-hangzhou"]
    assert (f.evidence["count"], f.evidence["succeeded"]) == (1, 1)
    assert f.dedup_key == "region:cn-beijing"
    assert f.event_ids == [ev["eventId"]]


def test_foreign_source_write_is_critical_per_24(store: Store, make_event: MakeEvent) -> None:
    a = stop_instance(make_event, 1, "i-staging-1", 0, sourceIpAddress="185.220.101.34")
    b = stop_instance(make_event, 2, "i-staging-2", 2, sourceIpAddress="185.220.101.77")
    c = describe(make_event, 3, 4, sourceIpAddress="185.220.102.5")
    home = stop_instance(make_event, 4, "i-staging-3", 6)
    findings = run(store, [a, b, c, home],
                   [agent(policies=[CI_POLICY], source_ips=["203.0.113.0/24"])])
    assert kinds(findings) == ["source_ip", "source_ip"]
    by_net = {f.evidence["network"]: f for f in findings}
    assert set(by_net) == {"185.220.101.0/24", "185.220.102.0/24"}
    write = by_net["185.220.101.0/24"]
    assert write.severity == "critical"
    assert write.dedup_key == "source:185.220.101.0/24"
    assert write.evidence["declared"] == ["203.0.113.0/24"]
    assert write.evidence["source_ips"] == ["185.220.101.34", "185.220.101.77"]
    assert (write.evidence["count"], write.evidence["succeeded"]) == (2, 2)
    assert write.event_ids == [a["eventId"], b["eventId"]]
    assert "185.220.101.0/24" in write.summary
    read = by_net["185.220.102.0/24"]
    assert read.severity == "high"  # succeeded, read only
    assert read.event_ids == [c["eventId"]]


@pytest.mark.parametrize("source", ["Internal", "192.168.XX.XX", "11.168.XX.XX", "", "AWS Internal",
                                    "ecs.aliyuncs.com"])
def test_internal_or_masked_source_never_fires_the_source_check(
        store: Store, make_event: MakeEvent, source: str) -> None:
    ev = stop_instance(make_event, 1, "i-staging-1", sourceIpAddress=source)
    assert run(store, [ev], [agent(policies=[CI_POLICY], source_ips=["203.0.113.0/24"])]) == []


def test_ipv6_source_outside_is_keyed_by_64(store: Store, make_event: MakeEvent) -> None:
    ev = describe(make_event, 1, sourceIpAddress="2001:db8:1:2::99")
    (f,) = run(store, [ev], [agent(policies=[CI_POLICY], source_ips=["203.0.113.0/24"])])
    assert f.evidence["network"] == "2001:db8:1:2::/64"


def test_agent_without_policies_is_checked_for_regions_and_sources(
        store: Store, make_event: MakeEvent) -> None:
    region = describe(make_event, 1, 0, acsRegion="cn-beijing")
    source = describe(make_event, 2, 1, sourceIpAddress="185.220.101.34")
    anything = stop_instance(make_event, 3, "i-prod-web-01", 2)  # no policy to judge it by
    findings = run(store, [region, source, anything],
                   [agent(policies=[], regions=["cn-hangzhou"], source_ips=["203.0.113.0/24"])])
    assert kinds(findings) == ["region", "source_ip"]
    assert only(findings, "region").event_ids == [region["eventId"]]
    assert only(findings, "source_ip").event_ids == [source["eventId"]]


def test_checks_can_be_switched_off(store: Store, make_event: MakeEvent) -> None:
    events = [describe(make_event, 1, acsRegion="cn-beijing", sourceIpAddress="185.220.101.34")]
    agents = [agent(policies=[CI_POLICY], regions=["cn-hangzhou"], source_ips=["203.0.113.0/24"])]
    assert run(store, events, agents, check_regions=False, check_source_ips=False) == []


@pytest.mark.parametrize("is_global", [True, None])
def test_global_ram_call_is_not_a_region_violation(store: Store, make_event: MakeEvent,
                                                   is_global: bool | None) -> None:
    """A RAM (Ims) call has no region (its ARN's region is empty); ActionTrail files global events
    under the global storage region (cn-hangzhou), which says nothing about where the agent works.
    (Was a strict xfail against d340902: every RAM call gave a 'region cn-hangzhou' finding.)"""
    ev = make_event(1, serviceName="Ims", eventName="GetUser", eventSource="ims.aliyuncs.com",
                    apiVersion="2015-05-01", isGlobal=is_global, acsRegion="cn-hangzhou", eventTime=at(0),
                    referencedResources={"ACS::RAM::User": ["alice"]})
    regional = describe(make_event, 2, 1, acsRegion="cn-hangzhou")
    policy = doc(allow("ram:GetUser"), allow("ecs:Describe*"))
    findings = run(store, [ev, regional], [agent(policies=[policy], regions=["cn-shanghai"])])
    assert kinds(findings) == ["region"]
    assert findings[0].event_ids == [regional["eventId"]]


# -- what is not checked ------------------------------------------------------------------------------
def test_console_signin_is_not_scope_checked(store: Store, make_event: MakeEvent) -> None:
    signin = make_event(1, eventType="ConsoleSignin", eventName="ConsoleSignin", serviceName="AasSub",
                        eventSource="signin.aliyun.com", eventTime=at(0), eventRW=None,
                        additionalEventData={"mfaChecked": "false"}, requestParameters=None)
    assert run(store, [signin], [agent(policies=[CI_POLICY])]) == []


def test_console_operation_is_not_scope_checked(store: Store, make_event: MakeEvent) -> None:
    op = make_event(1, eventType="ConsoleOperation", eventName="ListUserRegions", serviceName="Oss",
                    eventTime=at(0))
    assert run(store, [op], [agent(policies=[CI_POLICY])]) == []


def test_unregistered_identity_gets_no_out_of_scope_finding(
        store: Store, make_event: MakeEvent) -> None:
    ops = {"type": "ram-user", "principalId": "244470092217754420", "accountId": ACCOUNT,
           "accessKeyId": "LTAI5tOpsDbg0Xc4Rt", "userName": "ops-debug"}
    events = [make_event(1, userIdentity=ops, eventName="AuthorizeSecurityGroup", eventRW="Write",
                         eventTime=at(0), acsRegion="cn-beijing", sourceIpAddress="198.18.7.99",
                         referencedResources={"ACS::ECS::SecurityGroup": ["sg-bp1debug01"]})]
    inventory = harness.inventory(
        agent(policies=[CI_POLICY], regions=["cn-hangzhou"], source_ips=["203.0.113.0/24"]))
    df = load(store, events, inventory)
    assert list(df["agent"]) == ["ram-user:ops-debug"]
    assert OutOfScope().score(df, models_for(inventory), UNTIL) == []


def test_empty_window(store: Store) -> None:
    inventory = harness.inventory(agent(policies=[CI_POLICY]))
    df = harness.frame(store, OutOfScope())
    assert OutOfScope().score(df, models_for(inventory), UNTIL) == []


# -- dedup and stable ids ------------------------------------------------------------------------------
def test_calls_within_the_window_make_one_finding(store: Store, make_event: MakeEvent) -> None:
    events = [stop_instance(make_event, i, f"i-prod-web-0{i}", m) for i, m in ((1, 0), (2, 25), (3, 55))]
    (f,) = run(store, events, [agent(policies=[CI_POLICY])])
    assert f.event_ids == [e["eventId"] for e in events]
    assert f.evidence["count"] == 3
    assert f.first_seen == T0
    assert f.last_seen == T0 + timedelta(minutes=55)
    assert "3 calls" in f.summary
    assert f.evidence["resources"] == [arn(f"i-prod-web-0{i}") for i in (1, 2, 3)]


def test_bursts_three_hours_apart_make_two_findings(store: Store,
                                                    make_event: MakeEvent) -> None:
    first = [stop_instance(make_event, i, "i-prod-web-01", i) for i in range(1, 4)]
    second = [stop_instance(make_event, i, "i-prod-web-01", 180 + i) for i in range(4, 7)]
    findings = run(store, first + second, [agent(policies=[CI_POLICY])])
    assert len(findings) == 2
    findings.sort(key=lambda f: f.first_seen)
    assert [f.event_ids for f in findings] == [[e["eventId"] for e in first], [e["eventId"] for e in second]]
    assert findings[0].id != findings[1].id
    assert findings[0].dedup_key == findings[1].dedup_key


def test_different_actions_are_different_findings(store: Store, make_event: MakeEvent) -> None:
    events = [stop_instance(make_event, 1, "i-prod-web-01", 0),
              make_event(2, eventName="RebootInstance", eventRW="Write", eventTime=at(1),
                         referencedResources={"ACS::ECS::Instance": ["i-staging-1"]})]
    findings = run(store, events, [agent(policies=[CI_POLICY])])
    assert sorted(f.evidence["action"] for f in findings) == ["ecs:RebootInstance", "ecs:StopInstance"]


def _mixed_events(make_event: MakeEvent) -> list[dict[str, Any]]:
    return [
        stop_instance(make_event, 1, "i-prod-web-01", 0),
        stop_instance(make_event, 2, "i-prod-web-02", 30, errorCode="NoPermission"),
        stop_instance(make_event, 3, "i-prod-web-01", 300),
        stop_instance(make_event, 4, "i-staging-1", 5, errorCode="NoPermission"),
        describe(make_event, 5, 10, acsRegion="cn-beijing"),
        describe(make_event, 6, 11, sourceIpAddress="185.220.101.34"),
        make_event(7, serviceName="Ims", eventName="CreateUser", eventRW="Write", eventTime=at(12),
                   requestParameters={"UserName": "svc-backup2"}),
        describe(make_event, 8, 13),
    ]


def _signature(findings: list[Finding]) -> dict[str, tuple[Any, ...]]:
    return {f.id: (f.severity, f.dedup_key, tuple(f.event_ids), f.first_seen, f.last_seen,
                   json.dumps(f.evidence, sort_keys=True)) for f in findings}


def test_finding_ids_are_stable_and_independent_of_row_order(
        store: Store, make_event: MakeEvent) -> None:
    inventory = harness.inventory(
        agent(policies=[CI_POLICY], regions=["cn-hangzhou"], source_ips=["203.0.113.0/24"]))
    df = load(store, _mixed_events(make_event), inventory)
    models = models_for(inventory)
    first = _signature(OutOfScope().score(df, models, UNTIL))
    assert len(first) == 6  # 2 stop bursts, refused, region, source, CreateUser
    assert _signature(OutOfScope().score(df, models, UNTIL)) == first
    for seed in (0, 1, 2):
        shuffled = df.sample(frac=1, random_state=seed)
        assert _signature(OutOfScope().score(shuffled, models, UNTIL)) == first
    assert _signature(OutOfScope().score(df.iloc[::-1].reset_index(drop=True), models, UNTIL)) == first


def test_evidence_is_json_and_event_ids_are_strings(store: Store, make_event: MakeEvent) -> None:
    agents = [agent(policies=[CI_POLICY], regions=["cn-hangzhou"], source_ips=["203.0.113.0/24"])]
    findings = run(store, _mixed_events(make_event), agents)
    assert findings
    for f in findings:
        json.dumps(f.evidence)
        json.dumps({**f.as_dict(), "first_seen": None, "last_seen": None})
        assert all(type(i) is str for i in f.event_ids)
        for key in ("count", "succeeded", "failed"):
            assert type(f.evidence[key]) is int
        assert 0 < f.score <= 1
        assert f.first_seen.tzinfo is not None


# -- the demo --------------------------------------------------------------------------------------
def _local_day(day: datetime) -> tuple[datetime, datetime]:
    """A UTC midnight's calendar day in the business time zone, as UTC instants [start, stop)."""
    start = datetime(day.year, day.month, day.day, tzinfo=synthetic.BUSINESS_TZ).astimezone(UTC)
    return start, start + timedelta(days=1)


def test_demo_findings_are_exactly_the_planted_incidents(store: Store) -> None:
    end = datetime(2026, 11, 20, tzinfo=UTC)
    inventory = load_inventory(ROOT / "config" / "agents.yaml")
    df = load(store, synthetic.month(end, days=10, seed=3), inventory)
    assert len(df) > 10_000
    findings = OutOfScope().score(df, models_for(inventory), end)
    incidents = {i.key: i for i in synthetic.INCIDENTS}
    stolen_from, stolen_to = _local_day(synthetic.incident_day(incidents["stolen-ci-key"], end))
    kms_from, kms_to = _local_day(synthetic.incident_day(incidents["secret-enumeration"], end))
    stop_from, stop_to = _local_day(synthetic.incident_day(incidents["stop-logging"], end))
    cross_from, cross_to = _local_day(synthetic.incident_day(incidents["cross-account-role"], end))
    away_from, away_to = _local_day(synthetic.incident_day(incidents["undeclared-account"], end))
    rows = df.set_index("event_id")

    def incident(f: Finding) -> str | None:
        evs = rows.loc[f.event_ids]
        if (f.agent == "ci-deployer" and (evs["source_ip"] == "185.220.101.34").all()
                and stolen_from <= f.first_seen and f.last_seen < stolen_to):
            return "stolen-ci-key"
        if (f.agent == "monitor-readonly" and (evs["service_name"] == "Kms").all()
                and kms_from <= f.first_seen and f.last_seen < kms_to):
            return "secret-enumeration"
        if (f.agent == "admin-alice" and list(evs["event_name"]) == ["StopLogging"]
                and stop_from <= f.first_seen and f.last_seen < stop_to):
            return "stop-logging"
        if (f.agent in ("staging-ci", "prod-deploy-role") and (evs["source_ip"] == "203.0.113.66").all()
                and cross_from <= f.first_seen and f.last_seen < cross_to):
            return "cross-account-role"  # the staging key's AssumeRole, and what the role then did
        if (f.agent == "nightly-backup" and evs["referenced_resources"].astype(str).str.contains("security-audit-logs").all()
                and away_from <= f.first_seen and f.last_seen < away_to):
            return "undeclared-account"  # reads of a bucket (of the security account) it was never given
        return None

    stray = [f.summary for f in findings if incident(f) is None]
    assert stray == []  # zero findings on everyday traffic
    caught = {incident(f) for f in findings}
    assert caught == {"stolen-ci-key", "secret-enumeration", "stop-logging", "cross-account-role", "undeclared-account"}
    stop = next(f for f in findings if incident(f) == "stop-logging")
    assert stop.severity == "critical"
    assert stop.evidence["decision"] == "ExplicitDeny"
    assert stop.evidence["statement"] == "admin-alice:policies[0]#Statement[1]"
    stolen = {f.evidence.get("action") for f in findings if incident(f) == "stolen-ci-key"}
    assert {"ram:CreateUser", "ram:CreateAccessKey", "ram:AttachPolicyToUser"} <= stolen


# -- real attack traffic --------------------------------------------------------------------------
def test_real_attack_traffic_denied_storm(store: Store) -> None:
    """Stratus/Invictus: a stolen instance role tries GetPasswordData again and again and is refused.
    Declared as a describe-only agent, each storm is one high finding counting every refusal."""
    agents = [
        agent("password-probe", identities=["role:stratus-red-team-ec2-get-password-data-role"],
              policies=[doc(allow("ecs:Describe*"))], regions=["us-east-1"]),
        agent("readonly-benjamin", identities=["ram-user:benjamin"],
              policies=[doc(allow(["*:Describe*", "*:List*", "*:Get*"]))], regions=["us-east-1"]),
    ]
    inventory = harness.inventory(*agents)
    df = load(store, [json.loads(line) for p in sorted(REAL_ATTACKS.glob("*.jsonl"))
                      for line in p.read_text(encoding="utf-8").splitlines() if line], inventory)
    assert len(df) == 502
    findings = OutOfScope().score(df, models_for(inventory), UNTIL)
    known = set(df["event_id"])
    for f in findings:
        json.dumps(f.evidence)
        assert set(f.event_ids) <= known
    probe = [f for f in findings if f.agent == "password-probe" and f.evidence["kind"] == "out_of_scope"]
    wanted = set(df.loc[(df["agent"] == "password-probe") & (df["event_name"] == "GetPasswordData"), "event_id"])
    assert len(wanted) == 35
    assert {f.evidence["action"] for f in probe} == {"ecs:GetPasswordData"}
    assert {i for f in probe for i in f.event_ids} == wanted
    assert len(probe) == 2  # two storms, a year apart
    for f in probe:
        assert f.severity == "high"
        assert f.evidence["succeeded"] == 0
        assert f.evidence["failed"] == f.evidence["count"] == len(f.event_ids)
        assert f.evidence["error_codes"] == {"NoPermission": f.evidence["count"]}
        assert "all refused" in f.summary
