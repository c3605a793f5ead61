"""The demo's month (pipeline/demo/synthetic.py) through the whole pipeline: every planted incident is
found, and the benign traffic of the sample agents raises next to nothing.

A month of realistic traffic for the sample inventory (config/agents.yaml) with the incidents of
``synthetic.INCIDENTS`` planted in its last week is ingested, and ``run_detect`` scores the last
8 days against baselines learned from the 22 before, as the demo does. A finding is attributed to
an incident when it is the incident's agent's, or on what that agent did through a role it
assumed (``origin_agent``), and overlaps the incident's local day; any other finding is a false
positive.

Detect must not look ahead: the same window, scored on a store that also holds five more days of
traffic after it, gives the same findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor, Inventory, load_inventory
from pipeline.core.config import load_config
from pipeline.demo import synthetic
from pipeline.demo.build import incident_hits
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.store.sessions import link_sessions
from pipeline.store.store import open_store
from tests.conftest import ROOT, write_ndjson

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
CONFIG = load_config(ROOT / "config" / "trailwarden.yaml")
REGISTERED = {a.name for a in INVENTORY.agents}
SCORED = timedelta(days=8)
MAX_FALSE_POSITIVES = 2

# The detector an incident is planted for, where it is one of the learned-behaviour detectors'.
EXPECTED_DETECTOR = {"stolen-ci-key": "odd_hours", "etl-at-night": "odd_hours", "stop-logging": "odd_hours",
                     "secret-enumeration": "failure_storm", "cross-account-role": "cross_account",
                     "undeclared-account": "cross_account"}


@dataclass(frozen=True)
class Case:
    end: datetime
    seed: int

    @property
    def id(self) -> str:
        return f"{self.end:%Y-%m-%d}-seed{self.seed}"


SUNDAY = Case(datetime(2026, 11, 29, tzinfo=UTC), 7)  # the demo's window as of writing
CASES = [SUNDAY, Case(SUNDAY.end, 2027), Case(datetime(2026, 11, 26, tzinfo=UTC), 7)]  # ...and a Thursday


@dataclass
class Run:
    case: Case
    findings: list[dict[str, Any]]

    def incident_findings(self, incident: synthetic.Incident) -> list[dict[str, Any]]:
        start, stop = synthetic.incident_window(incident, self.case.end)
        return incident_hits(self.findings, incident.agent, start, stop)

    def false_positives(self) -> list[dict[str, Any]]:
        explained = {f["id"] for i in synthetic.INCIDENTS for f in self.incident_findings(i)}
        return [f for f in self.findings if f["id"] not in explained]


def generate(case: Case) -> list[dict[str, Any]]:
    vendor = INVENTORY.agent("vendor-acme")
    assert vendor is not None and vendor.expires is not None
    return synthetic.month(case.end, days=30, seed=case.seed, vendor_expires=vendor.expires)


def detect(folder: Path, events: list[list[dict[str, Any]]], end: datetime,
           inventory: Inventory = INVENTORY) -> list[dict[str, Any]]:
    """Ingest the event lists (one file each) into a fresh store and score [end - 8 days, end)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_ndjson(folder / f"events-{i}.ndjson", evs) for i, evs in enumerate(events)]
    with open_store(folder / "store.duckdb") as store:
        report = ingest_files(store, paths, Attributor(inventory))
        assert report.quarantined == 0 and report.new == sum(len(e) for e in events)
        link_sessions(store)  # as `ingest` and the demo do
        result = run_detect(store, CONFIG, inventory, since=end - SCORED, until=end)
        assert not result.failed, result.detectors
        return sorted(list_findings(store), key=lambda f: (f["first_seen"], f["detector"], f["id"]))


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``month(case)``: the case's findings, computed once per module."""
    runs: dict[Case, Run] = {}

    def get(case: Case) -> Run:
        if case not in runs:
            runs[case] = Run(case, detect(tmp_path_factory.mktemp(case.id), [generate(case)], case.end))
        return runs[case]

    return get


def show(findings: list[dict[str, Any]]) -> str:
    return "\n".join(f"  {f['first_seen']:%Y-%m-%d %H:%M}Z {f['severity']:8} {f['detector']:14} "
                     f"{f['agent']}: {f['summary']}" for f in findings) or "  (none)"


# -- every incident found ------------------------------------------------------------------------------
def _incident_params() -> list[Any]:
    params = []
    for case in CASES:
        for incident in synthetic.INCIDENTS:  # registered agents, unregistered identities, root
            params.append(pytest.param(case, incident, id=f"{case.id}-{incident.key}"))
    return params


def test_the_cases_plant_incidents_for_registered_agents() -> None:
    planted = {i.agent for i in synthetic.INCIDENTS} & REGISTERED
    assert planted == {"ci-deployer", "monitor-readonly", "admin-alice", "vendor-acme", "etl-pipeline",
                       "staging-ci", "nightly-backup"}
    assert len(INVENTORY.agents) == 9


