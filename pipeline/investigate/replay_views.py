"""Views of a replay (``pipeline.investigate.replay.write_replay``): a terminal report, and a single
self-contained HTML file for an incident ticket (inline CSS and SVG, no scripts, no network).

Every value in the HTML is escaped: event fields are attacker-controlled. In the terminal report
every value is inert: tables through ``pipeline.core.output``, the other lines through ``one_line``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import IO, Any, TextIO

from models.accounts import Accounts
from pipeline.core.inert import one_line
from pipeline.core.output import render
from pipeline.investigate.replay import Replay

TEXT_ROWS = 25  # rows of each blast-radius table in the terminal report (writes, failures, busiest first)
HTML_ROWS = 500  # rows of each blast-radius table in the HTML (the embedded export has them all)
HTML_LAST = 500  # the HTML timeline: the last entries, and
HTML_AROUND = 25  # the entries on each side of every finding; the JSON export holds every event
# JSON inside <script>: "</script>" would end the element and "<!--<script>" would make the parser
# swallow the rest of the page, so <, > and & are written as JSON escapes (the same JSON once parsed).
_SCRIPT_SAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _script_safe(text: str) -> str:
    """``text`` with ``_SCRIPT_SAFE``'s escapes: one ``replace`` a character, only where it occurs
    (``str.translate`` to longer strings ran at ~0.7 GB/s: 2 s of a 1.4 GB export)."""
    for char, escaped in _SCRIPT_SAFE.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def as_text(replay: Replay, accounts: Accounts | None = None) -> str:
    """The terminal report: the summary, findings, blast radius, what was new and the last events
    (``write_replay(..., last=N)`` decides how many). Accounts are shown by their aliases
    (``accounts``, the config's) where the export holds their ids."""
    names = accounts or Accounts()
    report = replay.report
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
              r["last_seen"]] for r in radius["resources"][:TEXT_ROWS]], "table"),
            *_more(len(radius["resources"]), "resources"), ""]
    for key, title in (("source_ips", "Source IPs"), ("user_agents", "User agents"), ("regions", "Regions"),
                       ("access_keys", "AccessKeys"), ("accounts", "Accounts acted in"),
                       ("roles", "Roles acted through (sessions it started)")):
        if radius.get(key):
            lines += [title, render(["value", "calls", "first_seen", "last_seen"],
                                    [[_aliased(i["value"], names) if key in ("accounts", "roles") else i["value"],
                                      i["calls"], i["first_seen"], i["last_seen"]]
                                     for i in radius[key][:TEXT_ROWS]], "table"),
                      *_more(len(radius[key]), title[0].lower() + title[1:].split(" (")[0]), ""]
    changes = report["changes"]
    for key, title in (("new_apis", "New APIs"), ("new_source_ips", "New source IPs"), ("new_regions", "New regions")):
        if changes[key]:
            lines.append(one_line(f"{title} (never seen before the window): "
                                  + ", ".join(f"{c['value']} ({c['first_seen']})" for c in changes[key])))
    shown = report["timeline"]
    kept = sum(1 for t in shown if t["kind"] == "event")
    lines += ["", f"Timeline (last {kept} of {s['events']} events; --format json for all, with raw JSON)"]
    lines.append(render(["time", "what", "source_ip", "region", "error"],
                        [[t["event_time"], f"FINDING {t['severity']} {t['detector']}: {t['summary']}"
                          if t["kind"] == "finding" else _through(t, names) + t["action"], t.get("source_ip"),
                          t.get("acs_region"), t.get("error_code")] for t in shown], "table"))
    lines.append("")
    lines.append(_redaction_line(report))
    return "\n".join(lines)


def _more(count: int, what: str) -> list[str]:
    """The line under a table cut at ``TEXT_ROWS``: how many rows it leaves out and where they are."""
    if count <= TEXT_ROWS:
        return []
    return [f"... and {count - TEXT_ROWS:,} more {what} (first {TEXT_ROWS:,} shown, most telling first; "
            "--format json or html lists every one)"]


def _through(entry: dict[str, Any], accounts: Accounts) -> str:
    """``via Role@account: `` for an event made through a role session the agent started."""
    via = entry.get("via")
    return f"via {' > '.join(_aliased(v, accounts) for v in via)}: " if via else ""


def _aliased(value: str, accounts: Accounts) -> str:
    """An account id, or ``something@<account id>``, with the account's alias where the config
    names it (``prod (1384...)``, ``admin@prod``)."""
    head, at, account = value.rpartition("@")
    if at:
        return f"{head}@{accounts.label(account)}"
    alias = accounts.alias(value)
    return f"{alias} ({value})" if alias else value


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


