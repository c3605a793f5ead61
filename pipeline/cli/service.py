"""`alert`, `run` and `serve`: the unattended cycle and its Slack delivery."""

from __future__ import annotations

import json

import click

from models.inventory import load_inventory
from pipeline.cli.app import (
    App,
    _require_config_file,
    cli,
    common_options,
    format_option,
    pass_app,
    reattribute_option,
)
from pipeline.cli.views.alerts import preview_text
from pipeline.core.errors import TerminalError
from pipeline.core.inert import one_line
from pipeline.core.output import to_jsonable
from pipeline.store.runs import recorded_run


@cli.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Show what would be posted; post and record nothing.")
@format_option(("table", "json"))
@pass_app
def alert(app: App, dry_run: bool, fmt: str) -> None:
    """Deliver pending findings to Slack (or print them when no `slack:` is configured).

    Every open finding at or above `slack.min_severity` is posted once: an agent's new findings
    in one message, later growth of a finding as a reply in its thread. Re-running, or running
    after a crash, never posts twice; when Slack is down or misconfigured, or SLACK_BOT_TOKEN is
    not set, the run fails and the findings stay pending for Slack, to go out on the next
    successful run. `--dry-run` shows every message a run would post (JSON: text and blocks,
    with their finding ids) and records nothing.

    \b
    Examples:
      trailwarden alert --dry-run
      SLACK_BOT_TOKEN=xoxb-... trailwarden alert
    """
    from pipeline.service.alerting.outbox import alert_target, preview, style_of
    from pipeline.service.alerting.slack import token_from_env
    from pipeline.service.alerting.step import alert_once

    target = alert_target(app.config)
    inventory = app.inventory
    if dry_run:
        if target.slack and not token_from_env():
            click.echo(f"trailwarden: note: {TOKEN_NOTE}", err=True)
        with app.open(read_only=True) as store:
            report = preview(store, target.destination, target.min_severity, inventory, style=style_of(app.config))
        click.echo(preview_text(report.previews, target.destination, fmt))
        return
    with app.open() as store, recorded_run(store, "alert") as counts:
        report = alert_once(store, app.config, inventory, click.echo)
        counts["enqueued"] = report.enqueued
        if report.error:  # never the console instead: Slack is owed these
            raise TerminalError(report.error)
        counts.update(report.as_dict())
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(report.as_dict()), indent=2, allow_nan=False))
    elif target.slack:
        click.echo(f"Posted {report.messages_sent} alert message(s) for {report.alerts_sent} finding(s) and "
                   f"{report.updates_sent} thread update(s) to {target.destination}"
                   + (f"; {report.recovered} found already posted" if report.recovered else "")
                   + (f"; {report.pending} still pending" if report.pending else "") + ".")


TOKEN_NOTE = "SLACK_BOT_TOKEN is not set: `trailwarden alert` fails (and the alerts wait) until it is"


@cli.command(name="run")
@common_options
@reattribute_option
@pass_app
def run_command(app: App, reattribute: bool) -> None:
    """One full cycle: ingest every configured source, detect what is new, alert.

    A failing source or step is recorded and the rest still runs; the exit code is 1 and one line
    names the failed step(s). The snapshot analysts read is refreshed at the end. It needs a
    config file (an unattended job started in the wrong directory must not run on defaults).

    \b
    Example:
      trailwarden --config /etc/trailwarden/trailwarden.yaml run && trailwarden status
    """
    from pipeline.service.cycle import run_cycle

    _require_config_file(app, "run")
    app.validate_for_writing()
    result = run_cycle(app.config, app.inventory, app.database, config_path=app.config_path, echo=click.echo,
                       reattribute=reattribute, inventory_source=app.inventory_source)
    for step in result.steps:
        state = "ok" if step.ok else f"FAILED: {one_line(step.error)}"
        if step.ok and step.counts.get("note"):
            state += f" ({one_line(str(step.counts['note']))})"
        click.echo(f"{step.name:<7} {step.seconds:6.2f}s  {state}")
    if not result.ok:
        raise TerminalError("cycle step(s) failed: " + "; ".join(
            f"{s.name}: {s.error}" for s in result.steps if not s.ok))


@cli.command()
@common_options
@reattribute_option
@pass_app
def serve(app: App, reattribute: bool) -> None:
    """Run the cycle every `schedule.ingest_every` until SIGTERM or SIGINT (then exit 0).

    Cycles never overlap or pile up; a failed cycle is logged and recorded and the service keeps
    going; a step failing three cycles running is reported (and posted to Slack when configured).
    Baselines are refitted nightly, and the retention policy applied. While it runs, `query`,
    `findings` and notebooks read the snapshot it publishes after each cycle when the store is busy.

    \b
    Example:
      trailwarden --log-format json serve
    """
    from pipeline.service.cycle import Service

    _require_config_file(app, "serve")
    app.validate_for_writing()  # exit 2 before starting if the config or the inventory is invalid
    Service(app.config, lambda: load_inventory(app.config.inventory, app.config.accounts), app.database,
            config_path=app.config_path, echo=click.echo, reattribute=reattribute,
            inventory_source=app.inventory_source).start()
