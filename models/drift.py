"""Permission drift: a change to what RAM grants a principal, and whether it reaches beyond the
declared scope of the agent that acts through it.

Changes come from two places: a call in ActionTrail (:func:`changes_of_call`: ``AttachPolicyTo*``,
``CreatePolicyVersion`` with ``SetAsDefault``, ``SetDefaultPolicyVersion``, ``AddUserToGroup``,
``UpdateRole`` with a new trust policy), and the difference between two RAM snapshots
(``models.ram.diff``). What a call grants is read from the call itself (a new policy version's
document), else from the last RAM snapshot (a policy's or a group's documents), else from the
vendored system policies; when none says, the grant is *unknown* and reported as such.

Known gaps: without a snapshot, a group's members and policies are not known (a policy attached
to a group, or a user added to one, is judged only once a sync sees it); ``SetDefaultPolicyVersion``
names a version whose document no snapshot holds yet (unknown until the next sync).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.grants import (
    Excess,
    Unreadable,
    beyond,
    declared_statements,
    principals_in,
    statements,
    system_policy,
)
from models.ram import Change, PolicyKey, Snapshot, policy_label

_ATTACH = {"attachpolicytouser": "user", "attachpolicytorole": "role", "attachpolicytogroup": "group",
           "attachuserpolicy": "user", "attachrolepolicy": "role", "attachgrouppolicy": "group"}
_TRUST = ("updaterole", "updateassumerolepolicy")
DRIFT_EVENTS = frozenset([*_ATTACH, *_TRUST, "createpolicyversion", "setdefaultpolicyversion", "addusertogroup"])


def changes_of_call(event_name: str | None, parameters: Any, snapshot: Snapshot | None) -> list[Change]:
    """What a (successful) RAM call changed, principal by principal."""
    name = (event_name or "").lower()
    params = _params(parameters)
    if name in _ATTACH:
        return _attach(_ATTACH[name], params, snapshot)
    if name in ("createpolicyversion", "setdefaultpolicyversion"):
        return _new_version(name, params, snapshot)
    if name == "addusertogroup":
        return _joined(params, snapshot)
    if name in _TRUST:
        return _trust(params, snapshot)
    return []


def _attach(kind: str, params: Mapping[str, Any], snapshot: Snapshot | None) -> list[Change]:
    target = _get(params, f"{kind.capitalize()}Name")
    policy = _get(params, "PolicyName") or str(_get(params, "PolicyArn") or "").rsplit("/", 1)[-1]
    if not target or not policy:
        return []
    key: PolicyKey = (str(_get(params, "PolicyType") or "Custom").capitalize(), str(policy))
    document = _document(key, snapshot)
    if kind != "group":
        return [Change(f"{kind}/{target}", "attached", key, None, document)]
    members = snapshot.members(str(target)) if snapshot is not None else []
    return [Change(f"user/{m}", "attached", key, str(target), document) for m in members]


def _new_version(name: str, params: Mapping[str, Any], snapshot: Snapshot | None) -> list[Change]:
    policy = _get(params, "PolicyName")
    if not policy or (name == "createpolicyversion" and str(_get(params, "SetAsDefault")).lower() != "true"):
        return []  # a version that is not the default grants nothing yet
    key: PolicyKey = ("Custom", str(policy))
    document = _json(_get(params, "PolicyDocument")) if name == "createpolicyversion" else None
    previous = _document(key, snapshot)
    holders = list(snapshot.attached_to(key)) if snapshot is not None else []
    return [Change(p, "version", key, None, document, previous) for p in holders]


def _joined(params: Mapping[str, Any], snapshot: Snapshot | None) -> list[Change]:
    user, group = _get(params, "UserName"), _get(params, "GroupName")
    if not user or not group or snapshot is None or group not in snapshot.groups:
        return []
    return [Change(f"user/{user}", "joined", key, str(group), _document(key, snapshot))
            for key in snapshot.groups[str(group)].policies]


def _trust(params: Mapping[str, Any], snapshot: Snapshot | None) -> list[Change]:
    role = _get(params, "RoleName")
    document = _json(_get(params, "NewAssumeRolePolicyDocument") or _get(params, "PolicyDocument"))
    if not role or document is None:
        return []
    old = snapshot.roles[str(role)].trust if snapshot is not None and role in snapshot.roles else None
    return [Change(f"role/{role}", "trust", document=document, previous=old)]


def _document(key: PolicyKey, snapshot: Snapshot | None) -> dict[str, Any] | None:
    policy = snapshot.policies.get(key) if snapshot is not None else None
    if policy is not None and policy.document is not None:
        return policy.document
    return system_policy(key[1]) if key[0] == "System" else None


# -- judging ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """A change that reaches beyond an agent's declared scope (or whose reach is unknown)."""

    change: Change
    beyond: tuple[Excess, ...] = ()
    unknown: str | None = None  # why what it grants is not known
    new_principals: tuple[str, ...] = ()  # for a trust change: who may now assume the role

    @property
    def critical(self) -> bool:
        if "*" in self.new_principals:
            return True
        return any(a.lower() in ("*", "*:*", "ram:*") for e in self.beyond for a in e.actions) or (
            self.change.policy is not None and self.change.policy[1].lower() == "administratoraccess")

    @property
    def grants(self) -> str:
        """What it grants beyond the scope, for a human."""
        if self.unknown:
            return self.unknown
        if self.new_principals:
            return "now trusts " + ", ".join(self.new_principals[:5])
        return "; ".join(f"{', '.join(e.actions[:5])} on {', '.join(e.resources[:3])}" for e in self.beyond[:3])


def judge(change: Change, declared: Sequence[Mapping[str, Any]]) -> Drift | None:
    """The drift ``change`` makes for an agent declaring ``declared`` (its RAM policy documents),
    or None when it stays within them. A trust change drifts when it lets someone new assume the
    role (an agent's scope does not say who may assume it)."""
    if change.kind == "trust":
        before = set(principals_in(change.previous)) if change.previous is not None else set()
        new = tuple(p for p in principals_in(change.document) if p not in before)
        return Drift(change, new_principals=new) if new else None
    label = policy_label(change.policy) if change.policy else "a policy"
    if change.document is None:
        return Drift(change, unknown=f"what {label} grants is not known (not in the last RAM snapshot)")
    try:
        granted = statements(change.document, label)
    except Unreadable as exc:
        return Drift(change, unknown=f"{label} cannot be read ({exc})")
    excess = beyond(granted, declared_statements(declared))
    return Drift(change, tuple(excess)) if excess else None


def _params(value: Any) -> Mapping[str, Any]:
    parsed = _json(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, Mapping) else {}


def _json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value
    try:
        return json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _get(params: Mapping[str, Any], key: str) -> Any:
    """A parameter by its RAM name, whatever its case (converted exports write ``userName``)."""
    if key in params:
        return params[key]
    return next((v for k, v in params.items() if str(k).lower() == key.lower()), None)
