"""`detect` as text."""

from __future__ import annotations

from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import to_jsonable


def detect_text(report: Any) -> str:
    if report.since is None:
        return "Nothing new to score."
    j = to_jsonable
    lines = [f"Scored {report.events:,} events from {j(report.since)} to {j(report.until)}: "
             f"{report.new} new findings, {report.extended} extended."]
    if len(report.spans) > 1:
        lines.append(f"  in {len(report.spans)} separate stretches (each with its own baselines): "
                     + ", ".join(f"{j(a)} .. {j(b)}" for a, b in report.spans))
    for name, stats in report.detectors.items():
        state = f"failed: {one_line(stats['error'])}" if stats["error"] else f"{stats['findings']} findings"
        lines.append(f"  {name:<22} {state} ({stats['seconds']:.2f}s)")
    return "\n".join(lines)
