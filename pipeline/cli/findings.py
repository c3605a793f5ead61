"""`trailwarden findings`: the listing (triage subcommands live in pipeline.cli.triage)."""

from __future__ import annotations

import click

from models.accounts import Accounts
from pipeline.cli.app import (
    App,
    check_filters,
    cli,
    common_options,
    format_option,
)
from pipeline.core.errors import UsageError
from pipeline.core.output import render


@cli.group(invoke_without_command=True)
@common_options
@click.option("--agent", help="Only this agent (inventory name or raw identity).")
@click.option("--detector", help="Only this detector id.")
@click.option("--status", type=click.Choice(["open", "acknowledged", "resolved", "false_positive", "suppressed", "all"]),
              default="open", show_default=True, help="Only findings in this state (`all` for every one).")
@click.option("--since", metavar="T", help="Only findings seen since T (2026-11-01 or 7d).")
@click.option("--min-severity", type=click.Choice(["low", "medium", "high", "critical"]), help="Only this severe or worse.")
@click.option("--limit", type=click.IntRange(1), help="At most this many, newest first.")
@click.option("--account", metavar="ALIAS|ID",
              help="Only findings whose events happened in this account (an alias of the config's accounts:, or an id).")
@format_option()
@click.pass_context
def findings(ctx: click.Context, agent: str | None, detector: str | None, status: str, since: str | None,
             min_severity: str | None, limit: int | None, account: str | None, fmt: str) -> None:
    """List findings, newest first (open ones unless --status says otherwise); triage them.

    JSON output is an array of objects with id, detector, agent, severity, score, first_seen,
    last_seen, summary, event_ids, event_count, evidence, status, incident_id, and for findings on
    events of role sessions origin_agent, origin_account and chain (who started the chain of role
    assumptions, its home account, and the roles from it to the acting one; else null); account
    (where most of its events happened: recipientAccountId, else the caller's account) and
    home_account (the callers' account), each by its alias when the config's accounts: names it.
    With several accounts configured, a raw identity is shown with its home account
    (ram-user:ops-debug@prod) and the table has an account column.

    \b
    Examples:
      trailwarden findings
      trailwarden findings --agent ci-deployer --min-severity high
      trailwarden findings --detector out_of_scope --since 7d --format json
      trailwarden findings --account prod
      trailwarden findings ack 3df22d5f1e --reason "looking into it"
      trailwarden findings stats --since 30d
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.cli.views.findings import labelled
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection.findings import list_findings

    app = ctx.ensure_object(App)
    when = parse_when(since, utcnow(), "--since") if since else None
    accounts = Accounts(app.config.accounts or [])
    account_id = _account(accounts, account)
    agent, home = _identity_at_home(accounts, agent)
    with app.open(read_only=True) as store:
        check_filters(app, store, agent=agent, detector=detector)
        rows = list_findings(store, agent=agent, detector=detector, status=None if status == "all" else status,
                             since=when, min_severity=min_severity, limit=limit, account=account_id,
                             home_account=home)
    for r in rows:
        labelled(r, accounts, registered={a.name for a in app.inventory.agents})
    if fmt == "table":
        cols = ["id", "severity", "status", "detector", "agent", *(["account"] if accounts.several else []),
                "last_seen", "event_count", "summary"]
        for r in rows:  # a finding on a role session says whose session it was
            if r.get("origin_agent"):
                r["agent"] = f"{r['agent']} (via {r['origin_agent']})"
        click.echo(render(cols, [[r[c] for c in cols] for r in rows], "table"))
        return
    cols = list(rows[0]) if rows else ["id", "detector", "agent", "severity", "score", "first_seen",
                                       "last_seen", "summary", "event_ids", "event_count", "evidence", "status"]
    click.echo(render(cols, [[r[c] for c in cols] for r in rows], fmt))


def _identity_at_home(accounts: Accounts, agent: str | None) -> tuple[str | None, str | None]:
    """``--agent ram-user:ops-debug@prod`` (a raw identity as the views show it with several
    accounts) -> the identity and its home account id; any other name as given."""
    base, at, where = (agent or "").rpartition("@")
    home = accounts.resolve(where) if at and ":" in base and accounts.several else None
    return (base, home) if home else (agent, None)


def _account(accounts: Accounts, name: str | None) -> str | None:
    """--account's id: an alias of the config's accounts:, or an account id; else exit 2."""
    if name is None:
        return None
    resolved = accounts.resolve(name)
    if resolved is None:
        defined = ", ".join(accounts.aliases) or "none: the config has no accounts:"
        raise UsageError(f"{name!r} is neither an account id nor an alias the config defines (aliases: {defined})",
                         key="--account")
    return resolved

