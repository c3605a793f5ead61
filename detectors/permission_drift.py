"""permission_drift: an agent's grants in RAM changed beyond its declared scope.

Raised on the *target* agent (whose RAM user or role was granted more), naming who made the
change, even when that actor was entitled to make it: an administrator attaching
AdministratorAccess to the CI user is the textbook case. Two sources (``models.drift``):

* a successful call in the window: ``AttachPolicyToUser|Role|Group``, ``CreatePolicyVersion`` with
  ``SetAsDefault``, ``SetDefaultPolicyVersion``, ``AddUserToGroup``, ``UpdateRole`` with a new trust
  policy, aimed at an agent's principal (an ``access-key:`` identity's user counts);
* a new RAM snapshot (``ram sync``): a policy that now applies, a new default version, a group
  joined, a changed trust policy, compared with the snapshot before (``models.ram.diff``; the detect
  driver hands the changes over in ``models.ram_changes``). The actor is not in a snapshot: the
  finding says so; a call seen in ActionTrail for the same change merges into the same finding
  (same agent and key within the dedup window).

A grant is beyond the scope when a statement of the granted policy allows what no declared
statement does (``models.grants.beyond``); a trust change when it lets someone new assume the role.
Severity: high; critical for AdministratorAccess, ``*``, ``ram:*`` or a role anyone may assume;
medium when what was granted is not known (a policy no snapshot holds) or cannot be read.

One event, two views: ``privilege_escalation`` (or ``out_of_scope``) reports the actor; this
detector the target. :func:`link` marks the target's finding ``reported_with`` the actor's, and
the alert outbox sends one Slack alert for the pair (the actor's, which names the target), not two.

Known gaps: agents without declared policies are not judged (nothing to drift from); see
``models.drift`` for what a call alone cannot tell; roles an agent may assume are not followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pandas as pd

from detectors.base import Detector, Finding, Models, jsonable
from models.drift import DRIFT_EVENTS, Drift, changes_of_call, judge
from models.ram import Change, Snapshot, policy_label

_SCORE = {"critical": 0.95, "high": 0.8, "medium": 0.55}
PARTNERS = frozenset({"privilege_escalation", "out_of_scope"})  # who reports the actor of the same call


class PermissionDrift(Detector):
    id = "permission_drift"
    severity = "high"
    # a sync may see a change hours after its call: the two merge into one finding within a day
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "24h"}
    columns = ("event_id", "event_time", "agent", "identity", "event_name", "error_code", "request_parameters")
    parameter_events = DRIFT_EVENTS
    reads_ram_changes = True  # the detect driver hands it each new snapshot's changes

    @property
    def lookback(self) -> timedelta:
        return timedelta(minutes=60)  # one call is one change: no need to re-read a day before a chunk

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        targets = agents_by_principal(models)
        out = list(self._from_events(events, models, targets, now))
        snapshot = models.ram
        for change in models.ram_changes:
            out.extend(self._judged(change, targets, models, None, snapshot, now))
        return out

    def _from_events(self, events: pd.DataFrame, models: Models, targets: dict[str, list[str]],
                     now: datetime) -> Iterator[Finding]:
        if events.empty:
            return
        names = events["event_name"].fillna("").str.lower()
        calls = events[names.isin(DRIFT_EVENTS).to_numpy() & events["error_code"].isna().to_numpy()]
        snapshot = models.ram
        for row in calls.itertuples(index=False):
            for change in changes_of_call(row.event_name, row.request_parameters, snapshot):
                yield from self._judged(change, targets, models, row, snapshot, now)

    def _judged(self, change: Change, targets: dict[str, list[str]], models: Models, row: Any,
                snapshot: Snapshot | None, now: datetime) -> Iterator[Finding]:
        for agent in targets.get(change.principal, []):
            declared = models.inventory.agent(agent)
            if declared is None or not declared.policies:
                continue
            drift = judge(change, declared.policies)
            if drift is not None:
                yield self._finding(agent, drift, row, snapshot, now)

    def _finding(self, agent: str, drift: Drift, row: Any, snapshot: Snapshot | None, now: datetime) -> Finding:
        change = drift.change
        severity = "critical" if drift.critical else "medium" if drift.unknown else "high"
        actor = str(row.agent) if row is not None else None
        when = (row.event_time.to_pydatetime() if row is not None
                else snapshot.taken_at if snapshot is not None else now)
        by = (f"by {actor}" + (" (itself)" if actor == agent else "") if actor
              else f"seen by ram sync (snapshot {snapshot.id if snapshot else '?'}); who did it is not in RAM")
        summary = f"{agent}: {_what(change)} {by}, beyond its declared scope: {drift.grants}"
        evidence = {
            "change": change.kind, "principal": change.principal, "target_agent": agent,
            "policy": policy_label(change.policy) if change.policy else None, "group": change.group,
            "actor": actor, "actor_identity": str(row.identity) if row is not None else None,
            "source": "event" if row is not None else "ram snapshot",
            "snapshot": snapshot.id if snapshot is not None else None,
            "beyond_scope": [e.as_dict() for e in drift.beyond], "unknown": drift.unknown,
            "new_principals": list(drift.new_principals),
            "rule": "a grant beyond the agent's declared scope is reported on the agent, whoever made it",
        }
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=_SCORE[severity], first_seen=when,
            last_seen=when, summary=summary, event_ids=[str(row.event_id)] if row is not None else [],
            evidence=jsonable(evidence),
            dedup_key=f"drift:{change.principal}:{change.kind}:"
                      f"{'/'.join(change.policy) if change.policy else change.group or 'trust'}")


def _what(change: Change) -> str:
    label = policy_label(change.policy) if change.policy else ""
    return {"attached": f"{label} attached to {change.principal}" + (f" (through group {change.group})"
                                                                      if change.group else ""),
            "joined": f"{change.principal} added to group {change.group} ({label})",
            "version": f"a new default version of {label}, which applies to {change.principal}",
            "trust": f"the trust policy of {change.principal} changed"}.get(change.kind, change.kind)


def agents_by_principal(models: Models) -> dict[str, list[str]]:
    """``user/NAME`` and ``role/NAME`` -> the agents acting through them (an ``access-key:``
    identity through its user, when the snapshot knows whose it is)."""
    snapshot = models.ram
    out: dict[str, list[str]] = {}
    for agent in models.inventory.agents:
        for identity in agent.identities:
            kind, _, value = identity.partition(":")
            if kind == "ram-user":
                principal = f"user/{value}"
            elif kind == "role":
                principal = f"role/{value}"
            elif snapshot is not None and value in snapshot.keys:
                principal = f"user/{snapshot.keys[value].user}"
            else:
                continue
            if agent.name not in out.setdefault(principal, []):
                out[principal].append(agent.name)
    return out


def link(findings: list[Finding]) -> list[Finding]:
    """One call, two findings (the actor's escalation, the target's drift): the drift finding is
    marked ``reported_with`` the actor's finding, whose evidence names the target's drift, so the
    outbox alerts the pair once. Runs once every detector has scored a chunk."""
    by_event: dict[str, list[Finding]] = {}
    for f in findings:
        if f.detector in PARTNERS:
            for event_id in f.event_ids:
                by_event.setdefault(event_id, []).append(f)
    for drift in (f for f in findings if f.detector == PermissionDrift.id):
        partners = {p.id: p for e in drift.event_ids for p in by_event.get(e, [])}
        if not partners:
            continue
        drift.evidence["reported_with"] = sorted(partners)
        for partner in partners.values():
            entry = {"agent": drift.agent, "finding": drift.id, "severity": drift.severity}
            if entry not in partner.evidence.setdefault("drift", []):
                partner.evidence["drift"].append(entry)
                partner.summary += f"; beyond the declared scope of {drift.agent} (permission_drift)"
    return findings
