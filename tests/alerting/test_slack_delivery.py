"""Findings to Slack, exactly once: the real ``slack_sdk.WebClient`` against a fake Slack.

Everything here drives the code a deployment runs: :class:`SlackSender` pointed at
``tests.fakes.slack.FakeSlack`` (the Web API over HTTP on 127.0.0.1), ``enqueue`` + ``deliver``
with a recording ``sleep`` (pacing is checked without waiting), and ``trailwarden alert`` as a
user runs it (``run_cli``) with a config file and ``SLACK_BOT_TOKEN`` in its environment. Crashes
are real where it matters: a subprocess SIGKILLs itself between two steps of the outbox protocol.

slack_sdk's retry handlers sleep with ``time.sleep``; the tests record those sleeps
(``retry_sleeps``) instead of waiting them out.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import slack_sdk.http_retry.builtin_handlers
import slack_sdk.http_retry.handler
import yaml

import pipeline.service.alerting.outbox as outbox
import pipeline.service.alerting.slack as slack_module
from detectors.base import Finding
from models.inventory import Attributor, Inventory
from pipeline.core.config import Config
from pipeline.core.errors import TerminalError, TransientError
from pipeline.core.inert import HIDDEN
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import save_findings
from pipeline.ingest.run import ingest_files
from pipeline.service.alerting.messages import replay_hint
from pipeline.service.alerting.outbox import AlertReport, deliver, enqueue
from pipeline.service.alerting.slack import TOKEN_ENV, SlackSender
from pipeline.store.store import Store, open_store
from tests.conftest import ROOT, assert_one_line_error, run_cli, write_ndjson
from tests.fakes.slack import CHANNEL_ID, FakeSlack, Request

TOKEN = "xoxb-test-secret-token"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
CHANNEL = "#sec-alerts"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

AGENTS: list[dict[str, Any]] = [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"],
     "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"}]}]},
    {"name": "billing-exporter", "purpose": "Exports billing data nightly", "owner": "finance-eng",
     "environment": "production", "identities": ["ram-user:billing-export"]},
    {"name": "log-shipper", "purpose": "Ships logs to SLS", "owner": "sre", "environment": "production",
     "identities": ["ram-user:log-shipper"]},
]
INVENTORY = Inventory.model_validate({"agents": AGENTS})


# -- harness -------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may swallow 127.0.0.1 traffic (notes 1.1), and no token leaks in from outside."""
    for var in (*PROXY_VARS, TOKEN_ENV, "TRAILWARDEN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """slack_sdk's retry handlers' sleeps, recorded instead of slept."""
    slept: list[float] = []
    fake_time = types.SimpleNamespace(sleep=slept.append)
    monkeypatch.setattr(slack_sdk.http_retry.handler, "time", fake_time)
    monkeypatch.setattr(slack_sdk.http_retry.builtin_handlers, "time", fake_time)
    return slept


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        yield store


def finding(agent: str = "ci-deployer", *, key: str = "ecs:stopinstance", severity: str = "critical",
            events: int = 2, detector: str = "out_of_scope", start: datetime = T0, summary: str | None = None,
            evidence: dict[str, Any] | None = None) -> Finding:
    """A finding as a detector returns it; the same agent/detector/key/start with more events is
    the same finding grown (``save_findings`` extends it)."""
    return Finding(detector=detector, agent=agent, severity=severity, score=0.9, first_seen=start,
                   last_seen=start + timedelta(minutes=events - 1),
                   summary=summary or f"{agent} called {key} {events} times, outside its declared scope",
                   event_ids=[f"ev-{agent}-{key}-{i:03d}" for i in range(events)],
                   evidence=evidence or {"kind": "out_of_scope", "action": key, "count": events},
                   dedup_key=key)


def save(store: Store, *findings: Finding) -> None:
    save_findings(store, list(findings), {})


def sender(fake: FakeSlack, channel: str = CHANNEL, **kw: Any) -> SlackSender:
    kw.setdefault("sleep", lambda _s: None)  # the sender's own backoff between post attempts
    return SlackSender(TOKEN, channel, fake.base_url, **kw)


def alert_run(store: Store, slack_sender: Any, *, sleep: Callable[[float], None] | None = None,
              min_severity: str = "medium") -> AlertReport:
    """What `trailwarden alert` does: enqueue what is owed, then deliver (pacing sleeps are
    recorded, never slept)."""
    enqueue(store, slack_sender.destination, min_severity)
    return deliver(store, slack_sender, INVENTORY, replay_hint, sleep=sleep or (lambda _s: None))


def alert_rows(store: Store | Path) -> list[dict[str, Any]]:
    sql = ("SELECT finding_id, kind, status, event_count, message_ts, thread_ts, message_key, last_error "
           "FROM alerts ORDER BY created_at, kind, event_count, finding_id")
    if isinstance(store, Path):
        con = duckdb.connect(str(store), read_only=True)
        try:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        finally:
            con.close()
    cursor = store.con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def body_text(request: Request) -> str:
    return request.raw.decode("utf-8")


# CLI harness ------------------------------------------------------------------------------------
def write_config(tmp_path: Path, base_url: str | None, channel: str = CHANNEL, min_severity: str = "medium") -> Path:
    """A config with ``slack:`` pointing at ``base_url``; ``base_url=None``: no ``slack:`` at all."""
    inventory = tmp_path / "agents.yaml"
    inventory.write_text(yaml.safe_dump({"agents": AGENTS}), encoding="utf-8")
    config = tmp_path / "trailwarden.yaml"
    body: dict[str, Any] = {"database": str(tmp_path / "store.duckdb"), "inventory": str(inventory)}
    if base_url is not None:
        body["slack"] = {"channel": channel, "min_severity": min_severity, "base_url": base_url}
    config.write_text(yaml.safe_dump(body), encoding="utf-8")
    return config


def seed(tmp_path: Path, *findings: Finding) -> Path:
    path = tmp_path / "store.duckdb"
    with open_store(path) as store:
        save(store, *findings)
    return path


def alert_cli(config: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"NO_PROXY": "127.0.0.1,localhost"}
    if token is not None:
        env[TOKEN_ENV] = token
    return run_cli("--config", str(config), "alert", *args, env=env)


# A `trailwarden alert` process with one function replaced before it starts (crash injection,
# instant retry sleeps); everything else is the real CLI.
_PATCHED_CLI = """
import os, signal, sys, types
import pipeline.service.alerting.outbox as outbox
import pipeline.service.alerting.slack as slack
import slack_sdk.http_retry.handler, slack_sdk.http_retry.builtin_handlers

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

{patch}
from pipeline.cli.main import main
main(sys.argv[1:])
"""


def patched_cli(config: Path, patch: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRAILWARDEN_CONFIG"}
    env.update({TOKEN_ENV: TOKEN, "NO_PROXY": "127.0.0.1,localhost"})
    script = _PATCHED_CLI.format(patch=textwrap.dedent(patch))
    return subprocess.run([sys.executable, "-c", script, "--config", str(config), "alert", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def store_text(path: Path) -> str:
    """Every table of the store, as text."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
        return "\n".join(f"{s}.{t}: " + repr(con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall())
                         for s, t in tables)
    finally:
        con.close()


def alert_run_count(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM runs WHERE command = 'alert'").fetchall()[0][0])
    finally:
        con.close()


def last_run(path: Path) -> dict[str, Any]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM runs WHERE command = 'alert' ORDER BY id DESC LIMIT 1")
        names = [d[0] for d in cursor.description]
        return dict(zip(names, cursor.fetchall()[0], strict=True))
    finally:
        con.close()


# -- the fake itself --------------------------------------------------------------------------------
def test_the_fake_speaks_the_web_api_to_the_real_client(slack):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=TOKEN, base_url=slack.base_url)
    meta = {"event_type": "trailwarden_alert", "event_payload": {"key": "k1"}}
    first = client.chat_postMessage(channel="#sec-alerts", text="one", metadata=meta)
    client.chat_postMessage(channel="sec-alerts", text="two")
    client.chat_postMessage(channel=CHANNEL_ID, text="three", thread_ts=first["ts"])
    assert first["channel"] == CHANNEL_ID and first["message"]["metadata"] == meta
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="#elsewhere", text="x")
    assert err.value.response.status_code == 200 and err.value.response["error"] == "channel_not_found"
    assert [float(m.ts) for m in slack.messages] == sorted({float(m.ts) for m in slack.messages})

    page = client.conversations_history(channel=CHANNEL_ID, limit=1)
    assert [m["text"] for m in page["messages"]] == ["two"] and "metadata" not in page["messages"][0]
    rest = client.conversations_history(channel=CHANNEL_ID, limit=1, include_all_metadata=True,
                                        cursor=page["response_metadata"]["next_cursor"])
    assert rest["messages"][0]["metadata"] == meta and rest["response_metadata"]["next_cursor"] == ""
    assert rest["messages"][0]["reply_count"] == 1
    assert client.conversations_history(channel=CHANNEL_ID, oldest=first["ts"])["messages"][0]["text"] == "two"
    thread = client.conversations_replies(channel=CHANNEL_ID, ts=first["ts"])
    assert [m["text"] for m in thread["messages"]] == ["one", "three"]
    assert client.conversations_list()["channels"][0]["name"] == "sec-alerts"
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.conversations_history(channel="#sec-alerts")  # readers take an ID, as on Slack

    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "7"})
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel=CHANNEL_ID, text="x")
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "7"
    assert slack.calls("conversations.history")[0].headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded")
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        client.chat_postMessage(channel=CHANNEL_ID, text="x", blocks=[{"type": "divider"}] * 51)


