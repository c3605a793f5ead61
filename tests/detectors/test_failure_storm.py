"""The failure_storm detector: ActionTrail events -> ingest -> load_events -> score (or run_detect).

A storm is at least ``threshold`` failed calls (default 10) by one agent in a sliding 5-minute
window, making at least a quarter of the window's calls, and, for an agent with a learned baseline,
more than twice its own worst 5 minutes of failures. The cases are the issue's: an enumeration
storm fires; a CI job's occasional failure and a Terraform apply with 1% errors do not; an agent
that always fails a lot is judged against itself; thresholds are configurable per detector and
per agent.

Times: Tuesday 2026-11-24 14:00 Asia/Shanghai (06:00 UTC) unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import detectors
import pipeline.detection.detect
from detectors.base import Finding
from detectors.failure_storm import FailureStorm
from models.baselines import Baseline
from pipeline.core.errors import UsageError
from pipeline.detection import learning
from pipeline.detection.findings import list_findings
from pipeline.store.store import Store
from tests.detectors import harness

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
SINCE = datetime(2026, 11, 23, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=7)
T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # Tuesday 14:00 local
DENIED = "NoPermission"
AGENTS = ("monitor", "ci-deployer", "terraform", "x", "y", "batch-a", "batch-b", "batch-c", "batch-d",
          "batch-new")
INVENTORY = harness.inventory(*(harness.agent(name, f"ram-user:{name}-user") for name in AGENTS))


# -- events ----------------------------------------------------------------------------------------
def trail() -> harness.Trail:
    """ActionTrail events by the agents above (each acts as RAM user ``<agent>-user``)."""
    return harness.Trail(INVENTORY, batch=8000)


def failures(t: harness.Trail, agent: str, start: datetime, n: int, every: float = 2.0, error: str = DENIED,
             name: str = "GetSecretValue") -> list[str]:
    return t.burst(agent, start, n, every, name, error=error)


def calls(t: harness.Trail, agent: str, start: datetime, n: int, every: float = 2.0,
          name: str = "DescribeInstances") -> list[str]:
    return t.burst(agent, start, n, every, name)


Score = Callable[..., list[Finding]]


@pytest.fixture
def score(store: Store) -> Score:
    """``score(trail, baselines={...}, **params)``: the window's failure_storm findings (trail None:
    score what is already stored again)."""

    def run(t: harness.Trail | None, baselines: dict[str, Baseline] | None = None,
            **params: Any) -> list[Finding]:
        if t is not None:
            harness.ingest(store, t.events, INVENTORY)
        return harness.score(store, FailureStorm(**params), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ,
                             baselines=baselines)

    return run


def described(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.agent, f.severity, f.summary) for f in findings]


def enumeration(t: harness.Trail, agent: str, start: datetime = T0) -> list[str]:
    """The issue's storm: 45 denied secret reads in 90 seconds (one ListSecrets in five)."""
    return [t.add(agent, start + timedelta(seconds=2 * i), "ListSecrets" if i % 5 == 0 else "GetSecretValue",
                  error=DENIED, ip="198.51.100.10")["eventId"] for i in range(45)]


# -- storms ----------------------------------------------------------------------------------------
def test_45_denials_in_90_seconds_is_a_high_storm(score: Score) -> None:
    t = trail()
    calls(t, "monitor", T0 - timedelta(minutes=30), 30, every=60)  # its usual polling, all fine
    ids = enumeration(t, "monitor")
    findings = score(t)
    assert len(findings) == 1, described(findings)
    f = findings[0]
    assert (f.detector, f.agent, f.severity, f.dedup_key) == ("failure_storm", "monitor", "high", "storm")
    assert f.event_ids == ids
    assert (f.first_seen, f.last_seen) == (T0, T0 + timedelta(seconds=88))
    assert f.summary.startswith("monitor: 45 failed calls within 5 minutes (45 in the burst, "
                                "mostly GetSecretValue -> NoPermission)")
    ev = f.evidence
    assert ev["failures"] == 45 and ev["peak_failures_in_window"] == 45
    assert ev["window_minutes"] == 5
    assert ev["calls_in_window_at_peak"] == 45 + 3  # polls at -3, -2 and -1 minutes count too
    assert (ev["threshold"], ev["configured_threshold"], ev["min_failure_ratio"]) == (10, 10, 0.25)
    assert ev["error_codes"] == {"NoPermission": 45}
    assert ev["apis"] == {"GetSecretValue": 36, "ListSecrets": 9}
    assert ev["source_ips"] == ["198.51.100.10"]
    assert "baseline" not in ev  # no history: nothing claimed about its usual rate
    assert f.score >= 0.7


