"""`trailwarden slack`: triage from Slack on its own (``pipeline/service/slack_app.py``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from pipeline.cli.app import App, _require_config_file, cli, common_options, pass_app
from pipeline.core.errors import TerminalError, UsageError


@cli.command(name="slack")
@common_options
@pass_app
def slack_command(app: App) -> None:
    """Answer the triage buttons of the incident messages (Socket Mode; no public endpoint).

    Needs `slack.triage_group` in the config (who may triage) and SLACK_APP_TOKEN (an app-level
    token, connections:write) beside SLACK_BOT_TOKEN. A press is acknowledged at once and applied
    by the next `alert`, `run` or `serve` cycle; `serve` runs this itself when the app token is
    set. Runs until SIGTERM or SIGINT.

    \b
    Example:
      SLACK_APP_TOKEN=xapp-... SLACK_BOT_TOKEN=xoxb-... trailwarden slack
    """
    from pipeline.service.slack_app import APP_TOKEN_ENV, start_triage

    _require_config_file(app, "slack")
    slack = app.config.slack
    if slack is None or not slack.triage_group:
        raise UsageError("`trailwarden slack` needs `slack.triage_group` (who may triage: a user-group id S… or "
                         "channel id C…)", path=str(app.config_file), key="slack.triage_group")
    handler = start_triage(app.config, app.database, lambda: app.inventory)
    if handler is None:
        raise TerminalError(f"{APP_TOKEN_ENV} is not set: set the app-level token (xapp-, connections:write)")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo(f"Answering triage from Slack for {slack.channel}; presses are applied by the next cycle.")
    try:
        stop.wait()
    finally:
        handler.close()
