"""The weekly permission review in Slack: one message with the summary, one thread reply per
failing agent (its owner and reasons). ``serve`` posts it every Monday at 09:00 (the config's time
zone) when both ``slack:`` and ``ram:`` are configured.

Nothing doubled, nothing lost: what was posted for the week is kept in ``pipeline_state``
(``review.slack.<ISO week>``: the summary's ``ts`` and the agents replied to), written after each
post; a post whose record a crash lost is found in the channel by its metadata key (``review-<week>``,
``review-<week>-<agent>``) before anything is posted again. Every name and reason comes from RAM
or the inventory and is sent as inert plain text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from pipeline.service.alerting.messages import Message, untrusted
from pipeline.service.alerting.slack import SlackSender
from pipeline.store.store import Store


def week_of(now: datetime, tz: Any) -> tuple[str, datetime]:
    """``2026-W49`` and the start of that week (Monday 00:00 in ``tz``)."""
    local = now.astimezone(tz)
    year, week, weekday = local.isocalendar()
    start = (local - timedelta(days=weekday - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return f"{year}-W{week:02d}", start


def summary_message(result: dict[str, Any]) -> Message:
    s = result["summary"]
    snap = result["snapshot"]
    line = (f"Permission review: {s['fail']} fail, {s['warn']} warn, {s['pass']} pass of {s['agents']} agents"
            + (f"; {s['undeclared']} RAM principal(s) no agent declares" if s.get("undeclared") else "")
            + ("" if snap else "; no RAM snapshot yet (run `trailwarden ram sync`)")
            + f"; usage over the last {result['window']['days']} days")
    text = untrusted(line, 500)
    return Message(text=text, blocks=[
        {"type": "section", "text": {"type": "mrkdwn", "text": ":clipboard: *Weekly permission review*",
                                     "verbatim": True}},
        {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}},
        {"type": "context", "elements": [{"type": "mrkdwn", "verbatim": True,
                                          "text": "Failing agents in the thread; `trailwarden review --format markdown`"
                                                  " for the whole document"}]}])


def agent_message(agent: dict[str, Any]) -> Message:
    fails = [r for r in agent["reasons"] if r["level"] == "fail"]
    warns = [r for r in agent["reasons"] if r["level"] == "warn"]
    head = untrusted(f"{agent['agent']} (owner {agent['owner']}): fail, {len(fails)} failing and {len(warns)} "
                     "warning reason(s)", 300)
    body = untrusted("\n".join(f"- {r['kind']}: {r['message']}" for r in [*fails, *warns][:12]), 2500)
    return Message(text=head, blocks=[{"type": "section", "text": {"type": "plain_text", "text": head, "emoji": False}},
                                      {"type": "section", "text": {"type": "plain_text", "text": body or "-",
                                                                   "emoji": False}}])


def post_review(store: Store, sender: SlackSender, result: dict[str, Any], now: datetime, tz: Any) -> dict[str, Any]:
    """Post this week's review (what is not posted yet); returns the week's record."""
    week, start = week_of(now, tz)
    state_key = f"review.slack.{week}"
    record: dict[str, Any] = json.loads(store.read_state(state_key) or "{}")
    record.setdefault("replied", [])
    since = start - timedelta(hours=1)
    if not record.get("ts"):
        key = f"review-{week}"
        record["ts"] = sender.find(key, since) or sender.post(summary_message(result), key=key)
        store.write_state(state_key, json.dumps(record))
    for agent in (a for a in result["agents"] if a["verdict"] == "fail"):
        if agent["agent"] in record["replied"]:
            continue
        key = f"review-{week}-{agent['agent']}"
        if sender.find(key, since, record["ts"]) is None:
            sender.post(agent_message(agent), key=key, thread_ts=record["ts"])
        record["replied"].append(agent["agent"])
        store.write_state(state_key, json.dumps(record))
    return {"week": week, **record}
