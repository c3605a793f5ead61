"""unregistered_identity: an identity in no agent of the inventory acting, named firing and
non-firing cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from detectors.unregistered_identity import UnregisteredIdentity
from tests.detectors import harness

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
INVENTORY = harness.inventory(
    harness.agent("ci", "ram-user:ci-deploy"),
    harness.agent("vendor", "ram-user:acme", expires=(T0 - timedelta(days=3)).isoformat()))


def _user(name, kind="ram-user"):
    ident = {"type": kind, "principalId": "1", "accountId": "1384926508761234", "userName": name}
    if kind == "root-account":
        ident = {"type": kind, "principalId": "1384926508761234", "accountId": "1384926508761234", "userName": "root"}
    return ident


def _score(store, events, det):
    harness.ingest(store, events, INVENTORY)
    return harness.score(store, det, INVENTORY, since=T0 - timedelta(days=30), until=T0 + timedelta(days=30), now=T0)


def _at(minutes):
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_unregistered_user_makes_one_finding_a_day_with_what_it_did(store, make_event):
    events = [make_event(i, userIdentity=_user("ops-debug"), eventTime=_at(i), eventName=n, eventRW=rw)
              for i, (n, rw) in enumerate([("DescribeInstances", "Read"), ("AuthorizeSecurityGroup", "Write"),
                                           ("DescribeInstances", "Read")])]
    events.append(make_event(9, userIdentity=_user("ops-debug"), eventTime=_at(24 * 60 + 5)))  # the next day
    events.append(make_event(10, eventTime=_at(1)))  # ci: registered, quiet
    found = sorted(_score(store, events, UnregisteredIdentity()), key=lambda f: f.first_seen)
    assert [(f.agent, len(f.event_ids)) for f in found] == [("ram-user:ops-debug", 3), ("ram-user:ops-debug", 1)]
    assert found[0].severity == "high"  # it wrote, successfully
    assert found[1].severity == "medium"
    assert found[0].evidence["apis"] == {"DescribeInstances": 2, "AuthorizeSecurityGroup": 1}
    assert "in no agent of the inventory" in found[0].summary


def test_root_is_always_critical_and_service_events_are_not_agents(store, make_event):
    events = [make_event(1, userIdentity=_user("root", "root-account"), eventType="ConsoleSignin",
                         eventName="ConsoleSignin", serviceName="AasCustomer", eventTime=_at(0)),
              make_event(2, userIdentity={"type": "system", "principalId": "ecs.aliyuncs.com"}, eventTime=_at(1)),
              make_event(3, userIdentity=_user("x"), eventType="AliyunServiceEvent", eventTime=_at(2))]
    [f] = _score(store, events, UnregisteredIdentity())
    assert f.agent.startswith("root-account:") and f.severity == "critical" and "the root account" in f.summary


def test_an_identity_on_the_ignore_list_is_left_alone(store, make_event):
    events = [make_event(1, userIdentity=_user("ops-debug"), eventTime=_at(0))]
    assert _score(store, events, UnregisteredIdentity(ignore=["ram-user:ops-debug"])) == []