# -- one message per agent per run ---------------------------------------------------------------
def test_two_findings_of_one_agent_are_one_message_and_the_ts_is_recorded(db, slack):
    save(db, finding(key="ecs:stopinstance"), finding(key="ecs:deleteinstance", severity="high"))
    report = alert_run(db, sender(slack))
    assert (report.messages_sent, report.alerts_sent, report.pending) == (1, 2, 0)
    assert len(slack.posts) == 1
    [message] = slack.top_level()
    assert message.blocks[0]["text"]["text"] == "CRITICAL: ci-deployer - 2 findings"
    rows = alert_rows(db)
    assert [(r["kind"], r["status"], r["message_ts"]) for r in rows] == [("alert", "sent", message.ts)] * 2
    assert message.key() == rows[0]["message_key"]  # the outbox key rides in the metadata
    assert message.metadata["event_type"] == "trailwarden_alert"


def test_findings_of_two_agents_are_two_messages(db, slack):
    save(db, finding("ci-deployer"), finding("billing-exporter", key="oss:getobject", severity="high"))
    report = alert_run(db, sender(slack))
    assert (report.messages_sent, report.alerts_sent) == (2, 2)
    headers = sorted(m.blocks[0]["text"]["text"] for m in slack.top_level())
    assert headers == ["CRITICAL: ci-deployer", "HIGH: billing-exporter"]
    ts_by_agent = {r["finding_id"]: r["message_ts"] for r in alert_rows(db)}
    assert sorted(ts_by_agent.values()) == sorted(m.ts for m in slack.top_level())


