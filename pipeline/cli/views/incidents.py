"""`incidents` and `incidents show`: a table, CSV or JSON; one incident as lines a person reads."""

from __future__ import annotations

from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import json_text, render, to_jsonable

_TABLE = ["id", "severity", "status", "agent", "first_seen", "finding_count", "detectors", "headline"]


def incidents_text(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json_text(to_jsonable(rows), indent=2)
    if fmt == "csv":
        cols = [c for c in rows[0] if c != "summary"] if rows else [*_TABLE, "last_seen", "finding_ids"]
        return render(cols, [[r[c] for c in cols] for r in rows], "csv")
    return render(_TABLE, [[", ".join(r[c]) if c == "detectors" else r[c] for c in _TABLE] for r in rows], "table")


def incident_text(incident: dict[str, Any], fmt: str) -> str:
    """JSON: every field and its findings; table: the head line, headline, span, who set the
    status, then one line per finding (each line inert: event values)."""
    if fmt == "json":
        return json_text(to_jsonable(incident), indent=2)
    summary = incident.get("summary") or {}
    lines = [f"{incident['id']}  {incident['severity']}  {incident['agent']}  [{incident['status']}]",
             incident["headline"],
             f"seen {to_jsonable(incident['first_seen'])} .. {to_jsonable(incident['last_seen'])}"
             + (f" (first harmful act {summary['when_utc']} UTC)" if summary.get("when_utc") else "")
             + f", {incident['finding_count']} findings, {incident['event_count']} events"]
    if incident.get("status_by"):
        lines.append(f"status set by {incident['status_by']} at {to_jsonable(incident['status_at'])}")
    lines += ["", "findings:"]
    lines += [f"  {f['id']}  {f['severity']:<8}  {f['status']:<14}  {f['detector']:<22}  {f['summary']}"
              for f in incident.get("findings", [])]
    return "\n".join(one_line(line) for line in lines)
