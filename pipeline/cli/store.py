"""`query`, `status` and `prune`: reading the store, and keeping it in bounds."""

from __future__ import annotations

import json

import click

from pipeline.cli.app import (
    App,
    cli,
    common_options,
    format_option,
    pass_app,
)
from pipeline.cli.views.status import status_text
from pipeline.core.errors import UsageError
from pipeline.core.output import render, to_jsonable
from pipeline.store.runs import recorded_run


@cli.command()
@common_options
@click.argument("sql")
@click.option("--param", "-p", "params", multiple=True, metavar="VALUE",
              help="A value bound to the next `?` in SQL (repeatable); never spliced into the text.")
@format_option()
@pass_app
def query(app: App, sql: str, params: tuple[str, ...], fmt: str) -> None:
    """Run one read-only SQL statement over the store.

    Tables: events (a view: every event, hot and sealed; events_hot holds the recent ones, and
    lake_files, lake_identities, lake_retired the sealed days' Parquet; attribution_keys,
    attribution_identities, attribution_keys_bound, attribution_identities_bound (agents bound to
    accounts), attribution_version the agent mapping), quarantine, ingest_state,
    ingested_files, runs, findings,
    finding_status_changes, suppressions, alerts, baselines, feature_days (the per-day rows baselines
    fit from, in features_<part>_<version>), pipeline_state, schema_migrations;
    incidents (`incidents`), incident_messages, slack_interactions;
    RAM (`ram sync`): ram_snapshots, ram_principals, ram_memberships, ram_attachments,
    ram_policies, ram_access_keys, ram_sync_errors, ram_documents; `contain`: containments,
    containment_steps; role sessions: role_sessions, session_links; `accounts sync`: account_syncs,
    directory_accounts. Times are UTC. One SELECT (or PRAGMA, CALL, PIVOT, EXPLAIN); no file but the store and the
    retention archive's Parquet (read_parquet('<retention.archive_dir>/*/*.parquet')).

    \b
    Examples:
      trailwarden query "SELECT agent, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC"
      trailwarden query "SELECT * FROM events WHERE agent = ?" -p staging-deploy --format json
    """
    from pipeline.store.query import run_query

    with app.open(read_only=True) as store:
        columns, rows = run_query(store, sql, params)
    click.echo(render(columns, rows, fmt))


@cli.command()
@common_options
@format_option()
@pass_app
def status(app: App, fmt: str) -> None:
    """Events, sources' cursors and lag, quarantine, and the last runs; with the config's
    accounts:, the last event per account and the accounts whose events stopped (a gap).

    `--format csv` is the per-partition table of the sources (one row per SLS shard, LookupEvents
    region or files source), for a monitoring script; `json` holds everything.

    \b
    Example:
      trailwarden status --format json
    """
    from pipeline.service.alerting.outbox import alert_target
    from pipeline.service.status import collect_status

    target = alert_target(app.config)
    with app.open(read_only=True) as store:
        info = collect_status(store, target.destination, target.min_severity, app.config)
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(info), indent=2, allow_nan=False))
        return
    if fmt == "csv":
        columns = ["source", "partition", "cursor_time", "watermark", "lag_seconds", "events",
                   "events_last_hour", "updated_at", "last_error", "last_error_at"]
        click.echo(render(columns, [[s.get(c) for c in columns] for s in info["sources"]], "csv"))
        return
    click.echo(status_text(info))


@cli.command()
@common_options
@format_option()
@pass_app
def prune(app: App, fmt: str) -> None:
    """Apply the retention policy now (`retention:` in the config; also run nightly by `serve`).

    Events older than `retention.events` are archived to Parquet under `retention.archive_dir`
    (when set) and deleted; the raw JSON of events older than `retention.raw_json` is dropped.
    Events that an open finding references are kept.

    \b
    Example:
      trailwarden prune --format json
    """
    from pipeline.store.retention import prune as apply_retention

    if app.config.retention is None:
        raise UsageError("no `retention:` in the config, e.g. retention: {events: 400d, raw_json: 90d, "
                         "archive_dir: data/archive}", path=app.config_path, key="retention")
    with app.open() as store, recorded_run(store, "prune") as counts:
        report = apply_retention(store, app.config.retention)
        counts.update(vars(report))
    if fmt == "json":
        click.echo(json.dumps(vars(report), indent=2))
    elif fmt == "csv":
        click.echo(render(list(vars(report)), [list(vars(report).values())], "csv"))
    else:
        click.echo(f"archived {report.archived:,}, deleted {report.deleted:,}, raw JSON dropped for "
                   f"{report.raw_dropped:,}; kept {report.kept_as_evidence:,} old events an open finding cites")
