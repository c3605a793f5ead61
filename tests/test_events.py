"""pipeline.ingest.events.normalize: ActionTrail's format drift in, one typed Event out.

Each case names what a user would notice if it broke: a failed call counted as a success, a role
attributed to the wrong identity, an event time off by eight hours, a whole file crashing ingest.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.events import EVENT_COLUMNS, Event, MalformedEvent, ip_version, normalize
from tests.conftest import BASE_EVENT, FIXTURES, REAL_ATTACKS

EXAMPLES = FIXTURES / "actiontrail_examples"
SYNTHETIC_FAILED = FIXTURES / "synthetic" / "e9_failed_call.SYNTHETIC.json"
MIGRATION = Path(__file__).resolve().parent.parent / "pipeline" / "store" / "migrations" / "0001_init.sql"

# A RAM user's API call with an AccessKey (conftest's BASE_EVENT), with no error fields at all.
BASE: dict[str, Any] = {**{k: v for k, v in BASE_EVENT.items() if k not in ("errorCode", "errorMessage")},
                        "eventId": "0D690264-0D51-4B4F-8AEE-000000000001"}

_MISSING = object()


def make(**overrides: Any) -> dict[str, Any]:
    """BASE with top-level overrides; an override of ``_MISSING`` deletes the key."""
    ev = copy.deepcopy(BASE)
    for key, value in overrides.items():
        if value is _MISSING:
            ev.pop(key, None)
        else:
            ev[key] = value
    return ev


def with_identity(**identity: Any) -> dict[str, Any]:
    return make(userIdentity=identity)


def load_example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def is_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


# --- type drift -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", 1], ids=["string", "number"])
def test_event_version_string_or_number_is_the_same_version(version: Any) -> None:
    assert normalize(make(eventVersion=version)).event_version == "1"


@pytest.mark.parametrize(
    ("code", "message"),
    [(_MISSING, _MISSING), ("", ""), (_MISSING, ""), ("", _MISSING)],
    ids=["both-absent", "both-empty", "code-absent-message-empty", "code-empty-message-absent"],
)
def test_absent_or_empty_error_code_is_a_success(code: Any, message: Any) -> None:
    event = normalize(make(errorCode=code, errorMessage=message))
    assert event.error_code is None
    assert event.error_message is None
    assert not event.failed


def test_failed_call_keeps_error_code_and_message() -> None:
    event = normalize(make(errorCode="NoPermission", errorMessage="You are not authorized."))
    assert event.error_code == "NoPermission"
    assert event.error_message == "You are not authorized."
    assert event.failed


def test_synthetic_failed_call_fixture_is_a_failure() -> None:
    event = normalize(json.loads(SYNTHETIC_FAILED.read_text(encoding="utf-8")))
    assert event.failed
    assert (event.error_code, event.error_message) == ("NoPermission", "You are not authorized.")
    assert event.identity == "ram-user:Alice"


@pytest.mark.parametrize("shape", ["attributes", "sessionAttributes"])
@pytest.mark.parametrize(("mfa_text", "mfa"), [("true", True), ("false", False)])
def test_session_context_current_and_old_shapes_give_mfa_and_creation(
        shape: str, mfa_text: str, mfa: bool) -> None:
    event = normalize(with_identity(
        type="assumed-role", principalId="300000000000000001:s1", accountId="1384926508761234",
        userName="deployer:s1", accessKeyId="STS.NUQNP4PiGyckMsNiGELCs0001",
        sessionContext={shape: {"mfaAuthenticated": mfa_text,
                                "creationDate": "2021-01-01T00:00:00Z"}}))
    assert event.mfa_authenticated is mfa
    assert event.session_created == datetime(2021, 1, 1, tzinfo=UTC)
    assert is_utc(event.session_created)


def test_session_context_without_creation_date_still_gives_mfa() -> None:
    # The 2025 LookupEvents example (E8) has only mfaAuthenticated.
    event = normalize(with_identity(type="ram-user", userName="u",
                                    sessionContext={"attributes": {"mfaAuthenticated": "true"}}))
    assert event.mfa_authenticated is True
    assert event.session_created is None


def test_no_session_context_means_mfa_unknown() -> None:
    event = normalize(make())
    assert event.mfa_authenticated is None
    assert event.session_created is None


def test_referenced_resources_dict_and_list_shapes_normalize_identically() -> None:
    as_dict = {"ACS::RAM::User": ["alice", "bob"], "VSwitch": ["vsw-bp1iqqma1noh402c8****"]}
    as_list = [
        {"resourceType": "ACS::RAM::User", "resourceName": "alice"},
        {"resourceType": "ACS::RAM::User", "resourceName": "bob"},
        {"resourceType": "VSwitch", "resourceName": "vsw-bp1iqqma1noh402c8****"},
    ]
    from_dict = normalize(make(referencedResources=as_dict)).referenced_resources
    from_list = normalize(make(referencedResources=as_list)).referenced_resources
    assert from_dict == from_list
    assert from_dict is not None
    assert json.loads(from_dict) == as_dict


@pytest.mark.parametrize(("value", "expected"), [({}, None), ([], None), (_MISSING, None)],
                         ids=["empty-dict", "empty-list", "absent"])
def test_no_referenced_resources_is_null(value: Any, expected: Any) -> None:
    assert normalize(make(referencedResources=value)).referenced_resources is expected


@pytest.mark.parametrize(
    ("ip", "version"),
    [("Internal", None), ("192.168.XX.XX", None), ("2001:db8::8a2e:370:7334", 6),
     ("42.120.74.96", 4), ("", None)],
    ids=["internal", "masked", "ipv6", "ipv4", "empty"],
)
def test_source_ip_kept_as_text_and_version_only_for_real_addresses(ip: str, version: int | None) -> None:
    event = normalize(make(sourceIpAddress=ip))
    assert event.source_ip == ip
    assert event.ip_version == version
    assert ip_version(ip) == version


# --- identity -------------------------------------------------------------------------------


def test_assumed_role_splits_role_session_and_role_id() -> None:
    event = normalize(with_identity(
        type="assumed-role", principalId="34359792600393****:u1", accountId="159498693826****",
        userName="custom-role-for-actiontrail:u1", accessKeyId="STS.NUQNP4PiGyckMsNiGELCs****"))
    assert event.identity_type == "assumed-role"
    assert event.role_name == "custom-role-for-actiontrail"
    assert event.session_name == "u1"
    assert event.role_id == "34359792600393****"
    assert event.identity == "role:custom-role-for-actiontrail"
    assert event.access_key_id == "STS.NUQNP4PiGyckMsNiGELCs****"


def test_assumed_role_session_name_may_contain_colons_and_at_signs() -> None:
    # SAML SSO (E7): the session is an email; a role is aggregated by the part before the first ':'.
    event = normalize(with_identity(type="assumed-role", principalId="1794:Alice@x.com:extra",
                                    userName="testrole:Alice@x.com:extra"))
    assert event.role_name == "testrole"
    assert event.session_name == "Alice@x.com:extra"
    assert event.role_id == "1794"
    assert event.identity == "role:testrole"


def test_ram_user_identity() -> None:
    event = normalize(make())
    assert event.identity == "ram-user:ci-deploy"
    assert event.user_name == "ci-deploy"
    assert (event.role_name, event.role_id, event.session_name) == (None, None, None)
    assert event.access_key_id == "LTAI5tCiDeploy7Qx2mK"


def test_root_account_identity_is_the_account_id() -> None:
    event = normalize(with_identity(type="root-account", principalId="151266687691****",
                                    accountId="151266687691****", userName="root"))
    assert event.identity == "root-account:151266687691****"
    assert event.account_id == "151266687691****"


def test_missing_access_key_id_is_none() -> None:
    # Console actions carry no AccessKey (E1, E2, E5).
    event = normalize(with_identity(type="ram-user", principalId="1", accountId="2", userName="Alice"))
    assert event.access_key_id is None
    assert event.identity == "ram-user:Alice"


def test_empty_access_key_id_is_none() -> None:
    event = normalize(with_identity(type="ram-user", userName="Alice", accessKeyId=""))
    assert event.access_key_id is None


@pytest.mark.parametrize(
    ("identity", "expected"),
    [({"type": "system", "userName": "ecs.aliyuncs.com"}, "system:ecs.aliyuncs.com"),
     ({"accessKeyId": "LTAI5tOnly"}, "access-key:LTAI5tOnly"),
     ({}, "unknown:unknown")],
    ids=["system", "access-key-only", "empty"],
)
def test_identity_fallbacks(identity: dict[str, Any], expected: str) -> None:
    assert normalize(make(userIdentity=identity)).identity == expected


def test_absent_user_identity_is_unknown_not_an_error() -> None:
    event = normalize(make(userIdentity=_MISSING))
    assert event.identity == "unknown:unknown"
    assert event.identity_type is None


def test_numeric_account_and_principal_ids_become_text() -> None:
    event = normalize(with_identity(type="ram-user", userName="a", accountId=43274,
                                    principalId=274180646548292385))
    assert event.account_id == "43274"
    assert event.principal_id == "274180646548292385"


# --- other fields ---------------------------------------------------------------------------


def test_unknown_keys_are_ignored() -> None:
    plain = normalize(make(), raw="{}")
    extra = normalize(make(__expanded=True, someFutureField={"x": 1}), raw="{}")
    assert extra == plain


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2021-01-01T08:00:00Z", datetime(2021, 1, 1, 8, tzinfo=UTC)),
     ("2021-01-01T16:00:00+08:00", datetime(2021, 1, 1, 8, tzinfo=UTC)),
     ("2021-01-01T08:00:00", datetime(2021, 1, 1, 8, tzinfo=UTC)),
     ("2020-12-31T19:00:00-13:00", datetime(2021, 1, 1, 8, tzinfo=UTC)),
     ("2021-01-01T08:00:00.250Z", datetime(2021, 1, 1, 8, 0, 0, 250000, tzinfo=UTC))],
    ids=["zulu", "plus-0800-converted", "no-offset-is-utc", "minus-1300-crosses-year", "fraction"],
)
def test_event_time_is_always_aware_utc(text: str, expected: datetime) -> None:
    event = normalize(make(eventTime=text))
    assert event.event_time == expected
    assert is_utc(event.event_time)
    assert event.event_time.utcoffset() == timedelta(0)


def test_raw_text_is_kept_exactly_when_given() -> None:
    text = '{ "eventId" : "a",\n  "eventTime": "2021-01-01T00:00:00Z", "x": "\\u00e9" }'
    event = normalize(json.loads(text), raw=text)
    assert event.raw == text


def test_raw_is_a_compact_reencoding_when_not_given() -> None:
    obj = make(userAgent="naïve 漢字")
    event = normalize(obj)
    assert json.loads(event.raw) == obj
    assert event.raw == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    assert "\n" not in event.raw
    assert ", " not in event.raw.replace("naïve 漢字", "")


def test_payload_properties_are_read_from_raw() -> None:
    obj = make(responseElements={"RequestId": "R"}, additionalEventData={"Scheme": "https"})
    # The typed columns come from ``obj``; the payloads from ``raw``, which is what the store keeps.
    raw = json.dumps({**obj, "requestParameters": {"from": "raw"}})
    event = normalize(obj, raw=raw)
    assert event.request_parameters == {"from": "raw"}
    assert event.response_elements == {"RequestId": "R"}
    assert event.additional_event_data == {"Scheme": "https"}
    assert normalize(make(requestParameters=_MISSING)).request_parameters is None


def test_is_global_bool_or_absent() -> None:
    assert normalize(make(isGlobal=True)).is_global is True
    assert normalize(make(isGlobal=False)).is_global is False
    assert normalize(make()).is_global is None


# --- rejections -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "mentions"),
    [
        pytest.param(["not", "an", "event"], "not an object", id="array-not-object"),
        pytest.param("text", "not an object", id="string-not-object"),
        pytest.param(None, "not an object", id="null-not-object"),
        pytest.param(make(eventId=_MISSING), "eventId", id="missing-eventId"),
        pytest.param(make(eventId=""), "eventId", id="empty-eventId"),
        pytest.param(make(eventTime=_MISSING), "eventTime", id="missing-eventTime"),
        pytest.param(make(eventTime="yesterday"), "eventTime", id="eventTime-not-a-time"),
        pytest.param(make(eventTime=1609459200), "eventTime", id="eventTime-a-number"),
        pytest.param(make(eventId=12345), "eventId", id="eventId-a-number"),
        pytest.param(make(userIdentity="ram-user:alice"), "userIdentity", id="userIdentity-string"),
        pytest.param(make(userIdentity=["x"]), "userIdentity", id="userIdentity-array"),
        pytest.param(make(isGlobal="maybe"), "isGlobal", id="isGlobal-maybe"),
        pytest.param(make(referencedResources="ACS::RAM::User"), "referencedResources",
                     id="referencedResources-string"),
        pytest.param(make(referencedResources=["vsw-1"]), "referencedResources",
                     id="referencedResources-list-of-strings"),
        pytest.param(make(eventName=["DescribeInstances"]), "eventName", id="eventName-array"),
        pytest.param(make(userIdentity={"type": "ram-user", "userName": {"n": 1}}),
                     "userName", id="userName-object"),
        pytest.param(make(userIdentity={"sessionContext": {"attributes": {"mfaAuthenticated": "yes"}}}),
                     "mfaAuthenticated", id="mfa-yes"),
        pytest.param(make(userIdentity={"sessionContext": {"attributes": {"creationDate": "soon"}}}),
                     "creationDate", id="creationDate-not-a-time"),
    ],
)
def test_rejections_say_which_field(obj: Any, mentions: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        normalize(obj)
    assert mentions in str(info.value)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_out_of_range_event_time_is_rejected_not_crashed(text: str) -> None:
    with pytest.raises(MalformedEvent, match="eventTime"):
        normalize(make(eventTime=text))


# --- the documented examples and the real-attack dataset ------------------------------------

# What each documented example must give: a few columns a detector or an analyst reads.
EXAMPLE_EXPECTATIONS: dict[str, dict[str, Any]] = {
    "e1_ram_user_console_signin.json": {
        "event_type": "ConsoleSignin", "identity": "ram-user:Alice", "ip_version": None,
        "error_code": None, "error_message": None, "access_key_id": None, "event_version": "1"},
    "e2_root_console_signin_global.json": {
        "identity": "root-account:151266687691****", "is_global": True, "event_version": "1"},
    "e3_assumed_role.json": {
        "identity": "role:custom-role-for-actiontrail", "role_id": "34359792600393****",
        "session_name": "u1", "mfa_authenticated": False,
        "session_created": datetime(2021, 1, 1, tzinfo=UTC)},
    "e4_service_role_create_eni.json": {
        "identity": "role:aliyunstreamdefaultrole", "session_name": "116214825062****",
        "referenced_resources":
            '{"VSwitch":["vsw-bp1iqqma1noh402c8****"],"SecurityGroup":["sg-bp10mvd143r6lfks****"]}'},
    "e5_root_oss_put_bucket.json": {
        "identity": "root-account:189217171671****", "source_ip": "Internal", "ip_version": None,
        "is_global": False, "referenced_resources": '{"ACS::OSS::Bucket":["test-123"]}'},
    "e6_ram_user_sdk_2016.json": {
        "identity": "ram-user:Alice", "access_key_id": "f6IzzFZMmzNwEI4d", "ip_version": 4,
        "acs_region": None, "event_time": datetime(2016, 1, 6, 3, 29, 15, tzinfo=UTC)},
    "e7_saml_role_sso.json": {
        "identity": "role:testrole", "session_name": "Alice@159498693826****.com",
        "user_agent": "", "acs_region": "cn-shanghai"},
    "e8_lookup_events_response.json": {
        "event_id": "68D4BC64B29A8D36369698D9", "event_type": "ConsoleOperation", "event_rw": "Read",
        "identity": "role:GLOCHNALI-Cloud-Contributor", "mfa_authenticated": False,
        "session_created": None, "ip_version": 4, "event_version": "1"},
}


def test_every_example_file_has_expectations() -> None:
    names = {p.name for p in EXAMPLES.glob("*.json") if not p.name.endswith(".raw.json")}
    assert names == set(EXAMPLE_EXPECTATIONS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_EXPECTATIONS))
def test_documented_example_normalizes(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    doc = json.loads(text)
    if "Events" in doc:  # E8 is a LookupEvents response body
        events = [normalize(e) for e in doc["Events"]]
        assert len(events) == 1
        event = events[0]
    else:
        event = normalize(doc, raw=text)
        assert event.raw == text
    assert is_utc(event.event_time)
    got = {key: getattr(event, key) for key in EXAMPLE_EXPECTATIONS[name]}
    assert got == EXAMPLE_EXPECTATIONS[name]


@pytest.mark.parametrize("name", ["e3_assumed_role.raw.json", "e4_service_role_create_eni.raw.json"])
def test_verbatim_masked_example_is_not_json_and_repair_changes_one_value(name: str) -> None:
    verbatim = (EXAMPLES / name).read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        json.loads(verbatim)  # so a reader reports it as malformed (quarantine) instead of an event
    repaired_text = (EXAMPLES / name.replace(".raw.json", ".json")).read_text(encoding="utf-8")
    repaired = json.loads(repaired_text)
    masked = re.search(r'"stsTokenPlayerUid": (\d+\*\*\*\*)', verbatim)
    assert masked is not None
    assert repaired["requestParameters"]["stsTokenPlayerUid"] == masked.group(1)
    assert verbatim.replace(masked.group(0), f'"stsTokenPlayerUid": "{masked.group(1)}"') == repaired_text


def _real_attack_events() -> list[tuple[str, int, str]]:
    out = []
    for name in ("invictus.jsonl", "otrf.jsonl", "stratus.jsonl"):
        with (REAL_ATTACKS / name).open(encoding="utf-8") as fh:
            out.extend((name, n, line.rstrip("\n")) for n, line in enumerate(fh, 1) if line.strip())
    return out


def test_all_real_attack_events_normalize_with_unique_ids() -> None:
    lines = _real_attack_events()
    assert len(lines) == 502
    events: list[Event] = []
    for name, lineno, text in lines:
        try:
            events.append(normalize(json.loads(text), raw=text))
        except MalformedEvent as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{name}:{lineno}: {exc}")
    ids = [e.event_id for e in events]
    assert len(set(ids)) == 502
    assert all(is_utc(e.event_time) for e in events)
    assert all(e.raw == text for e, (_, _, text) in zip(events, lines, strict=True))


def test_real_attack_events_agree_with_labels_csv() -> None:
    events = {}
    for _, _, text in _real_attack_events():
        event = normalize(json.loads(text), raw=text)
        events[event.event_id] = event
    with (REAL_ATTACKS / "labels.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 502
    for row in rows:
        event = events[row["eventId"]]
        got = {
            "eventTime": event.event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "serviceName": event.service_name or "",
            "eventName": event.event_name or "",
            "identityType": event.identity_type or "",
            "userName": event.user_name or "",
            "errorCode": event.error_code or "",
        }
        assert got == {k: row[k] for k in got}, row["eventId"]
    failed = sum(1 for e in events.values() if e.failed)
    assert failed == sum(1 for r in rows if r["errorCode"])
    assert failed > 0  # the dataset's denied-call storms must read as failures


# --- schema ---------------------------------------------------------------------------------


def test_event_columns_match_the_events_table_in_order() -> None:
    con = duckdb.connect()
    try:
        con.execute(MIGRATION.read_text(encoding="utf-8"))
        stored = [r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events' "
            "ORDER BY column_index").fetchall()]
    finally:
        con.close()
    store_added = {"agent", "source", "ingested_at"}
    virtual = {"request_parameters", "response_elements", "additional_event_data"}
    assert set(stored) >= store_added | virtual
    assert [c for c in stored if c not in store_added | virtual] == list(EVENT_COLUMNS)
    # The store appends its columns after the event's, so positional inserts line up.
    assert stored[: len(EVENT_COLUMNS)] == list(EVENT_COLUMNS)


# --- property: drift never breaks normalize -------------------------------------------------

_OFFSETS = [timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30)),
            timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
# st.datetimes() takes naive bounds; timezones are applied explicitly below.
_EARLIEST = datetime(2000, 1, 1)  # noqa: DTZ001
_LATEST = datetime(2100, 1, 1)  # noqa: DTZ001
# eventTime is drawn where an event can be dated (EARLIEST_EVENT_TIME, a day less for time zone
# offsets, up to "now", fixed at _LATEST): outside it normalize refuses it (tested on its own).
_EVENT_EARLIEST = datetime(2010, 1, 2)  # noqa: DTZ001
_NOW = _LATEST.replace(tzinfo=UTC)
_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.@*", min_size=1, max_size=12)


@st.composite
def drifted_events(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event varying along every documented drift dimension, and what normalize must give."""
    expect: dict[str, Any] = {}
    ev: dict[str, Any] = {"eventId": draw(_NAME), "eventName": "DescribeInstances"}

    when = draw(st.datetimes(min_value=_EVENT_EARLIEST, max_value=_LATEST))
    tz_kind = draw(st.sampled_from(["Z", "naive", "offset"]))
    if tz_kind == "Z":
        ev["eventTime"] = when.isoformat() + "Z"
        expect["event_time"] = when.replace(tzinfo=UTC)
    elif tz_kind == "naive":
        ev["eventTime"] = when.isoformat()
        expect["event_time"] = when.replace(tzinfo=UTC)
    else:
        local = when.replace(tzinfo=draw(st.sampled_from(_OFFSETS)))
        ev["eventTime"] = local.isoformat()
        expect["event_time"] = local.astimezone(UTC)

    version = draw(st.sampled_from(["1", 1, _MISSING]))
    if version is not _MISSING:
        ev["eventVersion"] = version
    expect["event_version"] = None if version is _MISSING else "1"

    code = draw(st.sampled_from([_MISSING, "", "NoPermission"]))
    message = draw(st.sampled_from([_MISSING, "", "You are not authorized."]))
    for key, value in (("errorCode", code), ("errorMessage", message)):
        if value is not _MISSING:
            ev[key] = value
    expect["error_code"] = "NoPermission" if code == "NoPermission" else None
    if code != "NoPermission":
        expect["error_message"] = "You are not authorized." if message == "You are not authorized." else None

    ip_text, ip_v = draw(st.one_of(
        st.sampled_from([("Internal", None), ("192.168.XX.XX", None), ("", None)]),
        st.ip_addresses(v=4).map(lambda a: (str(a), 4)),
        st.ip_addresses(v=6).map(lambda a: (str(a), 6)),
    ))
    ev["sourceIpAddress"] = ip_text
    expect["source_ip"], expect["ip_version"] = ip_text, ip_v

    itype = draw(st.sampled_from(["ram-user", "assumed-role", "root-account", "system"]))
    account = draw(st.from_regex(r"\A[0-9]{12}\*{0,4}\Z"))
    identity: dict[str, Any] = {"type": itype, "accountId": account}
    if itype == "assumed-role":
        role, session = draw(_NAME), draw(_NAME)
        identity.update(userName=f"{role}:{session}", principalId=f"3000{account}:{session}",
                        accessKeyId="STS." + draw(_NAME))
        expect.update(identity=f"role:{role}", role_name=role, session_name=session,
                      role_id=f"3000{account}")
    elif itype == "root-account":
        identity.update(userName="root", principalId=account)
        expect["identity"] = f"root-account:{account}"
    else:
        name = draw(_NAME)
        identity.update(userName=name, principalId="2741806465")
        expect["identity"] = f"{itype}:{name}"
    if draw(st.booleans()):
        identity["accessKeyId"] = "LTAI" + draw(_NAME)

    ctx_shape = draw(st.sampled_from([_MISSING, "empty", "attributes", "sessionAttributes"]))
    expect["mfa_authenticated"] = expect["session_created"] = None
    if ctx_shape == "empty":
        identity["sessionContext"] = {}
    elif ctx_shape is not _MISSING:
        attrs: dict[str, Any] = {}
        mfa = draw(st.sampled_from([_MISSING, "true", "false", True, False]))
        if mfa is not _MISSING:
            attrs["mfaAuthenticated"] = mfa
            expect["mfa_authenticated"] = mfa in ("true", True)
        if draw(st.booleans()):
            created = draw(st.datetimes(min_value=_EARLIEST, max_value=_LATEST)).replace(microsecond=0)
            attrs["creationDate"] = created.isoformat() + "Z"
            expect["session_created"] = created.replace(tzinfo=UTC)
        identity["sessionContext"] = {ctx_shape: attrs}
    ev["userIdentity"] = identity

    resources = draw(st.dictionaries(st.sampled_from(["ACS::RAM::User", "ACS::OSS::Bucket", "VSwitch"]),
                                     st.lists(_NAME, min_size=1, max_size=3), max_size=3))
    shape = draw(st.sampled_from([_MISSING, "dict", "list"]))
    if shape == "dict":
        ev["referencedResources"] = resources
    elif shape == "list":
        ev["referencedResources"] = [{"resourceType": t, "resourceName": n}
                                     for t, names in resources.items() for n in names]
    expect["referenced_resources"] = (
        json.dumps(resources, separators=(",", ":")) if shape is not _MISSING and resources else None)

    if draw(st.booleans()):
        ev["__expanded"] = True
    return ev, expect


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drifted_events())
def test_drifted_events_always_normalize_to_utc(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    obj, expect = case
    event = normalize(obj, now=_NOW)
    assert is_utc(event.event_time)
    if event.session_created is not None:
        assert is_utc(event.session_created)
    assert {key: getattr(event, key) for key in expect} == expect
    assert json.loads(event.raw) == obj
