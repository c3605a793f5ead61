"""For responders and owners: `replay`, `least-privilege`, `agents`, `policy simulate`."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from pipeline.cli.app import (
    App,
    _note_if_attribution_stale,
    _note_if_days_unavailable,
    cli,
    common_options,
    format_option,
    pass_app,
    resolve_agent,
)
from pipeline.cli.views.least_privilege import least_privilege_text
from pipeline.core.errors import UsageError
from pipeline.core.output import render, written


@cli.command()
@common_options
@format_option()
@pass_app
def agents(app: App, fmt: str) -> None:
    """The inventory with each agent's last activity, open findings, expiry and review dates, and
    its permission review verdict (`review`: pass / warn / fail; `trailwarden review` says why).

    Unregistered identities seen in the store are listed too, marked `unregistered`. With several
    accounts in the config, each agent's accounts (aliases; `any` without accounts:) and each
    unregistered identity with its home account (ram-user:ops-debug@prod).

    \b
    Example:
      trailwarden agents --format json
    """
    from models.accounts import Accounts
    from pipeline.investigate.agents import agent_rows, joined
    from pipeline.investigate.review import verdicts
    from pipeline.ram.snapshots import load_snapshot

    inventory = app.inventory
    accounts = Accounts(app.config.accounts or [])
    if not app.database.exists():  # no store yet: the inventory alone, every agent never seen
        columns, rows = agent_rows(None, inventory, verdicts(None, inventory, None), accounts)
    else:
        with app.open(read_only=True) as store:
            _note_if_attribution_stale(store, inventory)
            columns, rows = agent_rows(store, inventory, verdicts(store, inventory, load_snapshot(store)), accounts)
    click.echo(render(columns, rows if fmt == "json" else joined(rows, "; " if fmt == "csv" else ", "), fmt))


@cli.command()
@common_options
@click.argument("agent")
@click.option("--since", metavar="T", help="Start of the window (default: 90 days before --until).")
@click.option("--until", metavar="T", help="End of the window (default: now).")
@format_option(("table", "json", "html"))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE instead of stdout.")
@click.option("--unredacted", is_flag=True,
              help="Export secrets in the events (passwords, AccessKey secrets, tokens) as received.")
@pass_app
def replay(app: App, agent: str, since: str | None, until: str | None, fmt: str, output: str | None,
           unredacted: bool) -> None:
    """One agent's history: its timeline with findings, blast radius and what was new.

    AGENT is an inventory name or a raw identity (ram-user:ops-debug, role:Foo); an identity of an
    inventory agent (ram-user:ci-deploy) replays that agent. `json` is the
    complete record for a ticket (every event's raw JSON, and a SHA-256 over the export); `html` is
    one self-contained file with an activity chart, to attach to an incident. Secrets in the
    events are redacted (the export says how many); --unredacted keeps them.

    \b
    Examples:
      trailwarden replay ci-deployer --since 7d
      trailwarden replay ram-user:ops-debug --format html -o ops-debug.html
      trailwarden replay ci-deployer --since 2026-11-20 --until 2026-11-29 --format json -o evidence.json
    """
    from models.accounts import Accounts
    from pipeline.core.times import parse_when, utcnow
    from pipeline.investigate.agents import has_events
    from pipeline.investigate.replay import write_replay
    from pipeline.investigate.replay_views import HTML_AROUND, HTML_LAST, as_text, write_html

    now = utcnow()
    end = parse_when(until, now, "--until") if until else now
    start = parse_when(since, now, "--since") if since else end - timedelta(days=90)
    if start >= end:
        raise UsageError("--since must be before --until", key="--since")
    agent = resolve_agent(app, agent, "replaying")
    with app.open(read_only=True) as store, written(output) as out:
        if not has_events(store, agent) and app.inventory.agent(agent) is None:
            raise UsageError(f"no agent or identity {agent!r} in the store or the inventory", key="AGENT")
        _note_if_attribution_stale(store, app.inventory)
        _note_if_days_unavailable(store, start, end)
        redact = not unredacted
        if fmt == "json":
            replay = write_replay(store, agent, app.inventory, out, since=start, until=end, redact=redact, last=0)
        elif fmt == "html":
            with tempfile.TemporaryFile("w+", encoding="utf-8") as export:
                replay = write_replay(store, agent, app.inventory, export, since=start, until=end, redact=redact,
                                      last=HTML_LAST, around=HTML_AROUND)
                export.seek(0)
                write_html(replay, export, out, accounts=Accounts(app.config.accounts or []))
        else:
            replay = write_replay(store, agent, app.inventory, None, since=start, until=end, redact=redact,
                                  with_raw=False, digest=False)
            out.write(as_text(replay, accounts=Accounts(app.config.accounts or [])) + "\n")
    if output:
        digest = f", sha256 {replay.sha256[:16]}…" if replay.sha256 else ""
        click.echo(f"wrote {output} ({replay.report['summary']['events']:,} events{digest})", err=True)


@cli.command(name="least-privilege")
@common_options
@click.argument("agent")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="The window: the last N days.")
@click.option("--since", metavar="T", help="Start of the window instead (2026-11-01, 30d).")
@format_option()
@pass_app
def least_privilege_command(app: App, agent: str, days: int, since: str | None, fmt: str) -> None:
    """What AGENT is granted against what it used, and a tighter policy covering what it did.

    AGENT is an inventory agent, or one of its identities (ram-user:ci-deploy). Used = called and
    not refused for permission: a call that failed otherwise (Throttling, InvalidParameter) counts.

    \b
    Examples:
      trailwarden least-privilege ci-deployer
      trailwarden least-privilege etl-pipeline --days 30 --format json
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.investigate.least_privilege import least_privilege

    now = utcnow()
    start = parse_when(since, now, "--since") if since else now - timedelta(days=days)
    agent = resolve_agent(app, agent, "comparing")
    with app.open(read_only=True) as store:
        _note_if_attribution_stale(store, app.inventory)
        result = least_privilege(store, app.inventory, agent, since=start)
    click.echo(least_privilege_text(agent, result, fmt))


@cli.group()
def policy() -> None:
    """Work with RAM policies: `trailwarden policy simulate --help`."""


@policy.command()
@common_options
@click.option("--policy", "policy_files", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="A RAM policy document (JSON) to evaluate (repeatable; all are combined).")
@click.option("--agent", help="Use this inventory agent's declared policies.")
@click.option("--action", help="The action, e.g. ecs:StopInstance.")
@click.option("--resource", help="The resource ARN, e.g. acs:ecs:cn-hangzhou:123:instance/i-1.")
@click.option("--context", "contexts", multiple=True, metavar="KEY=VALUE",
              help="A condition key's value, e.g. acs:SourceIp=203.0.113.5 (repeatable).")
@click.option("--batch", type=click.File("r"), metavar="FILE.jsonl",
              help='Evaluate JSON lines {"id", "policies": [...], "request": {"action", "resource", '
                   '"context"}}; prints {"id", "decision"} per line (- for stdin).')
@pass_app
def simulate(app: App, policy_files: tuple[str, ...], agent: str | None, action: str | None,
             resource: str | None, contexts: tuple[str, ...], batch: Any) -> None:
    """Would these policies allow a request? Prints Allow, ExplicitDeny or ImplicitDeny.

    \b
    Examples:
      trailwarden policy simulate --policy config/policies/ci-deployer.json \\
          --action ecs:StopInstance --resource 'acs:ecs:cn-hangzhou:1384926508761234:instance/i-1' \\
          --context acs:SourceIp=203.0.113.9
      trailwarden policy simulate --agent ci-deployer --action ram:CreateUser --resource '*'
      trailwarden policy simulate --batch requests.jsonl
    """
    from pipeline.investigate.simulate import simulate_batch, simulate_one

    if batch is not None:
        if policy_files or agent or action or resource or contexts:
            raise UsageError("--batch takes its policies and requests from the file; drop the other options")
        failures = simulate_batch(batch, click.echo)
        if failures:
            raise UsageError(f"{failures} line(s) of the batch were invalid (see their error field)",
                             path=getattr(batch, "name", None))
        return
    docs = _policy_documents(app, policy_files, agent)
    if not action or not resource:
        raise UsageError("give --action and --resource (or --batch FILE)")
    result = simulate_one(docs, action, resource, contexts)
    click.echo(result.decision.value)
    if result.reason and result.decision.value != "Allow":
        click.echo(result.reason, err=True)


def _policy_documents(app: App, files: tuple[str, ...], agent: str | None) -> list[Any]:
    docs: list[Any] = []
    for name in files:
        try:
            docs.append(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read a policy document: {exc}", path=name) from None
    if agent:
        found = app.inventory.agent(agent)
        if found is None:
            raise UsageError(f"no agent named {agent!r} in the inventory", key="--agent")
        docs.extend(found.policies)
    if not docs:
        raise UsageError("give --policy FILE or --agent NAME")
    return docs
