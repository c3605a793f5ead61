"""out_of_scope: an agent acting outside what its inventory entry declares.

Fires when an agent's call is not allowed by its declared RAM policies (explicitly denied, or no
statement allows it), when it calls from a region outside its declared ``regions`` or from an
address outside its declared ``source_ips``, and when RAM itself refused the call (``NoPermission``,
``Forbidden*``): a refused call is an attempted out-of-scope call. The events of one agent and one
action (or region, or source network) within the dedup window make one finding.

Severity: high; critical when an out-of-scope call succeeded and wrote something; medium when the
decision depends on a condition key the log cannot supply (a resource tag: "possibly out of
scope"), for refused calls the scope would allow, and for a foreign region.

Privilege escalation (``models.escalation``: attaching a policy, a new default policy version, a key
or console password for another user, a role's trust policy, joining a group) outside the declared
scope is reported here, saying so (evidence ``privilege_escalation``; critical, high when every call
failed: an attempt); within the scope, or for an agent without policies, even when RAM refused it,
it is ``privilege_escalation``'s to report, not a "refused" finding here.

Known gaps: agents without declared policies are only checked for regions and sources;
``ConsoleOperation`` events are not scope-checked (their names are console operations, and no
operation-to-API table exists yet); resource ARNs for types missing from ``models.mapping.RESOURCE_TEMPLATES`` use a generic
``<type>/<id>`` form; data-plane OSS events whose object key is only in request parameters map to
the bucket. Unregistered identities are the ``unregistered_identity`` detector's business.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, capped, group_bursts, jsonable
from models.escalation import ESCALATION_EVENTS, Caller, Escalation, classify, escalation_events
from models.mapping import (
    GLOBAL_CODES,
    NOT_AUTHORIZED_EVENT_TYPES,
    PARAMETER_TARGETS,
    SIGNIN_SERVICES,
    CallerFacts,
    CallFacts,
    action,
    requests,
)
from models.policy import Decision, Result
from models.scope import AgentScope
from models.sources import network_of

_WORST = {Decision.EXPLICIT_DENY: 3, Decision.IMPLICIT_DENY: 2, Decision.UNKNOWN: 1, Decision.ALLOW: 0}
_WRITE_PREFIXES = ("Create", "Delete", "Put", "Update", "Modify", "Attach", "Detach", "Stop", "Start", "Run",
                   "Authorize", "Revoke", "Set", "Add", "Remove", "Reset", "Release", "Reboot", "Enable",
                   "Disable", "Upload", "Import", "Associate", "Grant", "Change")

_REQUEST_COLUMNS = ("event_type", "event_name", "service_name", "service_code", "acs_region", "account",
                    "referenced_resources", "resource_type", "resource_name", "request_parameters")
_CONTEXT_COLUMNS = {
    "acs:currenttime": ("event_time",),
    "acs:sourceip": ("source_ip", "ip_version"),
    "acs:sourcevpc": ("vpc_id",),
    "acs:mfapresent": ("mfa_authenticated", "access_key_id"),
    "acs:accessid": ("access_key_id",),
    "acs:securetransport": ("secure_transport",),
    "acs:principalarn": ("identity_type", "account_id", "user_name", "role_name"),
    "acs:useragent": ("user_agent",),
}
_CALLER_FIELDS = ("event_time", "source_ip", "ip_version", "vpc_id", "mfa_authenticated", "access_key_id",
                  "secure_transport", "identity_type", "account_id", "user_name", "role_name", "user_agent")


class OutOfScope(Detector):
    id = "out_of_scope"
    severity = "high"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "60m",
        "refused_codes": ["NoPermission", "Forbidden*", "AccessDenied*"],
        "check_regions": True,
        "check_source_ips": True,
    }
    columns = ("event_id", "event_time", "agent", "event_type", "event_name", "event_rw", "is_global", "service_name",
               "service_code", "acs_region", "account_id", "recipient_account_id", "referenced_resources",
               "resource_type", "resource_name", "request_parameters", "source_ip", "ip_version", "vpc_id",
               "mfa_authenticated", "access_key_id", "secure_transport", "identity_type", "user_name",
               "role_name", "user_agent", "error_code")
    parameter_events = frozenset(PARAMETER_TARGETS) | ESCALATION_EVENTS

    # privilege_escalation reports refused escalations within the scope, unless it is turned off
    escalations_reported_elsewhere = True

    def bind(self, config: Any) -> None:
        settings = (getattr(config, "detectors", None) or {}).get("privilege_escalation") or {}
        self.escalations_reported_elsewhere = settings.get("enabled", True) is not False

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        """All agents at once: per-agent loops cost more in pandas overhead than the work itself."""
        df = _judged(events, models.scopes)
        if df.empty:
            return []
        df = with_decisions(models.scopes, df)
        df = df.assign(escalation=_escalations(df))
        out: list[Finding] = []
        for (agent, key), rows in self._violations(models.scopes, df).groupby(["agent", "vkey"], sort=False):
            scope = models.scopes[str(agent)]
            out.extend(self._bursts(scope, str(key), rows))
        return out

    # -- which events break the scope ---------------------------------------------------------
    def _violations(self, scopes: dict[str, AgentScope], df: pd.DataFrame) -> pd.DataFrame:
        """Every violating event, once per kind, with its dedup key (``vkey``) and kind."""
        parts = []
        decided = df["decision"].notna().to_numpy()
        outside = decided & (df["decision"] != Decision.ALLOW).to_numpy()
        maybe = (df["decision"] == Decision.UNKNOWN).to_numpy()
        kind = np.where(maybe, "possibly_out_of_scope", "out_of_scope")
        parts.append(df.assign(vkind=kind, vkey=pd.Series(kind, index=df.index) + ":" + df["action"].str.lower())[outside])
        # a refused escalation within the scope is privilege_escalation's (an attempt), not "refused"
        refused = _mapped(df["error_code"], self._is_refused).to_numpy() & ~outside
        if self.escalations_reported_elsewhere:
            refused &= df["escalation"].isna().to_numpy()
        parts.append(df.assign(vkind="refused", vkey="refused:" + df["action"].str.lower())[refused])
        if self.params["check_regions"]:
            # global services (RAM, STS...) have no region: ActionTrail files them under the global
            # events storage region, which says nothing about where the agent works
            regional = ~(_mapped(df["action"], _is_global_action) | df["is_global"].fillna(False).astype(bool))
            allowed = _pairs(df, "acs_region", lambda a, r: scopes[a].region_allowed(r), missing=True)
            parts.append(df.assign(vkind="region", vkey="region:" + df["acs_region"].astype(str))
                         [(regional & ~allowed).to_numpy()])
        if self.params["check_source_ips"]:
            foreign = _pairs(df, "source_ip", lambda a, ip: scopes[a].source_allowed(ip) is False).to_numpy()
            rows = df[foreign]
            parts.append(rows.assign(vkind="source_ip", vkey="source:" + rows["source_ip"].map(network_of)))
        return pd.concat(parts) if parts else df.iloc[:0]

    def _is_refused(self, code: Any) -> bool:
        return isinstance(code, str) and any(fnmatch.fnmatchcase(code, p) for p in self.params["refused_codes"])

    # -- findings ----------------------------------------------------------------------------
    def _bursts(self, scope: AgentScope, key: str, rows: pd.DataFrame) -> Iterator[Finding]:
        rows = rows.sort_values(["event_time", "event_id"])
        kind = str(rows["vkind"].iloc[0])
        meta: dict[str, Any] = {"kind": kind}
        if kind == "region":
            meta.update(region=rows["acs_region"].iloc[0], declared=sorted(scope.regions or ()))
        elif kind == "source_ip":
            meta.update(network=key.split(":", 1)[1], declared=[str(n) for n in scope.networks or ()])
        else:
            meta["action"] = rows["action"].iloc[0]
        for start, end in group_bursts(list(rows["event_time"]), self.dedup_window):
            yield self._finding(scope.name, key, rows.iloc[start:end], meta)

    def _finding(self, agent: str, key: str, burst: pd.DataFrame, meta: dict[str, Any]) -> Finding:
        kind = meta["kind"]
        ok = burst["error_code"].isna()
        wrote = bool((ok & burst.apply(_is_write, axis=1)).any())
        severity = _severity(kind, wrote, bool(ok.any()))
        codes = Counter(c for c in burst["error_code"] if isinstance(c, str))
        evidence: dict[str, Any] = {
            **meta, "count": len(burst), "succeeded": int(ok.sum()), "failed": int((~ok).sum()),
            "error_codes": dict(codes), "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna())),
            "regions": capped(dict.fromkeys(burst["acs_region"].dropna())),
        }
        hint = ""
        if kind in ("out_of_scope", "possibly_out_of_scope"):
            first = burst.iloc[0]
            evidence.update(decision=str(first["decision"]), statement=_text(first["statement"]),
                            rule=_text(first["reason"]), resources=capped(dict.fromkeys(burst["resource"])))
            severity, hint = _escalation(burst, evidence, severity)
        first_seen, last_seen = burst["event_time"].iloc[0].to_pydatetime(), burst["event_time"].iloc[-1].to_pydatetime()
        return Finding(
            detector=self.id, agent=agent, severity=severity,
            score=_score(severity, len(burst)), first_seen=first_seen, last_seen=last_seen,
            summary=_summary(agent, kind, meta, evidence, wrote) + hint,
            event_ids=list(burst["event_id"]),
            evidence=jsonable(evidence), dedup_key=key,
        )


def _text(value: Any) -> str | None:
    """A string column's value, None when missing: pandas stores a None among strings as NaN
    (the ``str`` dtype), which is not JSON."""
    return value if isinstance(value, str) and value else None


def _judged(events: pd.DataFrame, scopes: dict[str, AgentScope]) -> pd.DataFrame:
    """The events judged here: registered agents' RAM-authorized calls, with the account acted on."""
    df = events[events["agent"].isin(list(scopes)).to_numpy()]
    if df.empty:
        return df
    df = df.assign(account=df["recipient_account_id"].where(df["recipient_account_id"].notna(), df["account_id"]))
    signin = df["service_name"].str.lower().isin(SIGNIN_SERVICES).fillna(False).astype(bool)
    return df[~(df["event_type"].isin(NOT_AUTHORIZED_EVENT_TYPES) | signin).to_numpy()]


