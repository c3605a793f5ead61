"""How fast is ``trailwarden replay`` on a big store? (Issue 8 target: one agent over 90 days on a
10M-event store in under 2 seconds.)

Builds the store of ``detect_bench.py`` (1,000 agents, 5 weeks, ~10M events; every agent has about
10,000 events in the window) and times ``replay`` for one agent: the library call alone, and the
command end to end (a subprocess, so Python's start-up is included) in each format, with the
events/s and peak memory of each. The reference, measured in the same run: DuckDB fetching the
same agent's rows for the window (every column the replay reads, raw JSON included) with one
plain ``SELECT``, which is the floor any replay stands on.

Usage: python benchmarks/replay_bench.py [--agents 1000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detect_bench import END, build_store, write_config  # noqa: E402

from models.inventory import load_inventory  # noqa: E402
from pipeline.investigate.replay import build_replay  # noqa: E402
from pipeline.store.store import open_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-replay-"))
    try:
        config = write_config(workdir, args.agents)
        db = workdir / "tw.duckdb"
        total = build_store(db, args.agents, weeks=4)
        agent = f"agent-{args.agents // 2}"
        since, until = END - timedelta(days=90), END
        inventory = load_inventory(workdir / "agents.yaml")
        with open_store(db, read_only=True) as store:
            started = time.monotonic()
            rows = store.con.execute(
                "SELECT * FROM events WHERE agent = ? AND event_time >= ? AND event_time < ? ORDER BY event_time",
                [agent, since, until]).fetchall()
            reference = time.monotonic() - started
            started = time.monotonic()
            report = build_replay(store, agent, inventory, since=since, until=until)
            library = time.monotonic() - started
        n = report["summary"]["events"]
        assert n == len(rows), (n, len(rows))
        print(f"store: {total:,} events; {agent}: {n:,} events in 90 days")
        print(f"{'measure':<48} {'seconds':>8} {'events/s':>10} {'peak RSS':>10}")
        print(f"{'reference: DuckDB SELECT * of those rows':<48} {reference:>8.2f} {n / reference:>10,.0f} {'':>10}")
        print(f"{'build_replay() (with raw JSON)':<48} {library:>8.2f} {n / library:>10,.0f} "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>7,.0f} MiB")
        for fmt in ("table", "json", "html"):
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), "replay", agent,
                                     "--since", since.isoformat(), "--until", until.isoformat(), "--db", str(db),
                                     "--format", fmt, "-o", str(workdir / f"out.{fmt}")],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.monotonic() - started
            if os.waitstatus_to_exitcode(status):
                raise SystemExit(proc.stderr.read() if proc.stderr else "replay failed")
            size = (workdir / f"out.{fmt}").stat().st_size / 2**20
            label = f"trailwarden replay --format {fmt} ({size:.1f} MiB)"
            print(f"{label:<48} {seconds:>8.2f} {n / seconds:>10,.0f} {usage.ru_maxrss / 1024:>7,.0f} MiB")
        print(f"target < 2 s (library): {'met' if library < 2 else 'NOT MET'}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
