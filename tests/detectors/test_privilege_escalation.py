"""privilege_escalation, and its split with out_of_scope: a call that grants power is reported once,
by out_of_scope (naming the pattern) when it is outside the agent's declared scope, else here.

Events are built in ActionTrail shape (conftest's ``make_event``: the RAM user ``ci-deploy``),
ingested with the test's inventory, loaded as ``trailwarden detect`` loads them (request parameters
for both detectors' events) and scored by both detectors. The real attack traffic's IAM backdoors
(Stratus Red Team, Invictus IR; tests/fixtures/real-attacks) must be found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detectors.base import Finding
from detectors.out_of_scope import OutOfScope
from detectors.privilege_escalation import PrivilegeEscalation
from models.escalation import Caller, allows_everything, classify
from pipeline.core.config import Config
from pipeline.detection.detect import active_detectors
from pipeline.store.store import Store
from tests.conftest import REAL_ATTACKS
from tests.detectors import harness

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
USER = Caller("ram-user", "ci-deploy", None)
ROLE = Caller("assumed-role", "OpsRole:session", "OpsRole")
MakeEvent = Callable[..., dict[str, Any]]

ADMIN = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
ECS_ONLY = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}


def agent(policies: list[dict[str, Any]] | None, name: str = "ci") -> dict[str, Any]:
    return harness.agent(name, "ram-user:ci-deploy", policies=policies)


def ram(make_event: MakeEvent, n: int, name: str, params: dict[str, Any], minutes: float = 0,
        **extra: Any) -> dict[str, Any]:
    return make_event(n, eventName=name, serviceName="Ims", eventSource="ims.aliyuncs.com", eventRW="Write",
                      isGlobal=True, requestParameters=params,
                      eventTime=(T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra)


def score(store: Store, events: list[dict[str, Any]], agents: list[dict[str, Any]],
          **params: Any) -> tuple[list[Finding], list[Finding]]:
    """(out_of_scope's findings, privilege_escalation's findings) on one frame loaded for both."""
    inventory = harness.inventory(*agents)
    harness.ingest(store, events, inventory)
    scope, escalation = OutOfScope(), PrivilegeEscalation(**params)
    df = harness.frame(store, scope, escalation)
    return (harness.score(store, scope, inventory, events=df),
            harness.score(store, escalation, inventory, events=df))


# -- the patterns -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "caller", "pattern", "critical"), [
    ("AttachPolicyToUser", {"UserName": "bob", "PolicyName": "AdministratorAccess", "PolicyType": "System"},
     USER, "attach_policy", True),
    ("AttachPolicyToUser", {"UserName": "bob", "PolicyName": "AliyunECSReadOnlyAccess"}, USER, "attach_policy", False),
    ("AttachPolicyToUser", {"UserName": "ci-deploy", "PolicyName": "AliyunOSSFullAccess"}, USER, "attach_policy", True),
    ("AttachPolicyToRole", {"RoleName": "OpsRole", "PolicyName": "X"}, ROLE, "attach_policy", True),
    ("AttachPolicyToGroup", {"GroupName": "devs", "PolicyName": "AliyunRAMFullAccess"}, USER, "attach_policy", True),
    ("AttachRolePolicy", {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess", "roleName": "r"},
     USER, "attach_policy", True),
    ("CreatePolicyVersion", {"PolicyName": "p", "SetAsDefault": "true", "PolicyDocument": json.dumps(ADMIN)},
     USER, "policy_version", True),
    ("CreatePolicyVersion", {"PolicyName": "p", "SetAsDefault": True, "PolicyDocument": json.dumps(ECS_ONLY)},
     USER, "policy_version", False),
    ("CreatePolicyVersion", {"PolicyName": "p", "SetAsDefault": "false"}, USER, None, False),
    ("SetDefaultPolicyVersion", {"PolicyName": "p", "VersionId": "v3"}, USER, "default_policy_version", False),
    ("CreateAccessKey", {"UserName": "bob"}, USER, "access_key_for_other", False),
    ("CreateAccessKey", {"UserName": "ci-deploy"}, USER, None, False),
    ("CreateAccessKey", {}, USER, None, False),  # its own key: rotation
    ("CreateAccessKey", {"UserName": "ci-deploy"}, ROLE, "access_key_for_other", False),
    ("UpdateRole", {"RoleName": "r", "NewAssumeRolePolicyDocument": json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"RAM": ["acs:ram::1:root"]}}]})},
     USER, "trust_policy", False),
    ("UpdateRole", {"RoleName": "OpsRole", "NewAssumeRolePolicyDocument": "{}"}, ROLE, "trust_policy", True),
    ("UpdateRole", {"RoleName": "r", "NewMaxSessionDuration": 7200}, USER, None, False),
    ("UpdateRole", None, USER, "trust_policy", False),  # parameters not logged: assume the worst
    ("AddUserToGroup", {"UserName": "bob", "GroupName": "CloudAdmins"}, USER, "privileged_group", False),
    ("AddUserToGroup", {"UserName": "ci-deploy", "GroupName": "power-users"}, USER, "privileged_group", True),
    ("AddUserToGroup", {"UserName": "bob", "GroupName": "readers"}, USER, None, False),
    ("CreateLoginProfile", {"UserName": "bob", "Password": "x"}, USER, "login_profile_for_other", False),
    ("UpdateLoginProfile", {"userName": "bob"}, USER, "login_profile_for_other", False),
    ("UpdateLoginProfile", {"UserName": "ci-deploy"}, USER, None, False),
    ("CreateUser", {"UserName": "bob"}, USER, None, False),
])
def test_patterns(name: str, params: dict[str, Any] | None, caller: Caller, pattern: str | None,
                  critical: bool) -> None:
    found = classify(name, json.dumps(params) if params is not None else None, caller)
    assert (found.pattern if found else None) == pattern
    if found:
        assert found.critical is critical
        assert found.detail


def test_any_group_counts_when_no_list_is_given() -> None:
    params = json.dumps({"UserName": "bob", "GroupName": "readers"})
    assert classify("AddUserToGroup", params, USER, privileged_groups=None) is not None


@pytest.mark.parametrize(("document", "everything"), [
    (ADMIN, True), ({"Statement": [{"Effect": "Allow", "Action": ["ecs:*", "*:*"], "Resource": ["*"]}]}, True),
    (ECS_ONLY, False), ({"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}, False),
    ({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "acs:oss:*:*:b/*"}]}, False), ("not json", False),
])
def test_a_policy_that_allows_everything(document: Any, everything: bool) -> None:
    assert allows_everything(json.dumps(document) if isinstance(document, dict) else document) is everything


# -- who reports it -----------------------------------------------------------------------------------
def test_within_the_scope_it_is_reported_here(store: Store, make_event: MakeEvent) -> None:
    ev = ram(make_event, 1, "AttachPolicyToUser", {"UserName": "svc-backup2", "PolicyName": "AdministratorAccess",
                                                   "PolicyType": "System"})
    scope, (f,) = score(store, [ev], [agent([ADMIN])])
    assert scope == []
    assert (f.detector, f.agent, f.severity) == ("privilege_escalation", "ci", "critical")
    assert f.summary == ("ci attached AdministratorAccess to user svc-backup2 (ram:AttachPolicyToUser, 1 call; "
                         "within its declared scope): a privilege escalation")
    ev_ = f.evidence
    assert (ev_["pattern"], ev_["target"], ev_["policy"], ev_["scope"]) == (
        "attach_policy", "user/svc-backup2", "AdministratorAccess", "within_scope")
    assert ev_["critical_pattern"] is True and ev_["self_escalation"] is False
    assert ev_["request_parameters"][0]["PolicyName"] == "AdministratorAccess"
    assert f.dedup_key == "escalation:attach_policy:user/svc-backup2" and f.event_ids == [ev["eventId"]]


def test_outside_the_scope_out_of_scope_reports_it_as_escalation(store: Store,
                                                                 make_event: MakeEvent) -> None:
    attach = ram(make_event, 1, "AttachPolicyToUser", {"UserName": "svc-backup2", "PolicyName": "AdministratorAccess"})
    key = ram(make_event, 2, "CreateAccessKey", {"UserName": "svc-backup2"}, 1)
    user = ram(make_event, 3, "CreateUser", {"UserName": "svc-backup2"}, 0.5)
    scope, escalation = score(store, [attach, key, user], [agent([ECS_ONLY])])
    assert escalation == []
    by_action = {f.evidence["action"]: f for f in scope}
    assert set(by_action) == {"ram:AttachPolicyToUser", "ram:CreateAccessKey", "ram:CreateUser"}
    f = by_action["ram:AttachPolicyToUser"]
    assert f.severity == "critical"
    assert f.evidence["privilege_escalation"] == "attach_policy"
    assert f.evidence["escalation"] == ["attached AdministratorAccess to user svc-backup2"]
    assert f.summary.endswith("; a privilege escalation: attached AdministratorAccess to user svc-backup2")
    assert by_action["ram:CreateAccessKey"].evidence["privilege_escalation"] == "access_key_for_other"
    assert "privilege_escalation" not in by_action["ram:CreateUser"].evidence  # creating a user grants nothing


def test_a_failed_attempt_outside_the_scope_is_high(store: Store, make_event: MakeEvent) -> None:
    ev = ram(make_event, 1, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "AdministratorAccess"},
             errorCode="NoPermission", errorMessage="denied")
    (f,), escalation = score(store, [ev], [agent([ECS_ONLY])])
    assert escalation == [] and f.severity == "high"
    assert "a privilege escalation attempt (failed: NoPermission): attached AdministratorAccess" in f.summary


def test_a_failed_attempt_within_the_scope_is_an_attempt_here_not_a_refusal(
        store: Store, make_event: MakeEvent) -> None:
    """The scope allows it but RAM refused it: reported once, here, one step lower."""
    ev = ram(make_event, 1, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "AdministratorAccess"},
             errorCode="NoPermission", errorMessage="denied")
    scope, (f,) = score(store, [ev], [agent([ADMIN])])
    assert scope == []  # not out_of_scope's "refused" finding as well
    assert f.severity == "high"  # critical pattern, but only attempted
    assert f.summary.endswith("a privilege escalation attempt (failed: NoPermission)")
    assert (f.evidence["succeeded"], f.evidence["failed"]) == (0, 1) and f.score < 0.95


def test_with_privilege_escalation_turned_off_out_of_scope_reports_the_refusal(
        store: Store, make_event: MakeEvent) -> None:
    """Nothing falls between the two: the refusal is out_of_scope's when the other is off."""
    ev = ram(make_event, 1, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "AdministratorAccess"},
             errorCode="NoPermission", errorMessage="denied")
    inventory = harness.inventory(agent([ADMIN]))
    harness.ingest(store, [ev], inventory)
    active = {d.id: d for d in active_detectors(Config(detectors={"privilege_escalation": {"enabled": False}}))}
    assert "privilege_escalation" not in active
    (f,) = harness.score(store, active["out_of_scope"], inventory)
    assert f.dedup_key == "refused:ram:attachpolicytouser" and "refused" in f.summary


