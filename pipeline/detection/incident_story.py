"""What an incident did, in words a tired on-call engineer reads in five seconds.

Each event of an incident becomes an *act*: a verb and an object ("created user svc-backup2",
"attached AdministratorAccess to user svc-backup2", "stopped the audit trail prod-trail"), ranked by
harm: tampering with the audit trail, then granting power (privilege escalation patterns from
``models.escalation``), creating identities and credentials, deleting, opening the network, other
writes, reading secrets and data, signing in, and last listing and describing. A call that failed
is one step less harmful and reads "tried to … (refused)". Like acts are merged ("read 40 objects").

The headline is the agent, its most harmful acts (three at most) in order of harm, then where
from (the address of the most harmful act) and when, in the business time zone with its name; the
UTC time is in :class:`Story` for the detail. Pure functions over event rows (dicts with the
``events`` columns named in :data:`EVENT_COLUMNS`): no I/O, no clock.

Known gaps: an event name that follows no verb pattern reads "called <EventName>"; resource names
come from the resources the event references (``models.mapping``), so an event that names none
reads without an object.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from models.escalation import Caller, classify
from models.mapping import CallFacts, is_authorized_call, resources

EVENT_COLUMNS = ("event_id", "event_time", "event_name", "event_type", "service_name", "service_code",
                 "acs_region", "account_id", "recipient_account_id", "referenced_resources", "resource_type",
                 "resource_name", "request_parameters", "error_code", "source_ip", "identity_type", "user_name",
                 "role_name", "access_key_id")
MAX_ACTS = 3
HEADLINE_LIMIT = 240

# (harm, past tense, base form) per leading verb of an event name; the rest of the name is the object
_VERBS: dict[str, tuple[int, str, str]] = {
    "create": (50, "created", "create"), "delete": (60, "deleted", "delete"), "remove": (60, "removed", "remove"),
    "release": (60, "released", "release"), "attach": (55, "attached", "attach"),
    "detach": (50, "detached", "detach"), "put": (50, "wrote", "write"), "update": (50, "changed", "change"),
    "modify": (50, "changed", "change"), "set": (50, "set", "set"), "add": (50, "added", "add"),
    "authorize": (55, "opened", "open"), "revoke": (45, "closed", "close"), "stop": (50, "stopped", "stop"),
    "start": (45, "started", "start"), "run": (45, "ran", "run"), "reboot": (45, "rebooted", "reboot"),
    "enable": (45, "enabled", "enable"), "disable": (50, "disabled", "disable"), "reset": (50, "reset", "reset"),
    "get": (25, "read", "read"), "list": (20, "listed", "list"), "describe": (20, "described", "describe"),
    "query": (20, "queried", "query"), "download": (40, "downloaded", "download"),
    "assume": (60, "assumed", "assume"),  # AssumeRole: another identity's powers, maybe another account's
}
_AUDIT = {"stoplogging": (100, "stopped", "stop", "the audit trail"), "deletetrail": (100, "deleted", "delete", "trail"),
          "updatetrail": (95, "changed", "change", "trail")}
_SECRETS = {"getsecretvalue": "secret", "getobject": "object", "getparameter": "parameter",
            "exportkey": "key", "decrypt": "ciphertext"}
_IDENTITY_OBJECTS = ("user", "role", "accesskey", "loginprofile", "group", "policy")
_SIGNIN = ("consolesignin", "signin")


@dataclass(frozen=True)
class Act:
    harm: int
    verb: str  # past tense, or "tried to <base>" for a refused call
    noun: str  # "user", "security group", "" (the phrase says it all)
    name: str | None  # the object's name, when the event names one
    ok: bool

    def key(self) -> tuple[str, str, bool]:
        return self.verb, self.noun, self.ok


@dataclass
class Story:
    """The parts of an incident's headline."""

    acts: list[str] = field(default_factory=list)  # most harmful first
    source_ip: str | None = None
    other_ips: int = 0
    when_utc: datetime | None = None
    when_local: str | None = None  # "03:10 Sat 5 Dec (Asia/Shanghai)"
    access_keys: list[str] = field(default_factory=list)
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"acts": self.acts, "source_ip": self.source_ip, "other_ips": self.other_ips,
                "when_utc": self.when_utc.isoformat().replace("+00:00", "Z") if self.when_utc else None,
                "when_local": self.when_local, "access_keys": self.access_keys, "events": self.events}


def act_of(event: dict[str, Any]) -> Act:
    """One event as an act (see the module docstring for the ranking)."""
    name = str(event.get("event_name") or "")
    low = name.lower()
    ok = not event.get("error_code")
    if low in _AUDIT:
        harm, past, base, noun = _AUDIT[low]
        return _act(harm, past, base, noun, _object_name(event, "trail"), ok)
    escalation = _escalation(event)
    if escalation is not None:
        harm = 90 if escalation.critical else 80
        if ok:
            return Act(harm, escalation.detail, "", None, True)
        return Act(harm - 5, "tried to " + _base_sentence(escalation.detail), "", None, False)
    if low in _SIGNIN:
        return _act(30, "signed in to the console", "sign in to the console", "", None, ok)
    if low in _SECRETS:
        return _act(40, "read", "read", _SECRETS[low], _object_name(event, None), ok)
    verb, rest = _split(name)
    if verb in _VERBS:
        harm, past, base = _VERBS[verb]
        noun = _noun(rest)
        if verb == "create" and noun.replace(" ", "") in _IDENTITY_OBJECTS:
            harm = 70
        return _act(harm, past, base, noun, _object_name(event, noun), ok)
    return _act(10, f"called {name or 'an unnamed API'}", f"call {name or 'an unnamed API'}", "", None, ok)


