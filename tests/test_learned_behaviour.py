"""Learned behaviour on an organisation (issue 15): a generated organisation's month (24 agents,
four weeks, the last two scored) run through the CLI contract the held-out scenario is run
through (``ingest --file``, ``detect --since --until``, ``findings --status all --format json``),
scored against its labels (``pipeline.demo.score``).

Pinned: each in-scope incident kind (exfiltration, enumeration, mass deletion, the first use of a
sensitive family, a key used from two networks, a session reused, a service role used outside,
an MFA bypass) is raised at medium or above by a learned-behaviour detector; each benign churn
trap (holiday and catch-up, on-call night, declared new region, key rotation, new agent, big
Terraform apply, evening work, late backup, NAT change inside the declared CIDR) is not; and other
findings at medium or above stay within the target rate.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from pipeline.demo.score import load_labels, score
from tests.conftest import detected_organisation, run_cli

pytestmark = pytest.mark.slow
LEARNED = {"volume", "novelty", "enumeration", "anomalous_behaviour", "new_source", "odd_hours", "credential_misuse",
           "signin_hygiene"}
PINNED = {"exfiltration", "enumeration", "mass_deletion", "sensitive_novelty", "key_two_networks", "session_reuse",
          "service_role_outside", "mfa_bypass"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("organisation")
    meta = detected_organisation(root, agents=24, weeks=4, seed=1, volume=0.01, days_ago=1)
    labels, _ = load_labels(root / "labels.json")
    config = ("--config", "config/trailwarden.yaml")
    found = run_cli(*config, "findings", "--status", "all", "--format", "json", cwd=root)
    assert found.returncode == 0, found.stderr
    findings = json.loads(found.stdout)
    days = (datetime.fromisoformat(meta["end"]) - datetime.fromisoformat(meta["detect_since"])).days
    return {"score": score(findings, labels, int(meta["agents"]), days), "findings": findings}


def test_each_in_scope_incident_kind_is_raised_by_learned_behaviour(result: dict[str, Any]) -> None:
    incidents = [i for i in result["score"]["incidents"] if i["kind"] in PINNED]
    assert {i["kind"] for i in incidents} == PINNED
    for incident in incidents:
        loud = [f for f in incident["findings"] if f["detector"] in LEARNED]
        assert loud, (incident["id"], incident["kind"], incident["findings"])


def test_no_benign_churn_is_raised_at_medium_or_above(result: dict[str, Any]) -> None:
    traps = result["score"]["traps"]
    assert len(traps) == 9
    assert all(t["quiet"] for t in traps), [t for t in traps if not t["quiet"]]


def test_other_findings_stay_under_one_per_100_agents_per_day(result: dict[str, Any]) -> None:
    assert result["score"]["other_per_100_agents_per_day"] <= 1.0, result["score"]["other"]


def test_a_story_lists_every_aspect_with_its_baseline(result: dict[str, Any]) -> None:
    stories = [f for f in result["findings"] if f["detector"] == "anomalous_behaviour"]
    assert stories
    for story in stories:
        aspects = story["evidence"]["aspects"]
        assert len({a["aspect"] for a in aspects}) >= 2
        assert all(a["text"] and a["text"] in story["summary"] for a in aspects)
        weights = [a["weight"] for a in aspects]
        assert weights == sorted(weights, reverse=True)
