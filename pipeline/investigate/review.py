"""``trailwarden review``: the weekly permission review. Every agent's declared scope (the
inventory) against what RAM grants it (the newest ``ram sync`` snapshot) and what it used (its
events in the window), with a verdict and its reasons; then the account's RAM principals no agent
declares.

Per agent (``fail`` beats ``warn`` beats ``pass``):

* **drift** (fail): an attached policy's statement allows actions beyond the declared scope
  (``models.grants.beyond``, with the project's own RAM pattern rules), named by policy, statement
  and actions; a policy RAM returned that the engine cannot read is *unreadable* (fail: what it
  grants is unknown, never "nothing"), and so is a principal whose reading failed in the sync;
* **not granted** (warn): declared actions RAM does not grant; **unused** (warn): declared and
  granted, but no call in the window needed them;
* **over-scoped** (warn; the drift check already fails it when undeclared): AdministratorAccess,
  ``*``/``*:*`` on ``*``, ``ram:*``, a whole service (``ecs:*``) on a production agent; a role
  anyone may assume (fail);
* **credentials**: an active AccessKey older than 90 days, unused for 90 days, more than one
  active key, a long-lived key used by automation where a role would do (warn); console access
  without MFA (fail);
* **hygiene**: no owner, ``review_by`` passed (warn); ``expires`` passed while RAM still holds an
  active key or attached policies (fail); a declared identity that RAM does not have (warn).

What it misses: grants through resource policies (OSS bucket policies, KMS key policies) and
Resource Directory control policies; roles an agent can assume (only its own principals are
judged); usage by calls that never reached ActionTrail.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.grants import (
    Statement,
    Unreadable,
    beyond,
    declared_statements,
    not_granted,
    over_scoped,
    principals_in,
    statements,
    unused,
)
from models.inventory import Agent, Inventory
from models.mapping import CallFacts, action, is_authorized_call
from models.ram import Snapshot, policy_label
from pipeline.core.times import utcnow
from pipeline.investigate.least_privilege import REFUSED_CODES
from pipeline.store.store import Store

KEY_MAX_AGE = timedelta(days=90)
KEY_IDLE = timedelta(days=90)
NO_OWNER = frozenset({"", "none", "unknown", "tbd", "todo", "-", "n/a", "nobody"})
PRODUCTION = frozenset({"production", "prod"})
LISTED = 5  # patterns named in one reason before "and N more"
VERDICTS = ("pass", "warn", "fail")


@dataclass
class Reason:
    level: str  # warn | fail
    kind: str  # drift | unreadable | not_granted | unused | over_scoped | credentials | hygiene | inventory
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "kind": self.kind, "message": self.message}


@dataclass
class AgentReview:
    agent: str
    owner: str
    environment: str
    principals: list[str] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    granted: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    used_actions: int = 0
    last_activity: datetime | None = None

    @property
    def verdict(self) -> str:
        levels = {r.level for r in self.reasons}
        return "fail" if "fail" in levels else "warn" if "warn" in levels else "pass"

    def add(self, level: str, kind: str, message: str) -> None:
        self.reasons.append(Reason(level, kind, message))

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "verdict": self.verdict, "owner": self.owner, "environment": self.environment,
                "principals": self.principals, "reasons": [r.as_dict() for r in self.reasons],
                "granted": self.granted, "drift": self.drift, "used_actions": self.used_actions,
                "last_activity": self.last_activity}


@dataclass
class Usage:
    """What the window's events say: each agent's RAM actions used, and last activity by agent."""

    used: dict[str, set[str]]
    last: dict[str, datetime]


def review(store: Store | None, inventory: Inventory, snapshot: Snapshot | None, *, agents: list[str] | None = None,
           days: int = 90, now: datetime | None = None) -> dict[str, Any]:
    """The review of ``agents`` (default: every inventory agent), and the account view."""
    now = now or utcnow()
    since = now - timedelta(days=days)
    usage = load_usage(store, since, now)
    chosen = [a for a in inventory.agents if agents is None or a.name in agents]
    reviews = [review_agent(a, snapshot, usage, now) for a in chosen]
    undeclared = undeclared_principals(inventory, snapshot, usage, now) if agents is None else []
    counts = {v: sum(r.verdict == v for r in reviews) for v in VERDICTS}
    return {"generated_at": now, "window": {"since": since, "until": now, "days": days},
            "snapshot": None if snapshot is None else {"id": snapshot.id, "taken_at": snapshot.taken_at,
                                                       "errors": len(snapshot.errors)},
            # the account view is part of a whole review only (None: not looked at)
            "summary": {**counts, "agents": len(reviews), "undeclared": len(undeclared) if agents is None else None},
            "agents": [r.as_dict() for r in reviews], "undeclared": undeclared}


def verdicts(store: Store | None, inventory: Inventory, snapshot: Snapshot | None, *, days: int = 90,
             now: datetime | None = None) -> dict[str, str]:
    """Each inventory agent's verdict (the ``review`` column of ``agents``)."""
    result = review(store, inventory, snapshot, agents=[a.name for a in inventory.agents], days=days, now=now)
    return {r["agent"]: r["verdict"] for r in result["agents"]}


