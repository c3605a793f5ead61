"""ActionTrail event -> RAM request (models/mapping.py), on the documented examples and real traffic.

The rules are those of /work/shared/notes/ram-policy.md section 2 ("Mapping an ActionTrail event to
a RAM request"). Inputs are the notes' verbatim examples E1-E8 (tests/fixtures/actiontrail_examples,
E3/E4 in their repaired copies) and the 502 real attack events in ActionTrail shape
(tests/fixtures/real-attacks). Events are typed with the project's own normalizer, as ingest does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from detectors.out_of_scope import OutOfScope
from models.inventory import Attributor
from models.mapping import (
    CallerFacts,
    CallFacts,
    action,
    context,
    is_authorized_call,
    requests,
    resources,
)
from models.policy import Decision, PolicySet
from pipeline.detection.detect import load_events
from pipeline.ingest.events import Event, normalize
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store
from tests.conftest import FIXTURES, REAL_ATTACKS

EXAMPLES = FIXTURES / "actiontrail_examples"
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9]+$")
# acs:<ram-code>:<region>:<account-id>:<relative-id>; the region may be empty (global resources)
ARN = re.compile(r"^acs:(?P<code>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>[^:]+):(?P<rel>.+)$")


# -- helpers ---------------------------------------------------------------------------------------
def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    if "Events" in data:  # E8 is a LookupEvents response body holding one event
        (event,) = data["Events"]
        return dict(event)
    return data


def call_facts(ev: Event) -> CallFacts:
    params = ev.request_parameters
    return CallFacts(ev.event_type, ev.event_name, ev.service_name, ev.service_code, ev.acs_region,
                     ev.recipient_account_id or ev.account_id, ev.referenced_resources, ev.resource_type,
                     ev.resource_name, json.dumps(params) if params is not None else None)


def caller_facts(ev: Event) -> CallerFacts:
    return CallerFacts(ev.event_time, ev.source_ip, ev.ip_version, ev.vpc_id, ev.mfa_authenticated,
                       ev.access_key_id, ev.secure_transport, ev.identity_type, ev.account_id,
                       ev.user_name, ev.role_name, ev.user_agent)


def mapped(raw: dict[str, Any]) -> tuple[Event, CallFacts, CallerFacts]:
    ev = normalize(raw)
    return ev, call_facts(ev), caller_facts(ev)


def real_events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(REAL_ATTACKS.glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return out


# -- which events are scope-checked ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "checked"), [
    ("e1_ram_user_console_signin.json", False),   # ConsoleSignin, AasSub
    ("e2_root_console_signin_global.json", False),  # ConsoleSignin, AasCustomer
    ("e3_assumed_role.json", True),
    ("e4_service_role_create_eni.json", True),
    ("e5_root_oss_put_bucket.json", True),
    ("e6_ram_user_sdk_2016.json", True),
    ("e7_saml_role_sso.json", True),
    ("e8_lookup_events_response.json", False),  # ConsoleOperation: a console operation name, not an API
])
def test_examples_scope_checked_or_not(name: str, checked: bool) -> None:
    ev = normalize(example(name))
    assert is_authorized_call(ev.event_type, ev.service_name) is checked


@pytest.mark.parametrize(("event_type", "service"), [
    ("ConsoleSignout", "AasSub"), ("AliyunServiceEvent", "Ecs"), ("ApiCall", "AasSub"),
    ("ApiCall", "AasCustomer"), ("ConsoleCall", "Oss"),
])
def test_other_non_api_events_are_not_scope_checked(event_type: str, service: str) -> None:
    assert not is_authorized_call(event_type, service)


# -- E3: assumed role, ServiceCode, masked source IP, http --------------------------------------------
def test_e3_assumed_role_lookup_events() -> None:
    ev, call, caller = mapped(example("e3_assumed_role.json"))
    acct = "159498693826****"
    assert ev.account_id == acct
    assert action(call) == "actiontrail:LookupEvents"  # requestParameters.ServiceCode = actiontrail
    assert resources(call) == [f"acs:actiontrail:cn-hangzhou:{acct}:*"]  # no resource: the convention
    ctx = context(caller)
    assert ctx["acs:AccessId"] == "STS.NUQNP4PiGyckMsNiGELCs****"
    assert ctx["acs:MFAPresent"] == "false"
    assert ctx["acs:SecureTransport"] == "false"  # additionalEventData.Scheme = http
    assert ctx["acs:PrincipalARN"] == f"acs:ram::{acct}:role/custom-role-for-actiontrail"
    assert ctx["acs:CurrentTime"] == "2021-01-01T00:00:00Z"
    assert "acs:SourceIp" not in ctx  # 192.168.XX.XX is masked: not an address, so absent


def test_service_code_wins_over_service_name() -> None:
    raw = example("e3_assumed_role.json")
    raw["serviceName"] = "SomethingElse"
    _, call, _ = mapped(raw)
    assert action(call) == "actiontrail:LookupEvents"


def test_e7_saml_sso_keeps_event_name_case_and_policy_matches_case_insensitively() -> None:
    _, call, caller = mapped(example("e7_saml_role_sso.json"))
    assert action(call) == "actiontrail:LookUpEvents"
    assert resources(call) == ["acs:actiontrail:cn-shanghai:159498693826****:*"]
    assert context(caller)["acs:SecureTransport"] == "true"
    assert context(caller)["acs:PrincipalARN"] == "acs:ram::159498693826****:role/testrole"
    policies = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "actiontrail:LookupEvents", "Resource": "*"}]}])
    (req,) = requests(call, caller, policies.condition_keys)
    assert policies.evaluate(req).decision is Decision.ALLOW


# -- E4: referenced resources of two RAM codes -------------------------------------------------------
def test_e4_create_network_interface_resources() -> None:
    _, call, caller = mapped(example("e4_service_role_create_eni.json"))
    acct = "116214825062****"
    assert action(call) == "ecs:CreateNetworkInterface"
    assert sorted(resources(call)) == sorted([
        f"acs:vpc:cn-hangzhou:{acct}:vswitch/vsw-bp1iqqma1noh402c8****",
        f"acs:ecs:cn-hangzhou:{acct}:securitygroup/sg-bp10mvd143r6lfks****",
    ])
    assert context(caller)["acs:PrincipalARN"] == f"acs:ram::{acct}:role/aliyunstreamdefaultrole"
    assert "acs:SourceIp" not in context(caller)  # 11.168.XX.XX


def test_e4_one_request_per_resource_and_the_worst_decides() -> None:
    """A policy allowing the security group but not the vSwitch must not allow the call."""
    _, call, caller = mapped(example("e4_service_role_create_eni.json"))
    policies = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "ecs:CreateNetworkInterface", "Resource": "acs:ecs:*:*:securitygroup/*"}]}])
    reqs = requests(call, caller, policies.condition_keys)
    assert len(reqs) == 2
    decisions = {r.resource.split(":")[1]: policies.evaluate(r).decision for r in reqs}
    assert decisions == {"ecs": Decision.ALLOW, "vpc": Decision.IMPLICIT_DENY}


# -- E5, E6 ----------------------------------------------------------------------------------------
def test_e5_root_oss_put_bucket() -> None:
    _, call, caller = mapped(example("e5_root_oss_put_bucket.json"))
    assert action(call) == "oss:PutBucket"
    assert resources(call) == ["acs:oss:cn-hangzhou:189217171671****:test-123"]
    ctx = context(caller)
    assert "acs:SourceIp" not in ctx  # "Internal"
    assert "acs:PrincipalARN" not in ctx  # the account owner is no RAM principal


def test_e6_ram_user_access_key_real_ip() -> None:
    _, call, caller = mapped(example("e6_ram_user_sdk_2016.json"))
    assert action(call) == "actiontrail:UpdateTrail"
    ctx = context(caller)
    assert ctx["acs:SourceIp"] == "42.120.74.96"
    assert "acs:MFAPresent" not in ctx  # AccessKey call, no session context
    assert ctx["acs:AccessId"] == "f6IzzFZMmzNwEI4d"
    assert ctx["acs:PrincipalARN"] == "acs:ram::43274:user/Alice"
    assert ctx["acs:CurrentTime"] == "2016-01-06T03:29:15Z"
    assert "acs:SecureTransport" not in ctx  # no Scheme recorded


def test_e6_absent_mfa_key_is_absent_not_unknown() -> None:
    """acs:MFAPresent is a key the log supplies; missing from an AccessKey call, a positive Bool
    condition on it is false (ImplicitDeny), not Unknown."""
    _, call, caller = mapped(example("e6_ram_user_sdk_2016.json"))
    policies = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "actiontrail:*", "Resource": "*",
         "Condition": {"Bool": {"acs:MFAPresent": "true"}}}]}])
    (req,) = requests(call, caller, policies.condition_keys)
    assert req.unknown == frozenset()
    assert policies.evaluate(req).decision is Decision.IMPLICIT_DENY


def test_current_time_is_utc_z() -> None:
    caller = CallerFacts(datetime(2026, 11, 2, 11, 4, 5, tzinfo=UTC), None, None, None, None, None, None,
                         None, None, None, None, None)
    assert context(caller)["acs:CurrentTime"] == "2026-11-02T11:04:05Z"


# -- Ims -> ram, global resources ------------------------------------------------------------------
def test_ims_create_user_from_real_attack_maps_to_ram() -> None:
    raw = next(e for e in real_events() if e["serviceName"] == "Ims" and e["eventName"] == "CreateUser")
    user = raw["requestParameters"]["userName"]  # AWS-style key in that dataset
    ev, call, _ = mapped(raw)
    acct = ev.recipient_account_id
    assert action(call) == "ram:CreateUser"
    assert f"acs:ram::{acct}:user/{user}" in resources(call)


def test_ims_create_access_key_for_another_user() -> None:
    raw = {**example("e6_ram_user_sdk_2016.json"), "serviceName": "Ims", "eventName": "CreateAccessKey",
           "eventSource": "ims.aliyuncs.com", "acsRegion": "cn-hangzhou",
           "requestParameters": {"UserName": "admin-bob", "AcsProduct": "Ims"}}
    _, call, _ = mapped(raw)
    assert action(call) == "ram:CreateAccessKey"
    assert resources(call) == ["acs:ram::43274:user/admin-bob"]


def test_referenced_ram_user_is_global() -> None:
    raw = {**example("e6_ram_user_sdk_2016.json"), "serviceName": "Ims", "eventName": "GetUser",
           "acsRegion": "cn-hangzhou", "referencedResources": {"ACS::RAM::User": ["alice"]}}
    _, call, _ = mapped(raw)
    assert resources(call) == ["acs:ram::43274:user/alice"]


def test_ram_resources_never_carry_a_region_in_real_traffic() -> None:
    ram: list[str] = []
    for raw in real_events():
        _, call, _ = mapped(raw)
        ram.extend(r for r in resources(call) if r.startswith("acs:ram:"))
    assert len(ram) > 50  # 59 Ims events in the dataset
    for arn in ram:
        match = ARN.match(arn)
        assert match, arn
        assert match["region"] == "", arn
    assert any(":user/" in arn for arn in ram)


# -- every real event maps ---------------------------------------------------------------------------
def test_every_real_attack_event_maps() -> None:
    events = real_events()
    assert len(events) == 502
    for raw in events:
        ev, call, caller = mapped(raw)
        act = action(call)
        assert ACTION.match(act), (ev.event_id, act)
        res = resources(call)
        assert res, ev.event_id
        for arn in res:
            assert arn.startswith("acs:"), (ev.event_id, arn)
            assert ARN.match(arn), (ev.event_id, arn)
        ctx = context(caller)
        assert ctx["acs:CurrentTime"] == ev.event_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        if ev.ip_version is None:
            assert "acs:SourceIp" not in ctx, ev.event_id  # "AWS Internal", hostnames


def test_detector_columns_map_like_the_normalizer(store: Store) -> None:
    """What the detector reads back from the store (load_events) maps to the same requests as
    the typed event, including the request parameters loaded only for parameter targets."""
    ingest_files(store, [REAL_ATTACKS], Attributor(None))
    columns = list(dict.fromkeys(("event_id", "event_time", "agent", *OutOfScope.columns)))
    df = load_events(store, columns, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert len(df) == 502
    df = df.astype(object).where(df.notna(), None)
    by_id = {normalize(e).event_id: normalize(e) for e in real_events()}
    for row in df.itertuples(index=False):
        acct = row.recipient_account_id or row.account_id
        from_store = CallFacts(row.event_type, row.event_name, row.service_name, row.service_code,
                               row.acs_region, acct, row.referenced_resources, row.resource_type,
                               row.resource_name, row.request_parameters)
        typed = call_facts(by_id[row.event_id])
        assert (action(from_store), resources(from_store)) == (action(typed), resources(typed)), row.event_id


# -- unknown condition keys --------------------------------------------------------------------------
def test_keys_the_log_cannot_supply_are_unknown() -> None:
    _, call, caller = mapped(example("e4_service_role_create_eni.json"))
    keys = frozenset({"acs:resourcetag/env", "ecs:tag/team", "acs:sourceip", "acs:mfapresent",
                      "acs:currenttime", "acs:accessid", "acs:principalarn", "acs:securetransport",
                      "acs:sourcevpc", "acs:useragent"})
    reqs = requests(call, caller, keys)
    assert reqs
    for req in reqs:
        # E4's source IP is masked (11.168.XX.XX): asked about, it is unknown too
        assert req.unknown == frozenset({"acs:resourcetag/env", "ecs:tag/team", "acs:sourceip"})


def test_resource_tag_condition_gives_unknown_decision() -> None:
    _, call, caller = mapped(example("e4_service_role_create_eni.json"))
    policies = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "ecs:CreateNetworkInterface", "Resource": "*",
         "Condition": {"StringEquals": {"acs:ResourceTag/env": "staging"}}}]}])
    assert policies.condition_keys == frozenset({"acs:resourcetag/env"})
    for req in requests(call, caller, policies.condition_keys):
        assert "acs:resourcetag/env" in req.unknown
        assert policies.evaluate(req).decision is Decision.UNKNOWN


def test_no_policy_keys_no_unknowns() -> None:
    _, call, caller = mapped(example("e3_assumed_role.json"))
    (req,) = requests(call, caller, frozenset())
    assert req.unknown == frozenset()
    assert req.action == "actiontrail:LookupEvents"
    assert req.context["acs:AccessId"].startswith("STS.")


def test_no_resource_convention_matches_star_not_instance_pattern() -> None:
    """notes 2.2: a call without a resource maps to acs:<code>:<region>:<account>:*, which a
    "Resource": "*" statement matches and an instance/* statement does not."""
    _, call, caller = mapped(example("e6_ram_user_sdk_2016.json") | {"eventName": "DescribeTrails"})
    (req,) = requests(call, caller, frozenset())
    star = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "actiontrail:Describe*", "Resource": "*"}]}])
    narrow = PolicySet.from_documents([{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "actiontrail:Describe*", "Resource": "acs:actiontrail:*:*:trail/*"}]}])
    assert star.evaluate(req).decision is Decision.ALLOW
    assert narrow.evaluate(req).decision is Decision.IMPLICIT_DENY


def test_a_masked_source_ip_is_unknown_not_absent() -> None:
    """A policy that limits source IPs cannot decide a call whose IP the log masked ("Internal",
    "192.168.XX.XX"): a Deny ... NotIpAddress would otherwise fire on every such call."""
    from models.policy import PolicySet

    docs = [{"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "oss:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"NotIpAddress": {"acs:SourceIp": ["203.0.113.0/24"]}}}]}]
    policies = PolicySet.from_documents(docs)
    for source, version, expected in (("Internal", None, "Unknown"), ("192.168.XX.XX", None, "Unknown"),
                                      ("203.0.113.9", 4, "Allow"), ("8.8.8.8", 4, "ExplicitDeny"),
                                      (None, None, "ExplicitDeny")):
        facts = CallFacts("ApiCall", "GetObject", "Oss", None, "cn-hangzhou", "1", None, None, None, None)
        caller = CallerFacts(datetime(2026, 11, 1, tzinfo=UTC), source, version, None, None, None, None,
                             "ram-user", "1", "u", None, None)
        [req] = requests(facts, caller, policies.condition_keys)
        assert policies.evaluate(req).decision.value == expected, source