def _act(harm: int, past: str, base: str, noun: str, name: str | None, ok: bool) -> Act:
    if ok:
        return Act(harm, past, noun, name, True)
    return Act(harm - 5, f"tried to {base}", noun, name, False)


def _escalation(event: dict[str, Any]) -> Any:
    caller = Caller(event.get("identity_type"), event.get("user_name"), event.get("role_name"))
    try:
        return classify(event.get("event_name"), event.get("request_parameters"), caller)
    except (TypeError, ValueError, AttributeError):
        return None  # hostile parameters: the act reads by its name instead


_BASE = {"attached": "attach", "created": "create", "made": "make", "changed": "change", "added": "add",
         "gave": "give"}


def _base_sentence(detail: str) -> str:
    first, _, rest = detail.partition(" ")
    return f"{_BASE.get(first, first)} {rest}".strip()


def _split(event_name: str) -> tuple[str, str]:
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", event_name)
    if not words:
        return "", ""
    return words[0].lower(), " ".join(w.lower() for w in words[1:])


def _noun(rest: str) -> str:
    """``instances`` -> ``instance``; ``security group ingress`` stays (a sentence, not grammar)."""
    noun = rest.strip()
    noun = re.sub(r" (attribute|attributes|info|detail|details)$", "", noun)
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith("sses"):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun[:-1]
    return noun


def _object_name(event: dict[str, Any], noun: str | None) -> str | None:
    """The name of what the event touched, from the resources it references (the part of the ARN
    after the resource type: ``user/svc-backup2`` -> ``svc-backup2``); None for ``*``."""
    if not is_authorized_call(event.get("event_type"), event.get("service_name")):
        return None
    facts = CallFacts(event.get("event_type"), event.get("event_name"), event.get("service_name"),
                      event.get("service_code"), event.get("acs_region"),
                      event.get("recipient_account_id") or event.get("account_id"),
                      _text(event.get("referenced_resources")), event.get("resource_type"), event.get("resource_name"),
                      _text(event.get("request_parameters")))
    try:
        arns = resources(facts)
    except (TypeError, ValueError, AttributeError):
        return None
    names = [arn.split(":", 4)[-1] for arn in arns]
    names = [n.split("/", 1)[1] if "/" in n else n for n in names if n and n != "*"]
    return names[0] if names else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    import json

    return json.dumps(value)


def phrase(acts: Sequence[Act]) -> str:
    """Like acts (same verb, object kind and outcome) as one phrase."""
    first = acts[0]
    names = list(dict.fromkeys(a.name for a in acts if a.name))
    refused = "" if first.ok else " (refused)"
    if not first.noun:
        return first.verb + refused
    if len(acts) == 1:
        return " ".join(p for p in (first.verb, first.noun, names[0] if names else None) if p) + refused
    if len(names) == 1:
        return f"{first.verb} {first.noun} {names[0]} {len(acts)} times{refused}"
    return f"{first.verb} {len(acts)} {_plural(first.noun)}{refused}"


def _plural(noun: str) -> str:
    if noun.endswith("y") and not noun.endswith(("ay", "ey", "oy")):
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def story(events: Sequence[dict[str, Any]], tz: ZoneInfo) -> Story:
    """The acts of these events, most harmful first, with where from and when."""
    if not events:
        return Story()
    acts = [(act_of(e), e) for e in events]
    groups: dict[tuple[str, str, bool], list[tuple[Act, dict[str, Any]]]] = {}
    for act, event in acts:
        groups.setdefault(act.key(), []).append((act, event))
    ranked = sorted(groups.values(), key=lambda g: (-g[0][0].harm, g[0][1]["event_time"]))
    worst = ranked[0][0][1]
    ips = Counter(e.get("source_ip") for e in events if e.get("source_ip"))
    source = worst.get("source_ip") or (ips.most_common(1)[0][0] if ips else None)
    when = min(e["event_time"] for e in events)
    keys = list(dict.fromkeys(e["access_key_id"] for e in events if e.get("access_key_id")))
    return Story(acts=[phrase([a for a, _ in g]) for g in ranked[:MAX_ACTS]], source_ip=source,
                 other_ips=len([ip for ip in ips if ip != source]), when_utc=when,
                 when_local=local_time(when, tz), access_keys=keys[:5], events=len(events))


def local_time(when: datetime, tz: ZoneInfo) -> str:
    """``03:10 Sat 5 Dec (Asia/Shanghai)``: the business time, with its zone."""
    local = when.astimezone(tz)
    return f"{local:%H:%M %a} {local.day} {local:%b} ({tz.key})"


def headline(agent: str, s: Story, fallback: str) -> str:
    """``<agent> <acts> — from <ip> at <local time>``; ``fallback`` (the worst finding's summary)
    when no event of the incident is stored."""
    if not s.acts:
        return _cut(fallback)
    acts = s.acts[0] if len(s.acts) == 1 else ", ".join(s.acts[:-1]) + " and " + s.acts[-1]
    where = f" from {s.source_ip}" + (f" (and {s.other_ips} other address{'es' if s.other_ips > 1 else ''})"
                                      if s.other_ips else "") if s.source_ip else ""
    return _cut(f"{agent} {acts} —{where} at {s.when_local}")


def _cut(text: str) -> str:
    return text if len(text) <= HEADLINE_LIMIT else text[: HEADLINE_LIMIT - 1] + "…"
