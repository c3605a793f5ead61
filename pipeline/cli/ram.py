"""What RAM grants: `ram sync` (read it into a snapshot), `review` (every agent against it),
`contain` (revoke a compromised agent, evidence first)."""

from __future__ import annotations

import json

import click

from pipeline.cli.app import App, cli, common_options, format_option, pass_app
from pipeline.core.output import render, to_jsonable
from pipeline.store.runs import recorded_run


@cli.group()
def ram() -> None:
    """Read RAM: `trailwarden ram sync --help`."""


@ram.command()
@common_options
@format_option()
@pass_app
def sync(app: App, fmt: str) -> None:
    """Read users, groups, roles, attached policies and AccessKeys from RAM into a dated snapshot.

    Credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET (/ _SECURITY_TOKEN); the
    endpoint from `ram.endpoint` (default ram.aliyuncs.com and ims.aliyuncs.com). Earlier
    snapshots are kept; a policy document already stored is not asked for again. A call that
    fails for one principal is recorded and the rest is read (exit 1: `status` lists them); an
    unreachable endpoint or refused credentials store nothing (exit 1).

    \b
    Examples:
      trailwarden ram sync
      trailwarden ram sync --format json
    """
    from pipeline.ram.sync import ram_sync

    with app.open() as store, recorded_run(store, "ram sync", timed=True) as counts:
        report = ram_sync(store, app.config)
        counts.update({k: v for k, v in report.as_dict().items() if k != "errors"})
        counts["errors"] = len(report.errors)
        if report.error:
            counts["error"] = report.error
    data = to_jsonable(report.as_dict())
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, allow_nan=False))
    elif fmt == "csv":
        click.echo(render(["principal", "call", "code", "message"],
                          [[e["principal"], e["call"], e["code"], e["message"]] for e in report.errors], "csv"))
    else:
        click.echo(_sync_text(data))
    if report.error:
        from pipeline.core.errors import TrailwardenError

        raise TrailwardenError(report.error)


def _sync_text(r: dict[str, object]) -> str:
    lines = [f"ram sync: snapshot {r['snapshot']} at {r['taken_at']}: {r['users']:,} users, {r['groups']:,} groups, "
             f"{r['roles']:,} roles, {r['policies']:,} policies ({r['documents_reused']:,} documents already stored), "
             f"{r['access_keys']:,} AccessKeys; {r['calls']:,} calls in {r['seconds']}s "
             f"({r['calls_per_second']} calls/s, {r['throttled']} throttled)"]
    errors = r["errors"]
    assert isinstance(errors, list)
    if errors:
        lines.append(render(["principal", "call", "code", "message"],
                            [[e["principal"], e["call"], e["code"], e["message"]] for e in errors], "table"))
    return "\n".join(lines)


@cli.command()
@common_options
@click.argument("agents", nargs=-1, metavar="[AGENT]...")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="The usage window: the last N days of events.")
@format_option(("table", "json", "csv", "markdown"))
@pass_app
def review(app: App, agents: tuple[str, ...], days: int, fmt: str) -> None:
    """The permission review: each agent's declared scope against what RAM grants it (the last
    `ram sync`) and what it used, with a verdict (pass / warn / fail) and its reasons; then the
    RAM users and roles no agent declares.

    Fails: grants beyond the declared scope (drift), a policy that cannot be read, console access
    without MFA, an expired agent RAM still grants. Warns: declared but not granted, unused
    grants, over-scoping, old, idle or extra AccessKeys, a long-lived key used by automation,
    no owner, review_by passed. `markdown` is a document to paste into a ticket.

    \b
    Examples:
      trailwarden review
      trailwarden review ci-deployer vendor-acme --days 30
      trailwarden review --format markdown > review.md
    """
    from pipeline.cli.views.review import review_csv, review_markdown, review_table
    from pipeline.core.errors import UsageError
    from pipeline.investigate.review import review as run_review
    from pipeline.ram.snapshots import load_snapshot

    inventory = app.inventory
    unknown = [a for a in agents if inventory.agent(a) is None]
    if unknown:
        raise UsageError(f"not an inventory agent: {', '.join(unknown)} (known: "
                         f"{', '.join(a.name for a in inventory.agents) or 'none'})", key="AGENT")
    chosen = list(dict.fromkeys(agents)) or None
    if not app.database.exists():  # no store yet: the inventory alone
        result = run_review(None, inventory, None, agents=chosen, days=days)
    else:
        with app.open(read_only=True) as store:
            result = run_review(store, inventory, load_snapshot(store), agents=chosen, days=days)
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(result), indent=2, allow_nan=False))
    elif fmt == "csv":
        click.echo(review_csv(result))
    elif fmt == "markdown":
        click.echo(review_markdown(result))
    else:
        click.echo(review_table(result))
