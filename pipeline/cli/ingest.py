"""`trailwarden ingest`: files and configured sources into the store."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from models.inventory import Attributor
from pipeline.cli.app import (
    App,
    cli,
    common_options,
    format_option,
    pass_app,
    reattribute_option,
)
from pipeline.cli.views.ingest import ingest_csv, ingest_line
from pipeline.core.errors import TerminalError, UsageError
from pipeline.core.output import to_jsonable
from pipeline.store.runs import recorded_run


@cli.command()
@common_options
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="Ingest only this configured source (repeatable).")
@click.option("--file", "paths", multiple=True, metavar="PATH",
              help="A file or directory of ActionTrail events (repeatable): JSON array, single "
                   "event, NDJSON, LookupEvents body, .gz of any, OSS delivery folders.")
@click.option("--since", metavar="T", help="lookup_events sources: backfill from T (e.g. 30d, at most 90d).")
@format_option()
@reattribute_option
@pass_app
def ingest(app: App, sources: tuple[str, ...], paths: tuple[str, ...], since: str | None, fmt: str,
           reattribute: bool) -> None:
    """Pull from the configured sources, or ingest files, into the store, once.

    Re-running is safe: files already ingested are skipped by content hash, SLS and LookupEvents
    resume from the cursor committed with the last events, and events already stored are
    recognized by eventId. Input that cannot be parsed is quarantined with the reason (see
    `trailwarden query "SELECT * FROM quarantine"`); the rest goes on. A source that fails is
    reported and the others still run (exit 1).

    \b
    Examples:
      trailwarden ingest --file ../shared/datasets/real-attacks/
      trailwarden ingest --file oss-dump/AliyunLogs/Actiontrail/ --format json
      trailwarden ingest --source prod-trail
      trailwarden ingest --source history --since 30d     # LookupEvents backfill
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.ingest.run import ingest_sources
    from pipeline.store.sessions import link_sessions

    targets = _ingest_targets(app, sources, paths)
    backfill = parse_when(since, utcnow(), "--since") if since else None
    if backfill is not None:
        _check_backfill(targets, backfill)
    app.validate_for_writing()
    attribute = Attributor(app.inventory)
    started = time.monotonic()
    with app.open() as store, recorded_run(store, "ingest") as counts:
        changed = app.reattribute(store, reattribute)
        if changed:
            counts["reattributed"] = changed
        outcomes = ingest_sources(store, targets, attribute, since=backfill, progress=_progress_bar)
        for outcome in outcomes:
            counts[outcome.name] = outcome.as_dict()
        counts["new"] = sum(o.report.new for o in outcomes if o.report)
        counts["role_sessions"] = vars(link_sessions(store))
        elapsed = time.monotonic() - started
        if fmt == "json":
            click.echo(json.dumps(to_jsonable({"seconds": round(elapsed, 3),
                                               "sources": {o.name: o.as_dict() for o in outcomes}}), indent=2,
                                  allow_nan=False))
        elif fmt == "csv":
            click.echo(ingest_csv(outcomes, elapsed))
        else:
            for outcome in outcomes:
                if outcome.report:
                    click.echo(ingest_line(outcome.name, outcome.as_dict(), elapsed))
        failed = [o for o in outcomes if o.error]
        if failed:  # raised inside: the run is recorded as failed, with this error
            raise TerminalError("; ".join(f"source {o.name!r}: {o.error}" for o in failed))


def _ingest_targets(app: App, sources: tuple[str, ...], paths: tuple[str, ...]) -> list[tuple[str, Any]]:
    from pipeline.ingest.run import ingest_targets

    targets = ingest_targets(app.config, sources, paths)
    if not targets:
        raise UsageError("nothing to ingest: pass --file PATH or configure `sources` in the config")
    return targets


def _check_backfill(targets: list[tuple[str, Any]], backfill: datetime) -> None:
    """``--since`` is a LookupEvents backfill: refuse it where nothing would use it, and say when
    it reaches past the 90 days the API keeps."""
    from pipeline.core.config import LookupEventsSource
    from pipeline.core.times import utcnow
    from pipeline.ingest.sources.lookup_events import RETENTION

    lookups = [src.name for _, src in targets if isinstance(src, LookupEventsSource)]
    if not lookups:
        others = ", ".join(name for name, _ in targets)
        raise UsageError(f"--since backfills lookup_events sources only; nothing selected uses it ({others})",
                         key="--since")
    oldest = utcnow() - RETENTION
    if backfill < oldest:
        click.echo(f"note: LookupEvents keeps 90 days: backfilling {', '.join(lookups)} from "
                   f"{oldest:%Y-%m-%d %H:%M}Z, not {backfill:%Y-%m-%d}", err=True)


@contextmanager
def _progress_bar(_name: str, paths: list[str]) -> Iterator[Callable[[int], None] | None]:
    """A byte-based progress bar on a terminal; nothing when stderr is not one."""
    if not sys.stderr.isatty():
        yield None
        return
    from pipeline.core.output import Progress
    from pipeline.ingest.sources.files import find_files

    total = sum(p.stat().st_size for p in find_files(paths))
    bar = Progress(total, lambda text: click.echo(text, file=sys.stderr, nl=False))
    try:
        yield bar.update
    except BaseException:
        click.echo("", err=True)  # the error's line starts on a line of its own
        raise
    bar.finish()
