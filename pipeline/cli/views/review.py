"""`review` as a table (one row per agent, then the undeclared principals) and as Markdown a team
can paste into a ticket. Names come from RAM and the inventory, and anyone who can write RAM can
choose them: in Markdown every value is escaped (no formatting, links or HTML of its own) and
URLs are defanged."""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import render, to_jsonable

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~&])")
_URL = re.compile(r"\b(https?|ftp)://", re.I)
AGENT_COLUMNS = ["agent", "verdict", "fails", "warns", "owner", "reasons"]
UNDECLARED_COLUMNS = ["principal", "last_activity", "grants", "active_keys", "flags"]


def _reasons(agent: dict[str, Any]) -> str:
    order = sorted(agent["reasons"], key=lambda r: r["level"] != "fail")
    return "; ".join(f"{r['kind']}: {r['message']}" for r in order)


def agent_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [[a["agent"], a["verdict"], sum(r["level"] == "fail" for r in a["reasons"]),
             sum(r["level"] == "warn" for r in a["reasons"]), a["owner"], _reasons(a)] for a in result["agents"]]


def review_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    snap = result["snapshot"]
    head = (f"Permission review, {to_jsonable(result['generated_at'])[:10]}: {s['fail']} fail, {s['warn']} warn, "
            f"{s['pass']} pass of {s['agents']} agents" + _undeclared(s) + ". "
            + (f"RAM snapshot {snap['id']} of {to_jsonable(snap['taken_at'])}" if snap else "No RAM snapshot yet")
            + f"; usage over the last {result['window']['days']} days.")
    lines = [head, "", render(AGENT_COLUMNS, agent_rows(result), "table")]
    if result["undeclared"]:
        lines += ["", "RAM principals no agent declares:", render(UNDECLARED_COLUMNS, undeclared_rows(result), "table")]
    return "\n".join(lines)


def _undeclared(summary: dict[str, Any]) -> str:
    n = summary["undeclared"]
    return "" if n is None else f"; {n} RAM principal(s) no agent declares"


def undeclared_rows(result: dict[str, Any]) -> list[list[Any]]:
    return [[u["principal"], u["last_activity"], ", ".join(u["grants"]), ", ".join(u["active_keys"]),
             ", ".join(u["flags"])] for u in result["undeclared"]]


def review_csv(result: dict[str, Any]) -> str:
    return render(AGENT_COLUMNS, agent_rows(result), "csv")


def md(value: Any) -> str:
    """A value as inert Markdown text: one line, every character Markdown would act on escaped,
    URLs defanged."""
    text = one_line("" if value is None else to_jsonable(value))
    text = _URL.sub(lambda m: f"{m[1]}[:]//", text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def review_markdown(result: dict[str, Any]) -> str:
    s, snap, window = result["summary"], result["snapshot"], result["window"]
    out = [f"# Permission review, {md(to_jsonable(result['generated_at'])[:10])}", "",
           f"**{s['fail']} fail, {s['warn']} warn, {s['pass']} pass** of {s['agents']} agents{_undeclared(s)}.", "",
           "- RAM: " + (f"snapshot {snap['id']} taken {md(snap['taken_at'])}"
                         + (f" ({snap['errors']} call(s) failed)" if snap["errors"] else "") if snap
                         else "no snapshot (run `trailwarden ram sync`)"),
           f"- Usage: events from {md(window['since'])} to {md(window['until'])} ({window['days']} days)", "",
           "| Agent | Verdict | Owner | Environment | Fails | Warnings |", "|---|---|---|---|---|---|"]
    for a in result["agents"]:
        fails = sum(r["level"] == "fail" for r in a["reasons"])
        out.append(f"| {md(a['agent'])} | **{a['verdict'].upper()}** | {md(a['owner'])} | {md(a['environment'])} "
                   f"| {fails} | {len(a['reasons']) - fails} |")
    for a in result["agents"]:
        out += ["", f"## {md(a['agent'])}: {a['verdict'].upper()}", ""]
        if a["principals"]:
            out.append(f"RAM principals: {', '.join(md(p) for p in a['principals'])}")
            out.append("")
        out += [f"- **{r['level']}** ({md(r['kind'])}): {md(r['message'])}" for r in a["reasons"]] or ["- nothing to report"]
    if result["undeclared"]:
        out += ["", "## RAM principals no agent declares", "",
                "| Principal | Last activity | Grants | Active AccessKeys | Flags |", "|---|---|---|---|---|"]
        out += [f"| {' | '.join(md(c) if c else '-' for c in row)} |" for row in undeclared_rows(result)]
    return "\n".join(out)