def test_agents_without_policies_and_unregistered_identities_are_reported_here(
        store: Store, make_event: MakeEvent) -> None:
    mine = ram(make_event, 1, "CreateLoginProfile", {"UserName": "bob", "Password": "hunter2"})
    stranger = ram(make_event, 2, "CreateAccessKey", {"UserName": "bob"},
                   userIdentity={"type": "ram-user", "principalId": "2", "accountId": "1", "userName": "ops-debug"})
    scope, found = score(store, [mine, stranger], [agent(None)])
    assert scope == []
    by_agent = {f.agent: f for f in found}
    assert by_agent["ci"].evidence["scope"] == "no_policies" and by_agent["ci"].severity == "high"
    assert "it declares no policies" in by_agent["ci"].summary
    assert by_agent["ci"].evidence["request_parameters"] == [{"UserName": "bob", "Password": "<redacted>"}]
    assert by_agent["ram-user:ops-debug"].evidence["scope"] == "unregistered"
    assert "an identity in no agent of the inventory" in by_agent["ram-user:ops-debug"].summary


def test_secrets_at_any_depth_reach_neither_the_evidence_nor_the_slack_message(
        store: Store, make_event: MakeEvent) -> None:
    """Nested and embedded secrets, not only top-level ``Password`` keys (issue 13, item 9)."""
    from pipeline.service.alerting.messages import as_text
    from tests.alerting.test_messages import alert_message, reply

    planted = {"UserName": "bob", "Password": "top-pw-1", "Passwd": "passwd-2", "pwd": "pwd-3",
               "LoginProfile": {"Password": "nested-pw-4", "PasswordResetRequired": True},
               "Body": "UserName=bob&password=body-pw-5"}
    _, found = score(store, [ram(make_event, 1, "CreateLoginProfile", planted)], [agent(None)])
    (f,) = found
    secrets = ("top-pw-1", "passwd-2", "pwd-3", "nested-pw-4", "body-pw-5")
    (params,) = f.evidence["request_parameters"]
    assert params["UserName"] == "bob" and params["LoginProfile"]["PasswordResetRequired"] is True
    row = {**f.as_dict(), "event_count": 1}
    shown = json.dumps(f.evidence)
    for message in (alert_message(f.agent, [row], None, "trailwarden replay ci"), reply(row)):  # and its thread
        shown += json.dumps(message.blocks) + message.text + as_text(message)
    assert "bob" in shown
    assert [s for s in secrets if s in shown] == []


