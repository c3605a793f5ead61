"""Triage commands: ``findings ack|resolve|false-positive|show|stats`` and ``suppress …``.

Registered on the ``trailwarden`` group when :mod:`pipeline.cli.main` imports this module.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from pipeline.cli.app import (
    App,
    cli,
    common_options,
    format_option,
    known_agents,
    pass_app,
)
from pipeline.cli.findings import findings
from pipeline.cli.views.findings import finding_text
from pipeline.core.errors import UsageError
from pipeline.core.output import json_text, render, to_jsonable
from pipeline.core.times import parse_until, utcnow
from pipeline.triage.lifecycle import (
    DEFAULT_SUPPRESSION,
    Suppression,
    broad_message,
    default_author,
    new_suppression_id,
    parse_cidr,
)

FORCE_LOOKBACK = timedelta(days=30)


def _by_option(func: Any) -> Any:
    return click.option("--by", metavar="NAME", default=None,
                        help="Who is doing this (default: $TRAILWARDEN_USER, else your login name).")(func)


def _reason_option(func: Any) -> Any:
    return click.option("--reason", required=True, metavar="TEXT", help="Why: recorded, and said in Slack.")(func)


# -- findings lifecycle ----------------------------------------------------------------------------
def _status_command(name: str, status: str, summary: str) -> None:
    def command(app: App, ids: tuple[str, ...], by: str | None, reason: str, fmt: str) -> None:
        from pipeline.triage.lifecycle import resolve_finding_ids, set_status

        with app.open() as store:
            full = resolve_finding_ids(store, ids)
            changes = set_status(store, full, status, by=by or default_author(), reason=reason)
        if fmt in ("json", "csv"):
            records = [{"id": c.finding_id, "old_status": c.old, "status": c.new,
                        "changed": c.change_id is not None} for c in changes]
            click.echo(json.dumps(records, indent=2) if fmt == "json" else
                       render(["id", "old_status", "status", "changed"], [list(r.values()) for r in records], "csv"))
            return
        for c in changes:
            if c.change_id is None:
                click.echo(f"{c.finding_id}: already {c.new}")
            else:
                click.echo(f"{c.finding_id}: {c.old} -> {c.new}")
        if any(c.change_id is not None for c in changes):
            click.echo("Slack hears of it on the next `trailwarden alert` (a reply in each alerted finding's thread).")

    command.__doc__ = f"""{summary}

    IDs may be shortened to any unique prefix of at least 6 characters. The change is recorded
    with who and why (`findings show ID` lists the history) and posted as a reply in the
    finding's Slack thread by the next `alert`.

    \b
    Example:
      trailwarden findings {name} 3df22d5f1e --by alice --reason "{_EXAMPLE_REASONS[status]}"
    """
    decorated = pass_app(command)
    for decorate in (format_option(), _reason_option, _by_option,
                     click.argument("ids", nargs=-1, required=True, metavar="ID..."), common_options):
        decorated = decorate(decorated)
    findings.command(name)(decorated)


_EXAMPLE_REASONS = {"acknowledged": "looking into it", "resolved": "key rotated, vendor access removed",
                    "false_positive": "scheduled DR drill"}
_status_command("ack", "acknowledged", "Acknowledge findings: someone is on it.")
_status_command("resolve", "resolved", "Resolve findings: handled. If it fires again, it is alerted again.")
_status_command("false-positive", "false_positive", "Mark findings as false positives: not a real problem.")


@findings.command("show")
@common_options
@click.argument("finding_id", metavar="ID")
@format_option(("table", "json"))
@pass_app
def show(app: App, finding_id: str, fmt: str) -> None:
    """One finding in full, with its status history and suppression."""
    from models.accounts import Accounts
    from pipeline.cli.views.findings import labelled
    from pipeline.detection.findings import get_finding
    from pipeline.triage.lifecycle import resolve_finding_ids, status_history

    with app.open(read_only=True) as store:
        [full] = resolve_finding_ids(store, [finding_id])
        finding = get_finding(store, full)
        finding["history"] = status_history(store, full)
    accounts = Accounts(app.config.accounts or [])
    labelled(finding, accounts, registered={a.name for a in app.inventory.agents})
    click.echo(finding_text(finding, fmt, several_accounts=accounts.several))


@findings.command("stats")
@common_options
@click.option("--since", default="30d", show_default=True, metavar="T", help="Findings seen since T (30d, 2026-11-01).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="How many noisiest keys.")
@format_option()
@pass_app
def stats(app: App, since: str, top: int, fmt: str) -> None:
    """Per detector and per agent: findings by status and the false-positive rate; the noisiest keys.

    `--format csv` is one row per detector and per agent (column `by`); `json` adds the noisiest keys.

    The false-positive rate is false positives among the findings someone triaged
    (acknowledged, resolved or false positive). The counts add up to what
    `findings --status all --since T` lists.
    """
    from pipeline.core.times import parse_when
    from pipeline.triage.lifecycle import STATUSES, finding_stats

    when = parse_when(since, utcnow(), "--since")
    with app.open(read_only=True) as store:
        result = finding_stats(store, when, top)
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(result), indent=2, allow_nan=False))
        return
    cols = ["total", *STATUSES, "false_positive_rate"]
    if fmt == "csv":  # one row per detector, then per agent: `by` says which
        click.echo(render(["by", "name", *cols], [[key, r[key], *(r[c] for c in cols)] for key in ("detector", "agent")
                                                  for r in result[f"by_{key}"]], "csv"))
        return
    out = [f"{result['total']} findings since {to_jsonable(result['since'])}", ""]
    for key in ("detector", "agent"):
        rows = result[f"by_{key}"]
        out += [render([key, *cols], [[r[key], *(r[c] for c in cols)] for r in rows], "table"), ""]
    out.append("noisiest keys")
    out.append(render(["detector", "agent", "key", "findings", "events", "false_positives"],
                      [[r["detector"], r["agent"], r["key"], r["findings"], r["events"], r["false_positives"]]
                       for r in result["noisiest_keys"]], "table"))
    click.echo("\n".join(out))


# -- suppressions ----------------------------------------------------------------------------------
@cli.group()
def suppress() -> None:
    """Say once that something is expected: matching findings are stored as `suppressed`, not alerted.

    \b
    Examples:
      trailwarden suppress add --detector odd_hours --agent nightly-backup --reason "DR drill week" --by alice --until 7d
      trailwarden suppress add --detector failure_storm --action "ecs:Describe*" --error-code Throttling --reason "..." --by bob
      trailwarden suppress list --all
      trailwarden suppress remove sup-1a2b3c4d --by alice --reason "drill over"
      trailwarden suppress export -o config/suppressions.yaml
    """


@suppress.command("add")
@common_options
@click.option("--detector", required=True, help="The detector id it applies to.")
@click.option("--agent", help="Only this agent (inventory name or raw identity, e.g. ram-user:ops-debug).")
@click.option("--action", help="Only findings whose every event is this RAM action (wildcards: ecs:Describe*).")
@click.option("--source-ip", "source_ip", metavar="CIDR", help="Only findings whose every event came from here.")
@click.option("--error-code", help="Only findings whose every event failed with this error code.")
@_reason_option
@_by_option
@click.option("--until", metavar="WHEN", help="Expiry: a date (2027-01-31), a time, or a duration (30d). "
                                               "Default: 90 days.")
@click.option("--force", is_flag=True, help="Allow a suppression of a whole detector for every agent (a /0 "
                                             "network or an action of only '*' narrows nothing).")
@format_option()
@pass_app
def suppress_add(app: App, detector: str, agent: str | None, action: str | None, source_ip: str | None,
                 error_code: str | None, reason: str, by: str | None, until: str | None, force: bool,
                 fmt: str) -> None:
    """Add a suppression (it applies to findings detected from now on)."""
    from pipeline.triage.lifecycle import add_suppression, validate_suppression, would_hide

    now = utcnow()
    s = Suppression(id=new_suppression_id(), detector=detector.strip(), reason=reason, created_by=by or default_author(),
                    created_at=now, expires_at=parse_until(until, now) if until else now + DEFAULT_SUPPRESSION,
                    agent=(agent or "").strip() or None, action=(action or "").strip() or None,
                    source_cidr=parse_cidr(source_ip) if source_ip else None,
                    error_code=(error_code or "").strip() or None)
    with app.open() as store:
        validate_suppression(s, detectors=_detector_ids(), known_agents=known_agents(app, store), now=now)
        hidden = would_hide(store, s, now - FORCE_LOOKBACK)
        if s.broad and not force:
            raise UsageError(f"{broad_message(s, hidden)}; narrow it with --agent/--action/--source-ip/--error-code, "
                             "or pass --force", key="--force")
        add_suppression(store, s)
    record = {**s.as_dict(now), "would_have_hidden_30d": len(hidden)}
    if fmt in ("json", "csv"):
        click.echo(json_text(to_jsonable(record), indent=2) if fmt == "json"
                   else render(list(record), [list(record.values())], "csv"))
        return
    click.echo(f"{s.id}: suppressing {s.scope()} until {to_jsonable(s.expires_at)} "
               f"({len(hidden)} finding(s) of the last 30 days match it)")


@suppress.command("list")
@common_options
@click.option("--all", "show_all", is_flag=True, help="Include removed and expired ones (the audit trail).")
@format_option()
@pass_app
def suppress_list(app: App, show_all: bool, fmt: str) -> None:
    """Active suppressions, with how many findings each has suppressed."""
    from pipeline.detection.findings import suppressed_counts
    from pipeline.triage.lifecycle import load_suppressions

    now = utcnow()
    with app.open(read_only=True) as store:
        items = load_suppressions(store, include_inactive=show_all, now=now)
        counts = suppressed_counts(store)
    rows = [{**s.as_dict(now), "suppressed": int(counts.get(s.id, 0))} for s in items]
    if fmt == "table":
        cols = ["id", "state", "detector", "agent", "action", "source_cidr", "error_code", "expires_at",
                "created_by", "reason", "suppressed"]
        if show_all:
            cols += ["removed_by", "removed_at", "removed_reason", "imported_by", "imported_at", "replaces"]
        click.echo(render(cols, [[r[c] for c in cols] for r in rows], "table"))
        return
    cols = list(rows[0]) if rows else ["id", "state"]
    click.echo(render(cols, [[r[c] for c in cols] for r in rows], fmt))


@suppress.command("remove")
@common_options
@click.argument("suppression_id", metavar="ID")
@_by_option
@_reason_option
@pass_app
def suppress_remove(app: App, suppression_id: str, by: str | None, reason: str) -> None:
    """Remove a suppression (kept for the record; matching findings alert again from now on)."""
    from pipeline.triage.lifecycle import remove_suppression

    with app.open() as store:
        s = remove_suppression(store, suppression_id.strip(), by=by or default_author(), reason=reason)
    click.echo(f"{s.id}: removed ({s.scope()})")


@suppress.command("export")
@common_options
@click.option("-o", "--output", metavar="FILE", help="Write here (default: stdout), e.g. config/suppressions.yaml.")
@click.option("--all", "show_all", is_flag=True, help="Include removed and expired ones.")
@pass_app
def suppress_export(app: App, output: str | None, show_all: bool) -> None:
    """The suppressions as YAML, to review like code."""
    from pipeline.triage.lifecycle import export_yaml, load_suppressions

    with app.open(read_only=True) as store:
        text = export_yaml(load_suppressions(store, include_inactive=show_all))
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@suppress.command("import")
@common_options
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@_by_option
@click.option("--force", is_flag=True, help="Allow entries that suppress a whole detector for every agent.")
@pass_app
def suppress_import(app: App, path: Path, by: str | None, force: bool) -> None:
    """Load suppressions from YAML (as `export` writes it), by id.

    A new id is added; an entry that changed ends the stored version (removed by you, "replaced
    by import") and is added as a new one that names it: `suppress list --all` shows both. Each
    row added records who imported it and when; its created_by is the file's, else --by.

    \b
    Example:
      trailwarden suppress import config/suppressions.yaml --by alice
    """
    from pipeline.triage.lifecycle import import_suppressions, parse_yaml, validate_suppression

    now, importer = utcnow(), by or default_author()
    items = parse_yaml(path, now, by=importer)
    with app.open() as store:
        agents = known_agents(app, store)
        for i, s in enumerate(items):
            validate_suppression(s, detectors=_detector_ids(), known_agents=agents, now=now,
                                 source=f"{path}: suppressions[{i}]")
        result = import_suppressions(store, items, by=importer, force=force, source=str(path), now=now)
    click.echo(f"{path}: {result['added']} added, {result['updated']} updated, {result['unchanged']} unchanged"
               + (f", {len(result['left_removed'])} left removed ({', '.join(result['left_removed'])})"
                  if result["left_removed"] else ""))
    for s in result["written"]:
        what = f"replaces {s.replaces} (ended, kept in `suppress list --all`)" if s.replaces else "added"
        click.echo(f"{s.id}: {what}: {s.scope()}; created_by {s.created_by}"
                   + (" (as the file says)" if "created_by" in s.given else "") + f", imported by {importer}")


def _detector_ids() -> list[str]:
    from detectors import registry

    return sorted(registry())