def declared_decisions(events: pd.DataFrame, scopes: dict[str, AgentScope]) -> pd.Series:
    """What the agent's declared policies decide for each call, as this detector judges it (the
    worst over the call's resources); None where the agent declares no policies, is unregistered,
    or the call is not RAM-authorized. For detectors that leave out-of-scope calls to this one
    (privilege_escalation). Indexed like ``events``, which needs this detector's columns."""
    df = _judged(events, scopes)
    if df.empty:
        return pd.Series(None, index=events.index, dtype=object)
    return with_decisions(scopes, df)["decision"].reindex(events.index)


def with_decisions(scopes: dict[str, AgentScope], df: pd.DataFrame) -> pd.DataFrame:
    """Add the action, and (for agents that declare policies) the worst decision over the call's
    resources, evaluating each distinct (agent, request) once."""
    key = df[["agent", *_REQUEST_COLUMNS]].copy()
    for column, agents in _context_columns(scopes).items():
        key[column] = df[column].where(df["agent"].isin(agents))  # only where a policy asks
    codes = key.groupby(list(key.columns), dropna=False, sort=False).ngroup().to_numpy()
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    firsts = df.iloc[first]
    firsts = firsts.astype(object).where(firsts.notna(), None)
    actions, results = [], []
    for row in firsts.itertuples(index=False):
        scope = scopes[row.agent]
        actions.append(action(_call_facts(row)))
        results.append(_evaluate(scope, row) if scope.has_policies else (None, None))

    def spread(values: list[Any]) -> np.ndarray:
        return np.asarray(values, dtype=object)[inverse]

    return df.assign(
        action=spread(actions),
        decision=spread([r[0].decision if r[0] else None for r in results]),
        statement=spread([r[0].statement if r[0] else None for r in results]),
        reason=spread([r[0].reason if r[0] else None for r in results]),
        resource=spread([r[1] for r in results]),
    )


