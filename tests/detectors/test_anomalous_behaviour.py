"""anomalous_behaviour: the weak findings of one agent close together become one ranked story.

The weak findings here are built as the learned-behaviour detectors build them (each lists its
``aspects``); the end-to-end story (a stolen key at 03:00 from a new network and client, through
``run_detect``) is in ``test_new_source.py``; the organisation-scale behaviour in
``tests/test_learned_behaviour.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detectors.anomalous_behaviour import AnomalousBehaviour
from detectors.base import Finding, aspect
from models.baselines import Baseline
from tests.detectors import harness

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
INVENTORY = harness.inventory(harness.agent("ci"), harness.agent("newbie"))


def baseline(agent: str, active_days: int) -> Baseline:
    return Baseline(agent, T0 - timedelta(days=28), T0, "UTC", active_days, 1000, 0)


MODELS = harness.models(INVENTORY, baselines={"ci": baseline("ci", 20), "newbie": baseline("newbie", 3)})


def weak(detector: str, minute: int, *aspects: dict[str, Any], agent: str = "ci", severity: str = "low") -> Finding:
    when = T0 + timedelta(minutes=minute)
    return Finding(detector, agent, severity, 0.3, when, when + timedelta(minutes=5), f"{detector} saw it",
                   [f"{detector}-{minute}-{k}" for k in range(3)], {"aspects": list(aspects)}, detector)


HOUR = aspect("hour", "in 28 days it was active 02:00-05:00 on 0 of 8 weekend days", 0.4)
NETWORK = aspect("network", "new network 185.220.101.0/24; usual: 203.0.113.0/24", 0.35)
CLIENT = aspect("client", "new client python-requests; usual: aliyun-cli", 0.3)
BUCKET = aspect("novelty", "first use of 1 resource (bucket:finance-reports)", 0.3)
VOLUME = aspect("volume", "1500 GetObject on bucket:finance-reports in one hour (never seen in 28 days)", 1.0)
DECLARED = aspect("region", "new region cn-beijing (declared in the inventory); usual: cn-hangzhou", 0.1)


def test_weak_signals_close_together_make_one_ranked_story() -> None:
    odd, new = weak("odd_hours", 0, HOUR), weak("new_source", 10, NETWORK, CLIENT)
    (story,) = AnomalousBehaviour().combine([odd, new], MODELS)
    assert (story.detector, story.agent, story.severity) == ("anomalous_behaviour", "ci", "medium")
    assert [a["aspect"] for a in story.evidence["aspects"]] == ["hour", "network", "client"]
    assert story.evidence["weight"] == pytest.approx(1.05)
    assert story.summary.startswith("ci: 3 unusual aspects within 15 minutes (weight 1.05) - hour: in 28 days")
    assert "network: new network 185.220.101.0/24; usual: 203.0.113.0/24" in story.summary
    assert story.event_ids == odd.event_ids + new.event_ids
    assert (story.first_seen, story.last_seen) == (odd.first_seen, new.last_seen)
    assert odd.evidence["story"] == new.evidence["story"] == story.id


def test_novel_voluminous_and_from_a_new_network_is_one_high_finding() -> None:
    """A stolen key: the volume finding is medium on its own; in the story it is lowered to low,
    so the one high story is what is alerted."""
    volume = weak("volume", 0, VOLUME, severity="medium")
    parts = [volume, weak("novelty", 0, BUCKET), weak("new_source", 1, NETWORK, CLIENT)]
    (story,) = AnomalousBehaviour().combine(parts, MODELS)
    assert story.severity == "high" and story.evidence["aspects"][0]["aspect"] == "volume"
    assert volume.severity == "low" and volume.evidence["story"] == story.id


@pytest.mark.parametrize("parts", [
    [weak("volume", 0, aspect("volume", "100 GetObject in one hour", 0.6))],  # one signal, however heavy
    [weak("odd_hours", 0, HOUR), weak("new_source", 5, DECLARED)],  # an odd hour in a declared region
    [weak("odd_hours", 0, HOUR), weak("new_source", 5, NETWORK)],  # an on-call night from a new home network
    [weak("odd_hours", 0, HOUR), weak("new_source", 200, NETWORK, CLIENT)],  # hours apart: no one story
    [weak("odd_hours", 0, HOUR, agent="newbie"), weak("new_source", 5, NETWORK, CLIENT, agent="newbie")],
], ids=["single-signal", "declared", "two-weakest", "far-apart", "not-learned"])
def test_what_stays_low(parts: list[Finding]) -> None:
    assert AnomalousBehaviour().combine(parts, MODELS) == []
    assert all("story" not in f.evidence for f in parts)


def test_a_high_part_is_kept_and_the_thresholds_are_tunable() -> None:
    raised = weak("new_source", 0, NETWORK, CLIENT, severity="high")
    (story,) = AnomalousBehaviour(medium_at=0.5, high_at=2.0).combine([raised, weak("odd_hours", 3, HOUR)], MODELS)
    assert story.severity == "medium" and raised.severity == "high"
    with pytest.raises(ValueError, match="high_at"):
        AnomalousBehaviour(medium_at=1.0, high_at=0.5)
