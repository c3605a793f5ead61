"""What RAM grants: `ram sync` (read it into a snapshot), `review` (every agent against it),
`contain` (revoke a compromised agent, evidence first)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli.app import App, cli, common_options, format_option, pass_app
from pipeline.core.output import render, to_jsonable
from pipeline.store.runs import recorded_run

if TYPE_CHECKING:
    from pipeline.ram.contain import Containment


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


@cli.command()
@common_options
@click.argument("agent")
@click.option("--execute", is_flag=True, help="Run the plan (without it: print the plan, change nothing).")
@click.option("--undo", is_flag=True, help="Reverse exactly what the agent's containment did.")
@click.option("--reason", metavar="TEXT", default=None, help="Why (required with --execute and --undo).")
@click.option("--force", is_flag=True, help="Contain an agent the inventory marks `protected: true`.")
@click.option("--by", metavar="NAME", default=None, help="Who is acting (default: $TRAILWARDEN_USER, else the login).")
@click.option("--evidence-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the evidence goes (default: an `evidence` folder beside the store).")
@format_option(("table", "json"))
@pass_app
def contain(app: App, agent: str, execute: bool, undo: bool, reason: str | None, force: bool, by: str | None,
            evidence_dir: Path | None, fmt: str) -> None:
    """Contain a compromised agent: write its evidence (the replay JSON export with its SHA-256),
    set each active AccessKey of its RAM users to Inactive, and attach a deny-all policy
    (TrailwardenDenyAll, created once) to its users and roles, which also stops role sessions
    already issued.

    Without --execute it prints the plan and changes nothing. With --execute every call and its
    answer is recorded in the store before the next one; a re-run after a failure (or a kill)
    finishes the same containment. --undo reverses exactly what was done (keys it deactivated,
    policies it attached), nothing else. Agents marked `protected: true` are refused without --force.

    \b
    Examples:
      trailwarden contain ci-deployer --reason "key leaked in a public repo"
      trailwarden contain ci-deployer --execute --reason "key leaked in a public repo (INC-4411)"
      trailwarden contain ci-deployer --undo --reason "key rotated, INC-4411 closed"
    """
    from pipeline.core.errors import TrailwardenError, UsageError
    from pipeline.ram import contain as playbook
    from pipeline.ram.client import connect
    from pipeline.ram.snapshots import load_snapshot
    from pipeline.triage.lifecycle import default_author

    inventory = app.inventory
    declared = playbook.agent_of(inventory, agent)
    if execute and undo:
        raise UsageError("--execute and --undo do not go together", key="--undo")
    if (execute or undo) and not (reason or "").strip():
        raise UsageError("say why with --reason TEXT (it goes into the store and the findings' history)",
                         key="--reason")
    if not undo:
        playbook.check_protected(declared, force)
    ram_config = app.config.ram
    api = connect(ram_config.endpoint if ram_config else None, ram_config.ims_endpoint if ram_config else None)
    by = by or default_author()
    folder = evidence_dir or app.database.parent / "evidence"
    if undo:
        with app.open() as store, recorded_run(store, "contain --undo") as counts:
            result = playbook.undo(store, api, inventory, declared.name, by=by, reason=str(reason))
            counts.update(steps=len(result.steps), failed=len(result.failed), containment=result.id)
            if result.failed:
                counts["error"] = f"{len(result.failed)} call(s) failed undoing {result.id}"
    elif execute:
        with app.open() as store, recorded_run(store, "contain") as counts:
            planned = playbook.plan(store, api, inventory, declared.name, load_snapshot(store),
                                    evidence_dir=folder, force=force)
            result = playbook.carry_out(store, api, inventory, planned, by=by, reason=str(reason))
            counts.update(steps=len(result.steps), failed=len(result.failed), containment=result.id)
            if result.status == "failed":
                counts["error"] = _contain_failure(result)
    elif app.database.exists():
        with app.open(read_only=True) as store:
            result = playbook.plan(store, api, inventory, declared.name, load_snapshot(store),
                                   evidence_dir=folder, force=force)
    else:
        result = playbook.plan(None, api, inventory, declared.name, None, evidence_dir=folder, force=force)
    click.echo(json.dumps(to_jsonable(result.as_dict()), indent=2, allow_nan=False) if fmt == "json"
               else _contain_text(result))
    if result.status == "failed":
        raise TrailwardenError(_contain_failure(result))
    if result.status == "undo_failed":
        raise TrailwardenError(f"{len(result.failed)} call(s) failed undoing {result.id}: run "
                               f"`trailwarden contain {result.agent} --undo` again")


def _contain_failure(result: Containment) -> str:
    what = f"{len(result.failed)} call(s) failed" if result.failed else result.notes[0]
    return (f"containment {result.id} of {result.agent} is incomplete ({what}): fix it and run "
            f"`trailwarden contain {result.agent} --execute` again")


def _contain_text(result: Containment) -> str:
    from pipeline.core.inert import reveal

    data = result.as_dict()
    head = {
        "plan": f"containment plan for {data['agent']}" + (f" (continues {data['containment']})" if data["containment"]
                                                           else "") + ": nothing was changed; add --execute to run it",
        "contained": f"{data['agent']} contained ({data['containment']})",
        "failed": f"containment {data['containment']} of {data['agent']} is incomplete",
        "undone": f"containment {data['containment']} of {data['agent']} undone",
        "undo_failed": f"undoing containment {data['containment']} of {data['agent']} is incomplete",
        "nothing": f"nothing to undo for {data['agent']}: it has no containment in effect",
    }[data["status"]]
    lines = [head]
    if data["protected"]:
        lines.append(f"  {data['agent']} is protected: contained with --force")
    if data["evidence"]:
        lines.append(f"  evidence: {data['evidence']} (sha256 {data['evidence_sha256']})")
    for n, step in enumerate(data["steps"], 1):
        mark = {"planned": "", "skipped": "  [done before]", "already": "  [already so]",
                "gone": "  [no such principal in RAM: nothing to do]"}.get(
            step["status"], f"  [{step['status']}]")
        lines.append(f"  {n}. {step['does']}{mark}" + (f": {step['result']}" if step["status"] == "failed" else ""))
    lines += [f"  ! {note}" for note in data["notes"]]
    return reveal("\n".join(lines), keep="\n")
