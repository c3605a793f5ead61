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

import pytest

from detectors.base import Finding
from models.inventory import Inventory
from pipeline.detection.findings import save_findings
from pipeline.service.alerting.messages import (
    MAX_BLOCKS,
    MAX_HEADER,
    MAX_SECTION,
    Message,
    alert_message,
    as_text,
    replay_hint,
    status_message,
    untrusted,
    update_message,
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
        for element in block.get("elements", []):
            yield block["type"], element["text"]


def details(message: Message) -> str:
    """The section with a finding's evidence, events and id."""
    return next(t for k, t in texts(message) if k == "section" and "Finding `" in t)


def assert_within_limits(message: Message) -> None:
    assert 1 <= len(message.blocks) <= MAX_BLOCKS
    for kind, text in texts(message):
        assert 1 <= len(text) <= (MAX_HEADER if kind == "header" else MAX_SECTION), (kind, len(text))
    assert len(message.text) <= 40_000


# -- golden payloads -----------------------------------------------------------------------------
def test_golden_out_of_scope_critical_with_evidence():
    finding = row(out_of_scope_finding())
    # the outbox adds the listed events' times from the store
    finding["event_times"] = {e: T0 + timedelta(minutes=i) for i, e in enumerate(finding["event_ids"])}
    message = alert_message("ci-deployer", [finding], CI, REPLAY)
    check_golden("out_of_scope_critical", message)
    assert_within_limits(message)
    assert "`00000000-0000-4000-8000-000000000001` 03:01:00Z" in json.dumps(message.blocks)


def test_events_across_days_are_listed_with_their_dates():
    f = out_of_scope_finding(events=2, last_seen=T0 + timedelta(days=1))
    finding = row(f)
    finding["event_times"] = {f.event_ids[0]: T0, f.event_ids[1]: T0 + timedelta(days=1)}
    text = json.dumps(alert_message("ci-deployer", [finding], CI, REPLAY).blocks)
    assert "`00000000-0000-4000-8000-000000000001` 2026-11-03 03:00:00Z" in text


def test_golden_agent_with_seven_findings_shows_five_and_says_how_many_more():
    message = alert_message("ci-deployer", seven_findings(), CI, REPLAY)
    check_golden("seven_findings", message)
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert len(sections) == 16  # five findings (head, summary, details) and the marker
    assert sections[-1].startswith("…and 2 more findings for this agent")
    assert message.blocks[0]["text"]["text"] == "CRITICAL: ci-deployer - 7 findings"
    heads = sections[0:15:3]
    assert heads[0].startswith(":red_circle:") and heads[1].startswith(":red_circle:")  # worst first
    assert heads[2].startswith(":large_orange_circle:")
    assert message.text.endswith("(+6 more for ci-deployer)")


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
                          "error_codes": {"AccessDenied": 40, "NoPermission": 2}, "apis": {"ListBuckets": 42},
                          "source_ips": ["198.51.100.23"]},
                dedup_key="storm")
    message = alert_message(agent, [row(f)], None, f"trailwarden findings --agent {agent} --since 2026-11-02T02:00Z")
    check_golden("unregistered_agent", message)
    assert "is not in the inventory" in message.blocks[1]["elements"][0]["text"]
    assert "…and 37 more" in json.dumps(message.blocks, ensure_ascii=False)  # 5 of 42 event ids shown


def test_golden_files_are_documented():
    readme = (GOLDEN / "README.md").read_text(encoding="utf-8")
    assert "TRAILWARDEN_UPDATE_GOLDEN=1" in readme
    names = {p.stem for p in GOLDEN.glob("*.json")}
    assert names == {"out_of_scope_critical", "seven_findings", "update", "unregistered_agent", "service_alert"}
    assert all(f"`{name}.json`" in readme for name in names)


# -- limits ----------------------------------------------------------------------------------------
def test_a_huge_summary_stays_within_every_limit():
    f = out_of_scope_finding(summary="S" * 20_000)
    message = alert_message("ci-deployer", [row(f)], CI, REPLAY)
    assert_within_limits(message)
    section = next(t for k, t in texts(message) if k == "section" and t.startswith("S"))  # the summary
    assert "S" * 490 in section and "S" * 600 not in section and "…" in section
    assert len(message.text) < 1000  # the notification text is truncated too


def test_huge_evidence_stays_within_every_limit():
    f = out_of_scope_finding(evidence={f"field_{i:02d}": "v" * 5000 for i in range(30)})
    message = alert_message("ci-deployer", [row(f)], CI, REPLAY)
    assert_within_limits(message)


