"""Raw ActionTrail JSON -> one typed :class:`Event`.

ActionTrail's format drifts (see ../shared/notes/actiontrail.md section 1): ``eventVersion`` is
``"1"`` or ``1``, ``errorCode`` is absent or ``""`` on success, ``sessionContext`` carries
``attributes`` or (old docs) ``sessionAttributes``, ``referencedResources`` is a dict or a list of
``{resourceType, resourceName}``, ``sourceIpAddress`` may be ``"Internal"`` or masked. The
normalizer accepts all of that and rejects, with a reason, only what it cannot type: no
``eventId``/``eventTime``, a time that is not a time, an identity that is not an object. It also
rejects what cannot be true or cannot be stored: an ``eventTime`` before :data:`EARLIEST_EVENT_TIME`
or more than :data:`FUTURE_TOLERANCE` after now (one such event used to drag the detect window back
to 1970, or overflow it), and text holding a lone surrogate (``"\\ud800"``), which Arrow and
DuckDB refuse and which used to fail the whole batch it was in.

Detectors read the typed columns; the raw JSON is kept beside them for replay and evidence.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from pipeline.core.times import iso
from pipeline.ingest.jsontext import encodable, printable

# Event times that cannot be real are quarantined, never stored: they would move the detect window
# and the baselines' history (and 0001 or 9999 overflowed date arithmetic downstream).
# Alibaba Cloud's audit logging (ActionTrail's predecessor included) did not exist before 2010, so
# 1970-01-01 (an epoch of 0), year 1 and the like are refused; merely old events are kept.
EARLIEST_EVENT_TIME = datetime(2010, 1, 1, tzinfo=UTC)
# ActionTrail stamps events with Alibaba's clock; a day of skew is already far beyond any real one.
FUTURE_TOLERANCE = timedelta(days=1)


class MalformedEvent(ValueError):
    """The input cannot become an Event; ``str(exc)`` is the quarantine reason."""


class Event(NamedTuple):
    """One ActionTrail event with typed columns. Field order is the ``events`` table's order.

    A named tuple rather than a dataclass: a batch transposes into columns with ``zip(*events)``
    at C speed, which is most of what bulk loading costs in Python.
    """

    event_id: str
    event_time: datetime  # aware, UTC
    event_name: str | None
    event_type: str | None
    event_rw: str | None  # Read | Write, newer events only
    event_source: str | None
    event_version: str | None
    service_name: str | None
    service_code: str | None  # requestParameters.ServiceCode: the RAM code, when the event says
    acs_region: str | None
    is_global: bool | None
    source_ip: str | None  # as recorded: an IP, "Internal", a masked value, ...
    ip_version: int | None  # 4 or 6 when source_ip is a real address, else None
    secure_transport: bool | None  # additionalEventData.Scheme: https -> True, http -> False
    user_agent: str | None
    request_id: str | None
    api_version: str | None
    error_code: str | None  # None means success ("" is normalized away)
    error_message: str | None
    identity_type: str | None  # root-account | ram-user | assumed-role | system | ...
    identity: str  # canonical: ram-user:NAME, role:NAME, root-account:ACCOUNT, access-key:ID ...
    account_id: str | None
    principal_id: str | None
    user_name: str | None
    role_name: str | None  # assumed-role: userName before ':'
    role_id: str | None  # assumed-role: principalId before ':'
    session_name: str | None  # assumed-role: after ':'
    access_key_id: str | None
    mfa_authenticated: bool | None  # sessionContext's; a ConsoleSignin's own record when it has one (signin_mfa)
    session_created: datetime | None
    recipient_account_id: str | None
    vpc_id: str | None
    resource_type: str | None
    resource_name: str | None
    referenced_resources: str | None  # JSON text: {"<type>": ["<name>", ...]}
    raw: str  # the event exactly as received (JSON text)

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    # requestParameters, responseElements and additionalEventData are read from ``raw`` (in the
    # store they are virtual columns over it): copying them would double what ingest writes.
    @property
    def request_parameters(self) -> Any:
        return json.loads(self.raw).get("requestParameters")

    @property
    def response_elements(self) -> Any:
        return json.loads(self.raw).get("responseElements")

    @property
    def additional_event_data(self) -> Any:
        return json.loads(self.raw).get("additionalEventData")


EVENT_COLUMNS: tuple[str, ...] = Event._fields

# Top-level keys copied to string columns. Numbers are accepted where exports are known to write
# them as numbers (versions, account ids, some error codes); anything else of the wrong type is
# rejected, because a detector would silently misread it.
_STRING_KEYS = (
    ("event_name", "eventName"),
    ("event_type", "eventType"),
    ("event_rw", "eventRW"),
    ("event_source", "eventSource"),
    ("event_version", "eventVersion"),
    ("service_name", "serviceName"),
    ("acs_region", "acsRegion"),
    ("source_ip", "sourceIpAddress"),
    ("user_agent", "userAgent"),
    ("request_id", "requestId"),
    ("api_version", "apiVersion"),
    ("error_code", "errorCode"),
    ("error_message", "errorMessage"),
    ("recipient_account_id", "recipientAccountId"),
    ("vpc_id", "vpcId"),
    ("resource_type", "resourceType"),
    ("resource_name", "resourceName"),
)
_NUMERIC_OK = frozenset({"eventVersion", "recipientAccountId", "accountId", "principalId", "errorCode"})
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def normalize(obj: Any, raw: str | None = None, now: datetime | None = None) -> Event:
    """Type one parsed ActionTrail event. ``raw`` is its original text, if the caller has it;
    ``now`` is what "the future" is measured from (default: the clock)."""
    if not isinstance(obj, dict):
        raise MalformedEvent(f"event is a JSON {_json_type(obj)}, not an object")
    raw = raw if raw is not None else _dumps(obj)
    _check_unicode(obj, raw)
    row: dict[str, Any] = {col: _opt_str(obj, key) for col, key in _STRING_KEYS}
    row["error_code"] = row["error_code"] or None  # absent or "" both mean success
    row["error_message"] = row["error_message"] or None
    row.update(_identity(obj.get("userIdentity")))
    params, extra = obj.get("requestParameters"), obj.get("additionalEventData")
    if row["event_name"] == "ConsoleSignin":
        row["mfa_authenticated"] = signin_mfa(extra, row["mfa_authenticated"])
    code = params.get("ServiceCode") if isinstance(params, dict) else None
    scheme = extra.get("Scheme") if isinstance(extra, dict) else None
    return Event(
        event_id=_required_str(obj, "eventId"),
        event_time=_plausible(parse_time(_required_str(obj, "eventTime"), "eventTime"), now),
        is_global=_opt_bool(obj.get("isGlobal"), "isGlobal"),
        ip_version=ip_version(row["source_ip"]),
        service_code=code if isinstance(code, str) and code else None,
        secure_transport={"https": True, "http": False}.get(scheme.lower()) if isinstance(scheme, str) else None,
        referenced_resources=_referenced_resources(obj.get("referencedResources")),
        raw=raw,
        **row,
    )


# where a console sign-in records whether MFA was used: a RAM user's, the root account's (section 1.4
# of ../shared/notes/actiontrail.md); the SQL twin is migration 0019's backfill
SIGNIN_MFA_KEYS = ("mfaChecked", "isMFAChecked")


def signin_mfa(extra: Any, session_mfa: bool | None) -> bool | None:
    """Whether a ``ConsoleSignin`` used MFA: ``additionalEventData.mfaChecked`` (RAM user) or
    ``isMFAChecked`` (root), which is the sign-in's own record and so wins over the session context
    (a real sign-in event usually has none). A value that is not true/false says nothing: the
    session context's value, if any, stays (the sign-in itself is never quarantined for it)."""
    if isinstance(extra, dict):
        for key in SIGNIN_MFA_KEYS:
            value = extra.get(key)
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
    return session_mfa