def write_html(replay: Replay, export: IO[str], out: TextIO, accounts: Accounts | None = None) -> None:
    """One self-contained page for a ticket, written to ``out`` as it goes: the summary, the
    activity chart over the whole window, the findings, blast radius and what was new, the
    timeline around each finding and at the end (gaps say how many entries they skip), and the
    complete JSON export (``export``, read from its start) embedded for the record."""
    report = replay.report
    s = report["summary"]
    who = (f"{_e(report['purpose'])} · owner {_e(report['owner'])} · {_e(report['environment'])}"
           if report["registered"] else "not in the inventory: no owner, no declared scope")
    out.write("\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>trailwarden replay: {_e(report['agent'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Replay of <code>{_e(report['agent'])}</code></h1><div class='meta'>{who}<br>",
        f"{_e(report['window']['since'])} .. {_e(report['window']['until'])} · {s['events']:,} events, "
        f"<span class='failed'>{s['failed']:,} failed</span>, {s['apis']} APIs, {s['findings']} findings · "
        f"generated {_e(report['generated_at'])} by {_e(report['generator'])}</div>",
        "<h2>Activity per hour</h2>", _chart(replay),
        "<p class='note'>Bars: calls per hour (red: failed). Triangles: findings. Times in UTC.</p>",
        _findings_table(report["findings"]), _radius_tables(report["blast_radius"], accounts or Accounts()),
        _changes_html(report["changes"]), _timeline_table(replay, accounts or Accounts()),
        "<h2>Evidence</h2><p>This file embeds the complete replay (every event's raw JSON) as JSON in the "
        "element <code>#trailwarden-export</code>. Its SHA-256, over that JSON without the <code>sha256</code> "
        "field, written compact with its keys in order (<code>json.dumps(..., ensure_ascii=False, separators=(',', "
        f"':'))</code>): <code>{_e(report['sha256'])}</code></p><p>{_e(_redaction_line(report))}</p>",
        "<script type='application/json' id='trailwarden-export'>"]))
    while chunk := export.read(1 << 20):
        out.write(_script_safe(chunk))
    out.write("</script>\n</body></html>\n")


