"""What RAM grants: one dated snapshot of an account's users, groups, roles, attached policies and
AccessKeys, and what changed between two snapshots.

Pure data (no I/O): ``pipeline.ram`` reads it from the RAM and IMS APIs and stores it; the review
and the ``permission_drift`` detector judge it against each agent's declared scope
(``models.grants``). Principals are named ``user/NAME``, ``role/NAME`` and ``group/NAME``; a policy
by its type and name (``("System", "AdministratorAccess")``), as RAM's ``Attach…`` calls name it.

What a snapshot misses: resource-group-scoped attachments are read as account-wide; inline
session policies and resource policies (OSS bucket policies, KMS key policies) are not RAM
principal grants and are not read; a principal or policy whose reading failed is listed in
:attr:`Snapshot.errors` (its grants are *unknown*, never "none").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PolicyKey = tuple[str, str]  # (PolicyType "System" | "Custom", PolicyName)


def document_hash(document: Any) -> str:
    """A policy document's identity: the SHA-256 of its canonical JSON (keys sorted), so the same
    document read twice is stored once."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def policy_label(key: PolicyKey) -> str:
    return f"{key[1]} ({key[0]})"


@dataclass(frozen=True)
class Policy:
    """A policy attached somewhere, with its default version's document. ``document`` is None
    when it could not be read; ``error`` then says why (its grants are unknown)."""

    type: str
    name: str
    version: str | None = None
    updated: datetime | None = None
    document: dict[str, Any] | None = None
    error: str | None = None

    @property
    def key(self) -> PolicyKey:
        return (self.type, self.name)

    @property
    def label(self) -> str:
        return policy_label(self.key)


@dataclass(frozen=True)
class User:
    name: str
    id: str | None = None
    created: datetime | None = None
    console: bool | None = None  # has a console password (login profile); None: unknown
    mfa: bool | None = None  # an MFA device is bound; None: unknown
    last_login: datetime | None = None
    policies: tuple[PolicyKey, ...] = ()  # attached to the user itself
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    name: str
    policies: tuple[PolicyKey, ...] = ()


@dataclass(frozen=True)
class Role:
    name: str
    id: str | None = None
    arn: str | None = None
    created: datetime | None = None
    trust: dict[str, Any] | None = None  # the AssumeRolePolicyDocument
    policies: tuple[PolicyKey, ...] = ()
    service_linked: bool = False


@dataclass(frozen=True)
class AccessKey:
    id: str
    user: str
    status: str  # Active | Inactive
    created: datetime | None = None
    last_used: datetime | None = None  # None: never used, or not known

    @property
    def active(self) -> bool:
        return self.status == "Active"


@dataclass(frozen=True)
class SyncError:
    """One call that failed while the rest of the account was read."""

    principal: str  # user/NAME, role/NAME, group/NAME, policy/TYPE/NAME, or "account"
    call: str  # the API action
    code: str
    message: str


@dataclass
class Snapshot:
    taken_at: datetime
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    policies: dict[PolicyKey, Policy] = field(default_factory=dict)
    keys: dict[str, AccessKey] = field(default_factory=dict)
    errors: list[SyncError] = field(default_factory=list)
    id: int | None = None
    account: str | None = None

    def principal_exists(self, principal: str) -> bool:
        kind, _, name = principal.partition("/")
        tables: dict[str, dict[str, Any]] = {"user": self.users, "role": self.roles, "group": self.groups}
        return name in tables.get(kind, {})

    def grants(self, principal: str) -> list[tuple[str | None, PolicyKey]]:
        """The policies that apply to a user or role: ``(None, key)`` attached to it, ``(group,
        key)`` through a group the user is in."""
        kind, _, name = principal.partition("/")
        if kind == "role":
            role = self.roles.get(name)
            return [(None, k) for k in role.policies] if role else []
        user = self.users.get(name)
        if user is None:
            return []
        out: list[tuple[str | None, PolicyKey]] = [(None, k) for k in user.policies]
        for group in user.groups:
            out.extend((group, k) for k in (self.groups[group].policies if group in self.groups else ()))
        return out

    def keys_of(self, user: str) -> list[AccessKey]:
        return sorted((k for k in self.keys.values() if k.user == user), key=lambda k: k.id)

    def errors_of(self, principal: str) -> list[SyncError]:
        """The failed calls that leave this principal's grants or credentials unknown (its own,
        its groups', and those of the policies that apply to it)."""
        related = {principal}
        kind, _, name = principal.partition("/")
        if kind == "user" and name in self.users:
            related.update(f"group/{g}" for g in self.users[name].groups)
        related.update(f"policy/{t}/{n}" for _, (t, n) in self.grants(principal))
        return [e for e in self.errors if e.principal in related or e.principal == "account"]

    def members(self, group: str) -> list[str]:
        return sorted(u.name for u in self.users.values() if group in u.groups)

    def attached_to(self, key: PolicyKey) -> Iterator[str]:
        """Every user and role the policy applies to (directly or through a group)."""
        for user in self.users.values():
            if any(k == key for _, k in self.grants(f"user/{user.name}")):
                yield f"user/{user.name}"
        for role in self.roles.values():
            if key in role.policies:
                yield f"role/{role.name}"