def test_findings_below_min_severity_are_not_posted(db, slack):
    save(db, finding("ci-deployer", severity="low"), finding("billing-exporter", severity="medium"))
    report = alert_run(db, sender(slack), min_severity="high")
    assert report.messages_sent == 0 and slack.requests == []
    assert alert_rows(db) == []  # nothing owed, nothing queued
    alert_run(db, sender(slack), min_severity="medium")
    assert [m.blocks[0]["text"]["text"] for m in slack.top_level()] == ["MEDIUM: billing-exporter"]


def test_rerunning_posts_nothing_new(db, slack):
    save(db, finding("ci-deployer"), finding("billing-exporter"))
    alert_run(db, sender(slack))
    before = len(slack.requests)
    again = alert_run(db, sender(slack))
    assert (again.messages_sent, again.updates_sent, again.recovered, again.pending) == (0, 0, 0, 0)
    assert len(slack.requests) == before  # not even a history lookup
    assert len(slack.top_level()) == 2


def test_the_cli_posts_once_and_rerunning_posts_nothing(tmp_path, slack):
    path = seed(tmp_path, finding("ci-deployer"), finding("ci-deployer", key="ecs:deleteinstance"),
                finding("billing-exporter"), finding("log-shipper", severity="low"))
    config = write_config(tmp_path, slack.base_url)
    first = alert_cli(config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == ("Posted 2 alert message(s) for 3 finding(s) and 0 thread update(s) "
                                    "to #sec-alerts.")
    assert first.stderr == ""
    assert len(slack.top_level()) == 2
    second = alert_cli(config)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "Posted 0 alert message(s) for 0 finding(s) and 0 thread update(s) to #sec-alerts."
    assert len(slack.posts) == 2
    request = slack.posts[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"].startswith("application/json")
    assert {r["status"] for r in alert_rows(path)} == {"sent"}
    assert last_run(path)["status"] == "ok"


# -- crash safety ---------------------------------------------------------------------------------
def _crash_in(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> None:
    def die(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(target, name, die)


def test_crash_after_slack_accepted_is_found_in_history_not_reposted(db, slack, monkeypatch):
    save(db, finding("ci-deployer"), finding("ci-deployer", key="ecs:deleteinstance"))
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")  # Slack has it; the ts is never recorded
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))
    assert len(slack.top_level()) == 1
    assert {r["status"] for r in alert_rows(db)} == {"sending"}

    report = alert_run(db, sender(slack))  # the next process
    assert (report.recovered, report.messages_sent) == (2, 0)
    [message] = slack.top_level()
    assert len(slack.posts) == 1
    assert [(r["status"], r["message_ts"]) for r in alert_rows(db)] == [("sent", message.ts)] * 2
    [lookup] = slack.calls("conversations.history")
    assert lookup.body["channel"] == CHANNEL_ID and lookup.body["include_all_metadata"] in ("1", True)
    assert alert_run(db, sender(slack)).messages_sent == 0
    assert len(slack.posts) == 1


def test_crash_after_marking_sending_but_before_posting_posts_exactly_once(db, slack, monkeypatch):
    save(db, finding("ci-deployer"))
    with monkeypatch.context() as m:
        _crash_in(m, SlackSender, "post")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))
    assert slack.posts == [] and {r["status"] for r in alert_rows(db)} == {"sending"}

    report = alert_run(db, sender(slack))
    assert (report.recovered, report.messages_sent) == (0, 1)
    assert len(slack.calls("conversations.history")) == 1  # asked first, found nothing
    [message] = slack.top_level()
    assert [(r["status"], r["message_ts"]) for r in alert_rows(db)] == [("sent", message.ts)]
    alert_run(db, sender(slack))
    assert len(slack.posts) == 1


def test_recovery_that_cannot_read_the_channel_never_posts_blind(db, slack, monkeypatch):
    save(db, finding())
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))
    slack.fail_next("conversations.history", error="missing_scope")
    with pytest.raises(TerminalError, match="channels:history"):
        alert_run(db, sender(slack))
    assert len(slack.posts) == 1 and [r["status"] for r in alert_rows(db)] == ["sending"]
    assert alert_run(db, sender(slack)).recovered == 1  # the scope was granted
    assert len(slack.posts) == 1


def test_history_lookup_pages_through_a_busy_channel(db, slack, monkeypatch):
    save(db, finding("ci-deployer"))
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))
    chatter = sender(slack)
    for i in range(450):  # other bots' messages, newer than ours: our post is on page 3 of 200
        chatter.client.chat_postMessage(channel=CHANNEL, text=f"noise {i}")
    report = alert_run(db, sender(slack))
    assert report.recovered == 1 and report.messages_sent == 0
    assert len(slack.calls("conversations.history")) == 3
    assert len(slack.top_level()) == 451


@pytest.mark.parametrize("channel", [
    "#sec-alerts",
    CHANNEL_ID,
    "sec-alerts",
])
def test_crash_recovery_works_for_every_channel_spelling(db, slack, monkeypatch, channel):
    save(db, finding("ci-deployer"))
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack, channel))
    report = alert_run(db, sender(slack, channel))
    assert report.recovered == 1 and len(slack.posts) == 1


