"""The cross_account detector through the harness: a three-account organisation (staging, prod,
security) whose agents declare their accounts, ActionTrail events ingested into a store, scored
as ``detect`` loads them; and end to end through ``run_detect`` for the single-account case."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.base import Finding
from detectors.cross_account import CrossAccount
from models.inventory import Inventory
from pipeline.core.config import Account, Config
from pipeline.detection.detect import run_detect
from pipeline.store.store import Store
from tests.detectors import harness

STAGING, PROD, SECURITY = "1111222233334444", "5555666677778888", "9999000011112222"
ACCOUNTS = [Account(id=STAGING, alias="staging"), Account(id=PROD, alias="prod"),
            Account(id=SECURITY, alias="security")]
T0 = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
DEPLOY_ARN = f"acs:ram::{PROD}:role/ProdDeployRole"


def org(**role_extra: Any) -> Inventory:
    """staging-ci (staging), ci-deployer (prod), the prod deploy role assumable by ci-deployer."""
    return harness.inventory(
        harness.agent("staging-ci", "ram-user:staging-ci", accounts=[STAGING]),
        harness.agent("ci-deployer", "ram-user:ci-deploy", accounts=[PROD]),
        harness.agent("prod-deploy-role", "role:ProdDeployRole", accounts=[PROD],
                      **({"assumable_by": ["ci-deployer"]} | role_extra)))


def detector() -> CrossAccount:
    det = CrossAccount()
    det.bind(Config(accounts=ACCOUNTS))
    return det


def call(trail: harness.Trail, who: str, when: datetime, name: str = "DescribeInstances", *, home: str,
         recipient: str | None = None, **kw: Any) -> dict[str, Any]:
    """One call by ``who`` with credentials of ``home``, recorded in ``recipient`` when given."""
    ev = trail.add(who, when, name, **kw)
    ev["userIdentity"]["accountId"] = home
    if recipient:
        ev["recipientAccountId"] = recipient
    return ev


def assume(trail: harness.Trail, who: str, when: datetime, *, home: str, arn: str = DEPLOY_ARN,
           error: str | None = None) -> dict[str, Any]:
    return call(trail, who, when, "AssumeRole", home=home, rw="Write", error=error,
                eventSource="sts.aliyuncs.com", serviceName="Sts",
                requestParameters={"RoleArn": arn, "RoleSessionName": "deploy-1", "DurationSeconds": "3600"})


def found(store: Store, inv: Inventory, trail: harness.Trail) -> list[Finding]:
    harness.ingest(store, trail.events, inv)
    return harness.score(store, detector(), inv)


def test_assuming_a_role_in_another_account_is_drift_naming_both_accounts(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    ev = assume(trail, "staging-ci", T0, home=STAGING)
    findings = [f for f in found(store, inv, trail) if f.agent == "staging-ci"]
    (f,) = findings
    assert f.severity == "high" and f.event_ids == [ev["eventId"]]
    assert "staging (1111222233334444)" in f.summary and "prod (5555666677778888)" in f.summary
    assert "assumed role ProdDeployRole there" in f.summary
    assert f.evidence["declared_accounts"] == ["staging (1111222233334444)"]
    assert f.evidence["acted_in"] == "prod (5555666677778888)" and f.evidence["account"] == "prod"


def test_a_direct_call_recorded_in_another_account_is_drift(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    home = [call(trail, "ci-deployer", T0, home=PROD, recipient=PROD)["eventId"]]  # its own account: fine
    away = [call(trail, "ci-deployer", T0 + timedelta(minutes=i), "ListBuckets", home=PROD, recipient=SECURITY)["eventId"]
            for i in range(1, 3)]
    (f,) = found(store, inv, trail)
    assert f.agent == "ci-deployer" and f.severity == "medium"  # reads only
    assert f.event_ids == away and home[0] not in f.event_ids
    assert f.summary.startswith("ci-deployer, declared for prod (5555666677778888), acted in "
                                "security (9999000011112222): 2x ListBuckets")


def test_a_write_in_another_account_is_high_and_refused_calls_alone_are_low(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    call(trail, "ci-deployer", T0, "PutBucketPolicy", home=PROD, recipient=SECURITY, rw="Write")
    call(trail, "staging-ci", T0, "DeleteInstance", home=STAGING, recipient=PROD, rw="Write", error="NoPermission")
    by_agent = {f.agent: f for f in found(store, inv, trail)}
    assert by_agent["ci-deployer"].severity == "high"
    assert by_agent["staging-ci"].severity == "low" and "RAM refused every call" in by_agent["staging-ci"].summary


def test_an_unexpected_assumer_is_a_finding_on_the_role_naming_the_caller(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    expected = assume(trail, "ci-deployer", T0, home=PROD)
    unexpected = assume(trail, "staging-ci", T0 + timedelta(hours=1), home=STAGING)
    refused = assume(trail, "ram-user:ops-debug", T0 + timedelta(hours=2), home=PROD, error="NoPermission")
    findings = [f for f in found(store, inv, trail) if f.agent == "prod-deploy-role"]
    assert {f.evidence["caller"]: (f.severity, f.event_ids) for f in findings} == {
        "staging-ci": ("high", [unexpected["eventId"]]),
        "ram-user:ops-debug@prod": ("medium", [refused["eventId"]]),
    }
    assert expected["eventId"] not in {e for f in findings for e in f.event_ids}
    (staging,) = [f for f in findings if f.evidence["caller"] == "staging-ci"]
    assert staging.summary == ("staging-ci from staging (1111222233334444) assumed role ProdDeployRole in "
                               "prod (5555666677778888) (agent prod-deploy-role), which only ci-deployer may assume")


def test_a_service_assumer_matches_its_system_identity(store: Store) -> None:
    inv = org(assumable_by=["service:ecs.aliyuncs.com"])
    trail = harness.Trail(inv)
    ecs = assume(trail, "ci-deployer", T0, home=PROD)
    ecs["userIdentity"] = {"type": "system", "accountId": PROD, "principalId": "ecs.aliyuncs.com",
                           "userName": "ecs.aliyuncs.com"}
    other = assume(trail, "ci-deployer", T0 + timedelta(minutes=5), home=PROD)
    (f,) = found(store, inv, trail)
    assert f.agent == "prod-deploy-role" and f.event_ids == [other["eventId"]]
    assert "which only service:ecs.aliyuncs.com may assume" in f.summary


def test_the_same_user_name_in_another_home_account_is_not_the_agent(store: Store) -> None:
    """ram-user:staging-ci of prod is another identity: its calls in prod are not staging-ci's drift."""
    inv = org()
    trail = harness.Trail(inv)
    call(trail, "staging-ci", T0, home=PROD, recipient=PROD)
    assert found(store, inv, trail) == []