# -- usage ------------------------------------------------------------------------------------------
def load_usage(store: Store | None, since: datetime, until: datetime) -> Usage:
    """One pass over the window's events, grouped (agent, call kind, error): the RAM actions each
    agent used (refused calls did not need the permission), and each agent's last event ever."""
    if store is None:
        return Usage({}, {})
    rows = store.con.execute(
        "SELECT agent, event_type, event_name, service_name, service_code, error_code FROM events "
        "WHERE event_time >= ? AND event_time < ? GROUP BY ALL", [since, until]).fetchall()
    used: dict[str, set[str]] = defaultdict(set)
    refused: dict[str | None, bool] = {}
    for agent, etype, name, service, code, error in rows:
        if error not in refused:
            refused[error] = bool(error) and any(fnmatch.fnmatchcase(str(error), p) for p in REFUSED_CODES)
        if is_authorized_call(etype, service) and not refused[error]:
            used[agent].add(action(CallFacts(etype, name, service, code, None, None, None, None, None, None)))
    last = dict(store.con.execute("SELECT agent, max(event_time) FROM events GROUP BY agent").fetchall())
    return Usage(dict(used), last)


# -- one agent --------------------------------------------------------------------------------------
def review_agent(agent: Agent, snapshot: Snapshot | None, usage: Usage, now: datetime) -> AgentReview:
    out = AgentReview(agent.name, agent.owner, agent.environment, last_activity=usage.last.get(agent.name))
    used = usage.used.get(agent.name, set())
    out.used_actions = len(used)
    _hygiene(out, agent, snapshot, now)
    if snapshot is None:
        out.add("warn", "inventory", "no RAM snapshot: run `trailwarden ram sync` (grants, credentials and drift "
                                     "are not judged)")
        return out
    principals = _principals(out, agent, snapshot)
    granted = _granted(out, principals, snapshot)
    _judge_grants(out, agent, granted, used)
    for principal in principals:
        _credentials(out, principal, snapshot, used, now)
        _trust(out, principal, snapshot)
    _expired_with_access(out, agent, principals, snapshot, now)
    return out


def _principals(out: AgentReview, agent: Agent, snapshot: Snapshot) -> list[str]:
    """The agent's RAM users and roles (an ``access-key:`` identity is its user's)."""
    found: list[str] = []
    for identity in agent.identities:
        kind, _, value = identity.partition(":")
        if kind == "access-key":
            key = snapshot.keys.get(value)
            principal = f"user/{key.user}" if key else None
        else:
            principal = f"{'user' if kind == 'ram-user' else 'role'}/{value}"
        if principal is None or not snapshot.principal_exists(principal):
            out.add("warn", "inventory", f"declared identity {identity} is not in RAM (snapshot {snapshot.id}): "
                                         "removed, renamed, or a stale inventory")
        elif principal not in found:
            found.append(principal)
    out.principals = found
    return found