@pytest.mark.slow  # a process that kills itself
def test_a_killed_process_after_the_post_leaves_exactly_one_message(tmp_path, slack):
    path = seed(tmp_path, finding("ci-deployer"), finding("billing-exporter"))
    config = write_config(tmp_path, slack.base_url)
    killed = patched_cli(config, "outbox._mark_sent = die")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(slack.top_level()) == 1  # the first agent's post, accepted by Slack

    rerun = alert_cli(config)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 found already posted" in rerun.stdout
    assert len(slack.top_level()) == 2 and len(slack.posts) == 2  # the second agent, once
    by_ts = {m.ts: m for m in slack.top_level()}
    rows = alert_rows(path)
    assert {r["status"] for r in rows} == {"sent"}
    assert {by_ts[r["message_ts"]].key() for r in rows} == {r["message_key"] for r in rows}
    assert alert_cli(config).returncode == 0 and len(slack.posts) == 2


@pytest.mark.slow  # a process that kills itself
def test_a_killed_process_before_the_post_posts_it_once(tmp_path, slack):
    path = seed(tmp_path, finding("ci-deployer"))
    config = write_config(tmp_path, slack.base_url)
    killed = patched_cli(config, "slack.SlackSender.post = die")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert slack.posts == []
    assert [r["status"] for r in alert_rows(path)] == ["sending"]

    rerun = alert_cli(config)
    assert rerun.returncode == 0, rerun.stderr
    assert len(slack.posts) == 1
    assert [r["status"] for r in alert_rows(path)] == ["sent"]


def test_crash_after_a_thread_reply_is_found_in_the_thread(db, slack, monkeypatch):
    save(db, finding(events=2))
    alert_run(db, sender(slack))
    save(db, finding(events=5))
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))
    [parent] = slack.top_level()
    assert len(slack.replies(parent.ts)) == 1
    report = alert_run(db, sender(slack))
    assert (report.recovered, report.updates_sent) == (1, 0)
    assert slack.calls("conversations.replies")[0].body["ts"] == parent.ts
    assert len(slack.replies(parent.ts)) == 1 and len(slack.posts) == 2


def test_growth_between_a_crash_and_the_recovery_is_still_reported(db, slack, monkeypatch):
    save(db, finding(events=2))
    with monkeypatch.context() as m:
        _crash_in(m, outbox, "_mark_sent")
        with pytest.raises(SystemExit):
            alert_run(db, sender(slack))  # Slack shows "2 events"
    save(db, finding(events=4))  # detect ran before the next alert run
    alert_run(db, sender(slack))  # recovers the alert
    alert_run(db, sender(slack))
    [parent] = slack.top_level()
    assert "2 more events (now 4)" in json.dumps([m.blocks for m in slack.replies(parent.ts)])


def test_a_timeout_after_slack_accepted_does_not_post_twice(db, slack):
    save(db, finding())
    slack.fail_next("chat.postMessage", effect=True, delay=1.6, body={"ok": True})
    report = alert_run(db, sender(slack, timeout=1))  # timed out, looked in the channel: found it
    assert report.messages_sent == 1
    alert_run(db, sender(slack))
    assert len(slack.top_level()) == 1
    assert [r["status"] for r in alert_rows(db)] == ["sent"]


def test_a_server_error_after_slack_accepted_does_not_post_twice(db, slack, retry_sleeps):
    save(db, finding())
    slack.fail_next("chat.postMessage", status=500, effect=True)
    alert_run(db, sender(slack))
    assert len(slack.top_level()) == 1


# -- growth: thread replies ----------------------------------------------------------------------
def test_growth_is_a_reply_in_the_alerts_thread(db, slack):
    save(db, finding(events=2))
    alert_run(db, sender(slack))
    [parent] = slack.top_level()

    save(db, finding(events=4))
    report = alert_run(db, sender(slack))
    assert (report.messages_sent, report.updates_sent) == (0, 1)
    [reply] = slack.replies(parent.ts)
    assert reply.thread_ts == parent.ts and len(slack.top_level()) == 1
    assert "2 more events (now 4)" in reply.blocks[0]["text"]["text"]
    assert slack.posts[-1].body["thread_ts"] == parent.ts
    assert reply.unfurl_links is False and reply.unfurl_media is False

    save(db, finding(events=7))
    alert_run(db, sender(slack))
    first, second = slack.replies(parent.ts)
    assert second.thread_ts == parent.ts  # the parent's ts, never a reply's
    assert "3 more events (now 7)" in second.blocks[0]["text"]["text"]

    report = alert_run(db, sender(slack))  # no growth
    assert (report.messages_sent, report.updates_sent) == (0, 0)
    assert len(slack.posts) == 3
    updates = [r for r in alert_rows(db) if r["kind"] == "update"]
    assert [(r["status"], r["thread_ts"], r["event_count"]) for r in updates] == [
        ("sent", parent.ts, 4), ("sent", parent.ts, 7)]
    assert [r["message_ts"] for r in updates] == [first.ts, second.ts]


def test_growth_of_a_finding_below_min_severity_posts_nothing(db, slack):
    save(db, finding(severity="low"))
    alert_run(db, sender(slack))
    save(db, finding(severity="low", events=5))
    alert_run(db, sender(slack))
    assert slack.requests == []


# -- pacing --------------------------------------------------------------------------------------
def test_posts_to_the_channel_are_paced_one_second_apart(db, slack):
    save(db, finding("ci-deployer"))
    alert_run(db, sender(slack))
    save(db, finding("ci-deployer", events=3), finding("billing-exporter"), finding("log-shipper"))
    log: list[tuple[float, int]] = []  # (seconds, posts Slack had when the sleep began)
    already = len(slack.posts)
    report = alert_run(db, sender(slack), sleep=lambda s: log.append((s, len(slack.posts))))
    assert (report.messages_sent, report.updates_sent) == (2, 1)
    # one sleep(1.0) between consecutive posts, none before the first of the run
    assert log == [(1.0, already + 1), (1.0, already + 2)]


