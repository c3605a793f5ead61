"""`detect`, `backtest` and `train`: scoring, what-if over history, and what is learned."""

from __future__ import annotations

import json

import click

from pipeline.cli.app import (
    App,
    cli,
    common_options,
    format_option,
    pass_app,
    reattribute_option,
)
from pipeline.cli.views.detect import detect_text
from pipeline.core.errors import TerminalError, UsageError
from pipeline.core.output import json_text, render, to_jsonable
from pipeline.store.runs import recorded_run


@cli.command()
@common_options
@click.option("--since", metavar="T", help="Start of the window (2026-11-01, 2026-11-01T08:00:00Z, or 7d ago).")
@click.option("--until", metavar="T", help="End of the window, exclusive (default: now).")
@format_option()
@reattribute_option
@pass_app
def detect(app: App, since: str | None, until: str | None, fmt: str, reattribute: bool) -> None:
    """Score events in [since, until) with every detector and store the findings.

    Only events before the window are used as history, so a past window scores the same whenever
    it runs. Without flags, scores everything ingested since the last detect. Re-running over the
    same window adds no duplicate findings; a detector that fails is reported and the others run.

    \b
    Examples:
      trailwarden detect
      trailwarden detect --since 7d
      trailwarden detect --since 2026-11-01 --until 2026-11-08 --format json
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection.detect import run_detect

    now = utcnow()
    start = parse_when(since, now, "--since") if since else None
    end = parse_when(until, now, "--until") if until else None
    if start and end and start >= end:
        raise UsageError("--since must be before --until", key="--since")
    app.validate_for_writing()
    inventory = app.inventory
    with app.open() as store, recorded_run(store, "detect") as counts:
        changed = app.reattribute(store, reattribute)
        if changed:
            counts["reattributed"] = changed
        report = run_detect(store, app.config, inventory, since=start, until=end,
                            config_path=app.config_path, run_id=None)
        counts.update(report.as_dict())
        if report.failed:
            counts["failed_detectors"] = report.failed
        if fmt == "json":
            click.echo(json.dumps(to_jsonable(report.as_dict()), indent=2, allow_nan=False))
        elif fmt == "csv":
            click.echo(render(["detector", "findings", "seconds", "error"],
                              [[name, st["findings"], round(st["seconds"], 3), st["error"]]
                               for name, st in report.detectors.items()], "csv"))
        else:
            click.echo(detect_text(report))
        if report.failed:
            raise TerminalError(f"detector(s) failed: {', '.join(report.failed)}; the others' findings "
                                "were stored (see `trailwarden status`)")


@cli.command()
@common_options
@click.option("--since", metavar="T", required=True,
              help="Start (2026-11-01, 2026-11-01T08:00:00Z, or 30d ago); periods start at its UTC midnight.")
@click.option("--until", metavar="T", help="End of the window, exclusive (default: now).")
@click.option("--step", default="1d", show_default=True, metavar="DURATION",
              help="Period length: 1d, 12h, 7d (at least 1h); each period gets its own baselines.")
@click.option("--detector", "detector_ids", multiple=True, metavar="ID",
              help="Only this detector (repeatable; default: all).")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True,
              help="Agents shown in the per-agent table.")
@format_option()
@pass_app
def backtest(app: App, since: str, until: str | None, step: str, detector_ids: tuple[str, ...], top: int,
             fmt: str) -> None:
    """What each detector would have raised, day by day, over stored history. Writes nothing.

    Each day is scored as a `detect` on that day would have scored it: with baselines fitted on the
    28 days before it, every detector with the config's `detectors:` overrides, and findings merged
    within each detector's dedup window (one that continues across midnight counts once, on the
    day it was first raised). To tune a threshold, run it again with a copy of the config.
    No findings, baselines, runs or state are stored. JSON: {window, step, detectors, days: [{day,
    counts, by_agent, ...}], totals, findings, notes}; CSV: one row per (day, detector, agent, count).

    \b
    Examples:
      trailwarden backtest --since 30d
      trailwarden backtest --since 2026-11-01 --until 2026-12-01 --detector failure_storm
      trailwarden --config tuned.yaml backtest --since 30d --format json > tuned.json
      trailwarden backtest --since 7d --step 12h --format csv
    """
    from pipeline.core.times import parse_step, parse_when, utcnow
    from pipeline.detection.backtest import as_text, run_backtest

    now = utcnow()
    start = parse_when(since, now, "--since")
    end = parse_when(until, now, "--until") if until else now
    period = parse_step(step)
    if start >= end:
        raise UsageError("must be before --until", key="--since")
    with app.open(read_only=True) as store:
        report = run_backtest(store, app.config, app.inventory, since=start, until=end, step=period,
                              only=detector_ids, config_path=app.config_path)
    if fmt == "json":
        click.echo(json_text(to_jsonable(report.as_dict()), indent=2))
    elif fmt == "csv":
        click.echo(render(["day", "detector", "agent", "count"], report.csv_rows(), "csv"))
    else:
        click.echo(as_text(report, top))
    failed = sorted({d for p in report.periods for d in p.errors})
    if failed:
        click.echo(f"trailwarden: warning: detector(s) failed on some days: {', '.join(failed)} "
                   "(see the notes); their counts there are missing", err=True)


@cli.command()
@common_options
@click.option("--until", metavar="T", help="Fit for T's UTC day: on the 28 days before its midnight (default: today).")
@format_option()
@pass_app
def train(app: App, until: str | None, fmt: str) -> None:
    """Refit every agent's baseline on the 28 days before today's UTC midnight (or --until's) and
    store it: the baselines `detect` scores that day's windows against.

    `detect` fits what it needs by itself (on the days before its window, again whenever events
    arrive late in that history); `train` refits now and shows what was learned: active days,
    failure rates, the hours each agent keeps.

    \b
    Example:
      trailwarden train --format json
    """
    from detectors.failure_storm import FailureProfile
    from detectors.odd_hours import HourProfile
    from models.baselines import MIN_ACTIVE_DAYS
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection import learning as baselines

    end = parse_when(until, utcnow(), "--until") if until else utcnow()
    with app.open() as store, recorded_run(store, "train") as counts:
        fitted = baselines.refit(store, end, app.config.timezone)
        counts["agents"] = len(fitted)
    columns = ["agent", "active_days", "learned", "calls", "failure_rate", "max_failures_5m", "max_calls_5m",
               "usual_hours"]
    rows = []
    for b in sorted(fitted.values(), key=lambda b: b.agent):
        failing, hours = b.part(FailureProfile) or FailureProfile(), b.part(HourProfile) or HourProfile()
        rows.append([b.agent, b.active_days, b.learned, b.calls, round(b.failure_rate, 4), failing.max_failures_5m,
                     failing.max_calls_5m, hours.usual_hours()])
    click.echo(render(columns, rows, fmt))
    new = sorted(b.agent for b in fitted.values() if not b.learned)
    if new:  # said on stderr beside machine-readable output, so the JSON/CSV stays parseable
        click.echo(f"{len(new)} agent{'s have' if len(new) > 1 else ' has'} under {MIN_ACTIVE_DAYS} active days "
                   f"({', '.join(new[:10])}{', ...' if len(new) > 10 else ''}): not learned yet, so the "
                   "learned-behaviour detectors (odd_hours by its rhythm, new_source, volume, novelty, "
                   "enumeration, anomalous_behaviour) raise nothing above low about them",
                   err=fmt != "table")
