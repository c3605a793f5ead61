"""Triage from Slack (issue 16, item 3): the real ``slack_bolt`` app in Socket Mode, against the
fake Web API (``tests.fakes.slack``) and the fake Socket Mode WebSocket
(``tests.fakes.socket_mode``), which delivers real ``block_actions`` envelopes and records the
app's acknowledgements. The press goes to the inbox at once; the alert step applies it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pipeline.service.alerting.outbox as outbox
from detectors.base import Finding
from models.inventory import Inventory
from pipeline.core.config import Config
from pipeline.detection.findings import save_findings
from pipeline.detection.incidents import list_incidents
from pipeline.service.alerting.step import alert_once
from pipeline.service.slack_app import build_app, inbox_path, start
from pipeline.store.store import Store, open_store
from tests.fakes.slack import CHANNEL_ID, FakeSlack
from tests.fakes.socket_mode import FakeSocketMode

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
GROUP = "S0TRIAGE"
ALICE, MALLORY = "U0ALICE", "U0MALLORY"
INVENTORY = Inventory.model_validate({"agents": [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"]}]})
FINDINGS = [
    Finding(detector="out_of_scope", agent="ci-deployer", severity="critical", score=0.9, first_seen=T0,
            last_seen=T0 + timedelta(minutes=2), summary="ci-deployer called ecs:StopInstance (3 calls)",
            event_ids=["ev-1", "ev-2", "ev-3"], evidence={"kind": "out_of_scope", "action": "ecs:StopInstance"},
            dedup_key="oos"),
    Finding(detector="odd_hours", agent="ci-deployer", severity="medium", score=0.5, first_seen=T0,
            last_seen=T0 + timedelta(minutes=3), summary="ci-deployer made 3 calls at 03:00",
            event_ids=["ev-1", "ev-2", "ev-3"], evidence={"kind": "odd_hours", "count": 3}, dedup_key="odd"),
]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.groups[GROUP] = [ALICE]
        yield fake


@pytest.fixture
def socket(slack: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode(slack) as fake:
        yield fake


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        save_findings(store, FINDINGS, {})
        yield store


@pytest.fixture
def config(slack: FakeSlack) -> Config:
    return Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": slack.base_url,
                                            "triage_group": GROUP}})


@pytest.fixture
def app(slack: FakeSlack, socket: FakeSocketMode, db: Store) -> Iterator[Any]:
    bolt = build_app("xoxb-test-token", GROUP, inbox_path(Path(db.path)), base_url=slack.base_url)
    handler = start(bolt, "xapp-test-token")
    socket.wait_connected()
    yield bolt
    handler.close()


def _alert(db: Store, config: Config) -> Any:
    return alert_once(db, config, INVENTORY, print, sleep=lambda _s: None)


def _press(socket: FakeSocketMode, slack: FakeSlack, action_id: str, incident: str, *, user: str = ALICE,
           action_ts: str = "1796000000.000100", envelope_id: str | None = None, retry: int = 0) -> str:
    [parent] = slack.top_level()
    payload = {
        "type": "block_actions", "team": {"id": "T0TRAILW", "domain": "test"}, "api_app_id": "A0TRAILW",
        "user": {"id": user, "username": user.lower().removeprefix("u0"), "name": user.lower(), "team_id": "T0TRAILW"},
        "token": "verification-token", "trigger_id": f"trigger-{action_ts}",
        "container": {"type": "message", "message_ts": parent.ts, "channel_id": CHANNEL_ID, "is_ephemeral": False},
        "channel": {"id": CHANNEL_ID, "name": "sec-alerts"}, "message": {"ts": parent.ts, "text": parent.text},
        "response_url": f"{slack.base_url}response", "state": {"values": {}},
        "actions": [{"action_id": action_id, "block_id": f"triage:{incident}", "value": incident, "type": "button",
                     "action_ts": action_ts, "text": {"type": "plain_text", "text": action_id}}],
    }
    return socket.send("interactive", payload, envelope_id=envelope_id, retry_attempt=retry)


def _statuses(db: Store) -> list[tuple[str, str]]:
    return sorted(db.con.execute("SELECT id, status FROM findings").fetchall())


def _changes(db: Store) -> list[tuple[Any, ...]]:
    return db.con.execute("SELECT finding_id, new_status, changed_by FROM finding_status_changes ORDER BY id").fetchall()


def _wait_ephemeral(slack: FakeSlack, count: int) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 10
    while len(slack.ephemeral) < count and time.monotonic() < deadline:
        time.sleep(0.01)  # the app answers on its own thread; nothing to inject a clock into
    return slack.ephemeral


def test_a_member_acknowledges_from_the_message_and_the_next_cycle_applies_it(db, slack, socket, config, app):
    assert _alert(db, config).messages_sent == 1
    [parent] = slack.top_level()
    [incident] = list_incidents(db)
    assert [b["action_id"] for b in parent.blocks[-1]["elements"]][:3] == ["tw_ack", "tw_resolve", "tw_false_positive"]

    envelope = _press(socket, slack, "tw_ack", incident["id"])
    socket.wait_ack(envelope)  # acknowledged (the benchmark measures how fast)
    [answer] = _wait_ephemeral(slack, 1)
    assert answer["user"] == ALICE and "acknowledged by you within one cycle" in answer["text"]
    assert {s for _, s in _statuses(db)} == {"open"}  # not yet: the cycle applies it

    report = _alert(db, config)
    assert {s for _, s in _statuses(db)} == {"acknowledged"}
    assert {by for *_, by in _changes(db)} == {"alice (slack U0ALICE)"}  # the Slack user, as the CLI records `by`
    assert report.refreshed == 1 and report.status_sent == 1
    updated = slack.updates[-1]
    assert updated["ts"] == parent.ts
    assert "Acknowledged* by `alice (slack U0ALICE)`" in json.dumps(updated["blocks"])
    assert "tw_ack" not in json.dumps(updated["blocks"])  # no second Acknowledge on an acknowledged incident
    assert list(inbox_path(Path(db.path)).glob("*.json")) == []
    assert db.con.execute("SELECT outcome, user_id FROM slack_interactions").fetchall() == [("applied", ALICE)]


def test_a_retried_and_a_duplicated_envelope_change_nothing_more(db, slack, socket, config, app):
    _alert(db, config)
    [incident] = list_incidents(db)
    first = _press(socket, slack, "tw_resolve", incident["id"])
    socket.wait_ack(first)
    _wait_ephemeral(slack, 1)
    socket.wait_ack(_press(socket, slack, "tw_resolve", incident["id"], envelope_id=first, retry=1))  # Slack's retry
    socket.wait_ack(_press(socket, slack, "tw_resolve", incident["id"]))  # the same press, another envelope
    _alert(db, config)
    socket.wait_ack(_press(socket, slack, "tw_resolve", incident["id"]))  # delivered again after it was applied
    _alert(db, config)
    # one change per finding, once
    assert sorted((fid, s) for fid, s, _ in _changes(db)) == sorted((f.id, "resolved") for f in FINDINGS)
    [parent] = slack.top_level()
    status_replies = [m for m in slack.replies(parent.ts) if "resolved by" in (m.text or "").lower()]
    assert len(status_replies) == 1
    assert db.con.execute("SELECT count(*) FROM slack_interactions").fetchall() == [(1,)]
    assert len(slack.ephemeral) == 1  # the user was told once


def test_a_non_member_is_refused_and_nothing_changes(db, slack, socket, config, app):
    _alert(db, config)
    [incident] = list_incidents(db)
    socket.wait_ack(_press(socket, slack, "tw_false_positive", incident["id"], user=MALLORY))
    [answer] = _wait_ephemeral(slack, 1)
    assert answer["user"] == MALLORY and "Only members of the triage group" in answer["text"]
    assert "nothing was changed" in answer["text"]
    _alert(db, config)
    assert {s for _, s in _statuses(db)} == {"open"} and _changes(db) == []
    assert not inbox_path(Path(db.path)).exists() or list(inbox_path(Path(db.path)).glob("*.json")) == []


def test_a_press_arriving_mid_cycle_is_acknowledged_at_once_and_applied_by_the_next_cycle(db, slack, socket,
                                                                                          config, app):
    _alert(db, config)
    [incident] = list_incidents(db)
    with db.transaction() as con:  # the cycle holds the store (a write transaction in progress)
        con.execute("UPDATE findings SET updated_at = updated_at")
        socket.wait_ack(_press(socket, slack, "tw_ack", incident["id"]))  # acknowledged while the store is busy
        _wait_ephemeral(slack, 1)
    assert {s for _, s in _statuses(db)} == {"open"}
    _alert(db, config)  # the next cycle
    assert {s for _, s in _statuses(db)} == {"acknowledged"}


def test_a_kill_between_recording_the_triage_and_updating_the_message(db, slack, socket, config, app,
                                                                      monkeypatch):
    _alert(db, config)
    [incident] = list_incidents(db)
    socket.wait_ack(_press(socket, slack, "tw_ack", incident["id"]))
    _wait_ephemeral(slack, 1)

    def die(*_a: Any, **_k: Any) -> None:
        raise SystemExit("killed")

    with monkeypatch.context() as m:
        m.setattr(outbox, "_refresh", die)  # the triage is committed; the message is not updated yet
        with pytest.raises(SystemExit):
            _alert(db, config)
    assert {s for _, s in _statuses(db)} == {"acknowledged"} and slack.updates == []
    report = _alert(db, config)  # the next cycle: the update is still owed
    assert report.refreshed == 1 and "Acknowledged" in json.dumps(slack.updates[-1]["blocks"])
    assert len(_changes(db)) == len(FINDINGS)  # applied once: one change per finding
    assert _alert(db, config).refreshed == 0


def test_a_press_for_an_incident_that_no_longer_exists_changes_nothing(db, slack, socket, config, app):
    _alert(db, config)
    socket.wait_ack(_press(socket, slack, "tw_resolve", "inc-0000000000"))
    _wait_ephemeral(slack, 1)
    _alert(db, config)
    assert _changes(db) == []
    assert db.con.execute("SELECT outcome, answer FROM slack_interactions").fetchall() == [
        ("refused", "no such incident: inc-0000000000")]


def test_a_revoked_app_token_keeps_the_service_alerting_and_says_so(tmp_path, slack, monkeypatch):
    """Issue 16: an invalid or revoked app token -> the service keeps alerting, and reports the
    triage channel's failure in `status` and in its health message."""
    from pipeline.service.cycle import Service
    from pipeline.service.status import collect_status

    slack.app_token_error = "invalid_auth"
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-revoked")
    config = Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": slack.base_url,
                                              "triage_group": GROUP}})
    path = tmp_path / "store.duckdb"
    with open_store(path) as store:
        save_findings(store, FINDINGS, {})
    service = Service(config, lambda: INVENTORY, path)
    assert service.start_triage() is None  # no app, but no crash either
    [health] = slack.top_level()
    assert "SLACK_APP_TOKEN" in health.text and "invalid_auth" in health.text and "xapp-revoked" not in health.text
    with open_store(path) as store:
        assert _alert(store, config).messages_sent == 1  # alerting goes on
        triage = collect_status(store, "#sec-alerts")["service"]["slack_triage"]
    assert triage["state"] == "failed" and "SLACK_APP_TOKEN" in triage["error"]