def test_a_single_post_does_not_sleep(db, slack):
    save(db, finding())
    sleeps: list[float] = []
    alert_run(db, sender(slack), sleep=sleeps.append)
    assert sleeps == [] and len(slack.posts) == 1


# -- faults ----------------------------------------------------------------------------------------
def test_ratelimited_then_ok_is_delivered_after_retry_after(db, slack, retry_sleeps):
    save(db, finding())
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})
    report = alert_run(db, sender(slack))
    assert report.messages_sent == 1 and len(slack.posts) == 2 and len(slack.top_level()) == 1
    assert len(retry_sleeps) == 1 and 1.0 <= retry_sleeps[0] < 2.0  # Retry-After + jitter
    assert [r["status"] for r in alert_rows(db)] == ["sent"]


def test_ratelimited_through_the_cli_waits_retry_after(tmp_path, slack, retry_sleeps):
    seed(tmp_path, finding())
    config = write_config(tmp_path, slack.base_url)
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})
    result = alert_cli(config)
    assert result.returncode == 0, result.stderr
    assert len(slack.posts) == 2 and len(slack.top_level()) == 1
    assert len(retry_sleeps) == 1 and 1.0 <= retry_sleeps[0] < 2.0  # Retry-After (+ jitter) before the second


def test_server_error_then_ok_is_delivered(db, slack, retry_sleeps):
    save(db, finding())
    slack.fail_next("chat.postMessage", status=500)
    report = alert_run(db, sender(slack))
    assert report.messages_sent == 1 and len(slack.posts) == 2 and len(slack.top_level()) == 1
    # a 5xx may hide a posted message: the channel was checked before the second attempt
    assert len(slack.calls("conversations.history")) == 1


def test_ratelimited_past_the_retries_keeps_the_alert_pending(db, slack, retry_sleeps):
    save(db, finding())
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"}, times=4)
    with pytest.raises(TransientError, match="rate-limit"):
        alert_run(db, sender(slack))
    assert len(slack.posts) == 4 and slack.top_level() == []  # slack_sdk's retries, not re-looped
    [row] = alert_rows(db)
    # HTTP 429 means Slack did not process it: certainly not posted, so simply pending again
    assert (row["status"], row["message_key"]) == ("pending", None) and "ratelimited" in row["last_error"]
    assert alert_run(db, sender(slack)).messages_sent == 1


@pytest.mark.parametrize(("code", "hint"), [
    ("invalid_auth", "SLACK_BOT_TOKEN"),
    ("channel_not_found", "`slack.channel`"),
    ("not_in_channel", "invite"),
])
def test_configuration_errors_fail_with_one_line_and_keep_the_alerts(tmp_path, slack, code, hint):
    path = seed(tmp_path, finding("ci-deployer"), finding("billing-exporter"))
    config = write_config(tmp_path, slack.base_url)
    slack.fail_next("chat.postMessage", error=code)
    result = alert_cli(config)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("trailwarden: error: ") and hint in line and code in line
    assert len(slack.posts) == 1  # not retried
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN not in store_text(path)
    run = last_run(path)
    assert run["status"] == "failed" and code in run["error"]
    assert TOKEN not in json.dumps(run, default=str)
    assert {r["status"] for r in alert_rows(path)} == {"pending"}

    healthy = alert_cli(config)  # fixed: the same findings go out, once each
    assert healthy.returncode == 0, healthy.stderr
    assert len(slack.top_level()) == 2
    assert alert_cli(config).returncode == 0 and len(slack.top_level()) == 2
    assert {r["status"] for r in alert_rows(path)} == {"sent"}


def test_a_channel_that_does_not_exist_names_the_setting(tmp_path, slack):
    seed(tmp_path, finding())
    config = write_config(tmp_path, slack.base_url, channel="#sec-alrets")
    result = alert_cli(config)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "`slack.channel`" in line and "channel_not_found" in line


def test_a_wrong_token_is_refused_by_slack_and_never_echoed(tmp_path):
    with FakeSlack(token="xoxb-the-right-one") as fake:
        path = seed(tmp_path, finding())
        config = write_config(tmp_path, fake.base_url)
        result = alert_cli(config)
        assert result.returncode == 1
        [line] = result.stderr.splitlines()
        assert "SLACK_BOT_TOKEN" in line and TOKEN not in line and "xoxb" not in line
        assert TOKEN not in store_text(path)


