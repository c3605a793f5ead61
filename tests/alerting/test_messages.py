"""The Slack messages themselves: golden Block Kit payloads, Slack's limits, and ``untrusted()``.

Golden files (``golden/*.json``) hold the exact ``{"text", "blocks"}`` payload for fixed findings
(fixed times, ids and replay command), so any change to what responders see shows up as a diff
in review. Regenerate after an intended change with::

    TRAILWARDEN_UPDATE_GOLDEN=1 .venv/bin/pytest tests/alerting/test_messages.py

and read the diff before committing it (see ``golden/README.md``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from detectors.base import Finding
from models.inventory import Inventory
from pipeline.detection.findings import save_findings
from pipeline.service.alerting.facts import Group, reason_groups
from pipeline.service.alerting.messages import (
    MAX_BLOCKS,
    MAX_HEADER,
    MAX_SECTION,
    Message,
    as_text,
    finding_reply,
    incident_message,
    replay_hint,
    status_message,
    untrusted,
    update_message,
    visible_lines,
)
from pipeline.store.store import open_store
from tests.conftest import run_cli

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TRAILWARDEN_UPDATE_GOLDEN") == "1"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
REPLAY = "trailwarden findings --agent ci-deployer --since 2026-11-02T02:00Z"

INVENTORY = Inventory.model_validate({"agents": [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"]},
]})
CI = INVENTORY.agent("ci-deployer")


def row(f: Finding, event_count: int | None = None) -> dict[str, Any]:
    """A finding as the outbox reads it back from the store."""
    return {**f.as_dict(), "event_count": len(f.event_ids) if event_count is None else event_count}


def out_of_scope_finding(events: int = 3, **kw: Any) -> Finding:
    base: dict[str, Any] = {
        "detector": "out_of_scope", "agent": "ci-deployer", "severity": "critical", "score": 0.932,
        "first_seen": T0, "last_seen": T0 + timedelta(minutes=events - 1),
        "summary": (f"ci-deployer called ecs:StopInstance ({events} calls, {events} succeeded, writing), "
                    "outside its declared scope: no statement allows it"),
        "event_ids": [f"00000000-0000-4000-8000-{i:012d}" for i in range(events)],
        "evidence": {"kind": "out_of_scope", "action": "ecs:StopInstance", "count": events, "succeeded": events,
                     "failed": 0, "error_codes": {}, "source_ips": ["203.0.113.7"], "regions": ["cn-hangzhou"],
                     "decision": "ImplicitDeny", "statement": None, "rule": "no statement allows it",
                     "resources": ["acs:ecs:cn-hangzhou:1384926508761234:instance/i-prod-web-01"]},
        "dedup_key": "out_of_scope:ecs:stopinstance",
    }
    base.update(kw)
    return Finding(**base)


def seven_findings() -> list[dict[str, Any]]:
    specs = [("out_of_scope", "high", "ecs:DeleteSnapshot"), ("failure_storm", "medium", "storm"),
             ("out_of_scope", "critical", "ram:CreateAccessKey"), ("odd_hours", "medium", "odd"),
             ("out_of_scope", "high", "oss:PutBucketAcl"), ("failure_storm", "high", "storm2"),
             ("out_of_scope", "critical", "ecs:StopInstance")]
    out = []
    for i, (detector, severity, key) in enumerate(specs):
        start = T0 + timedelta(minutes=10 * i)
        out.append(row(Finding(
            detector=detector, agent="ci-deployer", severity=severity, score=0.5 + i / 20, first_seen=start,
            last_seen=start + timedelta(minutes=1), summary=f"finding {i + 1}: {detector} on {key}",
            event_ids=[f"ev-{i}-{j}" for j in range(2)], evidence={"kind": detector, "action": key, "count": 2},
            dedup_key=key)))
    return out


def payload(message: Message) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks}


def check_golden(name: str, message: Message) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(payload(message), indent=2, ensure_ascii=False) + "\n"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run with TRAILWARDEN_UPDATE_GOLDEN=1 to create it"
    assert json.loads(path.read_text(encoding="utf-8")) == payload(message), (
        f"{path.name} differs from what is rendered now; if the change is intended, regenerate with "
        "TRAILWARDEN_UPDATE_GOLDEN=1 and review the diff")


def texts(message: Message) -> Iterator[tuple[str, str]]:
    """(kind, text) of every text object in the blocks."""
    for block in message.blocks:
        if "text" in block:
            yield block["type"], block["text"]["text"]
        for element in block.get("elements", []):  # context texts, button labels
            text = element["text"]
            yield block["type"], text["text"] if isinstance(text, dict) else text


def details(message: Message) -> str:
    """The section of a thread reply with the finding's evidence and events."""
    return next(t for k, t in texts(message) if k == "section" and "• Events (" in t)


UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def incident(findings: list[dict[str, Any]], *, agent: str | None = None, headline: str | None = None,
             status: str = "open", **extra: Any) -> dict[str, Any]:
    """An incident as the store holds it, for these findings (fixed id and headline)."""
    worst = max(findings, key=lambda f: ("low", "medium", "high", "critical").index(f["severity"]))
    return {"id": "inc-0123456789", "agent": agent or worst["agent"], "severity": worst["severity"],
            "status": status, "headline": headline or worst["summary"], "version": 1, "status_by": None,
            "status_at": None, "summary": {}, "first_seen": min(f["first_seen"] for f in findings), **extra}


def alert_message(agent: str, findings: list[dict[str, Any]], inv: Any, replay: str, **kw: Any) -> Message:
    """The incident message for these findings of ``agent`` (what the outbox posts first)."""
    return incident_message(incident(findings, agent=agent), findings, inv, replay, **kw)


def reply(finding: dict[str, Any], tz: ZoneInfo = UTC_ZONE) -> Message:
    return finding_reply(Group([finding]), tz)


def assert_within_limits(message: Message) -> None:
    assert 1 <= len(message.blocks) <= MAX_BLOCKS
    for kind, text in texts(message):
        assert 1 <= len(text) <= (MAX_HEADER if kind == "header" else MAX_SECTION), (kind, len(text))
    assert len(message.text) <= 40_000


# -- golden payloads -----------------------------------------------------------------------------
def test_golden_incident_message_of_a_critical_out_of_scope_finding():
    finding = row(out_of_scope_finding())
    message = alert_message("ci-deployer", [finding], CI, REPLAY, triage=True)
    check_golden("out_of_scope_critical", message)
    assert_within_limits(message)
    assert message.text == untrusted(finding["summary"], 300)  # the notification is the headline
    actions = message.blocks[-1]
    assert actions["type"] == "actions"
    assert [e["text"]["text"] for e in actions["elements"]] == [
        "Acknowledge", "Resolve", "False positive", "Suppress 7 days"]
    assert {e["value"] for e in actions["elements"]} == {"inc-0123456789"}
    assert "00000000-0000-4000-8000" not in json.dumps(message.blocks)  # event ids go to the thread


def test_golden_thread_reply_with_evidence_events_and_times():
    finding = row(out_of_scope_finding())
    # the outbox adds the listed events' times from the store
    finding["event_times"] = {e: T0 + timedelta(minutes=i) for i, e in enumerate(finding["event_ids"])}
    message = reply(finding, SHANGHAI)
    check_golden("thread_reply", message)
    assert_within_limits(message)
    section = details(message)
    assert "• Events (3): 2026-11-02 03:00:00Z → 2026-11-02 03:02:00Z (11:00 Mon 2 Nov Asia/Shanghai)" in section
    assert "`00000000-0000-4000-8000-000000000001`" in section
    assert "Statement" not in section and "nan" not in section.lower()  # a missing value is omitted


def test_golden_seven_findings_are_one_short_message_with_three_facts():
    findings = seven_findings()
    message = alert_message("ci-deployer", findings, CI, REPLAY, triage=True)
    check_golden("seven_findings", message)
    assert visible_lines(message) <= 12
    facts = next(t for k, t in texts(message) if k == "section" and t.startswith("• "))
    assert len(facts.splitlines()) == 3
    assert facts.splitlines()[0].startswith("• Outside its declared scope: `ecs:StopInstance`, `ram:CreateAccessKey`")
    assert message.blocks[0]["text"]["text"] == "CRITICAL: ci-deployer"
    assert "7 findings" in json.dumps(message.blocks)


def test_golden_update_reply():
    grown = row(out_of_scope_finding(events=7))
    message = update_message(grown, new_events=4)
    check_golden("update", message)
    assert "4 more events (now 7)" in message.blocks[0]["text"]["text"]


