"""Slack messages for findings, in Block Kit, with every event-derived string made inert.

Text from events (user agents, resource names, error messages, session names, even identity
names) is attacker-controlled. Three layers keep it inert:

* ``&``, ``<`` and ``>`` are the only characters mrkdwn lets us escape; escaping them neutralizes
  ``<!channel>``, ``<@U123>`` and ``<http://evil|click>`` in every text object.
* ``*bold*``, ``_italic_`` and ``~strike~`` have no escape in mrkdwn, so attacker text never sits
  in mrkdwn outside a code span (where nothing formats): a finding's summary, a triage reason and
  the health warning are ``plain_text`` sections; identities, evidence values and event ids are
  `code spans` (backticks in them replaced); the top-level ``text`` is posted with
  ``mrkdwn=False`` (``pipeline.service.alerting.slack``).
* Control, bidi and invisible characters are never dropped silently: each becomes a visible
  marker (``ram-user:ci-\u200bdeploy`` shows as ``ram-user:ci-<U+200B>deploy``, see
  ``pipeline.core.inert``), so a look-alike identity looks different. Newlines are flattened, URLs
  defanged and every value truncated. mrkdwn objects are ``verbatim`` (no auto-linking) and
  messages are sent with unfurling off.

Slack's limits (50 blocks, 3,000 characters per section, 150 per header) are kept by truncating
with an explicit "…and N more".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from models.inventory import Agent
from pipeline.core.inert import one_line

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_FINDINGS_PER_MESSAGE = 5
EVENTS_SHOWN = 5
_URL = re.compile(r"(?i)\b(https?|ftp)://")
SEVERITY_MARK = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
                 "low": ":white_circle:"}


def untrusted(value: Any, limit: int = 200) -> str:
    """An attacker-controlled value as one line of text for any Slack text object: hidden
    characters shown as markers, ``& < >`` escaped, backticks replaced, URLs defanged, truncated.

    In mrkdwn it is inert only inside a `code span` (``*``, ``_`` and ``~`` would format outside
    one); in a ``plain_text`` object, and in the top-level text posted with ``mrkdwn=False``, it is
    inert as it is."""
    text = one_line(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")
    text = _URL.sub(r"\1[:]//", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def replay_hint(agent: str, since: datetime) -> str:
    """The command an alert suggests to see what happened: the agent's replay from an hour before
    its first finding (the same line from `alert`, `run` and `serve`)."""
    return f"trailwarden replay {agent} --since {since - timedelta(hours=1):%Y-%m-%dT%H:%MZ}"


@dataclass(frozen=True)
class Message:
    text: str  # the notification / screen-reader fallback, escaped too
    blocks: list[dict[str, Any]]


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:MAX_SECTION], "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 2] + " …"
    return {"type": "section", "text": _mrkdwn(text)}


def _plain_section(text: str) -> dict[str, Any]:
    """A section of ``untrusted()`` text: nothing in it formats, links or mentions."""
    if len(text) > MAX_SECTION:
        text = text[: MAX_SECTION - 2] + " …"
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def alert_message(agent: str, findings: Sequence[dict[str, Any]], inventory_agent: Agent | None,
                  replay_command: str) -> Message:
    """One message for an agent's new findings of one run (most severe first)."""
    ordered = sorted(findings, key=lambda f: (-_rank(f["severity"]), f["first_seen"]))
    worst = ordered[0]["severity"]
    header = f"{worst.upper()}: {agent}" + (f" - {len(ordered)} findings" if len(ordered) > 1 else "")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": untrusted(header, MAX_HEADER), "emoji": False}},
        {"type": "context", "elements": [_mrkdwn(_who(agent, inventory_agent))]},
    ]
    shown = ordered[:MAX_FINDINGS_PER_MESSAGE]
    for finding in shown:
        blocks.append({"type": "divider"})
        blocks.extend(_finding_blocks(finding))
    if len(ordered) > len(shown):
        blocks.append(_section(f"…and {len(ordered) - len(shown)} more findings for this agent: "
                               f"`trailwarden findings --agent {untrusted(agent, 120)}`"))
    blocks.append({"type": "context", "elements": [_mrkdwn(f"Replay: `{untrusted(replay_command, 400)}`")]})
    blocks = _fit(blocks)
    text = (f"{worst.upper()}: " + untrusted(ordered[0]["summary"], 300)
            + (f" (+{len(ordered) - 1} more for {untrusted(agent, 120)})" if len(ordered) > 1 else ""))
    return Message(text=text, blocks=blocks)


def update_message(finding: dict[str, Any], new_events: int) -> Message:
    """A thread reply: the finding grew since it was alerted (named, as one alert may hold several);
    its summary follows as plain text."""
    line = (f"{SEVERITY_MARK.get(finding['severity'], '')} *{untrusted(finding['detector'], 40)}* "
            f"`{untrusted(finding['id'], 40)}`: {new_events} more event{'s' if new_events != 1 else ''} "
            f"(now {finding['event_count']}), last seen {_when(finding['last_seen'])}.")
    return Message(text=untrusted(f"{finding['agent']}: {new_events} more events for {finding['detector']}", 300),
                   blocks=[_section(line), *_plain_blocks(untrusted(finding["summary"], 600))])


def _plain_blocks(text: str) -> list[dict[str, Any]]:
    return [_plain_section(text)] if text else []  # Slack refuses an empty text object