def test_nine_failures_in_five_minutes_do_not_fire(score: Score) -> None:
    t = trail()
    failures(t, "ci-deployer", T0, 9, every=30, error="InvalidParameter")
    assert score(t) == []


def test_ten_failures_in_five_minutes_fire_medium(score: Score) -> None:
    t = trail()
    ids = failures(t, "ci-deployer", T0, 10, every=30, error="InvalidParameter", name="RunInstances")
    (f,) = score(t)
    assert f.event_ids == ids
    assert f.severity == "medium"  # not denials, and under twice the threshold
    assert f.evidence["peak_failures_in_window"] == 10
    assert f.evidence["error_codes"] == {"InvalidParameter": 10}


@pytest.mark.parametrize(("every", "fires"), [(33, True), (34, False)])
def test_the_window_is_five_minutes(score: Score, every: int, fires: bool) -> None:
    """Ten failures 33 s apart span 297 s (one window); 34 s apart they span 306 s (never ten)."""
    t = trail()
    failures(t, "ci-deployer", T0, 10, every=every, error="InvalidParameter")
    assert bool(score(t)) is fires


def test_failures_of_different_agents_are_not_pooled(score: Score) -> None:
    t = trail()
    failures(t, "x", T0, 6)
    failures(t, "y", T0 + timedelta(seconds=1), 6)
    assert score(t) == []


# -- benign failures -------------------------------------------------------------------------------
def test_ci_job_with_an_occasional_failure_does_not_fire(score: Score) -> None:
    """A week of deploys, five a day, a dozen calls each; some throttled once, one retried thrice."""
    t = trail()
    for day in range(5):
        for deploy in range(5):
            start = T0 - timedelta(days=1) + timedelta(days=day, hours=deploy)
            calls(t, "ci-deployer", start, 12, every=20)
            if (day + deploy) % 3 == 0:
                t.add("ci-deployer", start + timedelta(seconds=90), "DescribeInstances", error="Throttling.User")
    failures(t, "ci-deployer", T0 + timedelta(hours=7), 3, every=10, error="Throttling.User")
    assert score(t) == []


def test_terraform_apply_of_800_calls_with_1_percent_errors_does_not_fire(score: Score) -> None:
    t = trail()
    for i in range(800):  # ten minutes
        when = T0 + timedelta(seconds=int(0.75 * i))
        if i % 100 == 50:
            t.add("terraform", when, "ModifyInstanceAttribute", error="InvalidParameter")
        else:
            t.add("terraform", when, "DescribeInstances")
    assert sum(1 for e in t.events if e["errorCode"]) == 8
    assert score(t) == []


def test_terraform_12_failures_among_400_calls_in_5_minutes_do_not_fire(score: Score) -> None:
    """12 failures in 5 minutes pass the threshold, but they are 3% of the calls (under 25%)."""
    t = trail()
    for i in range(400):  # 280 seconds
        when = T0 + timedelta(seconds=int(0.7 * i))
        if i % 33 == 10:
            t.add("terraform", when, "AuthorizeSecurityGroup", error="Throttling.User")
        else:
            t.add("terraform", when, "DescribeSecurityGroups")
    assert sum(1 for e in t.events if e["errorCode"]) == 12
    assert score(t) == []
    # what suppresses it is the ratio: the same agent may declare a lower one
    (f,) = score(None, agents={"terraform": {"min_failure_ratio": 0.01}})
    assert f.evidence["peak_failures_in_window"] == 12
    assert f.evidence["calls_in_window_at_peak"] > 300
    assert f.evidence["min_failure_ratio"] == 0.01


@pytest.mark.parametrize(("successes", "fires"), [(36, True), (37, False)])
def test_failures_must_be_a_quarter_of_the_calls(score: Score, successes: int, fires: bool) -> None:
    """12 failures after 36 successes are 25% of the window's calls; after 37, 24.5%."""
    t = trail()
    calls(t, "terraform", T0, successes, every=2)
    failures(t, "terraform", T0 + timedelta(seconds=80), 12, every=2, error="Throttling.User")
    assert bool(score(t)) is fires


