"""The alert step, once for `alert`, `run` and `serve`: the destination the config names, the
sender that reaches it, what it is owed, and its delivery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.inventory import Inventory
from pipeline.core.config import Config
from pipeline.core.times import pause
from pipeline.service.alerting.outbox import (
    AlertReport,
    alert_target,
    deliver,
    enqueue,
    owed_count,
    style_of,
)
from pipeline.service.alerting.slack import (
    ConsoleSender,
    SlackSender,
    missing_token,
    token_from_env,
)
from pipeline.store.store import Store


def sender_for(config: Config, echo: Callable[[str], None]) -> Any:
    """Slack when ``slack:`` is configured (None without its token: the alerts then wait for Slack,
    never printed instead), else the console."""
    if config.slack is None:
        return ConsoleSender(echo)
    token = token_from_env()
    return SlackSender(token, config.slack.channel, config.slack.base_url) if token else None


def alert_once(store: Store, config: Config, inventory: Inventory, echo: Callable[[str], None], *,
               sleep: Callable[[float], None] = pause) -> AlertReport:
    """Apply the triage pressed in Slack since the last cycle, enqueue what the config's
    destination is owed and deliver it. Without a Slack token the
    report carries the error (and what stays pending) instead; a sender's error propagates (after
    the rows involved are put back to pending)."""
    from pipeline.detection.incidents import assign_incidents
    from pipeline.service.slack_app import drain_inbox, inbox_path

    target = alert_target(config)
    with store.transaction() as con:  # findings stored before incidents existed get theirs
        assign_incidents(con, config.tz)
    if store.path != ":memory:":  # triage pressed in Slack since the last cycle (pipeline/service/slack_app.py)
        drain_inbox(store, inbox_path(Path(store.path)))
    enqueued = enqueue(store, target.destination, target.min_severity)
    sender = sender_for(config, echo)
    if sender is None:
        pending = owed_count(store, target.destination, target.min_severity)
        return AlertReport(enqueued=enqueued, pending=pending, error=str(missing_token(target.destination, pending)))
    report = deliver(store, sender, inventory, sleep=sleep, style=style_of(config))
    report.enqueued = enqueued
    return report