@dataclass(frozen=True)
class Change:
    """A principal's grants changed between two snapshots. ``kind``: ``attached`` (a policy now
    applies: attached to it, or to a group it is in), ``joined`` (the user joined a group: the
    group's policies), ``version`` (a policy that applies got a new default document), ``trust``
    (who may assume the role changed)."""

    principal: str
    kind: str
    policy: PolicyKey | None = None
    group: str | None = None
    document: dict[str, Any] | None = None  # what the grant says now (None: unknown)
    previous: dict[str, Any] | None = None  # for version and trust: what it said before

    @property
    def detail(self) -> str:
        via = f" through group {self.group}" if self.group else ""
        what = policy_label(self.policy) if self.policy else "?"
        return {"attached": f"{what} attached{via}",
                "joined": f"joined group {self.group} ({what})",
                "version": f"{what} got a new default version{via}",
                "trust": "its trust policy changed"}.get(self.kind, self.kind)


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """What changed for each user and role from ``before`` to ``after``. A principal that did not
    exist before gets a change for each policy that applies to it (it was granted them); one whose
    reading failed in either snapshot is left out (an unread side is not an empty one)."""
    out: list[Change] = []
    for principal in [*(f"user/{u}" for u in sorted(after.users)), *(f"role/{r}" for r in sorted(after.roles))]:
        if before.errors_of(principal) or after.errors_of(principal):
            continue  # a side that could not be read says nothing about what changed
        out.extend(_grant_changes(before, after, principal))
    for name in sorted(after.roles):
        old, new = before.roles.get(name), after.roles[name]
        if old is not None and old.trust is not None and new.trust is not None and _hash(old.trust) != _hash(new.trust):
            out.append(Change(f"role/{name}", "trust", document=new.trust, previous=old.trust))
    return out


def _grant_changes(before: Snapshot, after: Snapshot, principal: str) -> list[Change]:
    old_keys = {k for _, k in before.grants(principal)}
    joined = _joined_groups(before, after, principal)
    out: list[Change] = []
    seen: set[PolicyKey] = set()
    for via, key in after.grants(principal):
        if key in seen:  # one change per policy, however many ways it applies
            continue
        seen.add(key)
        document, previous = _document(after, key), _document(before, key)
        if key not in old_keys:
            out.append(Change(principal, "joined" if via in joined else "attached", key, via, document))
        elif document is not None and previous is not None and _hash(previous) != _hash(document):
            out.append(Change(principal, "version", key, via, document, previous))
    return out


def _joined_groups(before: Snapshot, after: Snapshot, principal: str) -> set[str]:
    kind, _, name = principal.partition("/")
    if kind != "user" or name not in after.users:
        return set()
    was = set(before.users[name].groups) if name in before.users else set()
    return set(after.users[name].groups) - was


def _document(snapshot: Snapshot, key: PolicyKey) -> dict[str, Any] | None:
    policy = snapshot.policies.get(key)
    return policy.document if policy else None


def _hash(document: Any) -> str | None:
    return None if document is None else document_hash(document)