# -- against its own baseline ----------------------------------------------------------------------
def test_agent_with_failure_heavy_baseline_needs_more_than_twice_its_worst(store: Store) -> None:
    """Ten weekdays of history in which each batch-* agent once failed 12 times within 5 minutes:
    its threshold is 2 x 12 + 1 = 25. In the scored week 20 and 24 failures do not fire, 25 and 30
    do. batch-new has the same burst in only 3 days of history (not learned): 20 fire."""
    t = trail()
    days = [datetime(2026, 11, 9, 2, 0, tzinfo=UTC) + timedelta(days=d) for d in range(12)]
    weekdays = [d for d in days if d.astimezone(TZ).weekday() < 5]
    assert len(weekdays) == 10
    for agent in ("batch-a", "batch-b", "batch-c", "batch-d", "batch-new"):
        for day in weekdays if agent != "batch-new" else weekdays[-3:]:
            calls(t, agent, day, 20, every=5)
        failures(t, agent, weekdays[-1] + timedelta(minutes=1), 12, every=5)  # 10:01-10:02 local
    storms = {agent: failures(t, agent, T0, n, every=4)
              for agent, n in (("batch-a", 20), ("batch-b", 24), ("batch-c", 25), ("batch-d", 30),
                               ("batch-new", 20))}
    harness.ingest(store, t.events, INVENTORY)
    report = harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    assert report.detectors["failure_storm"]["error"] is None
    found = {f["agent"]: f for f in list_findings(store, detector="failure_storm")}
    assert sorted(found) == ["batch-c", "batch-d", "batch-new"], [f["summary"] for f in found.values()]
    assert found["batch-d"]["event_ids"] == storms["batch-d"]
    ev = found["batch-d"]["evidence"]
    assert (ev["threshold"], ev["configured_threshold"]) == (25, 10)
    assert ev["baseline"] == {"failure_rate": round(12 / 212, 4), "calls": 212, "max_failures_in_5m": 12,
                              "threshold_from_baseline": 25, "learned": True,
                              # its history is at 10:00 local; the storm came at 14:00, when it never calls
                              "at_this_hour": {"calls_per_day": 0.0, "failure_rate": 0.0},
                              "hour_of_week": "Tue 14:00 (Asia/Shanghai)"}
    assert "it usually fails 5.7% of calls, at most 12 in 5 minutes" in found["batch-d"]["summary"]
    new = found["batch-new"]["evidence"]
    assert new["threshold"] == 10 and new["baseline"]["learned"] is False
    assert "it usually fails" not in found["batch-new"]["summary"]


# -- baselines do not learn incidents ---------------------------------------------------------------
@pytest.mark.parametrize(("triage", "fires_again"), [
    (None, True),  # still open: its storm is not what monitor usually does
    ("acknowledged", True),
    ("resolved", True),  # a resolved true positive stays out of the baseline
    ("false_positive", False),  # the team said it is normal: learned, the same storm is usual now
])
def test_the_same_storm_four_days_later_fires_again_unless_it_was_a_false_positive(
        store: Store, triage: str | None, fires_again: bool) -> None:
    """The nightly refit fits on days that include the incident. The first storm's events are left
    out of what the baseline learns while its finding is open, acknowledged or resolved, so the
    identical storm four days later is judged against monitor's real worst 5 minutes (2 failures),
    not against the storm itself (45, which would need 91 to fire)."""
    from pipeline.triage.lifecycle import set_status

    t = trail()
    first_storm = datetime(2026, 11, 16, 6, 0, tzinfo=UTC)
    for day in range(21):  # three weeks of polling, an occasional pair of failures
        start = datetime(2026, 11, 2, 1, 0, tzinfo=UTC) + timedelta(days=day)
        calls(t, "monitor", start, 40, every=60)
        failures(t, "monitor", start + timedelta(hours=2), 2, every=30, error="Throttling")
    first = enumeration(t, "monitor", first_storm)
    again = enumeration(t, "monitor", first_storm + timedelta(days=4))
    harness.ingest(store, t.events, INVENTORY)
    harness.detect(store, INVENTORY, first_storm - timedelta(hours=1), first_storm + timedelta(hours=1),
                   timezone=TZ_NAME)
    (found,) = list_findings(store, detector="failure_storm")
    assert found["event_ids"] == first
    if triage is not None:  # every finding on the storm (new_source saw its new network too)
        set_status(store, [f["id"] for f in list_findings(store)], triage, by="oncall", reason="checked")
    later = first_storm + timedelta(days=4)
    learning.refit(store, later, TZ_NAME)  # the nightly refit, on history that holds the first storm
    harness.detect(store, INVENTORY, later - timedelta(hours=1), later + timedelta(hours=1), timezone=TZ_NAME)
    raised = [f for f in list_findings(store, detector="failure_storm", status=None) if f["event_ids"] == again]
    assert bool(raised) == fires_again, [f["summary"] for f in raised]
    if fires_again:
        assert raised[0]["evidence"]["baseline"]["max_failures_in_5m"] == 2


# -- configuration ---------------------------------------------------------------------------------
def test_per_agent_threshold_override(score: Score) -> None:
    t = trail()
    enumeration(t, "x")
    y_ids = enumeration(t, "y", T0 + timedelta(seconds=1))
    findings = score(t, agents={"x": {"threshold": 50}})
    assert [(f.agent, f.event_ids) for f in findings] == [("y", y_ids)]
    assert findings[0].evidence["configured_threshold"] == 10


