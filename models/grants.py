"""Granted against declared: which statements of the policies RAM attaches reach beyond an agent's
declared scope, which declared permissions RAM does not grant, and which grants are over-scoped.

Policies are sets of requests written as patterns, so the comparison is between patterns: a
granted action pattern is *within* a declared one when every action it can match, the declared
one matches too (``ecs:DescribeInstances`` within ``ecs:Describe*``; ``ecs:*`` not within
``ecs:Describe*``; ``*:Describe*`` not within ``ecs:*``), with RAM's matching rules (actions
case-insensitive, resources case-sensitive, ``*`` and ``?`` anywhere; ``models.policy``). A
granted Allow statement is within the scope when one declared Allow statement covers its actions
and its resources with no condition the granted one lacks, and no declared Deny the grant does not
enforce itself overlaps it.

What it misses (it errs towards "beyond"): a grant covered only by the *union* of several declared
statements is reported; conditions are compared as written (an equivalent condition written
differently does not count); ``NotAction``/``NotResource`` grants are judged as ``*``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from models.policy import PolicyError, compile_policy


def system_policy(name: str) -> dict[str, Any] | None:
    """A system policy's document as vendored in ``models/system_policies`` (None when it is not)."""
    entry = resources.files("models") / "system_policies" / f"{name}.json"
    if not entry.is_file():
        return None
    document: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
    return document

ADMIN_POLICIES = frozenset({"administratoraccess"})
_STAR, _ONE = "\x00", "\x01"  # a pattern's own wildcards, as characters another pattern can test


@dataclass(frozen=True)
class Statement:
    """One statement of a policy, its lists normalised (a string is a one-element list)."""

    policy: str  # the policy's label: "AdministratorAccess (System)", "declared[0]"
    ref: str  # "Statement[0]"
    allow: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    condition: str  # canonical JSON of the Condition block ("" for none)

    @property
    def conditions(self) -> frozenset[tuple[str, str, str]]:
        """(operator, key, values) triples, for "no condition the other lacks"."""
        if not self.condition:
            return frozenset()
        block = json.loads(self.condition)
        return frozenset((str(op).lower(), str(k).lower(), json.dumps(v, sort_keys=True))
                         for op, keys in block.items() for k, v in keys.items())

    @property
    def action_patterns(self) -> tuple[str, ...]:
        return ("*",) if self.not_action else self.actions

    @property
    def resource_patterns(self) -> tuple[str, ...]:
        return ("*",) if self.not_resource else self.resources


@dataclass(frozen=True)
class Excess:
    """Granted beyond the declared scope: these action patterns of this statement."""

    policy: str
    statement: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "statement": self.statement, "actions": list(self.actions),
                "resources": list(self.resources), "why": self.why}

    def __str__(self) -> str:
        return (f"{self.policy} {self.statement} allows {', '.join(self.actions)} on "
                f"{', '.join(self.resources)} ({self.why})")


class Unreadable(ValueError):
    """A policy document the engine cannot read: what it grants is unknown."""


def statements(document: Mapping[str, Any], policy: str) -> list[Statement]:
    """The statements of a valid RAM policy document (``Unreadable`` when it is not one: the
    engine's own validation, ``models.policy.compile_policy``)."""
    try:
        compile_policy(document, policy)
    except PolicyError as exc:
        raise Unreadable(str(exc)) from None
    raw = document["Statement"]
    items = [raw] if isinstance(raw, Mapping) else list(raw)
    return [_statement(item, policy, f"Statement[{i}]") for i, item in enumerate(items)]


def _statement(item: Mapping[str, Any], policy: str, ref: str) -> Statement:
    action_key = "Action" if "Action" in item else "NotAction"
    resource_key = "Resource" if "Resource" in item else "NotResource"
    condition = item.get("Condition")
    return Statement(policy, ref, item["Effect"] == "Allow", _strings(item[action_key]), action_key == "NotAction",
                     _strings(item[resource_key]), resource_key == "NotResource",
                     json.dumps(condition, sort_keys=True) if condition else "")


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in (value if isinstance(value, list) else [value]))


# -- patterns ---------------------------------------------------------------------------------------
@lru_cache(maxsize=65536)
def within(pattern: str, outer: str, ignore_case: bool) -> bool:
    """Every string ``pattern`` matches, ``outer`` matches too (RAM globs: ``*`` any run, ``?`` one
    character). ``pattern``'s own ``*`` can only be met by a ``*`` of ``outer``, its ``?`` by ``?``
    or ``*``."""
    text = pattern.replace("*", _STAR).replace("?", _ONE)
    regex = "".join(".*" if c == "*" else f"[^{_STAR}]" if c == "?" else re.escape(c) for c in outer)
    return re.fullmatch(regex, text, re.S | (re.I if ignore_case else 0)) is not None