def test_golden_unregistered_agent():
    agent = "ram-user:temp-contractor"
    f = Finding(detector="failure_storm", agent=agent, severity="high", score=0.81, first_seen=T0,
                last_seen=T0 + timedelta(minutes=4),
                summary=f"{agent}: 42 failed calls within 5 minutes (42 in the burst, mostly ListBuckets -> AccessDenied)",
                event_ids=[f"ev-{i:03d}" for i in range(42)],
                evidence={"failures": 42, "peak_failures_in_window": 42, "window_minutes": 5.0, "threshold": 20,
                          "configured_threshold": 20, "min_failure_ratio": 0.25,
                          "error_codes": {"AccessDenied": 40, "NoPermission": 2}, "apis": {"ListBuckets": 42},
                          "source_ips": ["198.51.100.23"],
                          "baseline": {"failure_rate": 0.0011, "max_failures_in_5m": 1, "learned": True}},
                dedup_key="storm")
    message = alert_message(agent, [row(f)], None, f"trailwarden replay {agent} --since 2026-11-02T02:00Z")
    check_golden("unregistered_agent", message)
    assert "is not in the inventory" in message.blocks[2]["elements"][0]["text"]
    assert "`42` failed calls within `5` minutes" in json.dumps(message.blocks, ensure_ascii=False)
    thread = json.dumps(reply(row(f)).blocks, ensure_ascii=False)
    assert "…and 37 more" in thread  # 5 of 42 event ids, in the thread
    # internal fields never reach Slack; the baseline is a sentence
    for internal in ("threshold", "configured", "min_failure_ratio", "baseline", "learned", "window_minutes="):
        assert internal not in thread.lower().replace("threshold_", ""), internal
    assert "Usually: `0.11%` of calls fail, at most `1` in 5 minutes" in thread


def test_golden_files_are_documented():
    readme = (GOLDEN / "README.md").read_text(encoding="utf-8")
    assert "TRAILWARDEN_UPDATE_GOLDEN=1" in readme
    names = {p.stem for p in GOLDEN.glob("*.json")}
    assert names == {"out_of_scope_critical", "thread_reply", "seven_findings", "update", "unregistered_agent",
                     "service_alert"}
    assert all(f"`{name}.json`" in readme for name in names)


# -- one reason, said once -------------------------------------------------------------------------
def test_two_detectors_on_one_event_for_one_reason_are_said_once_naming_both():
    """Issue 16: one StopLogging raises audit_tampering and out_of_scope: one fact, one reply."""
    event = ["ev-stop"]
    tamper = row(Finding(detector="audit_tampering", agent="ci-deployer", severity="critical", score=0.98,
                         first_seen=T0, last_seen=T0, summary="ci-deployer stopped the audit trail (prod-trail)",
                         event_ids=event, dedup_key="StopLogging",
                         evidence={"action": "StopLogging", "targets": ["prod-trail"], "succeeded": 1}))
    scope = row(out_of_scope_finding(events=1, event_ids=event, evidence={
        "kind": "out_of_scope", "action": "actiontrail:StopLogging", "count": 1, "statement": float("nan")}))
    message = alert_message("ci-deployer", [tamper, scope], CI, REPLAY)
    facts = next(t for k, t in texts(message) if k == "section" and t.startswith("• "))
    assert facts.splitlines() == ["• Audit trail tampering: `StopLogging` on `prod-trail`, it worked "
                                  "_(audit_tampering, out_of_scope)_"]
    [group] = reason_groups([tamper, scope])
    thread = finding_reply(group, UTC_ZONE)
    assert thread.blocks[0]["text"]["text"].startswith(":red_circle: *audit_tampering* + *out_of_scope*")
    assert "nan" not in json.dumps(thread.blocks).lower()


def test_the_same_reason_on_different_events_is_two_facts():
    a = row(out_of_scope_finding(events=1, event_ids=["ev-a"], dedup_key="a"))
    b = row(out_of_scope_finding(events=1, event_ids=["ev-b"], dedup_key="b", first_seen=T0 + timedelta(minutes=5)))
    assert len(reason_groups([a, b])) == 2


# -- who owns it ----------------------------------------------------------------------------------
def test_an_owner_mapped_to_slack_is_a_real_mention_and_others_stay_plain_text():
    mapped = Inventory.model_validate({"agents": [
        {"name": "ci-deployer", "purpose": "Deploys", "owner": "platform-team", "environment": "production",
         "identities": ["ram-user:ci-deploy"], "owner_slack": "S0123ABCD"},
        {"name": "etl", "purpose": "ETL", "owner": "<!channel> data", "environment": "production",
         "identities": ["role:Etl"], "owner_slack": "<@U0456EFGH>"},
        {"name": "plain", "purpose": "P", "owner": "sre <!here>", "environment": "production",
         "identities": ["role:P"]}]})
    f = row(out_of_scope_finding())
    who = {a.name: alert_message(a.name, [f], a, REPLAY).blocks[2]["elements"][0]["text"] for a in mapped.agents}
    assert "owner <!subteam^S0123ABCD> (platform-team)" in who["ci-deployer"]
    assert "owner <@U0456EFGH> (&lt;!channel&gt; data)" in who["etl"]
    assert "owner sre &lt;!here&gt;" in who["plain"] and "<!" not in who["plain"]


