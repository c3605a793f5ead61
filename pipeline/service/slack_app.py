"""Triage from Slack: the incident message's buttons, answered by a ``slack_bolt`` app in Socket Mode.

Socket Mode needs no public endpoint: with ``SLACK_APP_TOKEN`` (an app-level ``xapp-`` token,
``connections:write``) beside ``SLACK_BOT_TOKEN``, the app opens a WebSocket to Slack
(``apps.connections.open``) and receives each button press as an envelope it must acknowledge
within 3 seconds, or Slack sends it again.

The hand-over to the single DuckDB writer. The app never opens the store: the service's cycle
may hold it for minutes, and another process (`trailwarden slack` beside `serve`) cannot open it
at all. A press by a member of ``slack.triage_group`` is acknowledged at once and written to the
*inbox*, a directory beside the store (``<database>.slack-inbox/``), as one small JSON file whose
name is the interaction's key (written to a temporary name, fsynced, then renamed: a file is
whole or absent). The alert step of the next cycle (`alert`, `run`, `serve`) drains the inbox
before it enqueues (:func:`drain_inbox`): each interaction is applied as the CLI applies a triage
(``set_incident_status``, with the Slack user as ``by``), recorded in ``slack_interactions`` under
its key, and its file renamed ``<key>.done`` (kept a day, so a late duplicate is not even
answered again); the incident's message is then updated in place by the same step,
through the outbox (owed from the moment the triage commits). So a press is applied within one
cycle, and acknowledged within 3 s whatever the cycle is doing.

Exactly once. The key is the press itself (user, button, incident, Slack's ``action_ts``), so a
retried envelope and a duplicated one write the same file, and a key already in
``slack_interactions`` is only removed from the inbox. A kill -9 after the triage commits and
before the interaction is recorded re-applies it, which changes nothing (a finding already in
that status is left as it is; a suppression's id comes from the key, so it is not added twice);
one after the record and before the file is renamed leaves a file whose key is known; one before
the message update leaves the update owed.

Suppress opens a modal (a reason, required, and a scope: this agent and detector, or this action
pattern); its submission goes through the inbox the same way and adds a seven-day suppression per
detector of the incident, as `suppress add` would. The slash command (`/trailwarden agent NAME`,
`/trailwarden replay NAME [--since 7d]`) only reads, from the store or its snapshot as `findings`
does. Known gaps: a press refused when the inbox is drained (an incident that no longer exists, an
action pattern the incident does not have) is recorded but not answered in Slack; a membership
lookup Slack refuses (a missing scope) is logged and the press goes unanswered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import TerminalError
from pipeline.core.times import utcnow
from pipeline.store.store import Store

log = logging.getLogger("trailwarden.slack")
APP_TOKEN_ENV = "SLACK_APP_TOKEN"
# button action id -> (the status it sets, the word the user reads)
ACTIONS = {"tw_ack": ("acknowledged", "acknowledged"), "tw_resolve": ("resolved", "resolved"),
           "tw_false_positive": ("false_positive", "marked a false positive")}
SUPPRESS = "tw_suppress"  # opens the modal (reason and scope); its submission is a "suppress" interaction
SUPPRESS_DAYS = 7
SCOPES = {"agent_detector": "This agent and detector", "action": "This action pattern (any agent)"}
MEMBERS_TTL = 60.0  # seconds the triage group's members are cached
DONE_KEPT = 86400.0  # seconds an applied key stays in the inbox (as ``<key>.done``)


@dataclass(frozen=True)
class Interaction:
    """One press of a triage button, as the inbox holds it."""

    key: str
    action: str  # the status it sets
    incident_id: str
    user_id: str
    user_name: str
    channel_id: str | None
    received_at: str  # ISO 8601, UTC
    kind: str = "button"  # button | suppress (the modal's submission)
    reason: str | None = None  # suppress: the reason given in the modal
    scope: str | None = None  # suppress: agent_detector | action

    @property
    def by(self) -> str:
        """Who triaged, as `findings` shows it: the Slack name and id."""
        return f"{self.user_name} (slack {self.user_id})"


def inbox_path(database: Path) -> Path:
    return Path(str(database) + ".slack-inbox")


def interaction_key(user_id: str, action_id: str, incident_id: str, action_ts: str) -> str:
    return hashlib.sha256(f"{user_id}|{action_id}|{incident_id}|{action_ts}".encode()).hexdigest()[:32]


def put(inbox: Path, item: Interaction) -> bool:
    """Write the interaction to the inbox, whole or not at all; False when it was already there
    (a retried or duplicated envelope)."""
    inbox.mkdir(parents=True, exist_ok=True)
    final = inbox / f"{item.key}.json"
    if final.exists() or (inbox / f"{item.key}.done").exists():
        return False
    tmp = inbox / f".{item.key}.{os.getpid()}.tmp"
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(asdict(item), out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, final)
    return True


@dataclass
class DrainReport:
    applied: int = 0
    unchanged: int = 0
    refused: int = 0
    duplicates: int = 0


def drain_inbox(store: Store, inbox: Path) -> DrainReport:
    """Apply the inbox's interactions, oldest first, each exactly once (see the module docstring).
    A file that cannot be read is left in place, with a warning."""
    from pipeline.detection.incidents import get_incident
    from pipeline.triage.lifecycle import set_incident_status

    report = DrainReport()
    if not inbox.is_dir():
        return report
    items: list[tuple[Path, Interaction]] = []
    for path in inbox.glob("*.json"):
        try:
            items.append((path, Interaction(**json.loads(path.read_text(encoding="utf-8")))))
        except (OSError, ValueError, TypeError) as exc:
            log.warning("skipping unreadable Slack interaction %s: %s", path.name, exc)
    for path, item in sorted(items, key=lambda pair: (pair[1].received_at, pair[1].key)):
        known = store.con.execute("SELECT 1 FROM slack_interactions WHERE key = ?", [item.key]).fetchall()
        if known:
            report.duplicates += 1
        else:
            answer: str | None = None
            if get_incident(store, item.incident_id) is None:
                outcome, answer = "refused", f"no such incident: {item.incident_id}"
            elif item.kind == "suppress":
                outcome, answer = _suppress(store, item)
            else:
                changes = set_incident_status(store, item.incident_id, item.action, by=item.by,
                                              reason=f"set from Slack by {item.user_name}")
                outcome = "applied" if any(c.change_id is not None for c in changes) else "unchanged"
            setattr(report, outcome, getattr(report, outcome) + 1)
            with store.transaction() as con:
                con.execute(
                    "INSERT OR IGNORE INTO slack_interactions (key, kind, user_id, user_name, action, incident_id, "
                    "outcome, answer, received_at, applied_at, answered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [item.key, item.kind, item.user_id, item.user_name, item.action, item.incident_id, outcome, answer,
                     datetime.fromisoformat(item.received_at), utcnow()])
        path.replace(inbox / f"{item.key}.done")  # a late duplicate is then not even answered again
    _prune_done(inbox)
    return report


def _suppress(store: Store, item: Interaction) -> tuple[str, str | None]:
    """A suppression per detector of the incident, for seven days, recorded as `suppress add`
    records one (with the Slack user as its author). Scope ``agent_detector``: the incident's
    agent; ``action``: the one action its events share, for any agent (refused when they span
    several: nothing is changed and the user reads why)."""
    from datetime import timedelta

    from pipeline.triage.lifecycle import Suppression, add_suppression, finding_event_facts

    rows = store.con.execute("SELECT DISTINCT detector, agent FROM findings WHERE incident_id = ? ORDER BY 1",
                             [item.incident_id]).fetchall()
    action = None
    if item.scope == "action":
        ids = [e for (ev,) in store.con.execute("SELECT event_ids FROM findings WHERE incident_id = ?",
                                                 [item.incident_id]).fetchall() for e in ev]
        actions = sorted({a for a, _ip, _err in finding_event_facts(store.con, ids)})
        if len(actions) != 1:
            return "refused", (f"the incident's events span {len(actions)} actions; suppress this agent and "
                               "detector instead")
        action = actions[0]
    now = utcnow()
    for detector, agent in rows:
        sid = "sup-" + hashlib.sha256(f"{item.key}|{detector}".encode()).hexdigest()[:8]  # re-applied: not added twice
        if store.con.execute("SELECT 1 FROM suppressions WHERE id = ?", [sid]).fetchall():
            continue
        add_suppression(store, Suppression(
            id=sid, detector=detector, reason=item.reason or "", created_by=item.by,
            created_at=now, expires_at=now + timedelta(days=SUPPRESS_DAYS),
            agent=agent if item.scope == "agent_detector" else None, action=action))
    return "applied", None


def _prune_done(inbox: Path, keep: float = DONE_KEPT) -> None:
    """Forget applied keys after a day (Slack retries within minutes); the store keeps them."""
    cutoff = time.time() - keep
    for done in inbox.glob("*.done"):
        try:
            if done.stat().st_mtime < cutoff:
                done.unlink()
        except OSError:
            continue


# -- the Bolt app ------------------------------------------------------------------------------------
class Members:
    """Who may triage: the members of a user group (S…) or channel (C…, G…), cached for
    :data:`MEMBERS_TTL` seconds. ``clock`` is injectable."""

    def __init__(self, group: str, clock: Callable[[], float] = time.monotonic):
        self.group, self._clock = group, clock
        self._cached: tuple[float, frozenset[str]] | None = None

    def allowed(self, client: Any, user_id: str) -> bool:
        now = self._clock()
        if self._cached is None or now - self._cached[0] > MEMBERS_TTL:
            self._cached = (now, frozenset(self._fetch(client)))
        return user_id in self._cached[1]

    def _fetch(self, client: Any) -> list[str]:
        if self.group.startswith("S"):
            return list(client.usergroups_users_list(usergroup=self.group)["users"])
        members: list[str] = []
        cursor = None
        while True:
            page = client.conversations_members(channel=self.group, cursor=cursor, limit=1000)
            members += page["members"]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return members


def build_app(bot_token: str, triage_group: str, inbox: Path, *, base_url: str | None = None,
              members: Members | None = None, database: Path | None = None,
              inventory: Callable[[], Any] | None = None) -> Any:
    """The Bolt app: each triage button acknowledged first, then (after the membership check)
    written to the inbox and answered with an ephemeral message. Errors after the ack are
    logged, never raised (a raise right after ``ack()`` can lose the ack, notes: slack_bolt)."""
    from slack_bolt import App
    from slack_sdk import WebClient

    client = WebClient(token=bot_token, base_url=base_url or WebClient.BASE_URL)
    app = App(client=client, process_before_response=False, logger=log)
    allowed = members or Members(triage_group)

    def on_button(ack: Callable[[], None], body: dict[str, Any], client: Any) -> None:
        ack()
        try:
            _handle_button(body, client, allowed, inbox)
        except Exception:  # the press was acknowledged: say in the log why it failed
            log.exception("a Slack triage button could not be handled")

    for action_id in (*ACTIONS, SUPPRESS):
        app.action(action_id)(on_button)

    def on_submit(ack: Callable[..., None], body: dict[str, Any], view: dict[str, Any], client: Any) -> None:
        reason = _view_value(view, "reason", "value").strip()
        if not reason:  # the modal stays open, saying what is missing; nothing is queued
            ack(response_action="errors", errors={"reason": "Say why these findings are expected."})
            return
        ack()
        try:
            _queue_suppression(body, view, reason, client, allowed, inbox)
        except Exception:  # the submission was acknowledged: say in the log why it failed
            log.exception("a Slack suppression could not be handled")

    app.view(SUPPRESS)(on_submit)

    if database is not None and inventory is not None:
        def on_command(ack: Callable[..., None], command: dict[str, Any], client: Any) -> None:
            ack()
            try:
                _handle_command(command, client, allowed, database, inventory)
            except Exception:  # the command was acknowledged: say in the log why it failed
                log.exception("a /trailwarden command could not be handled")

        app.command(COMMAND)(on_command)
    return app


COMMAND = "/trailwarden"
USAGE = "Usage: `/trailwarden agent NAME` or `/trailwarden replay NAME [--since 7d]`"


def _handle_command(command: dict[str, Any], client: Any, members: Members, database: Path,
                    inventory: Callable[[], Any]) -> None:
    """``/trailwarden agent NAME``: the agent's card; ``/trailwarden replay NAME [--since T]``: its
    HTML replay as a file in the channel. Both read the store as `findings` does (its snapshot
    while the service holds it); answers are private, values inert."""
    user_id, channel = str(command.get("user_id") or ""), str(command.get("channel_id") or "")
    words = str(command.get("text") or "").split()

    def answer(text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        client.chat_postEphemeral(channel=channel, user=user_id, text=text, blocks=blocks)

    if not members.allowed(client, user_id):
        answer("Only members of the triage group may use /trailwarden; nothing was read.")
        return
    if len(words) < 2 or words[0] not in ("agent", "replay"):
        answer(USAGE)
        return
    import tempfile

    from pipeline.core.errors import TrailwardenError
    from pipeline.store.store import open_for_reading

    name = words[1]
    since = words[words.index("--since") + 1] if "--since" in words[:-1] else "7d"
    with tempfile.TemporaryDirectory(prefix="trailwarden-replay-") as tmp:
        page = Path(tmp) / f"replay-{_file_safe(name)}.html"
        try:
            with open_for_reading(database) as store:
                if words[0] == "agent":
                    text, blocks = agent_card(store, name, inventory())
                    answer(text, blocks)
                    return
                events = _replay_html(store, name, inventory(), since, page)
        except TrailwardenError as exc:
            answer(_inert(f"Could not do that: {exc}", 300))
            return
        if events is None:
            answer(f"No agent or identity named {_inert(name)} in the store or the inventory.")
            return
        client.files_upload_v2(channel=channel, file=str(page), filename=page.name,
                               title=f"Replay of {_inert(name)} since {_inert(since)}",
                               initial_comment=f"Replay of {_inert(name)} since {_inert(since)} ({events} events), "
                                               f"asked by <@{user_id}>")


def agent_card(store: Store, name: str, inventory: Any) -> tuple[str, list[dict[str, Any]]]:
    """The agent's card: purpose, owner, its open and acknowledged incidents, last activity."""
    from pipeline.detection.incidents import list_incidents
    from pipeline.service.alerting.text import plain_section

    inv = inventory.agent(name)
    last = store.con.execute("SELECT max(event_time) FROM events WHERE agent = ?", [name]).fetchall()[0][0]
    if inv is None and last is None:
        return f"No agent or identity named {_inert(name)} in the store or the inventory.", []
    incidents = [i for i in list_incidents(store, agent=name) if i["status"] in ("open", "acknowledged")]
    who = (f"{inv.purpose} · owner {inv.owner} · {inv.environment}" if inv is not None
           else "not in the inventory: no owner, no declared scope")
    lines = [f"{name}: {who}", f"Last activity: {last:%Y-%m-%d %H:%M}Z" if last else "No activity stored.",
             f"Open incidents: {len(incidents)}"]
    lines += [f"• {i['severity'].upper()} {i['id']} ({i['status']}): {i['headline']}" for i in incidents[:5]]
    if len(incidents) > 5:
        lines.append(f"…and {len(incidents) - 5} more (trailwarden incidents --agent {name})")
    card = "\n".join(_inert(line, 400) for line in lines)  # each line inert; the line breaks are ours
    return f"Agent {_inert(name)}", [plain_section(card)]


