"""The entry point: every command group registered, errors turned into exit codes and one line."""

from __future__ import annotations

import sys

import click

# every command module registers its commands on the group when imported
import pipeline.cli.incidents  # noqa: F401
import pipeline.cli.slack as _slack  # noqa: F401 - `trailwarden slack`
from pipeline.cli import (  # noqa: F401
    accounts,
    demo,
    detect,
    findings,
    ingest,
    investigate,
    ram,
    service,
    store,
    triage,
)
from pipeline.cli.app import cli
from pipeline.core.errors import TrailwardenError, scrub
from pipeline.core.inert import one_line


def main(argv: list[str] | None = None) -> None:
    try:
        # color=True: click never strips escape sequences from what we print to a pipe, so CSV
        # stays exact data (what reaches a terminal is made inert where it is rendered)
        cli.main(args=argv, prog_name="trailwarden", standalone_mode=False, color=True)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("trailwarden: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except TrailwardenError as exc:
        click.echo(f"trailwarden: error: {one_line(scrub(str(exc)))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("trailwarden: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if _debug_requested(argv):
            raise
        click.echo(f"trailwarden: internal error: {type(exc).__name__}: "
                   f"{scrub(str(exc).splitlines()[0]) if str(exc) else ''} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


def _debug_requested(argv: list[str] | None) -> bool:
    return "--debug" in (argv if argv is not None else sys.argv[1:])