STATUS_WORDS = {"acknowledged": "Acknowledged", "resolved": "Resolved", "false_positive": "Marked a false positive",
                "contained": "Agent contained", "uncontained": "Containment undone"}  # `trailwarden contain`


def status_message(finding: dict[str, Any], change: dict[str, Any]) -> Message:
    """A thread reply: someone triaged the finding (who, then why, as plain text)."""
    words = STATUS_WORDS.get(str(change.get("status")), str(change.get("status")))
    line = (f"*{words}* by `{untrusted(change.get('by'), 80)}`: "
            f"*{untrusted(finding['detector'], 40)}* `{untrusted(finding['id'], 40)}`"
            + (f" at {_when(change['at'])}" if change.get("at") else ""))
    text = untrusted(f"{finding['agent']}: {finding['detector']} {words.lower()} by {change.get('by')}", 300)
    return Message(text=text, blocks=[_section(line), *_plain_blocks(untrusted(change.get("reason") or "", 600))])


MAX_EVIDENCE_LINES = 10
FINDING_BUDGET = 1800  # characters per finding: five findings stay well under Slack's ~12k total


def _finding_blocks(f: dict[str, Any]) -> list[dict[str, Any]]:
    """Three sections per finding: its head line (severity, detector, score), its summary as plain
    text (a sentence that embeds event values), then its evidence, events and id, every value in
    a code span. The head, the summary, the events and the id always fit; the evidence takes what
    room is left."""
    mark = SEVERITY_MARK.get(f["severity"], "")
    head = f"{mark} *{untrusted(f['detector'], 40)}* ({f['severity']}, score {f['score']:.2f})"
    summary = untrusted(f["summary"], 500)
    events = list(f.get("event_ids") or [])
    times = f.get("event_times") or {}
    one_day = _when(f["first_seen"])[:10] == _when(f["last_seen"])[:10]
    shown = ", ".join(f"`{untrusted(e, 80)}`" + (f" {_clock(times[e], one_day)}" if e in times else "")
                      for e in events[:EVENTS_SHOWN])
    more = f" …and {f['event_count'] - len(events[:EVENTS_SHOWN])} more" if f["event_count"] > EVENTS_SHOWN else ""
    tail = [f"*Events* {_when(f['first_seen'])} → {_when(f['last_seen'])}: {shown}{more}",
            f"Finding `{untrusted(f['id'], 40)}`"]
    room = FINDING_BUDGET - len(head) - len(summary) - sum(len(t) + 1 for t in tail)
    evidence = _evidence_lines(f.get("evidence") or {}, room)
    return [_section(head), *_plain_blocks(summary), _section("\n".join([*evidence, *tail]))]


_EVIDENCE_ORDER = ("kind", "action", "decision", "statement", "rule", "resources", "region", "network",
                   "declared", "count", "succeeded", "failed", "error_codes", "hour_of_week", "local_time",
                   "declared_hours", "baseline", "peak_failures_in_window", "window_minutes", "threshold",
                   "apis", "source_ips")


def _evidence_lines(evidence: dict[str, Any], room: int) -> list[str]:
    """As many evidence lines as fit in ``room`` characters, then an explicit "…and N more"."""
    keys = [k for k in _EVIDENCE_ORDER if k in evidence] + sorted(k for k in evidence if k not in _EVIDENCE_ORDER)
    lines = [f"• {untrusted(k, 40)}: `{untrusted(_compact(evidence[k]), 300)}`" for k in keys
             if evidence[k] not in (None, "", [], {}) and k != "kind"]
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        marker = f"• …and {len(lines) - i} more evidence fields (`trailwarden findings --format json`)"
        if i == MAX_EVIDENCE_LINES or used + len(line) + 1 > room - len(marker) - 1:
            out.append(marker)
            break
        out.append(line)
        used += len(line) + 1
    return out


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        items = [_compact(v) for v in value[:8]]
        return ", ".join(items) + (f" …and {len(value) - 8} more" if len(value) > 8 else "")
    return str(value)


def _who(agent: str, inv: Agent | None) -> str:
    if inv is None:
        return f"`{untrusted(agent, 120)}` is not in the inventory: no owner, no declared scope"
    return (f"*{untrusted(inv.purpose, 200)}* · owner {untrusted(inv.owner, 80)} · "
            f"{untrusted(inv.environment, 40)}")


def _fit(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    kept = blocks[: MAX_BLOCKS - 1]
    return [*kept, _section(f"…and {len(blocks) - len(kept)} more blocks")]


def _rank(severity: str) -> int:
    return ("low", "medium", "high", "critical").index(severity)


def _when(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value.utcoffset() == timedelta(0) else value.isoformat()


def _clock(when: datetime | str, one_day: bool) -> str:
    """An event's time beside its id: the time of day when the finding lies within one day (the
    line gives the date), else the date and time."""
    if one_day and isinstance(when, datetime) and when.utcoffset() == timedelta(0):
        return when.strftime("%H:%M:%SZ")
    return _when(when)


def as_text(message: Message) -> str:
    """The console rendering of a message (the demo and `alert` without a Slack token)."""
    out: list[str] = []
    for block in message.blocks:
        kind = block["type"]
        if kind == "header":
            out.append(f"== {_unescape(block['text']['text'])} ==")
        elif kind == "section":
            out.append(_unescape(block["text"]["text"]))
        elif kind == "context":
            out.extend(_unescape(e["text"]) for e in block["elements"])
        elif kind == "divider":
            out.append("--")
    return "\n".join(out)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