def _escalations(df: pd.DataFrame) -> pd.Series:
    """Each call's privilege escalation (``models.escalation``), None for most. Any group counts as
    privileged: outside the scope, adding a user to a group is granting power whatever its name."""
    mask = escalation_events(df["event_name"])
    out = pd.Series(None, index=df.index, dtype=object)
    if mask.any():
        out[mask] = [classify(r.event_name, r.request_parameters, Caller(r.identity_type, r.user_name, r.role_name),
                              privileged_groups=None) for r in df[mask].itertuples(index=False)]
    return out


def _evaluate(scope: AgentScope, row: Any) -> tuple[Result, str]:
    reqs = requests(_call_facts(row), _caller_facts(row), scope.policies.condition_keys)
    worst: tuple[Result, str] | None = None
    for req in reqs:
        result = scope.policies.evaluate(req)
        if worst is None or _WORST[result.decision] > _WORST[worst[0].decision]:
            worst = (result, req.resource)
    assert worst is not None  # requests() always yields at least one
    return worst


def _call_facts(row: Any) -> CallFacts:
    return CallFacts(row.event_type, row.event_name, row.service_name, row.service_code, row.acs_region,
                     row.account, row.referenced_resources, row.resource_type, row.resource_name,
                     row.request_parameters)


def _caller_facts(row: Any) -> CallerFacts:
    return CallerFacts(*(getattr(row, f) for f in _CALLER_FIELDS))


