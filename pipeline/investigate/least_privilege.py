"""``trailwarden least-privilege``: what an agent is granted against what it used, and a tighter
policy that would still have allowed everything it did.

Granted = the action patterns of the Allow statements in its declared policies. Used = the RAM
actions of its RAM-authorized calls in the window (default: the last 90 days) that RAM did not
refuse: a call that failed for another reason (``Throttling``, ``InvalidParameter``, a missing
resource) still needed the permission, while one refused for permission (``NoPermission``,
``Forbidden*``, ``AccessDenied*``) or never authenticated (``InvalidAccessKeyId``, a bad signature)
did not show a need. Each grant is shown with the calls it covered; grants nothing used are
candidates to remove. The suggested policy narrows each Allow statement of the original to the used actions it covers - on
the resources they touched inside its ``Resource`` when there are few of them (and every call named
one), else on its own ``Resource`` - keeping its ``Condition``, and keeps every Deny statement: it
never allows what the original did not.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from models.inventory import Inventory
from models.mapping import CallFacts, action, is_authorized_call, resources
from models.policy import glob
from pipeline.core.errors import UsageError
from pipeline.core.times import utcnow
from pipeline.store.store import Store

MAX_LISTED_RESOURCES = 5  # more distinct resources than this: the suggestion uses "*"
# Refused by RAM (for permission, or before it: not authenticated): not a call the agent is known to need.
REFUSED_CODES = ("NoPermission*", "Forbidden*", "AccessDenied*", "*Unauthorized*", "InvalidAccessKeyId*",
                 "SignatureDoesNotMatch", "IncompleteSignature", "InvalidSecurityToken*")


def least_privilege(store: Store, inventory: Inventory, agent: str, *, since: datetime | None = None,
                    until: datetime | None = None) -> dict[str, Any]:
    declared = inventory.agent(agent)
    if declared is None:
        raise UsageError(f"{agent!r} is not an inventory agent: it has no declared scope to compare", key="AGENT")
    until = until or utcnow()
    since = since or until - timedelta(days=90)
    used = _used(store, agent, since, until)
    grants = [(pattern, stmt) for doc in declared.policies for stmt in _statements(doc)
              if stmt.get("Effect") == "Allow" for pattern in _list(stmt.get("Action") or [])]
    granted = []
    for pattern, stmt in grants:
        regex = glob(pattern, ignore_case=True)
        covered = {a: u for a, u in used.items() if regex.fullmatch(a)}
        granted.append({"pattern": pattern, "resource": stmt.get("Resource"), "used_actions": sorted(covered),
                        "calls": sum(u["calls"] for u in covered.values()), "unused": not covered})
    allowed = {a for g in granted for a in g["used_actions"]}
    return {
        "agent": agent, "window": {"since": since, "until": until},
        "granted": granted,
        "used": [{"action": a, **{k: v for k, v in u.items() if k not in ("resources", "unnamed")},
                  "resources": sorted(u["resources"])[:MAX_LISTED_RESOURCES],
                  "distinct_resources": len(u["resources"]), "granted": a in allowed}
                 for a, u in sorted(used.items(), key=lambda kv: (-kv[1]["calls"], kv[0]))],
        "unused_grants": [g["pattern"] for g in granted if g["unused"]],
        "suggested_policy": _suggestion(used, declared.policies),
    }


def _used(store: Store, agent: str, since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
    rows = store.con.execute(
        """
        SELECT event_type, event_name, service_name, service_code, acs_region,
               coalesce(recipient_account_id, account_id), referenced_resources, resource_type, resource_name,
               error_code, count(*), max(event_time)
        FROM events WHERE agent = ? AND event_time >= ? AND event_time < ?
        GROUP BY ALL
        """, [agent, since, until]).fetchall()
    used: dict[str, dict[str, Any]] = defaultdict(lambda: {"calls": 0, "failed": 0, "last_used": None,
                                                          "resources": set(), "unnamed": False})
    for etype, name, service, code, region, account, refs, rtype, rname, error, calls, last in rows:
        if not is_authorized_call(etype, service) or _refused(error):
            continue
        facts = CallFacts(etype, name, service, code, region, account, refs, rtype, rname, None)
        entry = used[action(facts)]
        entry["calls"] += calls
        entry["failed"] += calls if error else 0
        entry["last_used"] = max(filter(None, (entry["last_used"], last)))
        named = [r for r in resources(facts) if not r.endswith(":*")]
        entry["resources"].update(named)
        entry["unnamed"] = entry["unnamed"] or not named  # a call on no named resource
    return dict(used)


def _refused(error_code: str | None) -> bool:
    return bool(error_code) and any(fnmatch.fnmatchcase(str(error_code), p) for p in REFUSED_CODES)


def _suggestion(used: dict[str, dict[str, Any]], policies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The tightened policy; None when the agent made no call its policies allowed (there is
    nothing to keep: detach its policies, or retire the agent)."""
    statements = [narrowed for doc in policies for stmt in _statements(doc) if stmt.get("Effect") == "Allow"
                  for narrowed in _narrowed(stmt, used)]
    if not statements:
        return None
    statements += [s for doc in policies for s in _statements(doc) if s.get("Effect") == "Deny"]
    return {"Version": "1", "Statement": statements}


def _narrowed(stmt: dict[str, Any], used: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``stmt`` cut down to the used actions it covers, grouped by the resources they touched."""
    patterns = [glob(p, ignore_case=True) for p in _list(stmt.get("Action") or [])]
    by_resources: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for act in sorted(a for a in used if any(p.fullmatch(a) for p in patterns)):
        arns = sorted(r for r in used[act]["resources"] if _inside(r, stmt))
        few = 0 < len(arns) <= MAX_LISTED_RESOURCES and not used[act]["unnamed"]
        by_resources[tuple(arns) if few else ()].append(act)
    out: list[dict[str, Any]] = []
    for touched, acts in sorted(by_resources.items(), key=lambda kv: kv[1]):
        narrowed: dict[str, Any] = {"Effect": "Allow", "Action": _one(acts)}
        if touched:
            narrowed["Resource"] = _one(list(touched))
        else:
            narrowed.update({k: stmt[k] for k in ("Resource", "NotResource") if k in stmt})
        if "Condition" in stmt:
            narrowed["Condition"] = stmt["Condition"]
        out.append(narrowed)
    return out


def _inside(arn: str, stmt: dict[str, Any]) -> bool:
    """Does the statement's Resource (or NotResource) cover this ARN? (case-sensitive, as RAM)"""
    if "Resource" in stmt:
        return any(glob(p, ignore_case=False).fullmatch(arn) for p in _list(stmt["Resource"]))
    return "NotResource" in stmt and not any(glob(p, ignore_case=False).fullmatch(arn)
                                             for p in _list(stmt["NotResource"]))


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    st = doc.get("Statement") or []
    return [st] if isinstance(st, dict) else list(st)


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
