"""Views of a replay (``pipeline.investigate.replay.build_replay``): a terminal report, and a single
self-contained HTML file for an incident ticket (inline CSS and SVG, no scripts, no network).

Every value in the HTML is escaped: event fields are attacker-controlled. In the terminal report
every value is inert: tables through ``pipeline.core.output``, the other lines through ``one_line``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from html import escape
from typing import Any

from pipeline.core.inert import one_line
from pipeline.core.output import render

MAX_TIMELINE_ROWS = 2000  # the HTML table; the JSON export always holds every event
# JSON inside <script>: "</script>" would end the element and "<!--<script>" would make the parser
# swallow the rest of the page, so <, > and & are written as JSON escapes (the same JSON once parsed).
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def as_text(report: dict[str, Any], max_events: int = 50) -> str:
    s = report["summary"]
    who = (f"{report['purpose']} · owner {report['owner']} · {report['environment']}" if report["registered"]
           else "not in the inventory")
    lines = [one_line(f"{report['agent']}  ({who})"),
             f"window {report['window']['since']} .. {report['window']['until']}: {s['events']:,} events, "
             f"{s['failed']:,} failed, {s['apis']} APIs, {s['findings']} findings", ""]
    if report["findings"]:
        lines += ["Findings", render(["id", "severity", "detector", "first_seen", "summary"],
                                     [[f["id"][:12], f["severity"], f["detector"], f["first_seen"], f["summary"]]
                                      for f in report["findings"]], "table"), ""]
    radius = report["blast_radius"]
    if radius["resources"]:
        lines += ["Blast radius: resources touched", render(
            ["access", "outcome", "resource", "calls", "actions", "first_seen", "last_seen"],
            [[r["access"], r["outcome"], r["resource"], r["calls"], ", ".join(r["actions"]), r["first_seen"],
              r["last_seen"]] for r in radius["resources"]], "table"), ""]
    for key, title in (("source_ips", "Source IPs"), ("user_agents", "User agents"), ("regions", "Regions"),
                       ("access_keys", "AccessKeys")):
        if radius.get(key):
            lines += [title, render(["value", "calls", "first_seen", "last_seen"],
                                    [[i["value"], i["calls"], i["first_seen"], i["last_seen"]]
                                     for i in radius[key]], "table"), ""]
    changes = report["changes"]
    for key, title in (("new_apis", "New APIs"), ("new_source_ips", "New source IPs"), ("new_regions", "New regions")):
        if changes[key]:
            lines.append(one_line(f"{title} (never seen before the window): "
                                  + ", ".join(f"{c['value']} ({c['first_seen']})" for c in changes[key])))
    events = [t for t in report["timeline"] if t["kind"] == "event"]
    lines += ["", f"Timeline (last {min(max_events, len(events))} of {len(events)} events; "
              "--format json for all, with raw JSON)"]
    shown = report["timeline"]
    if len(events) > max_events:
        cut = events[-max_events]["event_time"]
        shown = [t for t in shown if t["event_time"] >= cut]
    lines.append(render(["time", "what", "source_ip", "region", "error"],
                        [[t["event_time"], f"FINDING {t['severity']} {t['detector']}: {t['summary']}"
                          if t["kind"] == "finding" else t["action"], t.get("source_ip"), t.get("acs_region"),
                          t.get("error_code")] for t in shown], "table"))
    lines.append(f"\nsha256 of the JSON export: {report['sha256']}")
    lines.append(_redaction_line(report))
    return "\n".join(lines)


def _redaction_line(report: dict[str, Any]) -> str:
    note = report.get("redaction") or {}
    if note.get("applied"):
        return (f"Redacted: {note['values_redacted']:,} secret value(s) in the events replaced by <redacted> "
                "(--unredacted to export them)")
    return "UNREDACTED: secrets in the events are shown as received"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde}
.meta{color:#556}.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff}
.critical{background:#b00020}.high{background:#d35400}.medium{background:#b7950b}.low{background:#7f8c8d}
table{border-collapse:collapse;width:100%;font-size:12.5px}th,td{text-align:left;padding:3px 8px;
border-bottom:1px solid #eef;vertical-align:top}th{background:#f4f6fa}tr.finding td{background:#fff4e5}
td.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.failed{color:#b00020}.chart{border:1px solid #dde;background:#fbfcfe}.note{color:#778;font-size:12px}
"""


