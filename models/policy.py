"""The RAM policy language: validate documents, then decide a request.

No library evaluates Alibaba Cloud RAM policies, so this is written from the documented rules
(../shared/notes/ram-policy.md):

* a document is ``{"Version": "1", "Statement": [...]}``; a statement has ``Effect``, exactly
  one of ``Action``/``NotAction``, ``Resource`` (or the older ``NotResource``) and an optional
  ``Condition``; a single string equals a one-element list; ``Sid`` and unknown keys are ignored;
* actions match case-insensitively, resources case-sensitively; ``*`` (any run, also empty) and
  ``?`` (one character) work anywhere, including the service part and across ``:`` and ``/``;
* conditions: values of one key are ORed, keys and operators ANDed; a negated operator holds only
  when no value matches; an absent key makes a positive operator false and a negated one true;
  RAM's 21 operators only - ``...IfExists``, ``Null``, ``ForAnyValue:``/``ForAllValues:``,
  ``Arn*`` and ``Binary*`` are rejected when the policy is loaded;
* an explicit Deny wins, then any Allow, else the request is implicitly denied.

A request built from a log can lack a key the policy tests (a resource tag): such a key is
*unknown*, and a decision that depends on it is :attr:`Decision.UNKNOWN`, never a silent Allow
or Deny.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any


class Decision(StrEnum):
    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"
    UNKNOWN = "Unknown"  # depends on a condition key the request could not supply


class PolicyError(ValueError):
    """An invalid policy document; ``where`` is the path inside it (``Statement[1].Condition``)."""

    def __init__(self, message: str, where: str = ""):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Request:
    action: str  # <ram-code>:<ApiName>
    resource: str  # acs:<code>:<region>:<account>:<relative-id>
    context: Mapping[str, Any] = field(default_factory=dict)  # key -> str | list[str]
    unknown: frozenset[str] = frozenset()  # condition keys the request cannot supply (lower-case)


@dataclass(frozen=True)
class Result:
    decision: Decision
    statement: str | None = None  # "<policy>#Statement[i]" that denied (or allowed) it
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


# -- patterns ----------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """``*`` = any run (also empty), ``?`` = one character; everything else literal."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.S | (re.I if ignore_case else 0))


# -- conditions ---------------------------------------------------------------------------------
Tri = bool | None  # None = unknown