# -- Suppress: the modal ------------------------------------------------------------------------------
def _submit(socket: FakeSocketMode, view: dict[str, Any], reason: str, scope: str = "agent_detector", *,
            user: str = ALICE, view_id: str = "V0000001") -> str:
    state = {"values": {"reason": {"value": {"type": "plain_text_input", "value": reason}},
                        "scope": {"value": {"type": "radio_buttons", "selected_option": {"value": scope}}}}}
    payload = {"type": "view_submission", "team": {"id": "T0TRAILW"}, "api_app_id": "A0TRAILW",
               "user": {"id": user, "username": user.lower().removeprefix("u0"), "team_id": "T0TRAILW"},
               "trigger_id": "trigger-submit",
               "view": {**view, "id": view_id, "state": state, "hash": "1", "team_id": "T0TRAILW"}}
    return socket.send("interactive", payload)


def _suppressions(db: Store) -> list[tuple[Any, ...]]:
    return db.con.execute("SELECT detector, agent, action, created_by, reason, expires_at - created_at "
                          "FROM suppressions ORDER BY detector").fetchall()


def _open_modal(db: Store, slack: FakeSlack, socket: FakeSocketMode, config: Config) -> tuple[str, dict[str, Any]]:
    import time

    _alert(db, config)
    [incident] = list_incidents(db)
    socket.wait_ack(_press(socket, slack, "tw_suppress", incident["id"]))
    deadline = time.monotonic() + 10
    while not slack.views and time.monotonic() < deadline:
        time.sleep(0.01)  # views.open is called on the app's thread, after the ack
    [view] = slack.views
    return incident["id"], view


