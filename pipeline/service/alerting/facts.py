"""What an incident's findings say, once each and readable: reasons, facts and evidence lines.

* **One reason, said once.** Two findings on the same events for the same reason are one
  *reason group*, shown once naming both detectors: ``audit_tampering`` and ``out_of_scope`` on one
  ``StopLogging`` (the action), ``new_source`` and ``out_of_scope`` on a network outside the
  declared ones (the network). The reason of a finding is :func:`reason_key`.
* **Facts** are one line per reason (the scope findings of an incident together: "outside its
  declared scope: `ram:CreateUser`, …"), most severe first; the message shows three.
* **Evidence lines** are a finding's evidence for a person: known fields with labels, baselines as
  a sentence, internal fields (``kind``, thresholds, raw baseline figures, diversity tables) left
  out, and a missing value (None, NaN, empty) omitted, never shown as ``nan``.

Every event-derived value is ``untrusted()`` inside a code span; the words around it are ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from detectors.base import SEVERITIES
from pipeline.service.alerting.text import code, untrusted

MAX_FACTS = 3


def reason_key(finding: dict[str, Any]) -> tuple[str, str]:
    """What a finding is about: the action for scope, tampering and escalation findings, the
    network for a foreign or never-seen network; else the finding itself."""
    detector, ev = finding["detector"], finding.get("evidence") or {}
    kind = ev.get("kind")
    if detector == "out_of_scope" and kind in (None, "out_of_scope") and ev.get("action"):
        return "action", str(ev["action"]).rsplit(":", 1)[-1].lower()
    if detector in ("audit_tampering", "privilege_escalation") and ev.get("action"):
        return "action", str(ev["action"]).rsplit(":", 1)[-1].lower()
    if detector == "out_of_scope" and kind == "source_ip" and ev.get("network"):
        return "network", str(ev["network"])
    if detector == "new_source" and kind == "network" and ev.get("value"):
        return "network", str(ev["value"])
    return "finding", str(finding["id"])


@dataclass
class Group:
    """Findings of one reason on shared events; the first is the most severe."""

    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lead(self) -> dict[str, Any]:
        return self.findings[0]

    @property
    def detectors(self) -> list[str]:
        return list(dict.fromkeys(f["detector"] for f in self.findings))

    @property
    def severity(self) -> str:
        return str(self.lead["severity"])


def reason_groups(findings: Sequence[dict[str, Any]]) -> list[Group]:
    """Findings grouped by reason where they share events, most severe (then highest score,
    then earliest) first, in groups and among groups."""
    ordered = sorted(findings, key=_rank)
    groups: list[Group] = []
    for f in ordered:
        key, ids = reason_key(f), set(f.get("event_ids") or [])
        home = next((g for g in groups if reason_key(g.lead) == key and key[0] != "finding"
                     and any(ids & set(o.get("event_ids") or []) for o in g.findings)), None)
        if home is None:
            groups.append(Group([f]))
        else:
            home.findings.append(f)
    return groups


def _rank(f: dict[str, Any]) -> tuple[Any, ...]:
    return -SEVERITIES.index(f["severity"]), -float(f.get("score") or 0), f["first_seen"], f["id"]


# -- facts: one line per reason, for the top-level message -------------------------------------------
@dataclass
class Fact:
    text: str  # mrkdwn, values in code spans
    severity: str
    detectors: list[str]

    def line(self) -> str:
        return f"• {self.text} _({', '.join(self.detectors)})_"


def facts(findings: Sequence[dict[str, Any]], limit: int = MAX_FACTS) -> list[Fact]:
    """The facts that matter most: one per reason group, the scope findings of the incident
    (those not said already) together as one; most severe first."""
    out: list[Fact] = []
    scope: list[Group] = []
    for group in reason_groups(findings):
        if group.detectors == ["out_of_scope"] and reason_key(group.lead)[0] == "action":
            scope.append(group)
            continue
        out.append(Fact(_fact_text(group.lead), group.severity, group.detectors))
    if scope:
        actions = [code(g.lead["evidence"].get("action"), 60) for g in scope]
        shown = ", ".join(actions[:3]) + (f" and {len(actions) - 3} more" if len(actions) > 3 else "")
        out.append(Fact(f"Outside its declared scope: {shown}", scope[0].severity, ["out_of_scope"]))
    out.sort(key=lambda fact: -SEVERITIES.index(fact.severity))
    return out[:limit]


def _fact_text(f: dict[str, Any]) -> str:
    maker = _FACTS.get(f["detector"])
    text = maker(f["evidence"] or {}, f) if maker else None
    return text or code(f["summary"], 160)


def _oos(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    kind = ev.get("kind")
    if kind == "source_ip":
        return f"From {code(ev.get('network'))}, outside its declared source IPs {code_list(ev.get('declared'))}"
    if kind == "region":
        return f"In region {code(ev.get('region'))}, outside its declared regions {code_list(ev.get('declared'))}"
    if ev.get("action"):
        rule = f" ({code(ev['rule'], 80)})" if present(ev.get("rule")) else ""
        return f"Outside its declared scope: {code(ev['action'], 60)}{rule}"
    return None


def _odd_hours(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    when = _local(ev.get("local_time"))
    if not when:
        return None
    declared = ev.get("declared_hours")
    why = (f"outside its declared hours {code(declared)}" if ev.get("outside_declared_hours") and present(declared)
           else "an hour it almost never keeps")
    return f"Active at {code(when)} ({untrusted(ev.get('timezone') or 'local', 40)}), {why}"


def _new_source(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    new = ev.get("new") or {}
    parts = [f"{kind} {code_list(values)}" for kind, values in new.items() if present(values)]
    return "Never seen before: " + "; ".join(parts) if parts else None


def _failure_storm(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    failures = ev.get("peak_failures_in_window") or ev.get("failures")
    if not present(failures):
        return None
    usual = (ev.get("baseline") or {}).get("max_failures_in_5m")
    codes = ", ".join(code(k, 40) for k in list(ev.get("error_codes") or {})[:2])
    return (f"{code(failures)} failed calls within {code(_number(ev.get('window_minutes') or 5))} minutes"
            + (f" ({codes})" if codes else "") + (f"; its worst before was {code(usual)}" if present(usual) else ""))


def _tampering(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    targets = ev.get("targets") or []
    ok = "it worked" if ev.get("succeeded") else "it failed"
    return (f"Audit trail tampering: {code(ev.get('action'), 60)}"
            + (f" on {code_list(targets)}" if targets else "") + f", {ok}")


def _expired(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    if not present(ev.get("expires")):
        return None
    days = ev.get("days_after_expiry")
    return (f"Its access expired {code(str(ev['expires'])[:10])}"
            + (f", {code(_number(days))} days before" if present(days) else "")
            + (f"; {code(ev.get('calls'))} calls since" if present(ev.get("calls")) else ""))


def _unregistered(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    identity = ev.get("identity") or f["agent"]
    if str(identity).startswith("root-account:"):
        return f"The root account was used: {code(ev.get('calls'))} call(s)"
    wrote = ", some writing" if ev.get("wrote") else ""
    return f"{code(identity, 80)} is in no agent of the inventory: {code(ev.get('calls'))} call(s){wrote}"


def _escalation(ev: dict[str, Any], f: dict[str, Any]) -> str | None:
    said = ev.get("escalation") or ev.get("detail")
    return f"Granted power: {code_list(said if isinstance(said, list) else [said])}" if present(said) else None


_FACTS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str | None]] = {
    "out_of_scope": _oos, "odd_hours": _odd_hours, "new_source": _new_source, "failure_storm": _failure_storm,
    "audit_tampering": _tampering, "expired_agent": _expired, "unregistered_identity": _unregistered,
    "privilege_escalation": _escalation,
}


# -- evidence lines: a finding's evidence for a person, in its thread reply --------------------------------
_LABELS = {
    "action": "Action", "resources": "Resources", "decision": "Decision", "rule": "Rule", "escalation": "Escalation",
    "network": "Network", "region": "Region", "declared": "Declared", "declared_hours": "Declared hours",
    "count": "Calls", "calls": "Calls", "succeeded": "Succeeded", "failed": "Failed", "failures": "Failed calls",
    "peak_failures_in_window": "Failed in the worst window", "window_minutes": "Window (minutes)",
    "error_codes": "Errors", "apis": "APIs", "targets": "Targets", "request_parameters": "Parameters",
    "source_ips": "From", "regions": "Regions", "user_agents": "Clients", "expires": "Access expired",
    "days_after_expiry": "Days after expiry", "identity": "Identity", "new": "Never seen before",
    "fires_again_after": "Fires again after",
}
# internal to a detector, or said better by a sentence (baselines): never shown as such
_INTERNAL = frozenset({"kind", "baseline", "threshold", "configured_threshold", "min_failure_ratio", "diversity",
                       "known", "timezone", "hour_of_week", "outside_declared_hours", "privilege_escalation", "day",
                       "wrote", "local_time", "calls_in_window_at_peak", "value", "statement", "learned"})
MAX_EVIDENCE_LINES = 12


def evidence_lines(f: dict[str, Any]) -> list[str]:
    """A finding's evidence as labelled lines, its baseline as a sentence; values in code spans."""
    ev = f.get("evidence") or {}
    lines = [f"• {label}: {_value(ev[key])}" for key, label in _LABELS.items()
             if key in ev and present(ev[key]) and not (key == "failed" and ev[key] == 0)]
    lines += [f"• {untrusted(key.replace('_', ' ').capitalize(), 40)}: {_value(value)}" for key, value in ev.items()
              if key not in _LABELS and key not in _INTERNAL and present(value) and not _nested(value)]
    usual = _baseline_sentence(f["detector"], ev)
    if usual:
        lines.append(f"• Usually: {usual}")
    if len(lines) > MAX_EVIDENCE_LINES:
        lines = [*lines[: MAX_EVIDENCE_LINES - 1],
                 f"• …and {len(lines) - MAX_EVIDENCE_LINES + 1} more (`trailwarden findings show {f['id'][:12]}`)"]
    return lines