def _replay_html(store: Store, name: str, inventory: Any, since: str, out: Path) -> int | None:
    """The agent's HTML replay written to ``out`` as `replay --format html` writes it (streamed:
    memory stays flat in the events); its event count, or None for an unknown agent."""
    import tempfile

    from pipeline.core.times import parse_when
    from pipeline.investigate.agents import has_events
    from pipeline.investigate.replay import write_replay
    from pipeline.investigate.replay_views import HTML_AROUND, HTML_LAST, write_html

    if not has_events(store, name) and inventory.agent(name) is None:
        return None
    now = utcnow()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as export, out.open("w", encoding="utf-8") as html:
        replay = write_replay(store, name, inventory, export, since=parse_when(since, now, "--since"), until=now,
                              last=HTML_LAST, around=HTML_AROUND)
        export.seek(0)
        write_html(replay, export, html)
    return int(replay.report["summary"]["events"])


def _inert(value: str, limit: int = 200) -> str:
    from pipeline.service.alerting.text import untrusted

    return untrusted(value, limit)


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


def _handle_button(body: dict[str, Any], client: Any, members: Members, inbox: Path) -> None:
    from pipeline.service.alerting.text import untrusted

    user = body.get("user") or {}
    user_id, user_name = str(user.get("id") or ""), str(user.get("username") or user.get("name") or user.get("id"))
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    action = (body.get("actions") or [{}])[0]
    action_id, incident = str(action.get("action_id") or ""), str(action.get("value") or "")

    def answer(text: str) -> None:
        if channel and user_id:
            client.chat_postEphemeral(channel=channel, user=user_id, text=text)

    if not members.allowed(client, user_id):
        answer(f"Only members of the triage group <!subteam^{members.group}> may triage incidents; nothing was "
               "changed." if members.group.startswith("S") else
               f"Only members of <#{members.group}> may triage incidents; nothing was changed.")
        return
    if action_id == SUPPRESS:
        client.views_open(trigger_id=body.get("trigger_id"), view=suppress_view(incident, channel))
        return
    if action_id not in ACTIONS or not incident.startswith("inc-"):
        answer("That button is not one trailwarden knows; nothing was changed.")
        return
    status, words = ACTIONS[action_id]
    item = Interaction(interaction_key(user_id, action_id, incident, str(action.get("action_ts") or "")), status,
                       incident, user_id, user_name, channel, utcnow().isoformat())
    if put(inbox, item):
        answer(f"Incident {untrusted(incident, 40)} will be {words} by you within one cycle; its message will "
               "show it.")