def test_suppress_opens_a_modal_and_its_submission_is_applied_by_the_next_cycle(db, slack, socket, config, app):
    incident, view = _open_modal(db, slack, socket, config)
    assert view["callback_id"] == "tw_suppress" and incident in view["private_metadata"]
    assert [b.get("block_id") for b in view["blocks"]][1:] == ["reason", "scope"]
    socket.wait_ack(_submit(socket, view, "DR drill this week (SEC-1234)"))
    [answer] = _wait_ephemeral(slack, 1)
    assert "suppressed for 7 days" in answer["text"]
    assert _suppressions(db) == []  # the cycle applies it
    _alert(db, config)
    by = "alice (slack U0ALICE)"
    assert _suppressions(db) == [("odd_hours", "ci-deployer", None, by, "DR drill this week (SEC-1234)", timedelta(days=7)),
                                 ("out_of_scope", "ci-deployer", None, by, "DR drill this week (SEC-1234)",
                                  timedelta(days=7))]
    socket.wait_ack(_submit(socket, view, "DR drill this week (SEC-1234)"))  # the same submission again
    _alert(db, config)
    assert len(_suppressions(db)) == 2
    # a kill -9 after the suppressions were added and before the interaction was recorded: the
    # record is missing and the file is still in the inbox; applying it again adds nothing
    inbox = inbox_path(Path(db.path))
    [done] = inbox.glob("*.done")
    done.rename(done.with_suffix(".json"))
    db.con.execute("DELETE FROM slack_interactions")
    _alert(db, config)
    assert len(_suppressions(db)) == 2