@lru_cache(maxsize=65536)
def overlap(a: str, b: str, ignore_case: bool) -> bool:
    """Some string matches both patterns."""
    if ignore_case:
        a, b = a.lower(), b.lower()

    @cache
    def meet(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == "*":
            return meet(i + 1, j) or (j < len(b) and meet(i, j + 1))
        if j < len(b) and b[j] == "*":
            return meet(i, j + 1) or (i < len(a) and meet(i + 1, j))
        if i == len(a) or j == len(b):
            return False
        return (a[i] == b[j] or "?" in (a[i], b[j])) and meet(i + 1, j + 1)

    return meet(0, 0)


def _covers(outer: Statement, inner: Statement, action: str) -> bool:
    """``outer`` (same effect) covers ``action`` on all of ``inner``'s resources, with no
    condition ``inner`` lacks."""
    if not outer.conditions <= inner.conditions:
        return False
    if outer.not_action:
        action_ok = not any(overlap(action, a, True) for a in outer.actions)
    else:
        action_ok = any(within(action, a, True) for a in outer.actions)
    return action_ok and all(_resource_within(r, outer) for r in inner.resource_patterns)


def _resource_within(resource: str, outer: Statement) -> bool:
    if outer.not_resource:
        return not any(overlap(resource, r, False) for r in outer.resources)
    return any(within(resource, r, False) for r in outer.resources)


def _overlaps(a: Statement, action: str, b: Statement) -> bool:
    """Some request of ``action`` on ``a``'s resources is also one ``b`` names."""
    actions = b.action_patterns
    if not any(overlap(action, x, True) for x in actions):
        return False
    return any(overlap(r, s, False) for r in a.resource_patterns for s in b.resource_patterns)


# -- judging ----------------------------------------------------------------------------------------
def declared_statements(documents: Sequence[Mapping[str, Any]]) -> list[Statement]:
    return [s for i, doc in enumerate(documents) for s in statements(doc, f"declared[{i}]")]


def beyond(granted: Sequence[Statement], declared: Sequence[Statement]) -> list[Excess]:
    """The granted Allow statements' action patterns the declared scope does not cover, or that a
    declared Deny forbids while the grant does not deny it too."""
    allows = [s for s in declared if s.allow]
    unenforced = [d for d in declared if not d.allow and not _enforced(d, granted)]
    out: list[Excess] = []
    for st in (s for s in granted if s.allow):
        missing = [a for a in st.action_patterns if not any(_covers(d, st, a) for d in allows)]
        if missing:
            out.append(Excess(st.policy, st.ref, tuple(missing), st.resource_patterns, "not declared"))
        denied = [a for a in st.action_patterns if a not in missing
                  and any(_overlaps(st, a, d) for d in unenforced)]
        if denied:
            which = next(d for d in unenforced if any(_overlaps(st, a, d) for a in denied))
            out.append(Excess(st.policy, st.ref, tuple(denied), st.resource_patterns,
                              f"the declared scope denies it ({which.policy} {which.ref}) and RAM does not"))
    return out


def _enforced(deny: Statement, granted: Sequence[Statement]) -> bool:
    """A declared Deny the grant carries too (a granted Deny at least as wide, its conditions among
    the declared one's)."""
    return all(any(_covers(g, deny, a) for g in granted if not g.allow) for a in deny.action_patterns)


def not_granted(declared: Sequence[Statement], granted: Sequence[Statement]) -> list[Excess]:
    """Declared Allow action patterns no granted statement covers: declared, but RAM does not let
    the agent do it (its scope says more than it can do)."""
    allows = [s for s in granted if s.allow]
    out: list[Excess] = []
    for st in (s for s in declared if s.allow):
        missing = [a for a in st.action_patterns if not any(_covers(g, st, a) for g in allows)]
        if missing:
            out.append(Excess(st.policy, st.ref, tuple(missing), st.resource_patterns, "not granted in RAM"))
    return out


def over_scoped(policy: str, granted: Sequence[Statement], production: bool) -> list[str]:
    """Why a policy's grant is too wide whatever was declared: AdministratorAccess, ``*`` (or
    ``*:*``) on ``*``, ``ram:*`` (it can grant itself anything), and on a production agent a whole
    service (``ecs:*``)."""
    if policy.split(" ", 1)[0].lower() in ADMIN_POLICIES:
        return [f"{policy} is attached (everything, on everything)"]
    out: list[str] = []
    for st in (s for s in granted if s.allow and not s.condition):
        everything = "*" in st.resource_patterns
        for action in st.action_patterns:
            if action in ("*", "*:*") and everything:
                out.append(f"{policy} {st.ref} allows {action} on *")
            elif action.lower() == "ram:*":
                out.append(f"{policy} {st.ref} allows ram:* (it can grant itself anything)")
            elif production and re.fullmatch(r"[A-Za-z0-9-]+:\*", action):
                out.append(f"{policy} {st.ref} allows {action} (a whole service) on a production agent")
    return list(dict.fromkeys(out))


def unused(declared: Sequence[Statement], granted: Sequence[Statement], used: Iterable[str]) -> list[str]:
    """Declared action patterns RAM grants that no call in ``used`` (RAM actions) matched."""
    used = list(used)
    allows = [g for g in granted if g.allow]
    out: list[str] = []
    for st in (s for s in declared if s.allow):
        for action in st.action_patterns:
            granted_too = any(_covers(g, st, action) for g in allows)
            if granted_too and not any(within(u, action, True) for u in used):
                out.append(action)
    return list(dict.fromkeys(out))


def principals_in(trust: Mapping[str, Any] | None) -> list[str]:
    """Who a trust policy lets assume the role: its Allow statements' principals, as
    ``RAM:acs:ram::1:root``, ``Service:ecs.aliyuncs.com``, ``*``."""
    if not isinstance(trust, Mapping):
        return []
    raw = trust.get("Statement") or []
    out: list[str] = []
    for st in [raw] if isinstance(raw, Mapping) else raw:
        if not isinstance(st, Mapping) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        if principal == "*":
            out.append("*")
        elif isinstance(principal, Mapping):
            for kind, values in principal.items():
                out.extend(f"{kind}:{v}" if v != "*" else "*" for v in _strings(values))
    return list(dict.fromkeys(out))