def test_two_storms_an_hour_apart_make_two_findings(score: Score) -> None:
    t = trail()
    first = enumeration(t, "x")
    second = enumeration(t, "x", T0 + timedelta(hours=1))
    findings = score(t)
    assert [f.event_ids for f in findings] == [first, second], described(findings)
    assert len({f.id for f in findings}) == 2


def test_two_storms_twenty_minutes_apart_are_one_burst(score: Score) -> None:
    t = trail()
    first = enumeration(t, "x")
    second = enumeration(t, "x", T0 + timedelta(minutes=20))
    (f,) = score(t)
    assert f.event_ids == first + second
    assert f.evidence["failures"] == 90 and f.evidence["peak_failures_in_window"] == 45


def test_config_override_through_detectors_build(score: Score) -> None:
    built = {d.id: d for d in detectors.build({"failure_storm": {"threshold": 20}})}
    storm = built["failure_storm"]
    assert isinstance(storm, FailureStorm)
    assert storm.params["threshold"] == 20 and storm.params["window"] == "5m"
    t = trail()
    failures(t, "x", T0, 15)
    y_ids = failures(t, "y", T0, 25)
    findings = score(t, **storm.params)
    assert [(f.agent, f.event_ids) for f in findings] == [("y", y_ids)]
    assert findings[0].evidence["threshold"] == 20


def test_config_overrides_reach_run_detect(store: Store) -> None:
    t = trail()
    failures(t, "x", T0, 45)  # silenced for x only
    y_ids = failures(t, "y", T0, 25)
    failures(t, "monitor", T0, 15)  # under the detector-wide 20
    harness.ingest(store, t.events, INVENTORY)
    report = harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME, detectors={
        "failure_storm": {"threshold": 20, "agents": {"x": {"threshold": 50}}}})
    assert report.detectors["failure_storm"] == {"findings": 1, "seconds": pytest.approx(0, abs=5),
                                                 "error": None}
    (f,) = list_findings(store, detector="failure_storm")
    assert (f["agent"], f["event_ids"], f["evidence"]["threshold"]) == ("y", y_ids, 20)


# -- known defects -----------------------------------------------------------------------------------
def test_summary_names_the_most_common_error_code(score: Score) -> None:
    t = trail()
    t.add("monitor", T0 - timedelta(minutes=10), "DescribeInstances", error="Throttling.User")
    failures(t, "monitor", T0, 44)
    (f,) = score(t)
    assert f.evidence["error_codes"] == {"NoPermission": 44, "Throttling.User": 1}
    assert "mostly GetSecretValue -> NoPermission" in f.summary


def test_a_storm_across_a_scoring_chunk_is_found(store: Store,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    midnight = datetime(2026, 11, 25, tzinfo=UTC)
    t = trail()
    for day in range(-2, 3):  # some ordinary traffic every day
        calls(t, "ci-deployer", midnight + timedelta(days=day, hours=3), 20, every=30)
    ids = failures(t, "x", midnight - timedelta(seconds=120), 12, every=20)
    harness.ingest(store, t.events, INVENTORY)
    monkeypatch.setattr(pipeline.detection.detect, "CHUNK_EVENTS", 20)  # a busy account's day, scaled down
    harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    found = list_findings(store, detector="failure_storm")
    assert [f["event_ids"] for f in found] == [ids]


def test_a_past_burst_across_a_bucket_edge_still_raises_the_threshold(store: Store) -> None:
    t = trail()
    days = [datetime(2026, 11, 9, 2, 0, tzinfo=UTC) + timedelta(days=d) for d in range(12)]
    for day in days:
        calls(t, "batch-a", day, 20, every=5)
    failures(t, "batch-a", days[-1] + timedelta(minutes=3), 16, every=15)  # 02:03:00-02:06:45 UTC
    failures(t, "batch-a", T0, 20, every=4)
    harness.ingest(store, t.events, INVENTORY)
    harness.detect(store, INVENTORY, SINCE, UNTIL, timezone=TZ_NAME)
    assert list_findings(store, detector="failure_storm") == []


@pytest.mark.parametrize("override", [{"window": "5 minutes"}, {"agents": {"x": 50}},
                                      {"agents": {"x": {"treshold": 50}}}],
                         ids=["bad-window", "agent-not-a-mapping", "misspelt-agent-key"])
def test_bad_failure_storm_overrides_are_usage_errors(override: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        detectors.build({"failure_storm": override}, "trailwarden.yaml")