def _chart(replay: Replay, width: int = 960, height: int = 180) -> str:
    """Calls per hour over the whole window (from the replay's hourly totals, so a 90-day window
    costs 2,160 numbers, not its events), a marker per finding, and a time axis in UTC."""
    report = replay.report
    start = _ts(report["window"]["since"]).replace(minute=0, second=0, microsecond=0)
    end = _ts(report["window"]["until"])
    hours = max(1, int((end - start).total_seconds() // 3600) + 1)
    peak = max((c for c, _ in replay.activity.values()), default=1)
    bar = width / hours
    svg = [f"<svg class='chart' width='{width}' height='{height + 34}' viewBox='0 0 {width} {height + 34}' "
           "xmlns='http://www.w3.org/2000/svg' role='img' aria-label='calls per hour'>"]
    for hour, (n, failed) in sorted(replay.activity.items()):
        slot = int((hour - start).total_seconds() // 3600)
        x, h = slot * bar, n / peak * (height - 10)
        fh = failed / peak * (height - 10)
        svg.append(f"<rect x='{x:.2f}' y='{height - h:.2f}' width='{max(bar, 1):.2f}' height='{h:.2f}' fill='#4a6fa5'>"
                   f"<title>{_e(hour)}: {n} calls, {failed} failed</title></rect>")
        if fh:
            svg.append(f"<rect x='{x:.2f}' y='{height - fh:.2f}' width='{max(bar, 1):.2f}' height='{fh:.2f}' "
                       "fill='#c0392b'/>")
    for f in report["findings"]:
        x = (_ts(f["first_seen"]) - start).total_seconds() / 3600 * bar
        svg.append(f"<polygon points='{x:.1f},{height + 2} {x - 5:.1f},{height + 14} {x + 5:.1f},{height + 14}' "
                   f"fill='#e67e22'><title>{_e(f['severity'])} {_e(f['detector'])}: {_e(f['summary'])}</title></polygon>")
    svg += _axis(start, hours, bar, height)
    svg.append(f"<text x='2' y='12' font-size='11' fill='#556'>peak {peak} calls/h</text></svg>")
    return "".join(svg)


def _axis(start: datetime, hours: int, bar: float, height: int) -> list[str]:
    """Tick marks at midnight UTC: every day for up to two weeks, then every week, then every 30 days."""
    days = hours / 24
    step = 1 if days <= 14 else 7 if days <= 120 else 30
    first = start.replace(hour=0) + timedelta(days=1) if start.hour else start
    out = []
    tick = first
    while (tick - start).total_seconds() / 3600 < hours:
        x = (tick - start).total_seconds() / 3600 * bar
        out.append(f"<line x1='{x:.1f}' y1='{height}' x2='{x:.1f}' y2='{height + 18}' stroke='#99a'/>"
                   f"<text x='{x + 2:.1f}' y='{height + 30}' font-size='10' fill='#556'>{tick:%b %d}</text>")
        tick += timedelta(days=step)
    return out


def _findings_table(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "<h2>Findings</h2><p class='note'>None in this window.</p>"
    rows = "".join(
        f"<tr><td><span class='pill {_e(f['severity'])}'>{_e(f['severity'])}</span></td><td>{_e(f['detector'])}</td>"
        f"<td class='mono'>{_e(f['first_seen'])}</td><td>{_e(f['summary'])}</td><td class='mono'>{_e(f['id'])}</td>"
        f"<td>{_e(f['status'])}</td></tr>" for f in findings)
    return ("<h2>Findings</h2><table><tr><th>severity</th><th>detector</th><th>first seen</th><th>summary</th>"
            f"<th>id</th><th>status</th></tr>{rows}</table>")


def _radius_tables(radius: dict[str, Any], accounts: Accounts) -> str:
    out = ["<h2>Blast radius</h2>"]
    if radius["resources"]:
        rows = "".join(
            f"<tr><td>{_e(r['access'])}</td><td class='{'failed' if r['outcome'] == 'failed' else ''}'>{_e(r['outcome'])}</td>"
            f"<td class='mono'>{_e(r['resource'])}</td><td>{r['calls']}</td><td class='mono'>{_e(', '.join(r['actions']))}</td>"
            f"<td class='mono'>{_e(r['first_seen'])}</td><td class='mono'>{_e(r['last_seen'])}</td></tr>"
            for r in radius["resources"][:HTML_ROWS])
        out.append("<table><tr><th>access</th><th>outcome</th><th>resource</th><th>calls</th><th>actions</th>"
                   f"<th>first seen</th><th>last seen</th></tr>{rows}</table>{_more_html(len(radius['resources']))}")
    else:
        out.append("<p class='note'>No named resource touched (only calls without resources).</p>")
    for key, title in (("source_ips", "Source IPs"), ("user_agents", "User agents"), ("regions", "Regions"),
                       ("access_keys", "AccessKeys"), ("accounts", "Accounts acted in"),
                       ("roles", "Roles acted through (sessions it started)")):
        items = radius.get(key) or []
        if key in ("accounts", "roles") and not items:
            continue
        rows = "".join(f"<tr><td class='mono'>{_e(_aliased(i['value'], accounts) if key in ('accounts', 'roles') else i['value'])}</td><td>{i['calls']}</td>"
                       f"<td class='mono'>{_e(i['first_seen'])}</td><td class='mono'>{_e(i['last_seen'])}</td></tr>"
                       for i in items[:HTML_ROWS])
        out.append(f"<h2>{title}</h2><table><tr><th>value</th><th>calls</th><th>first seen</th><th>last seen</th></tr>"
                   f"{rows}</table>{_more_html(len(items))}")
    return "".join(out)


def _more_html(count: int) -> str:
    """The note under a table cut at ``HTML_ROWS``."""
    if count <= HTML_ROWS:
        return ""
    return (f"<p class='note'>… and {count - HTML_ROWS:,} more (the first {HTML_ROWS:,} shown, most telling "
            "first; the embedded JSON export below lists every one).</p>")


def _changes_html(changes: dict[str, Any]) -> str:
    out = ["<h2>New against its history</h2>"]
    if changes.get("history_was_empty"):
        out.append("<p class='note'>No history before the window: everything is new.</p>")
    for key, title in (("new_apis", "APIs"), ("new_source_ips", "Source IPs"), ("new_regions", "Regions")):
        items = changes.get(key) or []
        text = ", ".join(f"<code>{_e(c['value'])}</code> ({_e(c['first_seen'])})" for c in items) or "none"
        out.append(f"<p><b>{title}:</b> {text}</p>")
    return "".join(out)


def _timeline_table(replay: Replay, accounts: Accounts) -> str:
    """The entries kept around each finding and at the end of the window, a gap row where entries
    are skipped: a responder opening a 90-day replay sees the incident first, not every row."""
    total = replay.entries
    note = (f"<p class='note'>{len(replay.shown):,} of {total:,} entries: those around each finding and the "
            "last ones. The JSON export (embedded below) holds every event with its raw JSON.</p>"
            if len(replay.shown) < total else "")
    rows = []
    expected = 0
    for position, t in replay.shown:
        if position > expected:
            rows.append(f"<tr class='gap'><td colspan='6'>… {position - expected:,} entries not shown …</td></tr>")
        expected = position + 1
        if t["kind"] == "finding":
            rows.append(f"<tr class='finding'><td class='mono'>{_e(t['event_time'])}</td><td colspan='5'>"
                        f"<span class='pill {_e(t['severity'])}'>{_e(t['severity'])}</span> <b>{_e(t['detector'])}</b>: "
                        f"{_e(t['summary'])}</td></tr>")
        else:
            err = f"<span class='failed'>{_e(t['error_code'])}</span>" if t["error_code"] else ""
            rows.append(f"<tr><td class='mono'>{_e(t['event_time'])}</td>"
                        f"<td class='mono'>{_e(_through(t, accounts))}{_e(t['action'])}</td>"
                        f"<td class='mono'>{_e(t['source_ip'])}</td><td>{_e(t['acs_region'])}</td>"
                        f"<td class='mono'>{_e(', '.join(t['resources'][:3]))}</td><td>{err}</td></tr>")
    if total > expected:
        rows.append(f"<tr class='gap'><td colspan='6'>… {total - expected:,} entries not shown …</td></tr>")
    return ("<h2>Timeline</h2>" + note + "<table><tr><th>time</th><th>action</th><th>source IP</th><th>region</th>"
            "<th>resources</th><th>error</th></tr>" + "".join(rows) + "</table>")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ts(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