def _baseline_sentence(detector: str, ev: dict[str, Any]) -> str | None:
    base = ev.get("baseline")
    if not isinstance(base, dict):
        return None
    if detector == "odd_hours":
        for part in ("weekdays", "weekends"):
            seen, active = base.get(f"{part}_observed"), base.get(f"{part}_active_this_hour")
            if present(seen) and present(active):
                return (f"active at this hour on {code(active)} of {code(seen)} {part[:-1]} days "
                        f"(learned from {code(base.get('history_days') or '?')} days)")
    if detector == "failure_storm" and present(base.get("failure_rate")):
        rate = float(base["failure_rate"]) * 100
        return (f"{code(f'{rate:.2f}%')} of calls fail, at most "
                f"{code(base.get('max_failures_in_5m'))} in 5 minutes")
    return None


def present(value: Any) -> bool:
    """A value worth showing: not None, NaN, an empty string, list or mapping, nor the text nan."""
    if value is None or value in ("", [], {}):
        return False
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return False
    return not (isinstance(value, str) and value.strip().lower() in ("nan", "none", "null"))


def _nested(value: Any) -> bool:
    """A mapping holding mappings or lists of mappings: an internal table, not a fact."""
    if isinstance(value, dict):
        return any(isinstance(v, dict | list) for v in value.values())
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if present(v)]
        text = ", ".join(f"{code(k, 60)} ×{_number(v)}" if isinstance(v, int | float) else f"{code(k, 60)} {_value(v)}"
                         for k, v in items[:6])
        return text + (f" …and {len(items) - 6} more" if len(items) > 6 else "")
    if isinstance(value, list):
        return code_list(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return code(_number(value))
    return code(value, 200)


def code_list(values: Any, limit: int = 4) -> str:
    items = [v for v in (values if isinstance(values, list | tuple) else [values]) if present(v)]
    if not items:
        return "–"
    shown = ", ".join(code(v if not isinstance(v, dict) else _flat(v), 120) for v in items[:limit])
    return shown + (f" …and {len(items) - limit} more" if len(items) > limit else "")


def _flat(value: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items() if present(v))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else str(int(value))
    return str(value)


def _local(value: Any) -> str | None:
    """``2026-12-05T03:10:00+08:00`` as ``03:10 Sat 5 Dec``."""
    try:
        when = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return f"{when:%H:%M %a} {when.day} {when:%b}"