@pytest.mark.parametrize("value", ["<!channel>", "platform-team", "S01", "<!subteam^S0123ABCD> <!here>"])
def test_an_owner_slack_that_is_not_an_id_is_refused(value):
    with pytest.raises(ValueError, match="Slack user id"):
        Inventory.model_validate({"agents": [{"name": "a", "purpose": "p", "owner": "o", "environment": "e",
                                              "identities": ["role:A"], "owner_slack": value}]})


# -- limits ----------------------------------------------------------------------------------------
def test_a_huge_summary_stays_within_every_limit():
    f = out_of_scope_finding(summary="S" * 20_000)
    for message in (alert_message("ci-deployer", [row(f)], CI, REPLAY), reply(row(f))):
        assert_within_limits(message)
        assert len(message.text) < 1000  # the notification text is truncated too
    section = next(t for k, t in texts(reply(row(f))) if k == "section" and t.startswith("S"))  # the summary
    assert "S" * 490 in section and "S" * 700 not in section and "…" in section


def test_huge_evidence_stays_within_every_limit_and_keeps_the_events():
    f = out_of_scope_finding(evidence={f"field_{i:02d}": "v" * 5000 for i in range(30)})
    message = reply(row(f))
    assert_within_limits(message)
    section = details(message)
    assert "• Events (3)" in section
    assert re.search(rf"…and \d+ more \(`trailwarden findings show {f.id[:12]}`\)", section)
    assert section.count("`") % 2 == 0


def test_long_evidence_lists_say_how_many_more():
    f = out_of_scope_finding(evidence={"resources": [f"i-{n:04d}" for n in range(20)]})
    section = details(reply(row(f)))
    assert "`i-0003` …and 16 more" in section and "i-0004" not in section


def test_a_hundred_findings_stay_one_short_message():
    findings = [row(out_of_scope_finding(summary="Z" * 5000, dedup_key=f"k{i}", first_seen=T0 + timedelta(seconds=i),
                                         event_ids=[f"e{i}"]))
                for i in range(100)]
    message = alert_message("ci-deployer", findings, CI, REPLAY, triage=True)
    assert_within_limits(message)
    assert visible_lines(message) <= 12
    assert "100 findings" in json.dumps(message.blocks)


