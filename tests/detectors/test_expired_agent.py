"""expired_agent: an agent used after its declared ``expires``, named firing and non-firing cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from detectors.expired_agent import ExpiredAgent
from tests.detectors import harness

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
INVENTORY = harness.inventory(
    harness.agent("ci", "ram-user:ci-deploy"),
    harness.agent("vendor", "ram-user:acme", expires=(T0 - timedelta(days=3)).isoformat()))


def _user(name):
    return {"type": "ram-user", "principalId": "1", "accountId": "1384926508761234", "userName": name}


def _score(store, events, det):
    harness.ingest(store, events, INVENTORY)
    return harness.score(store, det, INVENTORY, since=T0 - timedelta(days=30), until=T0 + timedelta(days=30), now=T0)


def _at(minutes):
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_agent_used_after_it_expired_fires_and_before_does_not(store, make_event):
    events = [make_event(1, userIdentity=_user("acme"), eventTime=(T0 - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")),
              make_event(2, userIdentity=_user("acme"), eventTime=_at(0)),
              make_event(3, userIdentity=_user("acme"), eventTime=_at(2), eventName="RebootInstance", eventRW="Write"),
              make_event(4, eventTime=_at(3))]  # ci never expires
    [f] = _score(store, events, ExpiredAgent())
    assert f.agent == "vendor" and len(f.event_ids) == 2
    assert f.severity == "critical"  # it wrote after expiry
    assert f.evidence["days_after_expiry"] == 3.0
    assert "3 days after its access expired" in f.summary