def _granted(out: AgentReview, principals: list[str], snapshot: Snapshot) -> list[Statement]:
    """The statements of every policy that applies to the agent's principals; a policy or
    principal that could not be read makes the agent fail (its grants are unknown)."""
    seen: set[tuple[str, str]] = set()
    granted: list[Statement] = []
    for principal in principals:
        for error in snapshot.errors_of(principal):
            out.add("fail", "unreadable", f"RAM could not be read for {error.principal} ({error.call}: {error.code}): "
                                          "what it grants is unknown")
        for via, key in snapshot.grants(principal):
            out.granted.append({"principal": principal, "policy": policy_label(key), "via": via})
            if key in seen:
                continue
            seen.add(key)
            granted.extend(_policy_statements(out, snapshot, key))
    return granted


def _policy_statements(out: AgentReview, snapshot: Snapshot, key: tuple[str, str]) -> list[Statement]:
    policy = snapshot.policies.get(key)
    label = policy_label(key)
    if policy is None or policy.document is None:
        why = policy.error if policy is not None and policy.error else "not in the snapshot"
        out.add("fail", "unreadable", f"policy {label}: {why}; what it grants is unknown")
        return []
    try:
        return statements(policy.document, label)
    except Unreadable as exc:
        out.add("fail", "unreadable", f"policy {label} is not RAM policy the engine can read ({exc}); "
                                      "what it grants is unknown")
        return []


def _judge_grants(out: AgentReview, agent: Agent, granted: list[Statement], used: set[str]) -> None:
    production = agent.environment.lower() in PRODUCTION
    for policy in dict.fromkeys(s.policy for s in granted):
        for why in over_scoped(policy, [s for s in granted if s.policy == policy], production):
            out.add("warn", "over_scoped", why)
    if not agent.policies:
        if granted:
            out.add("warn", "inventory", "no declared scope (`policies:`): RAM's grants cannot be judged")
        return
    declared = declared_statements(agent.policies)
    for excess in beyond(granted, declared):
        where = _attached(out, excess.policy)
        out.drift.append({**excess.as_dict(), "attached": where})
        out.add("fail", "drift", f"{excess.policy} ({where}) {excess.statement} allows {_some(excess.actions)} on "
                                 f"{_some(excess.resources)} beyond the declared scope ({excess.why})")
    if out.principals:
        for missing in not_granted(declared, granted):
            out.add("warn", "not_granted", f"declared {_some(missing.actions)} ({missing.policy} {missing.statement}) "
                                           "but RAM does not grant it")
        idle = unused(declared, granted, used)
        if idle:
            out.add("warn", "unused", f"granted and declared but unused in the window: {_some(idle)}")


def _attached(out: AgentReview, policy: str) -> str:
    """Where a granted policy is attached: "user/ci-deploy", "user/alice through group admins"."""
    return ", ".join(dict.fromkeys(g["principal"] + (f" through group {g['via']}" if g["via"] else "")
                                   for g in out.granted if g["policy"] == policy))


def _credentials(out: AgentReview, principal: str, snapshot: Snapshot, used: set[str], now: datetime) -> None:
    kind, _, name = principal.partition("/")
    if kind != "user":
        return
    user = snapshot.users[name]
    active = [k for k in snapshot.keys_of(name) if k.active]
    for key in active:
        if key.created and now - key.created > KEY_MAX_AGE:
            out.add("warn", "credentials", f"AccessKey {key.id} of {principal} is {(now - key.created).days} days old "
                                           f"(rotate within {KEY_MAX_AGE.days})")
        last = key.last_used or key.created
        if last and now - last > KEY_IDLE:
            idle = f"unused for {(now - last).days} days" if key.last_used else "never used"
            out.add("warn", "credentials", f"AccessKey {key.id} of {principal} is active but {idle}: deactivate it")
    if len(active) > 1:
        out.add("warn", "credentials", f"{principal} has {len(active)} active AccessKeys (one at a time, except "
                                       "while rotating)")
    if active and not user.console and used:
        out.add("warn", "credentials", f"{principal} is automation on a long-lived AccessKey: a RAM role "
                                       "(temporary STS credentials) would do")
    if user.console and user.mfa is False:
        out.add("fail", "credentials", f"{principal} has console access without MFA")
    elif user.console and user.mfa is None:
        out.add("warn", "credentials", f"{principal} has console access; whether it has MFA is unknown")