def suppress_view(incident: str, channel: str | None) -> dict[str, Any]:
    """The Suppress modal: a reason (required) and a scope, for seven days."""
    from pipeline.service.alerting.text import untrusted

    options = [{"text": {"type": "plain_text", "text": text}, "value": value} for value, text in SCOPES.items()]
    return {
        "type": "modal", "callback_id": SUPPRESS, "private_metadata": json.dumps({"incident": incident,
                                                                                  "channel": channel}),
        "title": {"type": "plain_text", "text": "Suppress 7 days"},
        "submit": {"type": "plain_text", "text": "Suppress"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "plain_text", "text": (
                f"New findings like those of incident {untrusted(incident, 40)} will be stored but not alerted "
                f"for {SUPPRESS_DAYS} days.")}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why is this expected?"},
             "element": {"type": "plain_text_input", "action_id": "value", "multiline": True, "max_length": 500}},
            {"type": "input", "block_id": "scope", "label": {"type": "plain_text", "text": "Suppress"},
             "element": {"type": "radio_buttons", "action_id": "value", "options": options,
                         "initial_option": options[0]}},
        ],
    }


def _view_value(view: dict[str, Any], block: str, action: str) -> str:
    value = ((view.get("state") or {}).get("values") or {}).get(block, {}).get(action, {})
    if value.get("type") == "radio_buttons":
        return str((value.get("selected_option") or {}).get("value") or "")
    return str(value.get("value") or "")