def test_a_modal_with_an_empty_reason_stays_open_and_changes_nothing(db, slack, socket, config, app):
    _incident, view = _open_modal(db, slack, socket, config)
    envelope = _submit(socket, view, "   ")
    socket.wait_ack(envelope)
    assert socket.ack_payloads[envelope] == {"response_action": "errors",
                                             "errors": {"reason": "Say why these findings are expected."}}
    _alert(db, config)
    assert _suppressions(db) == [] and db.con.execute("SELECT count(*) FROM slack_interactions").fetchall() == [(0,)]


def test_an_action_pattern_the_incident_does_not_have_is_refused(db, slack, socket, config, app):
    _incident, view = _open_modal(db, slack, socket, config)
    socket.wait_ack(_submit(socket, view, "expected", scope="action"))  # its events are not in the store
    _wait_ephemeral(slack, 1)
    _alert(db, config)
    assert _suppressions(db) == []
    [(outcome, answer)] = db.con.execute("SELECT outcome, answer FROM slack_interactions").fetchall()
    assert outcome == "refused" and "suppress this agent and detector instead" in answer


# -- /trailwarden agent | replay ------------------------------------------------------------------------
@pytest.fixture
def reader_app(tmp_path: Path, slack: FakeSlack, socket: FakeSocketMode, config: Config) -> Iterator[Any]:
    """The app with the store to read (closed here, as the service would have it between cycles)."""
    path = tmp_path / "read.duckdb"
    with open_store(path) as store:
        save_findings(store, FINDINGS, {})
    bolt = build_app("xoxb-test-token", GROUP, inbox_path(path), base_url=slack.base_url, database=path,
                     inventory=lambda: INVENTORY)
    handler = start(bolt, "xapp-test-token")
    socket.wait_connected()
    yield path
    handler.close()