def test_a_long_agent_name_keeps_the_header_under_150_characters():
    agent = "ram-user:" + "a" * 400
    message = alert_message(agent, [row(out_of_scope_finding(agent=agent))], None, REPLAY)
    header = message.blocks[0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= MAX_HEADER and header["text"]["text"].endswith("…")
    assert_within_limits(message)


def test_an_update_with_a_huge_summary_stays_within_limits():
    message = update_message(row(out_of_scope_finding(summary="U" * 20_000)), new_events=1)
    assert_within_limits(message)
    assert "1 more event (now 3)" in message.blocks[0]["text"]["text"]


def test_every_mrkdwn_object_is_verbatim():
    for message in (alert_message("ci-deployer", seven_findings(), CI, REPLAY, triage=True),
                    alert_message("x", [row(out_of_scope_finding(agent="x"))], None, REPLAY),
                    reply(row(out_of_scope_finding())), update_message(row(out_of_scope_finding()), 1)):
        for block in message.blocks:
            objects = [block["text"]] if "text" in block else list(block.get("elements", []))
            for obj in objects:
                if obj["type"] == "mrkdwn":
                    assert obj["verbatim"] is True


# -- attacker-controlled text in messages ----------------------------------------------------------
HOSTILE_AGENT = "ram-user:<!channel>`x`\n<http://evil.example|reset>"


def _mrkdwn_texts(message: Message) -> list[str]:
    return [message.text] + [t for k, t in texts(message) if k != "header"]


def test_a_hostile_unregistered_identity_is_inert_in_mrkdwn_and_plain_in_the_header():
    f = row(out_of_scope_finding(agent=HOSTILE_AGENT, summary=f"{HOSTILE_AGENT} did things"))
    for message in (alert_message(HOSTILE_AGENT, [f], None, replay_hint(HOSTILE_AGENT, T0), triage=True), reply(f)):
        header = message.blocks[0]["text"]
        if message.blocks[0]["type"] == "header":
            assert header["type"] == "plain_text"  # Slack never parses plain_text for mentions or links
            assert "\n" not in header["text"]
        for text in _mrkdwn_texts(message):
            assert "<!" not in text and "<http" not in text and "http://" not in text
            assert "&lt;!channel&gt;" in text or "did things" not in text
        assert all(t.count("`") % 2 == 0 for t in _mrkdwn_texts(message))


def test_update_text_escapes_the_agent_and_the_summary():
    f = out_of_scope_finding(agent="<@U1>", summary="<!here> & <http://x.example|y>")
    message = update_message(row(f), 2)
    assert message.text == "&lt;@U1&gt;: 2 more events for out_of_scope"
    summary = message.blocks[1]["text"]
    assert summary["type"] == "plain_text"  # a sentence with event values: nothing in it formats
    assert summary["text"] == "&lt;!here&gt; &amp; &lt;http[:]//x.example|y&gt;"


FORMATTING = ("*bold*", "_it_", "~strike~")


def _mrkdwn_outside_code(message: Message) -> list[str]:
    """Every mrkdwn text of the message with its code spans cut out: where Slack formats."""
    out = []
    for block in message.blocks:
        objects = [block["text"]] if "text" in block else list(block.get("elements", []))
        out += [re.sub(r"`[^`]*`", "", o["text"]) for o in objects if o.get("type") == "mrkdwn"]
    return out


def test_formatting_in_event_values_never_formats_in_mrkdwn():
    """Issue 13, item 11: mrkdwn has no escape for * _ ~, so attacker values sit in plain_text or
    code spans: a user name, an error code and a parameter each carrying formatting."""
    agent = "ram-user:*bold*_it_~strike~"
    f = out_of_scope_finding(
        agent=agent, summary=f"{agent} failed with *bold* _it_ ~strike~ on bucket _it_",
        evidence={"kind": "out_of_scope", "action": "oss:PutBucketAcl", "error_codes": {"~strike~": 1},
                  "resources": ["acs:oss:*:*:*bold*"], "rule": "_it_"})
    grown = {**row(f, event_count=9)}
    change = {"status": "acknowledged", "by": "_it_", "reason": "*bold* ~strike~", "at": T0}
    inc = incident([row(f)], headline=f"{agent} wrote *bold* _it_", status_by="*bold*", status="acknowledged",
                   status_at=T0, summary={"access_keys": ["_it_"]})
    for message in (incident_message(inc, [row(f)], None, replay_hint(agent, T0), triage=True), reply(row(f)),
                    update_message(grown, new_events=6), status_message([row(f)], change)):
        for text in _mrkdwn_outside_code(message):
            for mark in FORMATTING:
                assert mark not in text, (mark, text)
        plain = [b["text"]["text"] for b in message.blocks if b["type"] == "section"
                 and b["text"]["type"] == "plain_text"]
        assert plain and all("*bold*" in t for t in plain)  # shown as typed, as plain text


def test_a_look_alike_identity_looks_different():
    """``ci-\\u200bdeploy`` is not ``ci-deploy``, and the message must not make it look so."""
    real, spoof = "ram-user:ci-deploy", "ram-user:ci-\u200bdeploy"
    rendered = {}
    for agent in (real, spoof):
        f = out_of_scope_finding(agent=agent, summary=f"{agent} is not in the inventory")
        rendered[agent] = alert_message(agent, [row(f)], None, replay_hint(agent, T0))
    spoofed = rendered[spoof]
    assert spoofed.blocks[0]["text"]["text"] == "CRITICAL: ram-user:ci-&lt;U+200B&gt;deploy"
    assert "ram-user:ci-&lt;U+200B&gt;deploy is not in the inventory" in json.dumps(spoofed.blocks)
    assert "ci-deploy" not in json.dumps([spoofed.text, spoofed.blocks])
    assert "== CRITICAL: ram-user:ci-<U+200B>deploy ==" in as_text(spoofed)  # the console says it too
    for a, b in zip(texts(rendered[real]), texts(spoofed), strict=True):
        if "ci-" in a[1]:
            assert a != b


def test_a_triage_reply_shows_who_in_code_and_why_as_plain_text():
    f = row(out_of_scope_finding())
    message = status_message([f], {"status": "resolved", "by": "alice", "reason": "<!here> key *rotated*", "at": T0})
    head, why = message.blocks
    assert head["text"]["text"].startswith("*Resolved* by `alice`: *out_of_scope* `")
    assert why["text"] == {"type": "plain_text", "text": "&lt;!here&gt; key *rotated*", "emoji": False}
    many = status_message([f, f], {"status": "acknowledged", "by": "bob", "reason": "on it", "at": T0})
    assert many.blocks[0]["text"]["text"].startswith("*Acknowledged* by `bob`: 2 findings")


def test_the_incident_message_says_its_status_and_who_set_it_and_drops_finished_buttons():
    f = row(out_of_scope_finding())
    acked = incident_message(incident([f], status="acknowledged", status_by="alice", status_at=T0), [f], CI, REPLAY,
                             triage=True)
    assert "*Acknowledged* by `alice` at 2026-11-02 03:00:00Z" in as_text(acked)
    assert "[Acknowledge]" not in as_text(acked) and "[Resolve]" in as_text(acked)
    done = incident_message(incident([f], status="resolved", status_by="alice", status_at=T0), [f], CI, REPLAY,
                            triage=True)
    assert "*Resolved* by `alice`" in as_text(done) and all(b["type"] != "actions" for b in done.blocks)


# -- untrusted() -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    # notes/platform.md section 1.5
    ("<!channel> urgent", "&lt;!channel&gt; urgent"),
    ("<https://evil.example|Click for details>", "&lt;https[:]//evil.example|Click for details&gt;"),
    ("ok`\n*fake bold* <!everyone>", "ok' *fake bold* &lt;!everyone&gt;"),
    ("curl/8 & <script>", "curl/8 &amp; &lt;script&gt;"),
    # and the rest of the rules
    ("<@U12345>", "&lt;@U12345&gt;"),
    ("<!here>", "&lt;!here&gt;"),
    ("<!subteam^S123>", "&lt;!subteam^S123&gt;"),
    ("<#C123|general>", "&lt;#C123|general&gt;"),
    ("HTTP://EVIL.example and ftp://files.example", "HTTP[:]//EVIL.example and ftp[:]//files.example"),
    ("a\r\nb\nc\td", "a b c d"),  # line breaks and tabs become a space
    # every other control, bidi or invisible character is shown, never dropped (issue 13, item 11)
    ("tab\x00\x07\x1b[31m\x7f\x85", "tab\\x00\\x07\\x1b[31m\\x7f\\x85"),
    ("safe\u202etxt.exe\u2066\u200b\ufeff", "safe&lt;U+202E&gt;txt.exe&lt;U+2066&gt;&lt;U+200B&gt;&lt;U+FEFF&gt;"),
    ("ram-user:ci-\u200bdeploy", "ram-user:ci-&lt;U+200B&gt;deploy"),
    ("a\u2028b\u2029c\u061cd\u2060e", "a&lt;U+2028&gt;b&lt;U+2029&gt;c&lt;U+061C&gt;d&lt;U+2060&gt;e"),
    ("&lt; already escaped", "&amp;lt; already escaped"),
    ("", ""),
    (42, "42"),
    (None, "None"),
])
def test_untrusted(raw, expected):
    assert untrusted(raw) == expected


def test_untrusted_truncates_to_the_limit_with_an_ellipsis():
    assert untrusted("a" * 500) == "a" * 199 + "…"
    assert len(untrusted("<" * 500, limit=50)) == 50
    assert untrusted("x" * 200) == "x" * 200
    assert untrusted("abc", limit=3) == "abc"


# -- the command the alert tells a responder to run ----------------------------------------------
def test_the_replay_command_in_an_alert_runs(tmp_path):
    f = out_of_scope_finding()
    db = tmp_path / "store.duckdb"
    with open_store(db) as store:
        save_findings(store, [f], {})
    message = alert_message("ci-deployer", [row(f)], CI, replay_hint("ci-deployer", f.first_seen))
    command = re.search(r"\*Next:\* `trailwarden ([^`]*)`", as_text(message))
    assert command, as_text(message)
    result = run_cli("--db", str(db), *shlex.split(command[1]), env={"TRAILWARDEN_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    # the table may cut the id to the terminal's width ("3df22d5f1ee…"), so match its start
    assert f.id[:8] in result.stdout and "out_of_scope" in result.stdout
