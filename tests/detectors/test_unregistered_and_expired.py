"""unregistered_identity and expired_agent: named firing and non-firing cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from detectors.base import Models
from detectors.expired_agent import ExpiredAgent
from detectors.unregistered_identity import UnregisteredIdentity
from models.inventory import Attributor, Inventory
from models.scope import compile_scopes
from pipeline.detection.detect import load_events
from pipeline.ingest.run import ingest_files
from tests.conftest import write_ndjson

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
INVENTORY = Inventory.model_validate({"agents": [
    {"name": "ci", "purpose": "p", "owner": "o", "environment": "prod", "identities": ["ram-user:ci-deploy"]},
    {"name": "vendor", "purpose": "p", "owner": "o", "environment": "prod", "identities": ["ram-user:acme"],
     "expires": (T0 - timedelta(days=3)).isoformat()},
]})


def _user(name, kind="ram-user"):
    ident = {"type": kind, "principalId": "1", "accountId": "1384926508761234", "userName": name}
    if kind == "root-account":
        ident = {"type": kind, "principalId": "1384926508761234", "accountId": "1384926508761234", "userName": "root"}
    return ident


def _score(store, tmp_path, events, det):
    write_ndjson(tmp_path / "e.jsonl", events)
    ingest_files(store, [tmp_path / "e.jsonl"], Attributor(INVENTORY))
    cols = list(dict.fromkeys(("event_id", "event_time", "agent", *det.columns)))
    frame = load_events(store, cols, T0 - timedelta(days=30), T0 + timedelta(days=30))
    return det.score(frame, Models(INVENTORY, compile_scopes(INVENTORY), ZoneInfo("UTC")), T0)


def _at(minutes):
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_unregistered_user_makes_one_finding_a_day_with_what_it_did(store, tmp_path, make_event):
    events = [make_event(i, userIdentity=_user("ops-debug"), eventTime=_at(i), eventName=n, eventRW=rw)
              for i, (n, rw) in enumerate([("DescribeInstances", "Read"), ("AuthorizeSecurityGroup", "Write"),
                                           ("DescribeInstances", "Read")])]
    events.append(make_event(9, userIdentity=_user("ops-debug"), eventTime=_at(24 * 60 + 5)))  # the next day
    events.append(make_event(10, eventTime=_at(1)))  # ci: registered, quiet
    found = sorted(_score(store, tmp_path, events, UnregisteredIdentity()), key=lambda f: f.first_seen)
    assert [(f.agent, len(f.event_ids)) for f in found] == [("ram-user:ops-debug", 3), ("ram-user:ops-debug", 1)]
    assert found[0].severity == "high"  # it wrote, successfully
    assert found[1].severity == "medium"
    assert found[0].evidence["apis"] == {"DescribeInstances": 2, "AuthorizeSecurityGroup": 1}
    assert "in no agent of the inventory" in found[0].summary


def test_root_is_always_critical_and_service_events_are_not_agents(store, tmp_path, make_event):
    events = [make_event(1, userIdentity=_user("root", "root-account"), eventType="ConsoleSignin",
                         eventName="ConsoleSignin", serviceName="AasCustomer", eventTime=_at(0)),
              make_event(2, userIdentity={"type": "system", "principalId": "ecs.aliyuncs.com"}, eventTime=_at(1)),
              make_event(3, userIdentity=_user("x"), eventType="AliyunServiceEvent", eventTime=_at(2))]
    [f] = _score(store, tmp_path, events, UnregisteredIdentity())
    assert f.agent.startswith("root-account:") and f.severity == "critical" and "the root account" in f.summary


def test_an_identity_on_the_ignore_list_is_left_alone(store, tmp_path, make_event):
    events = [make_event(1, userIdentity=_user("ops-debug"), eventTime=_at(0))]
    assert _score(store, tmp_path, events, UnregisteredIdentity(ignore=["ram-user:ops-debug"])) == []


def test_an_agent_used_after_it_expired_fires_and_before_does_not(store, tmp_path, make_event):
    events = [make_event(1, userIdentity=_user("acme"), eventTime=(T0 - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")),
              make_event(2, userIdentity=_user("acme"), eventTime=_at(0)),
              make_event(3, userIdentity=_user("acme"), eventTime=_at(2), eventName="RebootInstance", eventRW="Write"),
              make_event(4, eventTime=_at(3))]  # ci never expires
    [f] = _score(store, tmp_path, events, ExpiredAgent())
    assert f.agent == "vendor" and len(f.event_ids) == 2
    assert f.severity == "critical"  # it wrote after expiry
    assert f.evidence["days_after_expiry"] == 3.0
    assert "3 days after its access expired" in f.summary
