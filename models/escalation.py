"""Privilege escalation in RAM: calls that grant an identity more power, recognized from the event
name and its request parameters. One place for both detectors that report them: ``out_of_scope``
(the call is outside the agent's declared scope: it names the pattern) and ``privilege_escalation``
(every other case).

Patterns (RAM API names; the AWS-shaped names kept by converted CloudTrail exports too):

* ``attach_policy``: ``AttachPolicyToUser|Role|Group`` (``AttachUserPolicy``, ``AttachRolePolicy``,
  ``AttachGroupPolicy``), whatever the policy;
* ``policy_version``: ``CreatePolicyVersion`` with ``SetAsDefault`` true (a version that is not the
  default grants nothing yet);
* ``default_policy_version``: ``SetDefaultPolicyVersion``;
* ``access_key_for_other``: ``CreateAccessKey`` for a user other than the caller (a RAM user making
  its own key is rotation, not escalation);
* ``trust_policy``: ``UpdateRole`` with a new ``AssumeRolePolicyDocument`` (``UpdateAssumeRolePolicy``):
  who may assume the role changes;
* ``privileged_group``: ``AddUserToGroup`` into a group whose name matches ``privileged_groups``
  (glob, case-insensitive), or into any group when no list is given;
* ``login_profile_for_other``: ``CreateLoginProfile`` / ``UpdateLoginProfile`` for another user
  (console access, or a reset password, for someone else).

``critical`` marks the worst: attaching an administrator policy (``admin_policies``), a default
policy version that allows everything (``*`` or ``*:*`` on ``*``), and self-escalation (a user or
role granting itself: attaching to itself, adding itself to a privileged group, changing the
trust of the role it is acting as).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ADMIN_POLICIES = ("AdministratorAccess", "AliyunRAMFullAccess")  # RAM full access can grant anything
PRIVILEGED_GROUPS = ("*admin*", "*power*", "*owner*", "*root*")

_ATTACH = {"attachpolicytouser": "user", "attachpolicytorole": "role", "attachpolicytogroup": "group",
           "attachuserpolicy": "user", "attachrolepolicy": "role", "attachgrouppolicy": "group"}
_TRUST = ("updaterole", "updateassumerolepolicy")
_LOGIN = ("createloginprofile", "updateloginprofile")
ESCALATION_EVENTS = frozenset([*_ATTACH, *_TRUST, *_LOGIN, "createpolicyversion", "setdefaultpolicyversion",
                               "createaccesskey", "addusertogroup"])  # lower-case event names


def escalation_events(event_names: pd.Series) -> np.ndarray:
    """Which rows are calls that may escalate (by name; :func:`classify` decides), judging each
    distinct name once."""
    names = [n for n in event_names.dropna().unique() if str(n).lower() in ESCALATION_EVENTS]
    return event_names.isin(names).to_numpy(dtype=bool) if names else np.zeros(len(event_names), dtype=bool)


@dataclass(frozen=True)
class Caller:
    """Who made the call, as the event's identity columns say."""

    identity_type: str | None
    user_name: str | None  # a RAM user's name (for an assumed role: "Role:session")
    role_name: str | None  # an assumed role's name


@dataclass(frozen=True)
class Escalation:
    pattern: str
    target: str  # "user/NAME", "role/NAME", "group/NAME", "policy/NAME"; "unknown" when not logged
    detail: str  # what it did, for a human: "attached AdministratorAccess to user svc-backup2"
    critical: bool
    self_escalation: bool
    policy: str | None = None


def classify(event_name: str | None, request_parameters: Any, caller: Caller,
             privileged_groups: Iterable[str] | None = PRIVILEGED_GROUPS,
             admin_policies: Iterable[str] = ADMIN_POLICIES) -> Escalation | None:
    """The escalation a call makes, or None. ``request_parameters`` is the JSON text (or the
    object); when it is missing, what the name alone says is assumed (an ``UpdateRole`` may have
    changed the trust policy). ``privileged_groups=None``: any group is privileged."""
    name = (event_name or "").lower()
    if name not in ESCALATION_EVENTS:
        return None
    params = _parameters(request_parameters)
    if name in _ATTACH:
        return _attach(_ATTACH[name], params, caller, admin_policies)
    if name == "createpolicyversion":
        return _policy_version(params)
    if name == "setdefaultpolicyversion":
        policy = _get(params, "PolicyName")
        version = _get(params, "VersionId")
        return Escalation("default_policy_version", f"policy/{policy or 'unknown'}",
                          f"made version {version or '?'} the default of policy {policy or '?'}", False, False, policy)
    if name in _TRUST:
        return _trust(params, caller, not isinstance(request_parameters, str | dict))
    if name == "addusertogroup":
        return _group(params, caller, privileged_groups)
    return _for_other(name, params, caller)