@pytest.mark.slow
@pytest.mark.parametrize(("case", "incident"), _incident_params())
def test_every_planted_incident_is_found(month: Any, case: Case, incident: synthetic.Incident) -> None:
    run = month(case)
    found = run.incident_findings(incident)
    window = synthetic.incident_window(incident, case.end)
    assert found, (f"{incident.key} ({incident.what}) on {window[0]:%Y-%m-%d %H:%M}Z.. was not found; "
                   f"all findings:\n{show(run.findings)}")
    expected = EXPECTED_DETECTOR.get(incident.key)
    if expected:
        assert expected in {f["detector"] for f in found}, (
            f"{incident.key} not found by {expected}:\n{show(found)}")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_stolen_key_is_a_new_source_and_a_privilege_escalation(month: Any, case: Case) -> None:
    """The stolen CI key comes from a never-seen network with a never-seen client, at odd hours and
    out of scope: new_source raised to high by the coincidence; and its backdoor user (an AccessKey
    for another user, AdministratorAccess attached) is outside the CI scope: out_of_scope says it
    is a privilege escalation, critical, and privilege_escalation stays out."""
    run = month(case)
    (stolen,) = [i for i in synthetic.INCIDENTS if i.key == "stolen-ci-key"]
    found = run.incident_findings(stolen)
    (new,) = [f for f in found if f["detector"] == "new_source"]
    assert new["evidence"]["value"] == "185.220.101.0/24" and new["severity"] == "high"
    assert new["evidence"]["new"]["client"] == ["python-requests"]
    assert {"odd_hours", "out_of_scope"} <= {c["detector"] for c in new["evidence"]["coincides_with"]}
    escalations = {f["evidence"]["privilege_escalation"]: f for f in found if "privilege_escalation" in f["evidence"]}
    assert set(escalations) == {"access_key_for_other", "attach_policy"}
    assert all(f["detector"] == "out_of_scope" and f["severity"] == "critical" for f in escalations.values())
    assert "AdministratorAccess" in escalations["attach_policy"]["summary"]
    assert not [f for f in run.findings if f["detector"] == "privilege_escalation"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_cross_account_incidents_name_both_accounts_and_the_origin(month: Any, case: Case) -> None:
    """The staging key's AssumeRole of the production role is drift naming staging and prod, and
    an unexpected assumer on the role; what the role session did is traced to the staging agent;
    the backup role's reads in the security account name prod and security."""
    run = month(case)
    incidents = {i.key: i for i in synthetic.INCIDENTS}
    staging = run.incident_findings(incidents["cross-account-role"])
    (drift,) = [f for f in staging if f["detector"] == "cross_account" and f["agent"] == "staging-ci"]
    assert "declared for staging (1779304125568802), acted in prod (1384926508761234)" in drift["summary"]
    on_role = [f for f in staging if f["agent"] == "prod-deploy-role" and f["detector"] != "cross_account"]
    assert on_role and {f["origin_agent"] for f in on_role} == {"staging-ci"}  # the session's events
    assert {f["origin_account"] for f in on_role} == {synthetic.STAGING}
    (assumer,) = [f for f in run.findings if f["detector"] == "cross_account" and f["agent"] == "prod-deploy-role"]
    assert assumer["evidence"]["caller"] == "staging-ci" and assumer["evidence"]["assumable_by"] == ["ci-deployer"]
    backup = run.incident_findings(incidents["undeclared-account"])
    (away,) = [f for f in backup if f["detector"] == "cross_account"]
    assert "declared for prod (1384926508761234), acted in security (1602251983347719)" in away["summary"]


# -- next to no false positives ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_benign_traffic_raises_at_most_a_couple_of_findings(month: Any, case: Case) -> None:
    run = month(case)
    assert {f["agent"] for f in run.findings} <= REGISTERED | {i.agent for i in synthetic.INCIDENTS}
    false = run.false_positives()
    print(f"{case.id}: {len(run.findings)} findings, {len(false)} not explained by a planted incident:\n"
          f"{show(false)}")
    assert len(false) <= MAX_FALSE_POSITIVES, f"false positives over 8 days:\n{show(false)}"
    # the backup role snapshots from a new /24 every night: its networks rotate, and that is quiet
    assert not [f for f in false if f["detector"] in ("new_source", "privilege_escalation")], show(false)


# -- no look-ahead ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_later_traffic_does_not_change_the_window(month: Any, tmp_path: Path) -> None:
    """Five more days of benign traffic after the window's end (and so in no history of it): the
    findings for the window are identical, to the event."""
    case = SUNDAY
    # the generator lays out local days from UTC midnights: its first day starts 8 hours before
    # its start, so keep only what falls after the window's end
    stamp = f"{case.end:%Y-%m-%dT%H:%M:%SZ}"
    later = [e for e in synthetic.month(case.end + timedelta(days=5), days=6, seed=case.seed + 1,
                                        incidents=False) if e["eventTime"] >= stamp]
    assert len(later) > 4000 and min(e["eventTime"] for e in later) < f"{case.end:%Y-%m-%dT%H:%M}:59Z"
    # and one call exactly at the end, the first instant the window excludes
    later.append({**later[0], "eventId": "00000000-0000-4000-8000-0000000e0d00", "eventTime": stamp})
    now = detect(tmp_path / "later", [generate(case), later], case.end)
    then = month(case).findings
    assert [_key(f) for f in now] == [_key(f) for f in then]
    assert now == then  # summaries, evidence and scores too


def _key(f: dict[str, Any]) -> tuple[Any, ...]:
    return f["id"], f["detector"], f["agent"], f["severity"], f["first_seen"], tuple(f["event_ids"])