def test_ordinary_iam_work_within_the_scope_is_quiet(store: Store, make_event: MakeEvent) -> None:
    events = [ram(make_event, 1, "CreateAccessKey", {}), ram(make_event, 2, "UpdateLoginProfile", {"UserName": "ci-deploy"}),
              ram(make_event, 3, "AddUserToGroup", {"UserName": "bob", "GroupName": "readers"}),
              ram(make_event, 4, "CreatePolicyVersion", {"PolicyName": "p", "SetAsDefault": "false"}),
              ram(make_event, 5, "UpdateRole", {"RoleName": "r", "NewMaxSessionDuration": 7200}),
              ram(make_event, 6, "ListUsers", {})]
    assert score(store, events, [agent([ADMIN])]) == ([], [])


def test_privileged_groups_are_configurable(store: Store, make_event: MakeEvent) -> None:
    ev = ram(make_event, 1, "AddUserToGroup", {"UserName": "bob", "GroupName": "release-managers"})
    assert score(store, [ev], [agent([ADMIN])], privileged_groups=["release-*"])[1][0].evidence[
        "pattern"] == "privileged_group"


def test_self_escalation_and_a_default_version_allowing_everything_are_critical(
        store: Store, make_event: MakeEvent) -> None:
    events = [ram(make_event, 1, "AttachPolicyToUser", {"UserName": "ci-deploy", "PolicyName": "AliyunOSSFullAccess"}),
              ram(make_event, 2, "CreatePolicyVersion", {"PolicyName": "ci-policy", "SetAsDefault": "true",
                                                         "PolicyDocument": json.dumps(ADMIN)}, 1)]
    _, found = score(store, events, [agent([ADMIN])])
    assert sorted((f.evidence["pattern"], f.severity) for f in found) == [
        ("attach_policy", "critical"), ("policy_version", "critical")]
    own = next(f for f in found if f.evidence["pattern"] == "attach_policy")
    assert own.evidence["self_escalation"] is True and "(itself)" in own.summary