def test_a_malformed_role_arn_is_not_judged(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    assume(trail, "staging-ci", T0, home=STAGING, arn="acs:ram::prod:role/ProdDeployRole")
    assert found(store, inv, trail) == []


def test_a_single_account_config_raises_nothing(store: Store) -> None:
    """No accounts declared, no assumable_by: the same traffic, end to end, finds nothing here."""
    inv = harness.inventory(harness.agent("staging-ci", "ram-user:staging-ci"),
                            harness.agent("prod-deploy-role", "role:ProdDeployRole"))
    trail = harness.Trail(inv)
    assume(trail, "staging-ci", T0, home=harness.ACCOUNT, arn=f"acs:ram::{harness.ACCOUNT}:role/ProdDeployRole")
    call(trail, "staging-ci", T0, "ListBuckets", home=harness.ACCOUNT, recipient="1234123412341234")
    harness.ingest(store, trail.events, inv)
    assert harness.score(store, CrossAccount(), inv) == []
    report = harness.detect(store, inv, *harness.EVER)
    rows = store.con.execute("SELECT count(*) FROM findings WHERE detector = 'cross_account'").fetchone()
    assert rows == (0,), report


def test_end_to_end_the_finding_is_stored_with_its_evidence(store: Store) -> None:
    inv = org()
    trail = harness.Trail(inv)
    assume(trail, "staging-ci", T0, home=STAGING)
    harness.ingest(store, trail.events, inv)
    run_detect(store, Config(accounts=ACCOUNTS), inv, since=harness.EVER[0], until=harness.EVER[1])
    rows = store.con.execute("SELECT agent, severity, evidence FROM findings WHERE detector = 'cross_account' "
                             "ORDER BY agent").fetchall()
    assert [(a, s) for a, s, _ in rows] == [("prod-deploy-role", "high"), ("staging-ci", "high")]
    assert json.loads(rows[1][2])["acted_in"] == "prod (5555666677778888)"
