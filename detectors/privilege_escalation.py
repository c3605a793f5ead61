"""privilege_escalation: an agent granting itself or another identity more power in RAM.

The patterns (``models.escalation``, shared with ``out_of_scope``): attaching a policy to a user,
role or group; a new *default* policy version (``CreatePolicyVersion`` with ``SetAsDefault``) or
``SetDefaultPolicyVersion``; an AccessKey, or console access / a new password, for a user other than
the caller; changing a role's trust policy (``UpdateRole`` with a new ``AssumeRolePolicyDocument``);
adding a user to a privileged group (``privileged_groups``, by name). The request parameters say
which user, role, group and policy.

Who reports it: when the call is outside the agent's declared scope, ``out_of_scope`` does (its
finding names the pattern and is critical); this detector reports the rest, so the same call is
never reported twice: calls the scope allows, calls by an agent that declares no policies, calls
by an unregistered identity (an escalation is worth its own finding beside
``unregistered_identity``'s daily summary), console operations the scope check skips. Alibaba
Cloud's own service identities are ignored.

Severity: high; critical for attaching an administrator policy (``admin_policies``), a default
policy version that allows everything, and self-escalation (attaching to itself, adding itself to
a privileged group, changing the trust of the role it is acting as). A call that failed
(``errorCode``) is an attempt: one step lower, and the summary says "attempt (failed: <code>)".
The calls of one agent, pattern and target within the dedup window make one finding.

Known gaps: power granted by other means is not seen (``CreateRole`` trusting an outsider and
``PassRole`` to a service, editing a non-default policy version that later becomes default through
another path, ``CreateUser`` + ``AttachPolicy`` done by different agents, resource policies such as
OSS bucket policies or KMS key policies); "privileged" groups are known by name only, and which
policies a group holds is not known; a policy attached by a name other than ``admin_policies`` that
grants everything is high, not critical; a trust policy's principals are shown, not judged (only
``*`` makes it critical); an escalation outside the scope is lost if ``out_of_scope`` fails to run.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import (
    Detector,
    Finding,
    Models,
    capped,
    group_bursts,
    jsonable,
    request_evidence,
)
from detectors.out_of_scope import OutOfScope, declared_decisions
from models.escalation import (
    ADMIN_POLICIES,
    ESCALATION_EVENTS,
    PRIVILEGED_GROUPS,
    Caller,
    Escalation,
    classify,
    escalation_events,
)
from models.policy import Decision

_LOWER = {"critical": "high", "high": "medium", "medium": "low", "low": "low"}
_SCORE = {"critical": 0.95, "high": 0.8, "medium": 0.55, "low": 0.3}
_SCOPE_WORDS = {"within_scope": "within its declared scope", "no_policies": "it declares no policies",
                "unregistered": "an identity in no agent of the inventory",
                "not_scope_checked": "a call the scope check skips"}


class PrivilegeEscalation(Detector):
    id = "privilege_escalation"
    severity = "high"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "60m",
        "privileged_groups": list(PRIVILEGED_GROUPS),  # glob patterns of group names, case-insensitive
        "admin_policies": list(ADMIN_POLICIES),  # attaching one of these is critical
    }
    # the scope decision is out_of_scope's, so its columns; they include the caller's identity
    columns = OutOfScope.columns
    parameter_events = ESCALATION_EVENTS

    def validate(self) -> None:
        for key in ("privileged_groups", "admin_policies"):
            value = self.params[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of names, not {value!r}")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        candidates = events[escalation_events(events["event_name"])]
        candidates = candidates[(candidates["identity_type"].ne("system")
                                 & candidates["event_type"].ne("AliyunServiceEvent")).fillna(True).to_numpy()]
        if candidates.empty:
            return []
        found = pd.Series([self._classify(r) for r in candidates.itertuples(index=False)],
                          index=candidates.index, dtype=object)
        rows = candidates[found.notna().to_numpy()].assign(escalation=found.dropna())
        if rows.empty:
            return []
        rows = rows.assign(scope=_scope(rows, models))
        rows = rows[rows["scope"].notna().to_numpy()]  # the rest is out_of_scope's
        rows = rows.assign(key=[f"{e.pattern}:{e.target}" for e in rows["escalation"]])
        out: list[Finding] = []
        for (agent, key), group in rows.groupby(["agent", "key"], sort=False):
            group = group.sort_values(["event_time", "event_id"])
            for start, end in group_bursts(list(group["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), str(key), group.iloc[start:end]))
        return out

    def _classify(self, row: Any) -> Escalation | None:
        return classify(row.event_name, row.request_parameters,
                        Caller(row.identity_type, row.user_name, row.role_name),
                        self.params["privileged_groups"], self.params["admin_policies"])

    def _finding(self, agent: str, key: str, burst: pd.DataFrame) -> Finding:
        escalations: list[Escalation] = list(burst["escalation"])
        ok = burst["error_code"].isna().to_numpy()
        done = [e for e, succeeded in zip(escalations, ok, strict=True) if succeeded]
        worst = "critical" if any(e.critical for e in (done or escalations)) else "high"
        severity = worst if done else _LOWER[worst]
        first, scope = escalations[0], str(burst["scope"].iloc[0])
        codes = Counter(burst["error_code"].dropna())
        evidence: dict[str, Any] = {
            "pattern": first.pattern, "target": first.target, "policy": first.policy,
            "action": f"ram:{burst['event_name'].iloc[0]}",
            "escalation": capped(dict.fromkeys(e.detail for e in escalations), 5),
            "self_escalation": any(e.self_escalation for e in escalations),
            "critical_pattern": worst == "critical", "scope": scope,
            "count": len(burst), "succeeded": int(ok.sum()), "failed": int((~ok).sum()), "error_codes": dict(codes),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
            "user_agents": capped(dict.fromkeys(burst["user_agent"].dropna()), 5),
            "request_parameters": [request_evidence(p) for p in burst["request_parameters"].dropna()[:3]],
            "rule": "granting power in RAM is reported; outside the declared scope, out_of_scope reports it",
        }
        attempt = "" if done else f" attempt (failed: {', '.join(codes)})"
        n = len(burst)
        summary = (f"{agent} {first.detail} ({evidence['action']}, {n} call{'s' if n != 1 else ''}; "
                   f"{_SCOPE_WORDS[scope]}): a privilege escalation{attempt}")
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=_SCORE[severity],
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=summary, event_ids=list(burst["event_id"]), evidence=jsonable(evidence),
            dedup_key=f"escalation:{key}",
        )


def _scope(rows: pd.DataFrame, models: Models) -> list[str | None]:
    """Why each call is this detector's to report, or None when it is outside the declared scope
    (out_of_scope reports it)."""
    decisions = declared_decisions(rows, models.scopes)
    out: list[str | None] = []
    for agent, decision in zip(rows["agent"], decisions, strict=True):
        scope = models.scopes.get(str(agent))
        if scope is None:
            out.append("unregistered")
        elif not scope.has_policies:
            out.append("no_policies")
        elif decision is None or pd.isna(decision):
            out.append("not_scope_checked")
        else:
            out.append("within_scope" if decision == Decision.ALLOW else None)
    return out

