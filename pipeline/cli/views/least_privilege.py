"""`least-privilege` as a table and a suggested policy, JSON, or CSV."""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import render, to_jsonable


def least_privilege_text(agent: str, result: dict[str, Any], fmt: str) -> str:
    """JSON: the whole result; CSV: one row per action used, then per granted pattern never used;
    table: granted vs used, what was used without a grant, and the suggested policy."""
    if fmt == "json":
        return json.dumps(to_jsonable(result), indent=2, allow_nan=False)
    if fmt == "csv":
        rows = [[u["action"], u["calls"], "used" if u["granted"] else "used, not granted"] for u in result["used"]]
        rows += [[g["pattern"], 0, "granted, unused"] for g in result["granted"] if not g["used_actions"]]
        return render(["action", "calls", "state"], rows, "csv")
    lines = [f"{one_line(agent)}: granted vs used, {to_jsonable(result['window']['since'])} .. "
             f"{to_jsonable(result['window']['until'])}\n",
             render(["granted pattern", "calls", "used actions"],
                    [[g["pattern"], g["calls"], ", ".join(g["used_actions"]) or "UNUSED"]
                     for g in result["granted"]], "table")]
    outside = [u for u in result["used"] if not u["granted"]]
    if outside:
        lines.append("\nUsed but not granted (see out_of_scope findings): "
                     + one_line(", ".join(f"{u['action']} ({u['calls']})" for u in outside)))
    if result["suggested_policy"] is None:
        lines.append("\nNo call in the window was allowed by its policies: nothing to keep. Detach them, "
                     "or retire the agent (`trailwarden agents` shows its last activity).")
        return "\n".join(lines)
    lines.append("\nSuggested policy (allows exactly the granted actions used - calls not refused for permission, "
                 "failed ones included; Deny statements kept):")
    lines.append(json.dumps(result["suggested_policy"], indent=2))
    return "\n".join(lines)
