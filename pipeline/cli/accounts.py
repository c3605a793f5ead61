"""The organisation's accounts: `accounts` (or `accounts list`) and `accounts sync` (the
Resource Directory)."""

from __future__ import annotations

import click

from pipeline.cli.app import App, cli, common_options, format_option, pass_app
from pipeline.core.inert import one_line
from pipeline.core.output import json_text, render, to_jsonable
from pipeline.store.runs import recorded_run

FORMATS = ("table", "json")


@cli.group(invoke_without_command=True)
@common_options
@format_option(FORMATS)
@click.pass_context
def accounts(ctx: click.Context, fmt: str) -> None:
    """The configured accounts: alias, id, whether the last `accounts sync` saw them, their display
    name, the last event per account in the store and its events in the store's last 30 days (an
    account whose events stopped is a gap). `accounts sync --help` reads the Resource Directory.

    \b
    Examples:
      trailwarden accounts
      trailwarden accounts sync
      trailwarden accounts list --format json
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_, fmt=fmt)


@accounts.command("list")
@common_options
@format_option(FORMATS)
@pass_app
def list_(app: App, fmt: str) -> None:
    """The configured accounts (and accounts seen in events but not configured), with the last
    sync's view of each and its last event: `trailwarden accounts --help`.

    \b
    Example:
      trailwarden accounts list --format json
    """
    from pipeline.ram.accounts import list_accounts

    config = app.config
    if app.database.exists():
        with app.open(read_only=True) as store:
            view = list_accounts(store, config)
    else:
        view = list_accounts(None, config)
    if fmt == "json":
        click.echo(json_text(to_jsonable(view.as_dict()), indent=2))
        return
    columns = ["alias", "id", "in directory", "display name", "last event", "events 30d", "gap"]
    rows = [[r["alias"] or "(not configured)", r["id"], _yes_no(r["in_directory"]), r["display_name"],
             r["last_event"], r["events_30d"], r["gap"]] for r in view.rows]
    click.echo(render(columns, rows, "table") if rows else "no accounts configured and no events in the store")
    if view.synced_at is None:
        click.echo("(no `accounts sync` yet: run it to compare with the Resource Directory)")


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "NO"


@accounts.command()
@common_options
@format_option(FORMATS)
@pass_app
def sync(app: App, fmt: str) -> None:
    """Read the Resource Directory's member accounts (GetResourceDirectory, ListAccounts) into a
    dated sync in the store (earlier ones are kept), and compare them with the config's
    `accounts:`: the accounts configured, those in the directory but not in the config (with a
    ready-to-paste `accounts:` section proposing aliases from display names) and configured ones
    the directory does not list.

    Credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET (/ _SECURITY_TOKEN), of the
    management account (or a delegated administrator); the endpoint from
    `resource_directory.endpoint` (default resourcemanager.aliyuncs.com). Throttling is retried; an
    unreachable endpoint or refused credentials store nothing (exit 1).

    \b
    Examples:
      trailwarden accounts sync
      trailwarden accounts sync --format json
    """
    from pipeline.ram.accounts import sync_accounts

    config = app.config
    with app.open() as store, recorded_run(store, "accounts sync", timed=True) as counts:
        result = sync_accounts(store, config)
        counts.update(sync=result.sync, accounts=len(result.accounts), not_configured=len(result.not_configured),
                      not_in_directory=len(result.not_in_directory), calls=result.calls, throttled=result.throttled)
    data = to_jsonable(result.as_dict())
    click.echo(json_text(data, indent=2) if fmt == "json" else _sync_text(data))


def _sync_text(r: dict[str, object]) -> str:
    d = r["directory"]
    assert isinstance(d, dict)
    found, new, missing = r["accounts"], r["not_configured"], r["not_in_directory"]
    assert isinstance(found, list) and isinstance(new, list) and isinstance(missing, list)
    lines = [f"accounts sync {r['sync']}: Resource Directory {d['id']} (management account {d['master_account_id']}"
             f" {one_line(d['master_account_name'] or '')}): {len(found)} accounts; {r['calls']} calls in {r['seconds']}s "
             f"({r['throttled']} throttled)",
             render(["alias", "id", "display name", "type", "status", "joined"],
                    [[a["alias"] or "(not configured)", a["id"], a["display_name"], a["type"], a["status"],
                      a["join_time"]] for a in found], "table")]
    if missing:
        lines.append("configured but not in the Resource Directory: "
                     + ", ".join(f"{m['alias']} ({m['id']})" for m in missing))
    if new:
        lines += [f"{len(new)} account(s) in the Resource Directory are not in the config; its `accounts:` "
                  "section with them (check the proposed aliases):", str(r["snippet"])]
    else:
        lines.append("every account in the Resource Directory is configured")
    return "\n".join(lines)