def _context_columns(scopes: dict[str, AgentScope]) -> dict[str, list[str]]:
    """Which event columns feed a condition key, and for which agents' policies."""
    out: dict[str, list[str]] = {}
    for name, scope in scopes.items():
        for cond_key in scope.policies.condition_keys:
            for column in _CONTEXT_COLUMNS.get(cond_key, ()):
                out.setdefault(column, []).append(name)
    return out


def _pairs(df: pd.DataFrame, column: str, test: Any, missing: bool = False) -> pd.Series:
    """``test(agent, value)`` once per distinct (agent, value) pair, as booleans per row; a
    missing value gives ``missing``."""
    codes = df.groupby(["agent", column], dropna=False, sort=False).ngroup().to_numpy()
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    firsts = zip(df["agent"].to_numpy()[first], df[column].to_numpy()[first], strict=True)
    verdicts = np.array([missing if pd.isna(value) else bool(test(agent, value)) for agent, value in firsts],
                        dtype=bool)
    return pd.Series(verdicts[inverse], index=df.index)


def _mapped(values: pd.Series, test: Any, missing: bool = False) -> pd.Series:
    """``test`` applied once per distinct value (missing values give ``missing``), as booleans."""
    known = {v: bool(test(v)) for v in values.dropna().unique()}
    mapped = values.map(known)
    return mapped.where(mapped.notna(), missing).astype(bool)


def _is_global_action(act: str) -> bool:
    return act.split(":", 1)[0] in GLOBAL_CODES


def _is_write(row: Any) -> bool:
    if row.get("event_rw") in ("Write", "Read"):
        return bool(row.get("event_rw") == "Write")
    return str(row.get("event_name") or "").startswith(_WRITE_PREFIXES)


def _severity(kind: str, wrote: bool, succeeded: bool) -> str:
    if kind == "out_of_scope":
        return "critical" if wrote else "high"
    if kind == "source_ip":
        return "critical" if wrote else "high" if succeeded else "medium"
    return "medium"


def _score(severity: str, count: int) -> float:
    base = {"low": 0.25, "medium": 0.5, "high": 0.75, "critical": 0.9}[severity]
    return min(1.0, base + 0.02 * math.log2(max(count, 1)))


def _escalation(burst: pd.DataFrame, evidence: dict[str, Any], severity: str) -> tuple[str, str]:
    """Out-of-scope calls that escalate privileges say so: critical, or high when every one of
    them failed (an attempt). Returns the severity and the summary's hint."""
    rows = burst[burst["escalation"].map(lambda e: isinstance(e, Escalation)).to_numpy(dtype=bool)]
    if rows.empty:
        return severity, ""
    details = capped(dict.fromkeys(e.detail for e in rows["escalation"]), 5)
    evidence.update(privilege_escalation=rows["escalation"].iloc[0].pattern, escalation=details)
    failed = rows["error_code"].dropna()
    if len(failed) < len(rows):
        return "critical", f"; a privilege escalation: {'; '.join(details)}"
    return "high", f"; a privilege escalation attempt (failed: {', '.join(dict.fromkeys(failed))}): {'; '.join(details)}"


def _summary(agent: str, kind: str, meta: dict[str, Any], ev: dict[str, Any], wrote: bool) -> str:
    n, ok = ev["count"], ev["succeeded"]
    outcome = f"{ok} succeeded" if ok else "all refused"
    calls = f"{n} call{'s' if n != 1 else ''}"
    if kind in ("out_of_scope", "possibly_out_of_scope"):
        why = ev.get("rule", "")
        hedge = "possibly outside" if kind == "possibly_out_of_scope" else "outside"
        writes = ", writing" if wrote else ""
        return f"{agent} called {meta['action']} ({calls}, {outcome}{writes}), {hedge} its declared scope: {why}"
    if kind == "refused":
        codes = ", ".join(ev["error_codes"]) or "refused"
        return f"{agent} was refused {meta['action']} {calls} ({codes}): an attempted call beyond its real permissions"
    if kind == "region":
        return (f"{agent} made {calls} in region {meta['region']}, outside its declared regions "
                f"{', '.join(meta['declared'])} ({outcome})")
    return (f"{agent} made {calls} from {meta['network']}, outside its declared source_ips "
            f"{', '.join(meta['declared'])} ({outcome})")
