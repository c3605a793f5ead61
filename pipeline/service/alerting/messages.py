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

An incident is one top-level message a tired on-call engineer understands in five seconds (issue
16): its severity and agent, the headline (what happened, most harmful first, where from and
when), who the agent is and who owns it (a real mention when the inventory maps the owner to
Slack), the three facts that matter most, a suggested next step, its status and, when triage
from Slack is configured, buttons. Everything else - each finding's evidence, event ids and
times, baselines - goes into the thread, one reply per finding (or per reason two detectors
share). The notification text is the headline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.inventory import Agent
from pipeline.service.alerting.facts import Group, evidence_lines, facts
from pipeline.service.alerting.text import (
    MAX_HEADER,
    MAX_SECTION,
    code,
    context,
    header,
    mrkdwn,
    plain_section,
    section,
    untrusted,
)

__all__ = ["MAX_HEADER", "MAX_SECTION", "Message", "as_text", "incident_message", "finding_reply", "replay_hint",
           "status_message", "untrusted", "update_message"]
MAX_BLOCKS = 50
EVENTS_SHOWN = 5
SEVERITY_MARK = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
                 "low": ":white_circle:"}
# the buttons of an incident message: action id -> (label, the triage it asks for)
BUTTONS = {"tw_ack": ("Acknowledge", "acknowledged"), "tw_resolve": ("Resolve", "resolved"),
           "tw_false_positive": ("False positive", "false_positive"), "tw_suppress": ("Suppress 7 days", "suppress")}
STATUS_WORDS = {"open": "Open", "acknowledged": "Acknowledged", "resolved": "Resolved",
                "false_positive": "Marked a false positive", "suppressed": "Suppressed",
                "contained": "Agent contained", "uncontained": "Containment undone"}  # `trailwarden contain`
# `trailwarden contain AGENT` (issue 17) is suggested as the last step; a switch for tests and
# embedders whose entry point has no `contain`.
CONTAIN_AVAILABLE = True


def replay_hint(agent: str, since: datetime) -> str:
    """The command an alert suggests to see what happened: the agent's replay from an hour before
    its first finding (the same line from `alert`, `run` and `serve`)."""
    return f"trailwarden replay {agent} --since {since - timedelta(hours=1):%Y-%m-%dT%H:%MZ}"


@dataclass(frozen=True)
class Message:
    text: str  # the notification / screen-reader fallback, escaped too
    blocks: list[dict[str, Any]]


# -- the incident: one top-level message ---------------------------------------------------------------
def incident_message(incident: dict[str, Any], findings: Sequence[dict[str, Any]], inventory_agent: Agent | None,
                     replay_command: str, *, triage: bool = False) -> Message:
    """The incident's top-level message: at most a dozen visible lines (see the module docstring).
    ``findings`` are the incident's findings this destination hears of; ``triage`` adds buttons
    while the incident is open or acknowledged."""
    agent, severity, status = incident["agent"], incident["severity"], incident["status"]
    title = incident.get("headline") or (findings[0]["summary"] if findings else agent)
    blocks: list[dict[str, Any]] = [
        header(f"{severity.upper()}: {agent}"),
        plain_section(untrusted(title, 600)),
        context(_who(agent, inventory_agent)),
    ]
    origin = origin_line(findings)
    if origin:
        blocks.append(context(origin))
    lines = [fact.line() for fact in facts(findings)]
    if lines:
        blocks.append(section("\n".join(lines)))
    blocks.append(section("*Next:* " + " · ".join(next_steps(incident, replay_command))))
    detectors = sorted({f["detector"] for f in findings})
    blocks.append(context(
        f"{_status_line(incident)} · incident {code(incident['id'], 40)} · {len(findings)} finding"
        f"{'s' if len(findings) != 1 else ''} ({', '.join(code(d, 40) for d in detectors)}) · evidence in the thread"))
    if triage and status in ("open", "acknowledged"):
        blocks.append(_buttons(incident["id"], status))
    return Message(text=untrusted(title, 300), blocks=blocks)


def origin_line(findings: Sequence[dict[str, Any]]) -> str | None:
    """Whose role session it was, when the findings are on events of role sessions: the agent that
    started the chain, its account, and the roles it went through."""
    found = next((f for f in findings if f.get("origin_agent")), None)
    if found is None:
        return None
    account = f" in account {code(found['origin_account'], 40)}" if found.get("origin_account") else ""
    chain = " → ".join(code(c, 60) for c in (found.get("chain") or [])[:4])
    return (f"through a role session started by {code(found['origin_agent'], 80)}{account}"
            + (f" · roles {chain}" if chain else ""))


def next_steps(incident: dict[str, Any], replay_command: str) -> list[str]:
    """What to do first: replay the agent (always); disable the AccessKey it used (when it used
    one); contain the agent (`trailwarden contain`, a plan unless --execute)."""
    steps = [code(replay_command, 300)]
    keys = (incident.get("summary") or {}).get("access_keys") or []
    if keys:
        steps.append("disable AccessKey " + ", ".join(code(k, 40) for k in keys[:2]))
    if CONTAIN_AVAILABLE:
        steps.append(code(f"trailwarden contain {incident['agent']} --reason ...", 200))
    return steps


def _status_line(incident: dict[str, Any]) -> str:
    status = incident["status"]
    words = f"*{STATUS_WORDS.get(status, untrusted(status, 40))}*"
    if incident.get("status_by") and status != "open":
        words += f" by {code(incident['status_by'], 80)}"
        if isinstance(incident.get("status_at"), datetime):
            words += f" at {_when(incident['status_at'])}"
    return words