def _as_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return ["true" if v is True else "false" if v is False else str(v) for v in items]


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _num(text: str) -> float | None:
    """A finite decimal number; float() alone would also take "NaN", "inf" and "1_000"."""
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _date(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


_NUMERIC = {"Equals": lambda a, b: a == b, "NotEquals": lambda a, b: a == b,
            "LessThan": lambda a, b: a < b, "LessThanEquals": lambda a, b: a <= b,
            "GreaterThan": lambda a, b: a > b, "GreaterThanEquals": lambda a, b: a >= b}


@dataclass(frozen=True)
class Operator:
    name: str
    negated: bool
    parse: Callable[[str], Any]  # policy value (and request value) -> comparable, None if invalid
    match: Callable[[Any, Any], bool]  # (request value, policy value) -> matches?


def _operators() -> dict[str, Operator]:
    ident: Callable[[str], Any] = lambda s: s  # noqa: E731
    ops = {
        "StringEquals": Operator("StringEquals", False, ident, lambda r, p: r == p),
        "StringNotEquals": Operator("StringNotEquals", True, ident, lambda r, p: r == p),
        "StringEqualsIgnoreCase": Operator("StringEqualsIgnoreCase", False, str.casefold, lambda r, p: r == p),
        "StringNotEqualsIgnoreCase": Operator("StringNotEqualsIgnoreCase", True, str.casefold, lambda r, p: r == p),
        "StringLike": Operator("StringLike", False, ident, lambda r, p: glob(p, False).fullmatch(r) is not None),
        "StringNotLike": Operator("StringNotLike", True, ident, lambda r, p: glob(p, False).fullmatch(r) is not None),
        "Bool": Operator("Bool", False, _bool, lambda r, p: r == p),
        "IpAddress": Operator("IpAddress", False, _net, _in_net),
        "NotIpAddress": Operator("NotIpAddress", True, _net, _in_net),
    }
    for suffix, cmp in _NUMERIC.items():
        neg = suffix == "NotEquals"
        ops["Numeric" + suffix] = Operator("Numeric" + suffix, neg, _num, cmp)
        ops["Date" + suffix] = Operator("Date" + suffix, neg, _date, cmp)
    return ops


def _bool(text: str) -> bool | None:
    low = text.strip().lower()
    return True if low == "true" else False if low == "false" else None


def _in_net(request: Any, net: Any) -> bool:
    return request.version == net.version and request.subnet_of(net)


OPERATORS = _operators()
_UNSUPPORTED = (
    (re.compile(r".+IfExists$", re.I), "the ...IfExists operators are not supported by RAM"),
    (re.compile(r"^Null$", re.I), "the Null operator is not supported by RAM"),
    (re.compile(r"^For(Any|All)Values?:", re.I), "ForAnyValue:/ForAllValues: are not RAM condition operators"),
    (re.compile(r"^(Arn|Binary)", re.I), "Arn and Binary operators are AWS IAM, not RAM"),
)


@dataclass(frozen=True)
class Condition:
    op: Operator
    key: str  # lower-case
    values: tuple[Any, ...]  # parsed policy values

    def test(self, request: Request) -> Tri:
        if self.key in request.unknown:
            return None
        raw = _lookup(request.context, self.key)
        if raw is None:
            return self.op.negated  # absent: positive false, negated true
        found = False
        for item in _as_list(raw):
            value = _net_addr(item) if self.op.parse is _net else self.op.parse(item)
            if value is None:
                continue
            if any(self.op.match(value, p) for p in self.values):
                found = True
                break
        return not found if self.op.negated else found


def _net_addr(text: str) -> Any:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _lookup(context: Mapping[str, Any], key: str) -> Any:
    if key in context:
        return context[key]
    for k, v in context.items():
        if k.lower() == key:
            return v
    return None


# -- statements and documents --------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    ref: str  # "<policy name>#Statement[i]"
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    actions_negated: bool  # NotAction
    resources: tuple[re.Pattern[str], ...]
    resources_negated: bool  # NotResource
    conditions: tuple[Condition, ...]

    def matches(self, request: Request) -> Tri:
        if any(p.fullmatch(request.action) for p in self.actions) == self.actions_negated:
            return False
        if any(p.fullmatch(request.resource) for p in self.resources) == self.resources_negated:
            return False
        result: Tri = True
        for cond in self.conditions:
            outcome = cond.test(request)
            if outcome is False:
                return False
            if outcome is None:
                result = None
        return result

    @property
    def condition_keys(self) -> frozenset[str]:
        return frozenset(c.key for c in self.conditions)


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...]
    document: Mapping[str, Any] = field(compare=False, repr=False)


def compile_policy(doc: Any, name: str = "policy") -> Policy:
    """Validate and compile one document; raises :class:`PolicyError` saying where and why."""
    if not isinstance(doc, Mapping):
        raise PolicyError("a policy document must be a JSON object")
    version = doc.get("Version")
    if version != "1":
        raise PolicyError(f'Version must be "1" (got {version!r})', "Version")
    raw_statements = doc.get("Statement")
    if isinstance(raw_statements, Mapping):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("Statement must be a non-empty list of statements", "Statement")
    statements = tuple(_statement(s, f"Statement[{i}]", name) for i, s in enumerate(raw_statements))
    return Policy(name, statements, doc)


def _statement(raw: Any, where: str, policy_name: str) -> Statement:
    if not isinstance(raw, Mapping):
        raise PolicyError("a statement must be an object", where)
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f'Effect must be "Allow" or "Deny" (got {effect!r})', f"{where}.Effect")
    for forbidden in ("Principal", "NotPrincipal"):
        if forbidden in raw:
            raise PolicyError(f"{forbidden} belongs in resource-based policies (trust and bucket "
                              "policies); an agent's scope is identity-based", f"{where}.{forbidden}")
    if ("Action" in raw) == ("NotAction" in raw):
        raise PolicyError("exactly one of Action and NotAction is required", where)
    if ("Resource" in raw) == ("NotResource" in raw):
        raise PolicyError("exactly one of Resource and NotResource is required", where)
    action_key = "Action" if "Action" in raw else "NotAction"
    resource_key = "Resource" if "Resource" in raw else "NotResource"
    actions = _patterns(raw[action_key], f"{where}.{action_key}", ignore_case=True, action=True)
    resources = _patterns(raw[resource_key], f"{where}.{resource_key}", ignore_case=False, action=False)
    conditions = _conditions(raw.get("Condition"), f"{where}.Condition")
    return Statement(f"{policy_name}#{where}", effect == "Allow", actions, action_key == "NotAction",
                     resources, resource_key == "NotResource", conditions)