def _trust(out: AgentReview, principal: str, snapshot: Snapshot) -> None:
    kind, _, name = principal.partition("/")
    if kind == "role" and "*" in principals_in(snapshot.roles[name].trust):
        out.add("fail", "over_scoped", f"{principal}'s trust policy lets anyone (*) assume it")


def _hygiene(out: AgentReview, agent: Agent, snapshot: Snapshot | None, now: datetime) -> None:
    if agent.owner.strip().lower() in NO_OWNER:
        out.add("warn", "hygiene", f"no owner (owner: {agent.owner!r})")
    if agent.review_by and agent.review_by < now.date():
        out.add("warn", "hygiene", f"review_by {agent.review_by.isoformat()} has passed")


def _expired_with_access(out: AgentReview, agent: Agent, principals: list[str], snapshot: Snapshot,
                         now: datetime) -> None:
    if agent.expires is None or agent.expires > now:
        return
    keys = [k.id for p in principals if p.startswith("user/") for k in snapshot.keys_of(p[5:]) if k.active]
    policies = sorted({policy_label(k) for p in principals for _, k in snapshot.grants(p)})
    if keys or policies:
        held = "; ".join(filter(None, (f"active AccessKey {', '.join(keys)}" if keys else "",
                                       f"attached {_some(policies)}" if policies else "")))
        out.add("fail", "hygiene", f"expired {agent.expires:%Y-%m-%d} but RAM still grants it: {held}")


def _some(items: Any) -> str:
    items = list(items)
    shown = ", ".join(items[:LISTED])
    return shown + (f" and {len(items) - LISTED} more" if len(items) > LISTED else "")


# -- the account ------------------------------------------------------------------------------------
def undeclared_principals(inventory: Inventory, snapshot: Snapshot | None, usage: Usage,
                          now: datetime) -> list[dict[str, Any]]:
    """RAM users and roles no agent declares (service-linked roles, which Alibaba Cloud manages,
    apart), with their last activity and what they are granted."""
    if snapshot is None:
        return []
    declared = _declared_principals(inventory, snapshot)
    out: list[dict[str, Any]] = []
    for principal in [*(f"user/{u}" for u in sorted(snapshot.users)), *(f"role/{r}" for r in sorted(snapshot.roles))]:
        kind, _, name = principal.partition("/")
        if principal in declared or (kind == "role" and snapshot.roles[name].service_linked):
            continue
        identity = f"{'ram-user' if kind == 'user' else 'role'}:{name}"
        last = usage.last.get(identity)
        keys = [k for k in snapshot.keys_of(name) if k.active] if kind == "user" else []
        grants = sorted({policy_label(k) for _, k in snapshot.grants(principal)})
        flags = _undeclared_flags(snapshot, principal, last, now)
        out.append({"principal": principal, "identity": identity, "last_activity": last, "grants": grants,
                    "active_keys": [k.id for k in keys], "flags": flags})
    return out


def _declared_principals(inventory: Inventory, snapshot: Snapshot) -> set[str]:
    out: set[str] = set()
    for agent in inventory.agents:
        for identity in agent.identities:
            kind, _, value = identity.partition(":")
            if kind == "ram-user":
                out.add(f"user/{value}")
            elif kind == "role":
                out.add(f"role/{value}")
            elif value in snapshot.keys:
                out.add(f"user/{snapshot.keys[value].user}")
    return out


def _undeclared_flags(snapshot: Snapshot, principal: str, last: datetime | None, now: datetime) -> list[str]:
    flags = []
    if last is None or now - last > KEY_IDLE:
        flags.append("idle 90d+" if last else "no activity seen")
    statements_: list[Statement] = []
    for _, key in snapshot.grants(principal):
        policy = snapshot.policies.get(key)
        if policy is not None and policy.document is not None:
            try:
                statements_.extend(statements(policy.document, policy.label))
            except Unreadable:
                flags.append(f"unreadable {policy.label}")
    if any(over_scoped(s.policy, [s], False) for s in statements_ if s.allow):
        flags.append("admin")
    kind, _, name = principal.partition("/")
    if kind == "user" and snapshot.users[name].console and snapshot.users[name].mfa is False:
        flags.append("console without MFA")
    return flags