def _plausible(when: datetime, now: datetime | None) -> datetime:
    """``when`` if an ActionTrail event can carry it, else :class:`MalformedEvent` saying why."""
    if when < EARLIEST_EVENT_TIME:
        raise MalformedEvent(f"eventTime {iso(when)} is before {iso(EARLIEST_EVENT_TIME)}, before Alibaba "
                             "Cloud kept audit logs: a wrong clock or a forged event")
    now = now or datetime.now(UTC)
    if when > _latest(now):
        raise MalformedEvent(f"eventTime {iso(when)} is more than a day after now ({iso(now)}): a wrong "
                             "clock or a forged event")
    return when


@lru_cache(maxsize=16)
def _latest(now: datetime) -> datetime:
    """The latest plausible event time (a batch passes the same ``now`` for all its events)."""
    return now + FUTURE_TOLERANCE


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_unicode(obj: dict[str, Any], raw: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate, in the text itself or written as a
    JSON escape (``\\ud800`` with no low half after it). A valid pair (an emoji escaped as
    ``\\ud83d\\ude00``) decodes to one character and passes. A backslash (memchr-fast) and then
    a surrogate escape are the cheap tests; the values are walked only when the text has one."""
    if (not raw.isascii() and not encodable(raw)) or ("\\" in raw and _SURROGATE_ESCAPE.search(raw)):
        where = _lone_surrogate(obj)
        if where is not None:
            raise MalformedEvent("string is not valid Unicode: lone surrogate in "
                                 + (printable(where, 120) if where else "a key"))
        if not encodable(raw):  # in the text but not in the value: outside any string
            raise MalformedEvent("string is not valid Unicode: lone surrogate")


def _lone_surrogate(value: Any) -> str | None:
    """The path of the first key or string holding a lone surrogate (without recursion)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if not encodable(node):
                return path
        elif isinstance(node, dict):
            for key, val in node.items():
                if not encodable(key):
                    return path or "the top level"
                stack.append((f"{path}.{key}" if path else key, val))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
    return None


def parse_time(value: str, key: str = "time") -> datetime:
    """ISO-8601 -> aware UTC datetime. ActionTrail writes UTC; an offset-less time is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted past the range
        raise MalformedEvent(f"{key}: not an ISO-8601 time in range: {value[:60]!r}") from None


@lru_cache(maxsize=65536)
def ip_version(value: str | None) -> int | None:
    """4 or 6 for a real address; None for "Internal", masked values, hostnames, empty."""
    if not value:
        return None
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


def identity_string(identity_type: str | None, user_name: str | None, principal_id: str | None,
                    account_id: str | None, access_key_id: str | None) -> str:
    """The canonical identity an inventory refers to: ``ram-user:NAME``, ``role:NAME`` ..."""
    if identity_type == "ram-user" and user_name:
        return f"ram-user:{user_name}"
    if identity_type == "assumed-role" and (user_name or principal_id):
        return f"role:{(user_name or principal_id or '').split(':', 1)[0]}"
    if identity_type == "root-account":
        return f"root-account:{account_id or principal_id or 'unknown'}"
    name = user_name or principal_id
    if identity_type and name:
        return f"{identity_type}:{name}"
    if access_key_id:
        return f"access-key:{access_key_id}"
    return f"{identity_type or 'unknown'}:unknown"


def _identity(ui: Any) -> dict[str, Any]:
    if ui is None:
        ui = {}
    if not isinstance(ui, dict):
        raise MalformedEvent(f"userIdentity: expected an object, got a JSON {_json_type(ui)}")
    itype = _opt_str(ui, "type", "userIdentity.")
    user_name = _opt_str(ui, "userName", "userIdentity.")
    principal_id = _opt_str(ui, "principalId", "userIdentity.")
    account_id = _opt_str(ui, "accountId", "userIdentity.")
    access_key_id = _opt_str(ui, "accessKeyId", "userIdentity.") or None
    role_name = role_id = session_name = None
    if itype == "assumed-role":
        if user_name:
            role_name, _, session_name = user_name.partition(":")
            session_name = session_name or None
        if principal_id:
            role_id = principal_id.partition(":")[0]
    mfa, created = _session(ui.get("sessionContext"))
    return {
        "identity_type": itype,
        "identity": identity_string(itype, user_name, principal_id, account_id, access_key_id),
        "account_id": account_id,
        "principal_id": principal_id,
        "user_name": user_name,
        "role_name": role_name,
        "role_id": role_id,
        "session_name": session_name,
        "access_key_id": access_key_id,
        "mfa_authenticated": mfa,
        "session_created": created,
    }


def _session(ctx: Any) -> tuple[bool | None, datetime | None]:
    """``sessionContext.attributes`` (current) or ``sessionContext.sessionAttributes`` (old docs)."""
    if not isinstance(ctx, dict):
        return None, None
    attrs = ctx.get("attributes")
    if not isinstance(attrs, dict):
        attrs = ctx.get("sessionAttributes")
    if not isinstance(attrs, dict):
        return None, None
    mfa = _opt_bool(attrs.get("mfaAuthenticated"), "userIdentity.sessionContext.mfaAuthenticated")
    created = attrs.get("creationDate")
    when = parse_time(created, "sessionContext.creationDate") if isinstance(created, str) and created else None
    return mfa, when


def _referenced_resources(value: Any) -> str | None:
    """Both documented shapes -> ``{"<type>": ["<name>", ...]}`` as JSON text."""
    if value is None or value == {} or value == []:
        return None
    out: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for rtype, names in value.items():
            items = [n for n in (names if isinstance(names, list) else [names]) if n is not None]
            if items:
                out.setdefault(str(rtype), []).extend(str(n) for n in items)
    elif isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                raise MalformedEvent("referencedResources: list items must be objects")
            rtype = item.get("resourceType") or item.get("ResourceType") or "unknown"
            name = item.get("resourceName") or item.get("ResourceName")
            if name is not None:
                out.setdefault(str(rtype), []).append(str(name))
    else:
        raise MalformedEvent(
            f"referencedResources: expected an object or a list, got a JSON {_json_type(value)}")
    return _dumps(out) if out else None


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        raise MalformedEvent(f"missing {key}")
    if not isinstance(value, str):
        raise MalformedEvent(f"{key}: expected a string, got a JSON {_json_type(value)}")
    return value


def _opt_str(obj: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    if key in _NUMERIC_OK and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedEvent(f"{prefix}{key}: expected a string, got a JSON {_json_type(value)}")


def _opt_bool(value: Any, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value == "":
        return None
    raise MalformedEvent(f"{key}: expected true or false, got {str(value)[:40]!r}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"