def _buttons(incident_id: str, status: str) -> dict[str, Any]:
    shown = [k for k in BUTTONS if not (k == "tw_ack" and status == "acknowledged")]
    elements = [{"type": "button", "action_id": k, "value": incident_id,
                 "text": {"type": "plain_text", "text": BUTTONS[k][0], "emoji": False},
                 **({"style": "primary"} if k == "tw_ack" else {})} for k in shown]
    return {"type": "actions", "block_id": f"triage:{incident_id}", "elements": elements}


def _who(agent: str, inv: Agent | None) -> str:
    if inv is None:
        return f"{code(agent)} is not in the inventory: no owner, no declared scope"
    mention = getattr(inv, "owner_slack", None)
    owner = f"{mention} ({untrusted(inv.owner, 80)})" if mention else untrusted(inv.owner, 80)
    return f"*{untrusted(inv.purpose, 160)}* · owner {owner} · {untrusted(inv.environment, 40)}"


# -- the thread: one reply per finding (per reason two detectors share) ---------------------------------
def finding_reply(group: Group, tz: ZoneInfo) -> Message:
    """A reply in the incident's thread: the finding's head line, its summary as plain text, its
    evidence as labelled lines, its events (UTC and local time, the first ids) and its id. Two
    detectors that fired on the same events for the same reason share one reply."""
    lead = group.lead
    names = " + ".join(f"*{untrusted(d, 40)}*" for d in group.detectors)
    ids = ", ".join(code(f["id"], 40) for f in group.findings)
    blocks = [section(f"{SEVERITY_MARK.get(lead['severity'], '')} {names} · {lead['severity']} · finding {ids}")]
    blocks += [plain_section(untrusted(f["summary"], 600)) for f in group.findings[:2]]
    lines = [*evidence_lines(lead), _events_line(lead, tz)]
    blocks.append(section("\n".join(lines)))
    text = untrusted(f"{lead['agent']}: {' + '.join(group.detectors)}: {lead['summary']}", 300)
    return Message(text=text, blocks=blocks)


def _events_line(f: dict[str, Any], tz: ZoneInfo) -> str:
    events = list(f.get("event_ids") or [])
    times = f.get("event_times") or {}
    shown = ", ".join(code(e, 80) for e in events[:EVENTS_SHOWN])
    more = f" …and {f['event_count'] - len(events[:EVENTS_SHOWN])} more" if f["event_count"] > EVENTS_SHOWN else ""
    first, last = f["first_seen"], f["last_seen"]
    span = f"{_when(first)} → {_when(last)}"
    if isinstance(first, datetime):
        local = first.astimezone(tz)
        span += f" ({local:%H:%M %a} {local.day} {local:%b} {tz.key})"
    if times and len(events) == 1 and events[0] in times:
        span = f"{_when(times[events[0]])}" + span[span.index(" ("):] if " (" in span else span
    return f"• Events ({f['event_count']}): {span}: {shown}{more}"


# -- other thread replies ----------------------------------------------------------------------------------
def update_message(finding: dict[str, Any], new_events: int) -> Message:
    """A thread reply: the finding grew since it was alerted (named, as one alert may hold several);
    its summary follows as plain text."""
    line = (f"{SEVERITY_MARK.get(finding['severity'], '')} *{untrusted(finding['detector'], 40)}* "
            f"`{untrusted(finding['id'], 40)}`: {new_events} more event{'s' if new_events != 1 else ''} "
            f"(now {finding['event_count']}), last seen {_when(finding['last_seen'])}.")
    return Message(text=untrusted(f"{finding['agent']}: {new_events} more events for {finding['detector']}", 300),
                   blocks=[section(line), *_plain_blocks(untrusted(finding["summary"], 600))])


def _plain_blocks(text: str) -> list[dict[str, Any]]:
    return [plain_section(text)] if text else []  # Slack refuses an empty text object


def status_message(findings: Sequence[dict[str, Any]], change: dict[str, Any]) -> Message:
    """A thread reply: someone triaged findings of the incident (who, then why, as plain text);
    one reply for all the findings one triage changed."""
    words = STATUS_WORDS.get(str(change.get("status")), str(change.get("status")))
    first = findings[0]
    named = (f"*{untrusted(first['detector'], 40)}* `{untrusted(first['id'], 40)}`" if len(findings) == 1
             else f"{len(findings)} findings")
    line = (f"*{words}* by `{untrusted(change.get('by'), 80)}`: {named}"
            + (f" at {_when(change['at'])}" if change.get("at") else ""))
    what = first["detector"] if len(findings) == 1 else f"{len(findings)} findings"
    text = untrusted(f"{first['agent']}: {what} {words.lower()} by {change.get('by')}", 300)
    return Message(text=text, blocks=[section(line), *_plain_blocks(untrusted(change.get("reason") or "", 600))])


def _when(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value.utcoffset() == timedelta(0) else value.isoformat()


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
        elif kind == "actions":
            out.append(" ".join(f"[{e['text']['text']}]" for e in block["elements"]))
    return "\n".join(out)


def visible_lines(message: Message) -> int:
    """How many lines the message shows before its thread (what the 12-line target counts)."""
    return len(as_text(message).splitlines())


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


__all__ += ["BUTTONS", "SEVERITY_MARK", "mrkdwn", "visible_lines"]