def _command(socket: FakeSocketMode, text: str, user: str = ALICE) -> str:
    return socket.send("slash_commands", {
        "token": "verification-token", "team_id": "T0TRAILW", "team_domain": "test", "channel_id": CHANNEL_ID,
        "channel_name": "sec-alerts", "user_id": user, "user_name": user.lower(), "command": "/trailwarden",
        "text": text, "api_app_id": "A0TRAILW", "response_url": "http://127.0.0.1:1/response",
        "trigger_id": "trigger-command"})


def test_the_agent_command_answers_with_the_agents_card(slack, socket, reader_app):
    socket.wait_ack(_command(socket, "agent ci-deployer"))
    [answer] = _wait_ephemeral(slack, 1)
    card = answer["blocks"][0]["text"]
    assert card["type"] == "plain_text" and answer["user"] == ALICE
    assert "Deploys the storefront from CI · owner platform-team" in card["text"]
    assert "Open incidents: 1" in card["text"] and "CRITICAL inc-" in card["text"]


def test_the_replay_command_uploads_the_html_replay(slack, socket, reader_app):
    import time

    socket.wait_ack(_command(socket, "replay ci-deployer --since 30d"))
    deadline = time.monotonic() + 20
    while not slack.files and time.monotonic() < deadline:
        time.sleep(0.02)  # the upload runs on the app's thread, after the ack
    [upload] = slack.files
    assert upload["channel"] == CHANNEL_ID and upload["data"].lstrip().lower().startswith(b"<!doctype html")
    assert "Replay of ci-deployer since 30d" in (upload["comment"] or "")


def test_the_command_is_refused_to_a_non_member_and_names_are_inert(slack, socket, reader_app):
    socket.wait_ack(_command(socket, "agent ci-deployer", user=MALLORY))
    [refusal] = _wait_ephemeral(slack, 1)
    assert refusal["user"] == MALLORY and "Only members of the triage group" in refusal["text"]
    socket.wait_ack(_command(socket, "agent <!channel>*x*"))
    [_, unknown] = _wait_ephemeral(slack, 2)
    assert "&lt;!channel&gt;" in unknown["text"] and "<!channel>" not in unknown["text"]


def test_the_slack_command_says_what_is_missing(tmp_path, slack):
    from tests.conftest import run_cli

    config = tmp_path / "trailwarden.yaml"
    config.write_text(f"database: {tmp_path / 'store.duckdb'}\nslack: {{channel: '#sec-alerts', "
                      f"base_url: '{slack.base_url}'}}\n", encoding="utf-8")
    env = {"NO_PROXY": "127.0.0.1", "SLACK_BOT_TOKEN": "xoxb-test-token"}
    no_group = run_cli("--config", str(config), "slack", env=env)
    assert no_group.returncode == 2 and "slack.triage_group" in no_group.stderr and str(config) in no_group.stderr
    config.write_text(config.read_text(encoding="utf-8").replace("}", ", triage_group: S0TRIAGE}"), encoding="utf-8")
    no_token = run_cli("--config", str(config), "slack", env=env)
    assert no_token.returncode == 1 and no_token.stderr.strip().endswith(
        "SLACK_APP_TOKEN is not set: set the app-level token (xapp-, connections:write)")
    assert "Traceback" not in no_group.stderr + no_token.stderr
