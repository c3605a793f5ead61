"""ActionTrail event -> the RAM request it made: action, resource ARNs, condition context.

Rules from ../shared/notes/ram-policy.md section 2:

* action = RAM code + ":" + eventName. The code is ``requestParameters.ServiceCode`` when the
  event carries it, else ``serviceName`` lower-cased through a table of exceptions (``Ims`` is
  RAM user management, so ``ram``).
* resource = ``acs:<code>:<region>:<account>:<relative-id>`` for each referenced resource, from a
  per-type template (``ACS::ECS::Instance`` -> ``instance/<id>``, OSS -> ``<bucket>[/<key>]``,
  ``ACS::RAM::User`` -> ``user/<name>``); RAM and STS resources are global (empty region). A call
  with no resource maps to ``acs:<code>:<region>:<account>:*`` (a project convention: it lets
  ``"Resource": "*"`` match while ``instance/*`` does not).
* context: ``acs:CurrentTime``, ``acs:SourceIp`` (only a real address), ``acs:SourceVpc``,
  ``acs:MFAPresent`` (only when a session recorded it), ``acs:AccessId``, ``acs:SecureTransport``
  (from the scheme), ``acs:PrincipalARN``, ``acs:UserAgent``. Any other key a policy tests
  (resource tags, service keys) cannot be known from the log: it is *unknown*; so is the source
  IP when the log masks it ("Internal", "192.168.XX.XX") rather than leaving it out.
* console sign-ins/outs, Alibaba Cloud's own service events and console operations are not
  scope-checked (the last because their names are not always API names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.columns import distinct_codes
from models.policy import Request

# Not RAM-authorized API calls: sign-ins, Alibaba Cloud acting on its own, and console operations
# (their eventName is a console operation, not always an API name; no mapping table exists yet).
NOT_AUTHORIZED_EVENT_TYPES = frozenset({"ConsoleSignin", "ConsoleSignout", "AliyunServiceEvent", "PasswordReset",
                                        "ConsoleOperation", "ConsoleCall"})
SIGNIN_SERVICES = frozenset({"aassub", "aascustomer"})

# serviceName (lower-case) -> RAM code, where the two differ.
RAM_CODE_EXCEPTIONS = {
    "ims": "ram",  # RAM user management is logged as Ims
    "ram": "ram",
    "slb": "slb",
    "kms": "kms",
    "actiontrail": "actiontrail",
    "sls": "log",
    "log": "log",
    "cms": "cms",
    "resourcemanager": "resourcemanager",
}
GLOBAL_CODES = frozenset({"ram", "sts", "ims", "resourcemanager"})

# referencedResources type -> (RAM code override or None, relative-id prefix: the name follows it)
RESOURCE_TEMPLATES: dict[str, tuple[str | None, str]] = {
    "acs::ecs::instance": (None, "instance/"),
    "acs::ecs::disk": (None, "disk/"),
    "acs::ecs::snapshot": (None, "snapshot/"),
    "acs::ecs::image": (None, "image/"),
    "acs::ecs::securitygroup": (None, "securitygroup/"),
    "acs::ecs::networkinterface": (None, "networkinterface/"),
    "acs::ecs::keypair": (None, "keypair/"),
    "securitygroup": (None, "securitygroup/"),
    "vswitch": ("vpc", "vswitch/"),
    "acs::vpc::vswitch": ("vpc", "vswitch/"),
    "acs::vpc::vpc": ("vpc", "vpc/"),
    "acs::oss::bucket": ("oss", ""),
    "acs::oss::object": ("oss", ""),
    "acs::ram::user": ("ram", "user/"),
    "acs::ram::role": ("ram", "role/"),
    "acs::ram::group": ("ram", "group/"),
    "acs::ram::policy": ("ram", "policy/"),
    "acs::rds::dbinstance": ("rds", "dbinstance/"),
    "acs::slb::loadbalancer": ("slb", "loadbalancer/"),
    "acs::kms::secret": ("kms", "secret/"),
    "acs::kms::key": ("kms", "key/"),
    "acs::actiontrail::trail": ("actiontrail", "trail/"),
    "acs::sls::project": ("log", "project/"),
}

# APIs whose target is only in requestParameters: parameter -> relative-id template.
_USER_APIS = ("GetUser", "CreateUser", "UpdateUser", "DeleteUser", "CreateAccessKey", "DeleteAccessKey",
              "UpdateAccessKey", "ListAccessKeys", "CreateLoginProfile", "GetLoginProfile",
              "UpdateLoginProfile", "DeleteLoginProfile", "AttachPolicyToUser", "DetachPolicyFromUser",
              "ListPoliciesForUser", "AddUserToGroup", "RemoveUserFromGroup", "BindMFADevice",
              "UnbindMFADevice", "PutUserPolicy", "AttachUserPolicy")  # the last two: AWS-shaped exports
_ROLE_APIS = ("GetRole", "CreateRole", "UpdateRole", "DeleteRole", "AttachPolicyToRole",
              "DetachPolicyFromRole", "ListPoliciesForRole", "PutRolePolicy", "AttachRolePolicy",
              "UpdateAssumeRolePolicy")
PARAMETER_TARGETS: dict[str, tuple[str, str, str]] = {
    # event name (lower): (code, parameter, template)
    "assumerole": ("ram", "RoleArn", "arn"),
    **{api.lower(): ("ram", "UserName", "user/{}") for api in _USER_APIS},
    **{api.lower(): ("ram", "RoleName", "role/{}") for api in _ROLE_APIS},
    "createpolicyversion": ("ram", "PolicyName", "policy/{}"),
    "setdefaultpolicyversion": ("ram", "PolicyName", "policy/{}"),
    "deletepolicy": ("ram", "PolicyName", "policy/{}"),
}

SUPPLIED_KEYS = frozenset({
    "acs:currenttime", "acs:sourceip", "acs:sourcevpc", "acs:mfapresent", "acs:accessid",
    "acs:securetransport", "acs:principalarn", "acs:useragent",
})


@dataclass(frozen=True, slots=True)
class CallFacts:
    """The columns of an event that decide its RAM request (a row of the ``events`` table)."""

    event_type: str | None
    event_name: str | None
    service_name: str | None
    service_code: str | None  # requestParameters.ServiceCode, when present
    acs_region: str | None
    account: str | None  # recipientAccountId, else the identity's account
    referenced_resources: str | None  # normalized JSON {"type": [names]}
    resource_type: str | None
    resource_name: str | None
    request_parameters: str | None  # JSON, only needed for PARAMETER_TARGETS events


def is_authorized_call(event_type: str | None, service_name: str | None) -> bool:
    """Only RAM-authorized API calls are scope-checked (not sign-ins or Alibaba's own events)."""
    if event_type in NOT_AUTHORIZED_EVENT_TYPES:
        return False
    return (service_name or "").lower() not in SIGNIN_SERVICES


def ram_code(service_name: str | None, service_code: str | None = None) -> str:
    if service_code:
        return RAM_CODE_EXCEPTIONS.get(service_code.lower(), service_code.lower())
    name = (service_name or "unknown").lower()
    return RAM_CODE_EXCEPTIONS.get(name, name)


def action(facts: CallFacts) -> str:
    return f"{ram_code(facts.service_name, facts.service_code)}:{facts.event_name or 'Unknown'}"


def resources(facts: CallFacts) -> list[str]:
    """Every resource ARN the call touched (at least one)."""
    code = ram_code(facts.service_name, facts.service_code)
    account = facts.account or "*"
    out: list[str] = []
    for rtype, names in _referenced(facts).items():
        override, prefix = RESOURCE_TEMPLATES.get(rtype.lower(), (None, _generic(rtype)))
        rcode = override or code
        region = "" if rcode in GLOBAL_CODES else (facts.acs_region or "")
        out.extend(f"acs:{rcode}:{region}:{account}:{prefix}{n}" for n in names)
    target = _parameter_target(facts, account)
    if target and target not in out:
        out.append(target)
    if not out:
        region = "" if code in GLOBAL_CODES else (facts.acs_region or "")
        out.append(f"acs:{code}:{region}:{account}:*")
    return out


def _referenced(facts: CallFacts) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    if facts.referenced_resources:
        try:
            loaded = json.loads(facts.referenced_resources)
        except ValueError:
            loaded = {}
        if isinstance(loaded, dict):
            refs = {str(k): [str(v) for v in vs] for k, vs in loaded.items() if isinstance(vs, list)}
    if facts.resource_type and facts.resource_name:
        refs.setdefault(facts.resource_type, [])
        if facts.resource_name not in refs[facts.resource_type]:
            refs[facts.resource_type].append(facts.resource_name)
    return refs


def _generic(rtype: str) -> str:
    """A type without a template: its last part, lower-cased (``ACS::Foo::Widget`` -> ``widget/``).
    A prefix, not a format string: a type from the log is text, braces included."""
    return rtype.rsplit("::", 1)[-1].lower() + "/"


def _parameter_target(facts: CallFacts, account: str) -> str | None:
    spec = PARAMETER_TARGETS.get((facts.event_name or "").lower())
    if not spec or not facts.request_parameters:
        return None
    code, param, template = spec
    try:
        params = json.loads(facts.request_parameters)
    except ValueError:
        return None
    if not isinstance(params, Mapping):
        return None
    value = params.get(param) or params.get(param[0].lower() + param[1:])
    if not isinstance(value, str) or not value:
        return None
    if template == "arn":
        return value if value.startswith("acs:") else None
    return f"acs:{code}::{account}:{template.format(value)}"


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """The columns of an event that make the condition context."""

    event_time: datetime
    source_ip: str | None
    ip_version: int | None
    vpc_id: str | None
    mfa_authenticated: bool | None
    access_key_id: str | None
    secure_transport: bool | None
    identity_type: str | None
    account_id: str | None
    user_name: str | None
    role_name: str | None
    user_agent: str | None


def context(caller: CallerFacts) -> dict[str, Any]:
    ctx: dict[str, Any] = {"acs:CurrentTime": caller.event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if caller.source_ip and caller.ip_version:
        ctx["acs:SourceIp"] = caller.source_ip
    if caller.vpc_id:
        ctx["acs:SourceVpc"] = caller.vpc_id
    if caller.mfa_authenticated is not None and not (caller.access_key_id or "").startswith("LTAI"):
        ctx["acs:MFAPresent"] = "true" if caller.mfa_authenticated else "false"
    if caller.access_key_id:
        ctx["acs:AccessId"] = caller.access_key_id
    if caller.secure_transport is not None:
        ctx["acs:SecureTransport"] = "true" if caller.secure_transport else "false"
    arn = principal_arn(caller)
    if arn:
        ctx["acs:PrincipalARN"] = arn
    if caller.user_agent:
        ctx["acs:UserAgent"] = caller.user_agent
    return ctx


def principal_arn(caller: CallerFacts) -> str | None:
    acct = caller.account_id or "*"
    if caller.identity_type == "ram-user" and caller.user_name:
        return f"acs:ram::{acct}:user/{caller.user_name}"
    if caller.identity_type == "assumed-role" and caller.role_name:
        return f"acs:ram::{acct}:role/{caller.role_name}"
    return None


def requests(facts: CallFacts, caller: CallerFacts, policy_keys: frozenset[str]) -> list[Request]:
    """One request per resource the call touched; keys a policy tests but the log cannot supply
    are marked unknown."""
    ctx = context(caller)
    unknown = {k for k in policy_keys if k not in SUPPLIED_KEYS}
    if "acs:sourceip" in policy_keys and caller.source_ip and not caller.ip_version:
        unknown.add("acs:sourceip")  # "Internal", masked "192.168.XX.XX": not absent, just not told
    return [Request(act, res, ctx, frozenset(unknown)) for act, res in _pairs(facts)]


def _pairs(facts: CallFacts) -> list[tuple[str, str]]:
    act = action(facts)
    return [(act, res) for res in resources(facts)]


# -- the same mapping in SQL, for many calls at once -------------------------------------------------
# ``resources`` and ``action`` cost ~10-25 µs a call in Python: an agent whose every call names an
# object of its own (a bulk download) has a distinct call per event. ``mapped_sql`` computes both
# in DuckDB for the calls whose mapping needs no Python rule, and says which those are (``exact``):
# not for a call whose target is in its request parameters, whose lower-cased texts (service
# names, resource types) are not ASCII (Python's and DuckDB's ``lower`` differ outside it), or
# whose references are anything but an object of lists of plain strings (no escapes, no null):
# those are mapped by ``resources`` as before. ``tests/models/test_mapping_sql.py`` holds the two
# to the same answer.
def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(expr: str, values: frozenset[str] | dict[str, Any]) -> str:
    return f"{expr} IN ({', '.join(_literal(v) for v in sorted(values))})"


def _ascii(expr: str) -> str:
    return f"coalesce(strlen({expr}) = length({expr}), true)"


def _map(table: Mapping[str, str | None]) -> str:
    return "MAP {" + ", ".join(f"{_literal(k)}: {_literal(v) if v is not None else 'NULL'}"
                               for k, v in table.items()) + "}"


def _region(code: str) -> str:
    return f"CASE WHEN {_in(code, GLOBAL_CODES)} THEN '' ELSE coalesce(acs_region, '') END"


# Referenced resources plainly an object of lists of strings, as RE2 reads it: JSON's whitespace
# between tokens, keys of printable ASCII (``lower`` is the same in SQL and Python) and strings
# without a quote, a backslash or a control character, each list holding at least one.
_SPACE = r"[ \t\n\r]*"
_PLAIN = r'[^"\\\x00-\x1f]*'  # a string's text without a quote, a backslash or a control character
_NAME = f'"{_PLAIN}"'
_ENTRY = rf'{_SPACE}"[ !#-\[\]-~]*"{_SPACE}:{_SPACE}\[{_SPACE}{_NAME}({_SPACE},{_SPACE}{_NAME})*{_SPACE}\]{_SPACE}'
_PLAIN_REFERENCES = rf"{_SPACE}\{{{_ENTRY}(,{_ENTRY})*\}}{_SPACE}"


def mapped_sql(source: str) -> str:
    """``source`` (a relation with ``CallFacts``' columns) with three more: ``exact`` (the
    mapping below is ``action``'s and ``resources``' own), ``mapped_action`` and
    ``mapped_resources`` (what ``resources`` gives, ``[]`` for a call that is not RAM-authorized;
    NULL where not ``exact``)."""
    refs = "referenced_resources::VARCHAR"
    # the references as a map, where they are plainly an object of lists of strings: its text is
    # checked against that shape (keys printable ASCII, strings without escapes; one regular
    # expression, where a parse to check it cost more than the mapping) and then parsed once (a
    # key given twice parses to NULL: the call is left to Python, whose parse keeps the last)
    plain = f"regexp_full_match(coalesce({refs}, ''), '{_PLAIN_REFERENCES}')"
    # ``ram_code``: the service code when given, else the service name (or "unknown"), lower-cased
    named = ("lower(CASE WHEN coalesce(service_code, '') <> '' THEN service_code "
             "WHEN coalesce(service_name, '') <> '' THEN service_name ELSE 'unknown' END)")
    code = f"coalesce({_map(RAM_CODE_EXCEPTIONS)}[{named}], {named})"
    # per type: its code and what goes before each name (lookups in constant maps, once per type)
    overrides = _map({k: v for k, (v, _) in RESOURCE_TEMPLATES.items()})
    prefixes = _map({k: p for k, (_, p) in RESOURCE_TEMPLATES.items()})
    last = "CASE WHEN strpos(reverse(e.key), '::') = 0 THEN e.key ELSE right(e.key, strpos(reverse(e.key), '::') - 1) END"
    rcode = f"coalesce({overrides}[lower(e.key)], _code)"
    head = (f"'acs:' || {rcode} || ':' || {_region(rcode)} || ':' || _account || ':' || "
            f"coalesce({prefixes}[lower(e.key)], lower({last}) || '/')")
    given = "coalesce(resource_type, '') <> '' AND coalesce(resource_name, '') <> ''"
    entries = "coalesce(map_entries(_map), [])"
    merged = (f"CASE WHEN NOT ({given}) THEN {entries} "
              "WHEN list_contains(coalesce(map_keys(_map), []), resource_type) THEN list_transform("
              f"{entries}, lambda e: CASE WHEN e.key = resource_type AND NOT list_contains(e.value, resource_name) "
              "THEN {'key': e.key, 'value': list_append(e.value, resource_name)} ELSE e END) "
              f"ELSE list_append({entries}, {{'key': resource_type, 'value': [resource_name]}}) END")
    authorized = (f"NOT coalesce({_in('event_type', NOT_AUTHORIZED_EVENT_TYPES)}, false) "
                  f"AND NOT {_in('lower(coalesce(service_name, chr(0)))', SIGNIN_SERVICES)}")
    exact = (f"{_ascii('service_name')} AND {_ascii('service_code')} AND {_ascii('resource_type')} "
             f"AND {_ascii('event_name')} AND NOT coalesce({_in('lower(event_name)', PARAMETER_TARGETS)}, false) "
             f"AND (coalesce({refs}, '') = '' OR _map IS NOT NULL)")
    return f"""
        SELECT * EXCLUDE (_map, _code, _account, _entries, _arns), _exact AS exact,
               CASE WHEN _exact THEN _code || ':' || CASE WHEN coalesce(event_name, '') <> '' THEN event_name
                                                        ELSE 'Unknown' END END AS mapped_action,
               CASE WHEN NOT _exact THEN NULL WHEN NOT ({authorized}) THEN []::VARCHAR[]
                    WHEN len(_arns) = 0 THEN ['acs:' || _code || ':' || {_region('_code')} || ':' || _account || ':*']
                    ELSE _arns END AS mapped_resources
        FROM (SELECT *, CASE WHEN _exact THEN flatten(list_transform(
                            list_transform(_entries, lambda e: {{'p': {head}, 'v': e.value}}),
                            lambda e: list_transform(e.v, lambda n: e.p || n))) END AS _arns
        FROM (SELECT *, {merged} AS _entries, coalesce({exact}, false) AS _exact
              FROM (SELECT *, {code} AS _code,
                           CASE WHEN coalesce(account, '') <> '' THEN account ELSE '*' END AS _account,
                           CASE WHEN {plain} THEN json_transform({refs}, '"MAP(VARCHAR, VARCHAR[])"') END AS _map
                    FROM ({source}))))"""  # noqa: S608 - fixed SQL around the caller's relation


# -- the same mapping by template, for calls that name one object each -------------------------------
# An agent that reads or writes an object per call (a bulk download, a backup) has as many distinct
# calls as events, which differ only in the object's name. Such a call's mapping is its template's
# (the call with a placeholder for the name: mapped once, by the Python rules above) with the name
# put back, which holds wherever those rules only append the name: not when a resource field or
# request parameters are compared with it (``_referenced``'s merge, ``_parameter_target``), nor
# when the template does not give one resource ending in the placeholder. Those calls are mapped
# one by one, as before.
_ONE_REFERENCE = (rf'^{_SPACE}\{{{_SPACE}"(?P<type>{_PLAIN})"{_SPACE}:{_SPACE}\[{_SPACE}'
                  rf'"(?P<name>{_PLAIN})"{_SPACE}\]{_SPACE}\}}{_SPACE}$')
_PLACE = "\x00"  # the name's placeholder (no such name holds it: JSON escapes it)
_FIELDS = tuple(CallFacts.__dataclass_fields__)
_REFERENCES = _FIELDS.index("referenced_resources")


@dataclass(frozen=True, slots=True)
class Templated:
    """Calls mapped by template (``by_template``): ``rows`` are the calls' row numbers, ``names``
    their object's name, ``template`` the number of their template; per template, its ``actions``
    and ``heads`` (its one resource's ARN up to the name). A call's resource is its head then its
    name."""

    rows: np.ndarray
    template: np.ndarray
    names: pa.Array
    actions: list[str]
    heads: list[str]


def by_template(facts: Sequence[pa.Array]) -> Templated:
    """Map the calls (``CallFacts``' columns, in order, as Arrow strings) whose references name
    one object of one type, by template (see above); the others are not in the result."""
    parts = pc.extract_regex(facts[_REFERENCES], _ONE_REFERENCE)
    field = dict(zip(_FIELDS, facts, strict=True))

    def given(name: str) -> pa.Array:  # neither null nor empty
        return pc.fill_null(pc.not_equal(field[name], ""), False)

    compared = pc.or_(given("request_parameters"), pc.and_(given("resource_type"), given("resource_name")))
    rows = np.flatnonzero(pc.and_not(pc.is_valid(parts), compared).to_numpy(zero_copy_only=False))
    if not len(rows):
        return Templated(rows, rows, pa.array([], pa.string()), [], [])
    taken = pa.array(rows)
    parts = parts.take(taken)
    kinds = pc.struct_field(parts, "type")
    codes, combos = distinct_codes([*(column.take(taken) for i, column in enumerate(facts) if i != _REFERENCES),
                                    kinds])
    actions, heads, valid = [], [], np.zeros(len(combos), dtype=bool)
    for number, combo in enumerate(combos):
        values = list(combo[:-1])
        values.insert(_REFERENCES, json.dumps({combo[-1]: [_PLACE]}))
        call = CallFacts(*values)
        arns = resources(call) if is_authorized_call(call.event_type, call.service_name) else []
        one = len(arns) == 1 and arns[0].endswith(_PLACE)  # the name is the ARN's end
        actions.append(action(call))
        heads.append(arns[0][:-1] if one else "")
        valid[number] = one
    keep = valid[codes]
    return Templated(rows[keep], codes[keep], pc.struct_field(parts, "name").filter(pa.array(keep)), actions, heads)