def _patterns(value: Any, where: str, *, ignore_case: bool, action: bool) -> tuple[re.Pattern[str], ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError("must not be empty", where)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"entries must be non-empty strings (entry {i}: {item!r})", where)
        if action and item != "*" and ":" not in item:
            raise PolicyError(f"{item!r} is not <ram-code>:<action> (e.g. ecs:DescribeInstances)", where)
        out.append(glob(item, ignore_case))
    return tuple(out)


def _conditions(block: Any, where: str) -> tuple[Condition, ...]:
    if block is None:
        return ()
    if not isinstance(block, Mapping):
        raise PolicyError("Condition must be an object of {operator: {key: values}}", where)
    out = []
    for op_name, keys in block.items():
        op = _operator(str(op_name), f"{where}.{op_name}")
        if not isinstance(keys, Mapping) or not keys:
            raise PolicyError("expected an object of {condition key: value or values}", f"{where}.{op_name}")
        for key, values in keys.items():
            at = f"{where}.{op_name}.{key}"
            parsed = tuple(_condition_value(op, v, at) for v in _as_list(values))
            if not parsed:
                raise PolicyError("needs at least one value", at)
            out.append(Condition(op, str(key).lower(), parsed))
    return tuple(out)


def _operator(name: str, where: str) -> Operator:
    for pattern, message in _UNSUPPORTED:
        if pattern.match(name):
            raise PolicyError(message, where)
    op = OPERATORS.get(name) or next((o for n, o in OPERATORS.items() if n.lower() == name.lower()), None)
    if op is None:
        raise PolicyError(f"unknown condition operator {name!r}", where)
    return op


def _condition_value(op: Operator, text: str, where: str) -> Any:
    value = op.parse(text)
    if value is None:
        kinds: dict[Callable[[str], Any], str] = {
            _num: "a number", _date: "an ISO-8601 time", _bool: '"true" or "false"',
            _net: "an IP address or CIDR"}
        kind = kinds.get(op.parse, "a value")
        raise PolicyError(f"{text!r} is not {kind}", where)
    return value


# -- evaluation ---------------------------------------------------------------------------------
class PolicySet:
    """The union of an agent's policies, compiled once; decisions are cached per request shape."""

    def __init__(self, policies: Iterable[Policy]):
        self.policies = tuple(policies)
        self._denies = tuple(s for p in self.policies for s in p.statements if not s.allow)
        self._allows = tuple(s for p in self.policies for s in p.statements if s.allow)
        self.condition_keys = frozenset(k for p in self.policies for s in p.statements for k in s.condition_keys)
        self._cache: dict[tuple[Any, ...], Result] = {}

    @classmethod
    def from_documents(cls, docs: Sequence[Any], name: str = "policy") -> PolicySet:
        return cls(compile_policy(d, f"{name}[{i}]") for i, d in enumerate(docs))

    def evaluate(self, request: Request) -> Result:
        key = self._cache_key(request)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._decide(request)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _cache_key(self, request: Request) -> tuple[Any, ...]:
        ctx = tuple((k, _freeze(_lookup(request.context, k)), k in request.unknown)
                    for k in sorted(self.condition_keys))
        return (request.action.lower(), request.resource, ctx)

    def _decide(self, request: Request) -> Result:
        maybe_deny = None
        for st in self._denies:
            outcome = st.matches(request)
            if outcome:
                return Result(Decision.EXPLICIT_DENY, st.ref, f"denied by {st.ref}")
            if outcome is None and maybe_deny is None:
                maybe_deny = st
        maybe_allow = None
        for st in self._allows:
            outcome = st.matches(request)
            if outcome and maybe_deny is None:
                return Result(Decision.ALLOW, st.ref, f"allowed by {st.ref}")
            if outcome is not False and maybe_allow is None:
                maybe_allow = st
        if maybe_allow is None:  # nothing can allow it, whatever the unknown keys hold
            return Result(Decision.IMPLICIT_DENY, None, "no statement allows it")
        which = maybe_deny or maybe_allow
        return Result(Decision.UNKNOWN, which.ref,
                      f"{which.ref} depends on a condition key the event does not carry")


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def evaluate(documents: Sequence[Any], request: Request) -> Result:
    """One-off evaluation of raw documents (validation errors raise :class:`PolicyError`)."""
    return PolicySet.from_documents(documents).evaluate(request)
