"""Score findings against a scenario's labels (``labels.json`` of ``pipeline.demo.organisation``),
the way issue 15's held-out scenario is judged.

* an incident (``expect: raise``) is *raised* when a finding of its agent at ``medium`` or above
  overlaps its window (``first_seen <= end`` and ``last_seen >= start``);
* a trap (``expect: quiet``) is *tripped* by any such finding of its agent;
* every other finding at ``medium`` or above is *other*: its agent has no label whose window it
  overlaps (a label's ``related`` agents count as its own: the administrator who unbound a victim's
  MFA device is part of that incident, neither required nor other). Other findings are reported
  per 100 agents per day of the detect window.

Targets (issue 15): at least 9 of 10 incidents raised, no trap tripped, at most 1 other finding per
100 agents per day. Every finding counts whatever its triage status (``findings --status all``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SEVERITIES = ("low", "medium", "high", "critical")
TARGETS = {"incidents_raised_share": 0.9, "traps_tripped": 0, "other_per_100_agents_per_day": 1.0}


def load_labels(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The labels and the scenario's description (empty when the file is a bare list)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(doc, list):
        return doc, {}
    return list(doc["labels"]), dict(doc.get("scenario") or {})


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _rank(severity: Any) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _overlaps(finding: dict[str, Any], label: dict[str, Any]) -> bool:
    return _when(finding["first_seen"]) <= _when(label["end"]) and _when(finding["last_seen"]) >= _when(label["start"])


def _brief(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("id", "detector", "agent", "severity", "first_seen", "last_seen", "summary")}


def score(findings: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]], agents: int, days: float,
          min_severity: str = "medium") -> dict[str, Any]:
    """Per incident: raised, with the findings that raised it; per trap: quiet, or the findings
    that tripped it; the other findings and their rate per 100 agents per day; whether the targets
    are met."""
    floor = _rank(min_severity)
    loud = [f for f in findings if _rank(f.get("severity")) >= floor]
    labels = list(labels)
    incidents: list[dict[str, Any]] = []
    traps: list[dict[str, Any]] = []
    explained: set[int] = set()
    for label in labels:
        own = [f for f in loud if f["agent"] == label["agent"] and _overlaps(f, label)]
        related = [f for f in loud if f["agent"] in label.get("related", ()) and _overlaps(f, label)]
        explained.update(id(f) for f in own + related)
        row = {"id": label["id"], "kind": label["kind"], "agent": label["agent"], "start": label["start"],
               "end": label["end"], "findings": [_brief(f) for f in own]}
        if label["expect"] == "raise":
            incidents.append({**row, "raised": bool(own)})
        else:
            traps.append({**row, "quiet": not own})
    other = [_brief(f) for f in loud if id(f) not in explained]
    rate = len(other) * 100 / agents / days if agents and days else 0.0
    raised = sum(i["raised"] for i in incidents)
    tripped = sum(not t["quiet"] for t in traps)
    met = {"incidents": not incidents or raised / len(incidents) >= TARGETS["incidents_raised_share"],
           "traps": tripped <= TARGETS["traps_tripped"],
           "other": rate <= TARGETS["other_per_100_agents_per_day"]}
    return {"incidents": incidents, "traps": traps, "other": other, "raised": raised, "tripped": tripped,
            "other_count": len(other), "other_per_100_agents_per_day": round(rate, 3), "agents": agents,
            "days": days, "min_severity": min_severity, "targets_met": met, "passed": all(met.values())}


def table(result: dict[str, Any]) -> str:
    """The score as a human reads it: one line per label, the other findings, the totals."""
    lines = [f"{'label':22} {'kind':24} {'agent':28} result   findings (detector:severity)"]
    for row in result["incidents"] + result["traps"]:
        ok = ("raised" if row["raised"] else "MISSED") if "raised" in row else ("quiet" if row["quiet"] else "TRIPPED")
        found = ", ".join(f"{f['detector']}:{f['severity']}" for f in row["findings"]) or "-"
        lines.append(f"{row['id']:22} {row['kind']:24} {row['agent']:28} {ok:8} {found}")
    if result["other"]:
        lines.append("other findings at medium or above:")
        lines += [f"  {f['first_seen']} {f['detector']:20} {f['severity']:8} {f['agent']}: {f['summary']}"
                  for f in result["other"]]
    met = result["targets_met"]
    lines.append(f"incidents raised {result['raised']}/{len(result['incidents'])} ({'ok' if met['incidents'] else 'below 9/10'}); "
                 f"traps tripped {result['tripped']}/{len(result['traps'])} ({'ok' if met['traps'] else 'must be 0'}); "
                 f"other {result['other_count']} = {result['other_per_100_agents_per_day']} per 100 agents per day "
                 f"({'ok' if met['other'] else 'above 1'})")
    return "\n".join(lines)