def test_huge_evidence_keeps_the_finding_id_events_and_an_explicit_more_marker():
    f = out_of_scope_finding(evidence={f"field_{i:02d}": "v" * 5000 for i in range(30)})
    message = alert_message("ci-deployer", [row(f)], CI, REPLAY)
    section = details(message)
    assert f"Finding `{f.id}`" in section
    assert "*Events*" in section
    assert re.search(r"…and \d+ more evidence fields", section)
    assert section.count("`") % 2 == 0


def test_many_evidence_fields_say_how_many_more():
    f = out_of_scope_finding(evidence={f"field_{i:02d}": i for i in range(14)})
    section = details(alert_message("ci-deployer", [row(f)], CI, REPLAY))
    assert re.search(r"• …and \d+ more evidence fields", section)
    assert f"Finding `{f.id}`" in section


def test_long_evidence_lists_say_how_many_more():
    f = out_of_scope_finding(evidence={"resources": [f"i-{n:04d}" for n in range(20)]})
    section = details(alert_message("ci-deployer", [row(f)], CI, REPLAY))
    assert "i-0007 …and 12 more`" in section and "i-0008" not in section


def test_a_hundred_findings_stay_under_fifty_blocks_with_a_marker():
    findings = [row(out_of_scope_finding(summary="Z" * 5000, dedup_key=f"k{i}", first_seen=T0 + timedelta(seconds=i)))
                for i in range(100)]
    message = alert_message("ci-deployer", findings, CI, REPLAY)
    assert_within_limits(message)
    assert any(t.startswith("…and 95 more findings") for _, t in texts(message))


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
    for message in (alert_message("ci-deployer", seven_findings(), CI, REPLAY),
                    alert_message("x", [row(out_of_scope_finding(agent="x"))], None, REPLAY),
                    update_message(row(out_of_scope_finding()), 1)):
        for block in message.blocks:
            objects = [block["text"]] if "text" in block else list(block.get("elements", []))
            for obj in objects:
                if obj["type"] == "mrkdwn":
                    assert obj["verbatim"] is True


# -- attacker-controlled text in messages ----------------------------------------------------------
HOSTILE_AGENT = "ram-user:<!channel>`x`\n<http://evil.example|reset>"


def test_a_hostile_unregistered_identity_is_inert_in_mrkdwn_and_plain_in_the_header():
    f = out_of_scope_finding(agent=HOSTILE_AGENT, summary=f"{HOSTILE_AGENT} did things")
    message = alert_message(HOSTILE_AGENT, [row(f)], None, replay_hint(HOSTILE_AGENT, T0))
    header = message.blocks[0]["text"]
    assert header["type"] == "plain_text"  # Slack never parses plain_text for mentions or links
    assert "\n" not in header["text"]
    mrkdwn = [message.text] + [t for k, t in texts(message) if k != "header"]
    for text in mrkdwn:
        assert "<!" not in text and "<http" not in text and "http://" not in text
        assert "&lt;!channel&gt;" in text or "did things" not in text
    assert all(t.count("`") % 2 == 0 for t in mrkdwn)


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
        out += [re.sub(r"`[^`]*`", "", o["text"]) for o in objects if o["type"] == "mrkdwn"]
    return out


def test_formatting_in_event_values_never_formats_in_mrkdwn():
    """Issue 13, item 11: mrkdwn has no escape for * _ ~, so attacker values sit in plain_text or
    code spans: a user name, an error code and a parameter each carrying formatting."""
    agent = "ram-user:*bold*_it_~strike~"
    f = out_of_scope_finding(
        agent=agent, summary=f"{agent} failed with *bold* _it_ ~strike~ on bucket _it_",
        evidence={"kind": "out_of_scope", "action": "oss:PutBucketAcl", "error_codes": {"~strike~": 1},
                  "resources": ["acs:oss:*:*:*bold*"]})
    grown = {**row(f, event_count=9)}
    change = {"status": "acknowledged", "by": "_it_", "reason": "*bold* ~strike~", "at": T0}
    for message in (alert_message(agent, [row(f)], None, replay_hint(agent, T0)),
                    update_message(grown, new_events=6), status_message(row(f), change)):
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
    message = status_message(f, {"status": "resolved", "by": "alice", "reason": "<!here> key *rotated*", "at": T0})
    head, reason = message.blocks
    assert head["text"]["text"].startswith("*Resolved* by `alice`: *out_of_scope* `")
    assert reason["text"] == {"type": "plain_text", "text": "&lt;!here&gt; key *rotated*", "emoji": False}


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
    replay = as_text(message).splitlines()[-1]
    command = re.fullmatch(r"Replay: `trailwarden (.*)`", replay)
    assert command, replay
    result = run_cli("--db", str(db), *shlex.split(command[1]), env={"TRAILWARDEN_CONFIG": ""})
    assert result.returncode == 0, result.stderr
    # the table may cut the id to the terminal's width ("3df22d5f1ee…"), so match its start
    assert f.id[:8] in result.stdout and "out_of_scope" in result.stdout