def _attach(kind: str, params: dict[str, Any], caller: Caller, admin: Iterable[str]) -> Escalation:
    target = _get(params, f"{kind.capitalize()}Name")
    policy = _get(params, "PolicyName") or (_get(params, "PolicyArn") or "").rsplit("/", 1)[-1] or None
    is_admin = policy is not None and policy.lower() in {a.lower() for a in admin}
    own = _is_caller(kind, target, caller)
    detail = f"attached {policy or 'a policy'} to {kind} {target or '?'}" + (" (itself)" if own else "")
    return Escalation("attach_policy", f"{kind}/{target or 'unknown'}", detail, is_admin or own, own, policy)


def _policy_version(params: dict[str, Any]) -> Escalation | None:
    if str(_get(params, "SetAsDefault")).lower() != "true":
        return None
    policy = _get(params, "PolicyName") or (_get(params, "PolicyArn") or "").rsplit("/", 1)[-1] or None
    everything = allows_everything(_get(params, "PolicyDocument"))
    detail = (f"made a new default version of policy {policy or '?'}"
              + (" that allows everything" if everything else ""))
    return Escalation("policy_version", f"policy/{policy or 'unknown'}", detail, everything, False, policy)


def _trust(params: dict[str, Any], caller: Caller, unknown: bool) -> Escalation | None:
    document = _get(params, "NewAssumeRolePolicyDocument") or _get(params, "PolicyDocument")
    if document is None and not unknown:
        return None  # e.g. only NewMaxSessionDuration changed
    role = _get(params, "RoleName")
    own = _is_caller("role", role, caller)
    principals = _principals(document)
    who = f" to trust {', '.join(principals[:3])}" if principals else ""
    detail = f"changed who may assume role {role or '?'}{who}" + (" (the role it acts as)" if own else "")
    return Escalation("trust_policy", f"role/{role or 'unknown'}", detail, own or "*" in principals, own)


def _group(params: dict[str, Any], caller: Caller, privileged: Iterable[str] | None) -> Escalation | None:
    group, user = _get(params, "GroupName"), _get(params, "UserName")
    patterns = None if privileged is None else [p.lower() for p in privileged]
    if patterns is not None and not any(fnmatch.fnmatchcase((group or "").lower(), p) for p in patterns):
        return None
    own = _is_caller("user", user, caller)
    detail = f"added user {user or '?'} to group {group or '?'}" + (" (itself)" if own else "")
    return Escalation("privileged_group", f"group/{group or 'unknown'}", detail, own, own)


def _for_other(name: str, params: dict[str, Any], caller: Caller) -> Escalation | None:
    user = _get(params, "UserName")
    if not user or _is_caller("user", user, caller):
        return None  # its own key or password
    if name == "createaccesskey":
        return Escalation("access_key_for_other", f"user/{user}", f"created an AccessKey for user {user}",
                          False, False)
    verb = "gave console access to" if name == "createloginprofile" else "changed the console password of"
    return Escalation("login_profile_for_other", f"user/{user}", f"{verb} user {user}", False, False)


def _is_caller(kind: str, target: str | None, caller: Caller) -> bool:
    if not target:
        return False
    if kind == "user":
        return caller.identity_type == "ram-user" and target == caller.user_name
    if kind == "role":
        return caller.identity_type == "assumed-role" and target == caller.role_name
    return False


def allows_everything(document: Any) -> bool:
    """Does a RAM policy document allow every action (``*`` or ``*:*``) on every resource?"""
    doc = _parameters(document)
    statements = doc.get("Statement") or doc.get("statement") or []
    for st in statements if isinstance(statements, list) else [statements]:
        if not isinstance(st, dict) or str(st.get("Effect", "")).lower() != "allow":
            continue
        if _has(st.get("Action"), ("*", "*:*")) and _has(st.get("Resource", "*"), ("*",)):
            return True
    return False


def _has(value: Any, wanted: tuple[str, ...]) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and v.strip() in wanted for v in values)


def _principals(document: Any) -> list[str]:
    doc = _parameters(document)
    out: list[str] = []
    statements = doc.get("Statement") or []
    for st in statements if isinstance(statements, list) else [statements]:
        principal = st.get("Principal") if isinstance(st, dict) else None
        if principal == "*":
            out.append("*")
        elif isinstance(principal, dict):
            for values in principal.values():
                out.extend(str(v) for v in (values if isinstance(values, list) else [values]))
    return out


def _parameters(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _get(params: dict[str, Any], key: str) -> Any:
    """A parameter by its RAM name, whatever its case (converted exports write ``userName``)."""
    if key in params:
        return params[key]
    lowered = key.lower()
    return next((v for k, v in params.items() if k.lower() == lowered), None)