def test_one_finding_per_pattern_and_target_per_dedup_window(store: Store,
                                                           make_event: MakeEvent) -> None:
    events = [ram(make_event, 1, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "A"}),
              ram(make_event, 2, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "B"}, 20),
              ram(make_event, 3, "AttachPolicyToUser", {"UserName": "eve", "PolicyName": "A"}, 21),
              ram(make_event, 4, "AttachPolicyToUser", {"UserName": "bob", "PolicyName": "C"}, 200)]
    _, found = score(store, events, [agent([ADMIN])])
    assert sorted((f.evidence["target"], len(f.event_ids)) for f in found) == [
        ("user/bob", 1), ("user/bob", 2), ("user/eve", 1)]
    both = next(f for f in found if len(f.event_ids) == 2)
    assert both.evidence["escalation"] == ["attached A to user bob", "attached B to user bob"]


# -- real attack traffic -------------------------------------------------------------------------------
def _real_events() -> list[dict[str, Any]]:
    return [json.loads(line) for name in ("invictus", "stratus", "otrf")
            for line in (REAL_ATTACKS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_the_real_iam_backdoors_are_found(store: Store) -> None:
    """Stratus Red Team's IAM persistence techniques, detonated (stratus.jsonl) and in the Invictus
    capture: nobody is registered, so each is privilege_escalation's finding."""
    _, found = score(store, _real_events(), [])
    got = {(f.agent, f.evidence["pattern"], f.evidence["target"], f.severity) for f in found}
    assert got == {
        ("ram-user:christophe", "access_key_for_other", "user/stratus-red-team-backdoor-u-user", "high"),
        ("ram-user:christophe", "attach_policy", "user/malicious-iam-user", "critical"),
        ("ram-user:christophe", "access_key_for_other", "user/malicious-iam-user", "high"),
        ("ram-user:christophe", "attach_policy", "role/stratus-red-team-malicious-iam-role", "critical"),
        ("ram-user:christophe", "login_profile_for_other", "user/stratus-red-team-update-login-profile-user", "high"),
        ("ram-user:bert-jan", "login_profile_for_other", "user/stratus-red-team-nmfalu-gfjyeaypjt", "high"),
        ("ram-user:bert-jan", "attach_policy", "role/stratus-red-team-backdoor-r-role", "critical"),
        ("ram-user:bert-jan", "trust_policy", "role/stratus-red-team-backdoor-r-role", "high"),
        ("ram-user:bert-jan", "access_key_for_other", "user/stratus-red-team-backdoor-u-user", "high"),
        ("ram-user:bert-jan", "attach_policy", "user/malicious-iam-user", "critical"),
        ("ram-user:bert-jan", "access_key_for_other", "user/malicious-iam-user", "high"),
    }
    assert all(f.evidence["scope"] == "unregistered" for f in found)
    trust = next(f for f in found if f.evidence["pattern"] == "trust_policy")
    assert "arn:aws:iam::193672423079:root" in trust.summary  # who may now assume the role


def test_the_real_iam_backdoors_of_a_read_only_agent_are_out_of_scope_escalations(
        store: Store) -> None:
    """Declared read-only, the attacker's user's backdoors are outside its scope: out_of_scope
    reports every one as a critical privilege escalation, and privilege_escalation stays out."""
    readonly = {"name": "attacker", "purpose": "p", "owner": "o", "environment": "prod",
                "identities": ["ram-user:christophe"],
                "policies": [{"Version": "1", "Statement": [
                    {"Effect": "Allow", "Action": ["*:Describe*", "*:List*", "*:Get*"], "Resource": "*"}]}]}
    scope, found = score(store, _real_events(), [readonly])
    assert {f.agent for f in found} == {"ram-user:bert-jan"}
    hinted = [f for f in scope if "privilege_escalation" in f.evidence]
    assert {f.evidence["action"] for f in hinted} == {
        "ram:CreateAccessKey", "ram:AttachPolicyToUser", "ram:AttachRolePolicy", "ram:UpdateLoginProfile"}
    assert all(f.agent == "attacker" and f.severity == "critical" for f in hinted)
    assert sum(len(f.event_ids) for f in hinted) == 5
