"""`trailwarden demo`: the whole pipeline on generated data."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.app import (
    App,
    cli,
    common_options,
    pass_app,
)
from pipeline.core.config import resolve_config_path


@cli.command()
@common_options
@click.option("--days", default=30, show_default=True, type=click.IntRange(14, 120),
              help="How many days of traffic to generate.")
@click.option("--seed", default=7, show_default=True, type=int, help="Random seed (same seed, same data).")
@pass_app
def demo(app: App, days: int, seed: int) -> None:
    """The whole pipeline on generated data: no cloud account, no Slack, nothing to configure.

    Generates a month of ActionTrail traffic for the sample inventory in config/agents.yaml
    (a CI deployer, a read-only monitor, a nightly backup bot, a time-bound vendor, an ETL role,
    a Terraform role and a human admin in prod; a staging CI user and a production deploy role:
    three accounts, staging, prod and security) with a few planted incidents, among them a
    staging key using a production role, writes it as an OSS-style
    dump, ingests it into the store every other command reads (--db, else the config's
    `database`, default data/trailwarden.duckdb) and prints what it found. A store that is not a
    demo's is never replaced (exit 2: pass --db OTHER). Run where no config is found, it writes
    config/trailwarden.yaml (the sample inventory, that store) so the next commands work there.

    \b
    Example:
      trailwarden demo && trailwarden status
    """
    from pipeline.cli.views.review import review_table
    from pipeline.demo.build import RAM_SEED, run_demo

    db = app.database
    wrote = _demo_config(app, db)
    result = run_demo(db, days=days, seed=seed, echo=click.echo)
    if wrote:
        click.echo(f"\nWrote {wrote}: this directory had no config; it names the sample inventory and "
                   f"{db}, so the commands below work from here.")
    _note_if_other_inventory(app)
    prefix = "" if db == app.database_of_config else f"--db {db} "
    click.echo(f"\nExplore: trailwarden {prefix}status\n"
               f"         trailwarden {prefix}findings --since 30d\n"
               f"         trailwarden {prefix}replay ci-deployer --since 7d\n"
               f"         trailwarden {prefix}alert --dry-run        # the Slack messages, printed (no token needed)")
    click.echo(f"\nWhat RAM grants the agents (the demo account's RAM: {RAM_SEED.name}), against what they "
               f"declare and use (`trailwarden {prefix}review` says it again; `--format markdown` for a ticket):\n")
    click.echo(review_table(result["review"]))


def _note_if_other_inventory(app: App) -> None:
    """The demo's traffic is the sample inventory's: say so when the config names another one
    (the next writing command re-attributes the events to it)."""
    from pipeline.demo.build import CONFIG_DIR, demo_inventory

    if app.inventory.fingerprint() != demo_inventory().fingerprint():
        click.echo(f"trailwarden: note: the demo generated traffic for the sample inventory "
                   f"{CONFIG_DIR / 'agents.yaml'}; your config's inventory is "
                   f"{app.config.inventory or 'not set'}", err=True)


def _demo_config(app: App, db: Path) -> Path | None:
    """Where no config is found, write one naming the sample inventory and the demo's store."""
    from pipeline.demo.build import write_demo_config

    if resolve_config_path(app.config_path) is not None:
        return None
    written = write_demo_config(db)
    if written is not None:
        app._config = app._inventory = None  # the rest of this command reads it too
    return written
