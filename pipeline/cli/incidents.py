"""`trailwarden incidents`: findings grouped into incidents (``pipeline.detection.incidents``)."""

from __future__ import annotations

import click

from pipeline.cli.app import App, check_filters, cli, common_options, format_option, pass_app
from pipeline.cli.views.incidents import incident_text, incidents_text

_STATES = ["open", "acknowledged", "resolved", "false_positive", "suppressed", "all"]


@cli.group(invoke_without_command=True)
@common_options
@click.option("--status", type=click.Choice(_STATES), default="all", show_default=True,
              help="Only incidents in this state.")
@click.option("--agent", help="Only this agent (inventory name or raw identity).")
@click.option("--since", metavar="T", help="Only incidents seen since T (2026-11-01 or 7d).")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@format_option()
@click.pass_context
def incidents(ctx: click.Context, status: str, agent: str | None, since: str | None, limit: int | None,
              fmt: str) -> None:
    """List incidents: the findings of one agent that overlap or follow each other within an
    hour, with one severity (the highest) and a headline of what happened. Most severe first.

    JSON output is an array of objects with id, agent, severity, status, first_seen, last_seen,
    headline, summary (acts, where from, when), finding_count, event_count, detectors,
    status_by, status_at and finding_ids.

    \b
    Examples:
      trailwarden incidents
      trailwarden incidents --status open --format json
      trailwarden incidents show inc-3df22d5f1e
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection.incidents import list_incidents

    app = ctx.ensure_object(App)
    when = parse_when(since, utcnow(), "--since") if since else None
    with app.open(read_only=True) as store:
        check_filters(app, store, agent=agent)
        rows = list_incidents(store, status=None if status == "all" else status, agent=agent, since=when,
                              limit=limit)
    click.echo(incidents_text(rows, fmt))


@incidents.command("show")
@common_options
@click.argument("incident_id", metavar="ID")
@format_option(("table", "json"))
@pass_app
def show(app: App, incident_id: str, fmt: str) -> None:
    """One incident with its findings (ids may be shortened to 6 characters, `inc-` optional).

    \b
    Example:
      trailwarden incidents show inc-3df22d5f1e --format json
    """
    from pipeline.detection.findings import list_findings
    from pipeline.detection.incidents import get_incident, resolve_incident_id

    with app.open(read_only=True) as store:
        full = resolve_incident_id(store, incident_id)
        incident = get_incident(store, full) or {}
        incident["findings"] = [f for fid in incident.get("finding_ids", [])
                                for f in list_findings(store, finding_id=fid)]
    click.echo(incident_text(incident, fmt))