def as_html(report: dict[str, Any]) -> str:
    s = report["summary"]
    who = (f"{_e(report['purpose'])} · owner {_e(report['owner'])} · {_e(report['environment'])}"
           if report["registered"] else "not in the inventory: no owner, no declared scope")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>trailwarden replay: {_e(report['agent'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Replay of <code>{_e(report['agent'])}</code></h1><div class='meta'>{who}<br>",
        f"{_e(report['window']['since'])} .. {_e(report['window']['until'])} · {s['events']:,} events, "
        f"<span class='failed'>{s['failed']:,} failed</span>, {s['apis']} APIs, {s['findings']} findings · "
        f"generated {_e(report['generated_at'])} by {_e(report['generator'])}</div>",
        "<h2>Activity per hour</h2>", _chart(report),
        "<p class='note'>Bars: calls per hour (red: failed). Triangles: findings.</p>",
        _findings_table(report["findings"]), _radius_tables(report["blast_radius"]),
        _changes_html(report["changes"]), _timeline_table(report["timeline"]),
        "<h2>Evidence</h2><p>This file embeds the complete replay (every event's raw JSON) as JSON in the "
        "element <code>#trailwarden-export</code>. Its SHA-256, over that JSON without the <code>sha256</code> "
        f"field, keys sorted: <code>{_e(report['sha256'])}</code></p><p>{_e(_redaction_line(report))}</p>",
        "<script type='application/json' id='trailwarden-export'>"
        + json.dumps(report, ensure_ascii=False, allow_nan=False).translate(_SCRIPT_SAFE) + "</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _chart(report: dict[str, Any], width: int = 960, height: int = 180) -> str:
    events = [t for t in report["timeline"] if t["kind"] == "event"]
    findings = [t for t in report["timeline"] if t["kind"] == "finding"]
    start = _ts(report["window"]["since"]).replace(minute=0, second=0, microsecond=0)
    end = _ts(report["window"]["until"])
    hours = max(1, int((end - start).total_seconds() // 3600) + 1)
    calls: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    for e in events:
        slot = int((_ts(e["event_time"]) - start).total_seconds() // 3600)
        calls[slot] += 1
        if e["error_code"]:
            failed[slot] += 1
    peak = max(calls.values(), default=1)
    bar = width / hours
    svg = [f"<svg class='chart' width='{width}' height='{height + 20}' viewBox='0 0 {width} {height + 20}' "
           "xmlns='http://www.w3.org/2000/svg' role='img' aria-label='calls per hour'>"]
    for slot, n in sorted(calls.items()):
        x, h = slot * bar, n / peak * (height - 10)
        fh = failed[slot] / peak * (height - 10)
        svg.append(f"<rect x='{x:.2f}' y='{height - h:.2f}' width='{max(bar, 1):.2f}' height='{h:.2f}' fill='#4a6fa5'>"
                   f"<title>{_e(start + timedelta(hours=slot))}: {n} calls, {failed[slot]} failed</title></rect>")
        if fh:
            svg.append(f"<rect x='{x:.2f}' y='{height - fh:.2f}' width='{max(bar, 1):.2f}' height='{fh:.2f}' "
                       "fill='#c0392b'/>")
    for f in findings:
        x = (_ts(f["event_time"]) - start).total_seconds() / 3600 * bar
        svg.append(f"<polygon points='{x:.1f},{height + 2} {x - 5:.1f},{height + 14} {x + 5:.1f},{height + 14}' "
                   f"fill='#e67e22'><title>{_e(f['severity'])} {_e(f['detector'])}: {_e(f['summary'])}</title></polygon>")
    svg.append(f"<text x='2' y='12' font-size='11' fill='#556'>peak {peak} calls/h</text></svg>")
    return "".join(svg)


def _findings_table(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<h2>Findings</h2><p class='note'>None in this window.</p>"
    rows = "".join(
        f"<tr><td><span class='pill {_e(f['severity'])}'>{_e(f['severity'])}</span></td><td>{_e(f['detector'])}</td>"
        f"<td class='mono'>{_e(f['first_seen'])}</td><td>{_e(f['summary'])}</td><td class='mono'>{_e(f['id'])}</td>"
        f"<td>{_e(f['status'])}</td></tr>" for f in findings)
    return ("<h2>Findings</h2><table><tr><th>severity</th><th>detector</th><th>first seen</th><th>summary</th>"
            f"<th>id</th><th>status</th></tr>{rows}</table>")


def _radius_tables(radius: dict[str, Any]) -> str:
    out = ["<h2>Blast radius</h2>"]
    if radius["resources"]:
        rows = "".join(
            f"<tr><td>{_e(r['access'])}</td><td class='{'failed' if r['outcome'] == 'failed' else ''}'>{_e(r['outcome'])}</td>"
            f"<td class='mono'>{_e(r['resource'])}</td><td>{r['calls']}</td><td class='mono'>{_e(', '.join(r['actions']))}</td>"
            f"<td class='mono'>{_e(r['first_seen'])}</td><td class='mono'>{_e(r['last_seen'])}</td></tr>"
            for r in radius["resources"])
        out.append("<table><tr><th>access</th><th>outcome</th><th>resource</th><th>calls</th><th>actions</th>"
                   f"<th>first seen</th><th>last seen</th></tr>{rows}</table>")
    else:
        out.append("<p class='note'>No named resource touched (only calls without resources).</p>")
    for key, title in (("source_ips", "Source IPs"), ("user_agents", "User agents"), ("regions", "Regions"),
                       ("access_keys", "AccessKeys")):
        items = radius.get(key) or []
        rows = "".join(f"<tr><td class='mono'>{_e(i['value'])}</td><td>{i['calls']}</td>"
                       f"<td class='mono'>{_e(i['first_seen'])}</td><td class='mono'>{_e(i['last_seen'])}</td></tr>"
                       for i in items)
        out.append(f"<h2>{title}</h2><table><tr><th>value</th><th>calls</th><th>first seen</th><th>last seen</th></tr>"
                   f"{rows}</table>")
    return "".join(out)


def _changes_html(changes: dict[str, Any]) -> str:
    out = ["<h2>New against its history</h2>"]
    if changes.get("history_was_empty"):
        out.append("<p class='note'>No history before the window: everything is new.</p>")
    for key, title in (("new_apis", "APIs"), ("new_source_ips", "Source IPs"), ("new_regions", "Regions")):
        items = changes.get(key) or []
        text = ", ".join(f"<code>{_e(c['value'])}</code> ({_e(c['first_seen'])})" for c in items) or "none"
        out.append(f"<p><b>{title}:</b> {text}</p>")
    return "".join(out)


def _timeline_table(timeline: list[dict[str, Any]]) -> str:
    shown = timeline[-MAX_TIMELINE_ROWS:]
    note = (f"<p class='note'>The last {MAX_TIMELINE_ROWS} of {len(timeline)} entries; the JSON export holds every "
            "event with its raw JSON.</p>" if len(timeline) > len(shown) else "")
    rows = []
    for t in shown:
        if t["kind"] == "finding":
            rows.append(f"<tr class='finding'><td class='mono'>{_e(t['event_time'])}</td><td colspan='5'>"
                        f"<span class='pill {_e(t['severity'])}'>{_e(t['severity'])}</span> <b>{_e(t['detector'])}</b>: "
                        f"{_e(t['summary'])}</td></tr>")
        else:
            err = f"<span class='failed'>{_e(t['error_code'])}</span>" if t["error_code"] else ""
            rows.append(f"<tr><td class='mono'>{_e(t['event_time'])}</td><td class='mono'>{_e(t['action'])}</td>"
                        f"<td class='mono'>{_e(t['source_ip'])}</td><td>{_e(t['acs_region'])}</td>"
                        f"<td class='mono'>{_e(', '.join(t['resources'][:3]))}</td><td>{err}</td></tr>")
    return ("<h2>Timeline</h2>" + note + "<table><tr><th>time</th><th>action</th><th>source IP</th><th>region</th>"
            "<th>resources</th><th>error</th></tr>" + "".join(rows) + "</table>")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