def test_slack_unreachable_exits_1_and_keeps_the_alerts(tmp_path, slack, retry_sleeps, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api/"
    path = seed(tmp_path, finding())
    config = write_config(tmp_path, dead)
    monkeypatch.setattr(slack_module, "time", types.SimpleNamespace(sleep=retry_sleeps.append))
    result = alert_cli(config)  # retry backoffs recorded, not slept
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # not slack_sdk's log record of every attempt too
    assert line.startswith("trailwarden: error: Slack is unreachable") and "stay pending" in line
    assert TOKEN not in result.stdout + result.stderr and TOKEN not in store_text(path)
    assert [r["status"] for r in alert_rows(path)] == ["pending"]
    assert "Connection refused" in last_run(path)["error"]

    write_config(tmp_path, slack.base_url)  # Slack is back
    assert alert_cli(config).returncode == 0
    assert len(slack.posts) == 1 and [r["status"] for r in alert_rows(path)] == ["sent"]


def test_invalid_blocks_degrades_to_a_text_only_post(db, slack):
    save(db, finding())
    slack.fail_next("chat.postMessage", error="invalid_blocks")
    report = alert_run(db, sender(slack))
    assert report.messages_sent == 1
    rejected, degraded = slack.posts
    assert "blocks" in rejected.body and "blocks" not in degraded.body
    [message] = slack.top_level()
    assert message.blocks is None and message.text.startswith("CRITICAL: ci-deployer ")
    assert message.key() == rejected.body["metadata"]["event_payload"]["key"]
    assert [r["status"] for r in alert_rows(db)] == ["sent"]


# -- pending means owed ----------------------------------------------------------------------------
def test_pending_counts_what_is_owed_even_before_it_is_enqueued(db, slack):
    """Issue 13, item 3: `status` said "0 pending" while findings were never sent, because the
    outbox fills only when `alert` runs. What is owed is one rule: what `enqueue` would add, plus
    the outbox rows not sent yet."""
    from pipeline.service.alerting.outbox import owed_count
    from pipeline.triage.lifecycle import set_status

    save(db, finding("ci-deployer"), finding("billing-exporter"), finding("log-shipper", severity="low"))
    assert alert_rows(db) == []
    assert owed_count(db, CHANNEL, "medium") == 2  # never enqueued, still owed; the low one is not
    assert owed_count(db, CHANNEL, "low") == 3
    assert owed_count(db, "console", "medium") == 2  # each destination is owed its own
    alert_run(db, sender(slack))
    assert owed_count(db, CHANNEL, "medium") == 0

    save(db, finding("ci-deployer", events=5))  # growth: a thread reply is owed
    set_status(db, [finding("billing-exporter").id], "acknowledged", by="alice", reason="on it")  # and a triage reply
    assert owed_count(db, CHANNEL, "medium") == 2
    assert enqueue(db, CHANNEL, "medium") == 2  # the same rule: exactly what was owed was queued
    assert owed_count(db, CHANNEL, "medium") == 2  # queued, not sent: still pending
    report = alert_run(db, sender(slack))
    assert (report.updates_sent, report.status_sent, report.pending) == (1, 1, 0)
    assert owed_count(db, CHANNEL, "medium") == 0


# -- without a token, without slack:, and --dry-run ---------------------------------------------
def test_slack_configured_without_a_token_fails_and_keeps_the_alerts_for_slack(tmp_path, slack):
    """Issue 13, item 2: a configured destination that cannot be reached is a failure, and the
    alerts wait for it; they are never printed to the console instead (that looked like "sent")."""
    path = seed(tmp_path, finding("ci-deployer"), finding("billing-exporter"))
    config = write_config(tmp_path, slack.base_url)
    result = alert_cli(config, token=None)
    line = assert_one_line_error(result, 1, "SLACK_BOT_TOKEN is not set", "set SLACK_BOT_TOKEN", CHANNEL,
                                 "2 alert(s) stay pending")
    assert line.startswith("trailwarden: error: ")
    assert result.stdout == "" and slack.requests == []  # nothing printed as if it were delivered
    rows = alert_rows(path)
    assert [(r["kind"], r["status"]) for r in rows] == [("alert", "pending")] * 2
    assert {r["finding_id"] for r in rows} == {finding("ci-deployer").id, finding("billing-exporter").id}
    run = last_run(path)
    assert run["status"] == "failed" and "SLACK_BOT_TOKEN" in run["error"]
    status = json.loads(run_cli("--config", str(config), "status", "--format", "json").stdout)
    assert status["service"]["pending_alerts"] == 2 and status["service"]["alert_destination"] == CHANNEL

    with_token = alert_cli(config)  # the token is set: the same findings go to Slack, once
    assert with_token.returncode == 0, with_token.stderr
    assert len(slack.top_level()) == 2
    assert {r["status"] for r in alert_rows(path)} == {"sent"}
    assert alert_cli(config).returncode == 0 and len(slack.posts) == 2


def test_without_slack_configured_alerts_are_printed_once(tmp_path):
    """The console is the destination only when no `slack:` is configured (the demo's case)."""
    path = seed(tmp_path, finding("ci-deployer"), finding("billing-exporter"))
    config = write_config(tmp_path, None)
    result = alert_cli(config, token=None)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "== CRITICAL: ci-deployer ==" in result.stdout and "== CRITICAL: billing-exporter ==" in result.stdout
    assert {(r["status"], r["kind"]) for r in alert_rows(path)} == {("sent", "alert")}
    again = alert_cli(config, token=None)  # printed once: the console is a destination too
    assert again.returncode == 0 and "==" not in again.stdout


def test_dry_run_records_nothing_and_counts_the_messages(tmp_path, slack):
    path = seed(tmp_path, finding("ci-deployer"), finding("ci-deployer", key="ecs:deleteinstance"),
                finding("billing-exporter"))
    config = write_config(tmp_path, slack.base_url)
    runs_before = alert_run_count(path)
    result = alert_cli(config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("2 message(s) would be posted to #sec-alerts.")
    assert "== CRITICAL: ci-deployer - 2 findings ==" in result.stdout
    assert slack.requests == []
    assert alert_rows(path) == []
    assert alert_run_count(path) == runs_before  # no run recorded either
    assert alert_cli(config).returncode == 0 and len(slack.posts) == 2


def test_dry_run_json_is_the_messages_that_would_be_posted(tmp_path, slack):
    """Issue 13, item 15: `alert --dry-run --format json` prints each message (text and blocks as
    chat.postMessage would get them, with the finding ids it carries), not counters."""
    a, b, c = finding("ci-deployer"), finding("ci-deployer", key="ecs:deleteinstance"), finding("billing-exporter")
    path = seed(tmp_path, a, b, c, finding("log-shipper", severity="low"))
    config = write_config(tmp_path, slack.base_url)
    result = alert_cli(config, "--dry-run", "--format", "json", token=None)  # no token needed to look
    assert result.returncode == 0, result.stderr
    assert "SLACK_BOT_TOKEN is not set" in result.stderr  # but it says a real run would fail
    preview = json.loads(result.stdout)
    assert preview["destination"] == CHANNEL
    messages = preview["messages"]
    assert [(m["kind"], m["agent"], sorted(m["finding_ids"])) for m in messages] == [
        ("alert", "billing-exporter", [c.id]), ("alert", "ci-deployer", sorted([a.id, b.id]))]
    assert alert_rows(path) == [] and slack.requests == []

    assert alert_cli(config).returncode == 0  # what is posted is what was previewed
    posted = sorted((r.body["text"], json.dumps(r.body["blocks"])) for r in slack.posts)
    assert posted == sorted((m["text"], json.dumps(m["blocks"])) for m in messages)


def test_dry_run_shows_thread_replies_too(tmp_path, slack):
    path = seed(tmp_path, finding(events=2))
    config = write_config(tmp_path, slack.base_url)
    assert alert_cli(config).returncode == 0
    with open_store(path) as store:
        save(store, finding(events=5))  # grew since it was alerted
    [parent] = slack.top_level()
    preview = json.loads(alert_cli(config, "--dry-run", "--format", "json").stdout)
    [reply] = preview["messages"]
    assert (reply["kind"], reply["thread_ts"], reply["finding_ids"]) == ("update", parent.ts, [finding().id])
    assert "3 more events (now 5)" in json.dumps(reply["blocks"])
    text = alert_cli(config, "--dry-run")
    assert "  (reply) " in text.stdout and text.stdout.rstrip().endswith("1 message(s) would be posted to #sec-alerts.")


# -- attacker-controlled strings -----------------------------------------------------------------
HOSTILE = {
    "user_agent": "aliyun-cli/3.0 <!channel> <http://evil.example/reset|Click here to reset your password>",
    "resource": "acs:oss:*:*:bucket/<@U12345>-backups`; rm -rf /`",
    "error_message": "AccessDenied\n*URGENT* <!here> call the helpdesk & ask for `root`\r\n> quoted",
    "session_name": "<!everyone>\u202egnp.exe <#C999|general>",
}


def _mrkdwn_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            yield node
        for value in node.values():
            yield from _mrkdwn_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _mrkdwn_objects(item)


FORMATTING = ("*URGENT*", "*bold*", "_it_", "~strike~")  # what attackers put in event fields


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _assert_inert(request: Request) -> None:
    raw = body_text(request)
    for token in ("<!", "<@", "<#", "<http", "http://", "https://", "\\u202e", "\\u200b", "\\u001b"):
        assert token not in raw, f"{token!r} reached Slack raw"
    body = request.body
    hidden = [s for s in _strings(body) if HIDDEN.search(s.replace("\n", ""))]  # our own line breaks aside
    assert not hidden, f"a control or invisible character reached Slack: {hidden}"
    texts = [body["text"]] + [o["text"] for o in _mrkdwn_objects(body["blocks"])]
    for obj in _mrkdwn_objects(body["blocks"]):
        assert obj.get("verbatim") is True, obj
        outside_code = re.sub(r"`[^`]*`", "", obj["text"])  # mrkdwn formats everywhere but in code spans
        for mark in FORMATTING:
            assert mark not in outside_code, f"{mark!r} would format in {obj['text']!r}"
    for text in texts:
        assert text.count("`") % 2 == 0, f"unbalanced code span: {text!r}"
        for line in text.split("\n"):
            assert not line.startswith(("*URGENT*", "> quoted", ">")), f"injected line: {line!r}"
    assert body["mrkdwn"] is False  # the top-level text is never parsed for *bold* _italic_ ~strike~
    assert body["unfurl_links"] is False and body["unfurl_media"] is False
    assert "link_names" not in body and "parse" not in body


def test_attacker_strings_reach_slack_escaped_and_inert(db, slack):
    evidence = {"kind": "out_of_scope", "action": "oss:PutBucketAcl", **HOSTILE,
                "resources": [HOSTILE["resource"]], "error_codes": {"AccessDenied": 1}}
    summary = (f"ci-deployer called oss:PutBucketAcl on {HOSTILE['resource']} from {HOSTILE['user_agent']} "
               f"as {HOSTILE['session_name']}: {HOSTILE['error_message']}")
    save(db, finding(summary=summary, evidence=evidence))
    alert_run(db, sender(slack))
    [request] = slack.posts
    _assert_inert(request)
    raw = body_text(request)
    for escaped in ("&lt;!channel&gt;", "&lt;!here&gt;", "&lt;!everyone&gt;", "&lt;@U12345&gt;",
                    "&lt;#C999|general&gt;", "http[:]//evil.example/reset|Click here", "helpdesk &amp; ask"):
        assert escaped in raw, escaped
    assert "&amp;lt;" not in raw  # escaped once, not twice
    # and the thread reply for growth is just as inert
    grown = finding(events=4, summary=summary + " <!channel> again", evidence=evidence)
    save(db, grown)
    alert_run(db, sender(slack))
    reply = slack.posts[-1]
    assert reply.body.get("thread_ts")
    _assert_inert(reply)


def test_hostile_events_through_ingest_detect_and_the_cli_stay_inert(tmp_path, slack, make_event):
    """The pipeline's own path: ActionTrail events whose user agent, resource, error message and
    session name carry mrkdwn control sequences, ingested, scored by out_of_scope, alerted."""
    config = write_config(tmp_path, slack.base_url)
    events = []
    for i in range(3):
        events.append(make_event(
            i, eventName="StopInstance", eventRW="Write", eventTime=f"2026-11-02T03:0{i}:00Z",
            userAgent=HOSTILE["user_agent"], errorMessage=HOSTILE["error_message"] if i == 2 else "",
            errorCode="Forbidden" if i == 2 else "",
            referencedResources={"ACS::ECS::Instance": ["i-<!here>-<http://evil.example|x>"]},
            requestParameters={"InstanceId": "i-<!here>-<http://evil.example|x>"}))
    inventory = Inventory.model_validate({"agents": AGENTS})
    with open_store(tmp_path / "store.duckdb") as store:
        write_ndjson(tmp_path / "e.jsonl", events)
        ingest_files(store, [tmp_path / "e.jsonl"], Attributor(inventory))
        assert run_detect(store, Config(), inventory).new >= 1
    result = alert_cli(config)
    assert result.returncode == 0, result.stderr
    assert slack.posts
    for request in slack.posts:
        _assert_inert(request)
    assert "&lt;!here&gt;" in body_text(slack.posts[0])


def test_formatting_and_invisible_characters_from_events_are_inert_and_visible_in_slack(tmp_path, slack, make_event):
    """Issue 13, item 11: an unregistered identity whose user name hides a zero-width space (a
    look-alike of ci-deploy) and carries mrkdwn formatting, with a user agent and an error message
    holding terminal escapes and bidi controls, ingested, detected and alerted by the CLI."""
    config = write_config(tmp_path, slack.base_url)
    user = "ci-\u200bdeploy *bold* _it_ ~strike~"
    events = [make_event(i, eventName="StopInstance", eventRW="Write", eventTime=f"2026-11-02T03:0{i}:00Z",
                         userIdentity={"type": "ram-user", "principalId": "1", "accountId": "1384926508761234",
                                       "userName": user},
                         userAgent="\x1b]8;;http://evil\x07click\x1b]8;;\x07 *bold* \u202eexe.pdf",
                         errorCode="Forbidden" if i == 2 else "",
                         errorMessage="\x1b[2J _it_ ~strike~ \u2028fake line" if i == 2 else "")
              for i in range(3)]
    with open_store(tmp_path / "store.duckdb") as store:
        write_ndjson(tmp_path / "e.jsonl", events)
        ingest_files(store, [tmp_path / "e.jsonl"], Attributor(INVENTORY))
        assert run_detect(store, Config(), INVENTORY).new >= 1
    result = alert_cli(config)
    assert result.returncode == 0, result.stderr
    assert slack.posts
    for request in slack.posts:
        _assert_inert(request)
    body = slack.posts[0].body
    look_alike = "ram-user:ci-&lt;U+200B&gt;deploy"  # never "ram-user:ci-deploy"
    assert body["blocks"][0]["text"]["text"].startswith(f"HIGH: {look_alike}")
    assert f"`{look_alike} *bold* _it_ ~strike~` is not in the inventory" in json.dumps(body["blocks"], ensure_ascii=False)
    summaries = [b["text"]["text"] for b in body["blocks"] if b.get("text", {}).get("type") == "plain_text"
                 and b["type"] == "section"]
    assert any(s.startswith(f"{look_alike} *bold* _it_ ~strike~, which is in no agent") for s in summaries)
    everything = "\n".join(_strings(body))
    assert "\\x1b]8;;http[:]//evil\\x07click" in everything  # shown as text, never acted on
    assert "&lt;U+202E&gt;exe.pdf" in everything


def test_the_token_travels_only_in_the_authorization_header(db, slack):
    save(db, finding())
    alert_run(db, sender(slack))
    for request in slack.requests:
        assert TOKEN not in body_text(request)
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"



# -- the service's own health warning ---------------------------------------------------------------
def test_the_services_health_warning_reaches_slack_escaped(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` tells the channel when a step keeps failing; the error text may quote an event or a
    server's words, so it is escaped like any event field."""
    from pipeline.core.config import Config, SlackConfig
    from pipeline.service.cycle import _notify

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = Config(slack=SlackConfig(channel=CHANNEL, base_url=slack.base_url))
    _notify(config, "trailwarden: step ingest has failed 3 cycles in a row: <!channel> *bold* <http://x|y>")
    (message,) = slack.top_level()
    assert "step ingest has failed 3 cycles in a row" in message.text
    assert "<!channel>" not in message.text and "<http://x|y>" not in message.text
    assert len(slack.posts) == 1 and TOKEN not in message.text


def test_a_health_warning_slack_refuses_is_logged_not_raised(slack: FakeSlack, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.core.config import Config, SlackConfig
    from pipeline.service.cycle import _notify

    monkeypatch.setenv(TOKEN_ENV, "xoxb-wrong")
    fake = FakeSlack(token=TOKEN)
    with fake:
        _notify(Config(slack=SlackConfig(channel=CHANNEL, base_url=fake.base_url)), "step detect failed")
    assert not fake.top_level()
    assert "could not post the health warning to Slack" in caplog.text and "xoxb-wrong" not in caplog.text