def _queue_suppression(body: dict[str, Any], view: dict[str, Any], reason: str, client: Any, members: Members,
                       inbox: Path) -> None:
    user = body.get("user") or {}
    user_id, user_name = str(user.get("id") or ""), str(user.get("username") or user.get("name") or user.get("id"))
    meta = json.loads(view.get("private_metadata") or "{}")
    incident, channel = str(meta.get("incident") or ""), meta.get("channel")
    if not members.allowed(client, user_id):  # checked again: a modal outlives a membership
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, text="Only members of the triage group may "
                                      "suppress; nothing was changed.")
        return
    scope = _view_value(view, "scope", "value")
    scope = scope if scope in SCOPES else "agent_detector"
    item = Interaction(interaction_key(user_id, SUPPRESS, incident, str(view.get("id") or "")), "suppress", incident,
                       user_id, user_name, channel, utcnow().isoformat(), kind="suppress", reason=reason[:500],
                       scope=scope)
    if put(inbox, item) and channel:
        client.chat_postEphemeral(channel=channel, user=user_id, text=(
            f"Findings like those of incident {incident} will be suppressed for {SUPPRESS_DAYS} days "
            f"({SCOPES[scope].lower()}) from the next cycle."))


def start(app: Any, app_token: str, inbox: Path | None = None) -> Any:
    """Connect the app to Slack in Socket Mode, in the background; returns the handler (``close()``
    to stop). An invalid or revoked app token is a :class:`TerminalError` naming SLACK_APP_TOKEN.
    With ``inbox``, the outcome is written beside it for `status` (:func:`read_health`)."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError

    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "error"
        failure = TerminalError(f"Slack refused {APP_TOKEN_ENV} ({error}): triage from Slack is off; set a valid "
                                "app-level token (xapp-, connections:write)")
        if inbox is not None:
            write_health(inbox, "failed", str(failure))
        raise failure from None
    if inbox is not None:
        write_health(inbox, "connected", None)
    return handler


def start_triage(config: Any, database: Path, inventory: Callable[[], Any] | None = None) -> Any:
    """The triage app for this config, connected; None when triage from Slack is not configured
    (no ``slack.triage_group`` or no SLACK_APP_TOKEN). Needs SLACK_BOT_TOKEN too."""
    from pipeline.service.alerting.slack import TOKEN_ENV, token_from_env

    app_token = os.environ.get(APP_TOKEN_ENV, "").strip()
    if config.slack is None or not config.slack.triage_group or not app_token:
        return None
    inbox = inbox_path(database)
    bot_token = token_from_env()
    if not bot_token:
        failure = TerminalError(f"{TOKEN_ENV} is not set: triage from Slack needs the bot token too")
        write_health(inbox, "failed", str(failure))
        raise failure
    app = build_app(bot_token, config.slack.triage_group, inbox, base_url=config.slack.base_url,
                    database=database, inventory=inventory)
    return start(app, app_token, inbox)


HEALTH_FILE = "app.status"  # not *.json: the inbox's interactions are


def write_health(inbox: Path, state: str, error: str | None) -> None:
    """The triage app's state for `status` (the app never opens the store): written whole."""
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / f".{HEALTH_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"state": state, "error": error, "at": utcnow().isoformat()}), encoding="utf-8")
    os.replace(tmp, inbox / HEALTH_FILE)


def read_health(database: Path) -> dict[str, Any] | None:
    """The last state the triage app wrote, with how many presses wait in the inbox; None when
    no app ever ran for this store."""
    inbox = inbox_path(database)
    try:
        health = json.loads((inbox / HEALTH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    health["waiting"] = len(list(inbox.glob("*.json")))
    return health if isinstance(health, dict) else None
