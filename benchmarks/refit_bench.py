"""The daily refit from per-day rows (issue 18 item 3) against the refit from raw events, in the
same run: what the first cycle of each UTC day pays to fit every agent's baselines on 28 days.

Builds an organisation's store in SQL (``learned_bench.build_store``: 4 weeks and a day of
``--agents`` agents, ``--per-agent-day`` calls each a day, pollers, people and roles), seals every
UTC day but the last two into Parquet as the service does (``lake.seal_day``), and keeps each
ended day's per-day rows (``features.refresh``, timed per day: what the service's ``features``
step adds once a day). Then, each in its own process at the store's ``--memory-limit`` (peak RSS
per measure):

* the reference: ``learning.fit`` on the 28 days from the raw events (the stored rows hidden);
* the refit: ``learning.fit`` reading the kept rows, as the first cycle of a UTC day does.

Both fit the same baselines (checked here; ``tests/test_daily_features.py`` proves it on an
organisation with findings). Usage:

    python benchmarks/refit_bench.py [--agents 300] [--per-agent-day 1000] [--memory-limit 1GB]
        [--reference-memory-limit 4GB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TZ = "Asia/Shanghai"


def _end() -> datetime:
    from detect_bench import END

    return END.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def build(db: Path, agents: int, per_day: int) -> dict[str, float]:
    """The store, sealed but for its last two UTC days, with every ended day's per-day rows."""
    from learned_bench import build_store

    from pipeline.detection import features
    from pipeline.store import lake
    from pipeline.store.store import open_store

    t0 = time.monotonic()
    events = build_store(db, agents, 4, per_day)
    built = time.monotonic() - t0
    with open_store(db, memory_limit="2GB") as store:
        days: list[date] = [r[0] for r in store.con.execute(
            "SELECT DISTINCT CAST(timezone('UTC', event_time) AS DATE) AS d FROM events_hot ORDER BY d").fetchall()]
        last_sealed = _end().date() - timedelta(days=1)
        to_seal = [d for d in days if d < last_sealed]
        t0 = time.monotonic()
        for day in to_seal:
            lake.seal_day(store, day)
        sealed = time.monotonic() - t0
        t0 = time.monotonic()
        report = features.refresh(store, TZ, max_days=100, now=_end())
        kept, rows = time.monotonic() - t0, report.rows
        store.con.execute("CHECKPOINT")
    return {"events": events, "build_s": built, "sealed_days": len(to_seal), "seal_s": sealed,
            "features_s": kept, "feature_rows": rows, "kept_days": len(report.days)}


def measure(db: Path, mode: str, memory_limit: str) -> dict[str, object]:
    """One fit in this process: ``raw`` (stored rows hidden, rolled back) or ``stored``."""
    from pipeline.detection import learning
    from pipeline.store.store import open_store

    end = _end()
    with open_store(db, memory_limit=memory_limit) as store:
        store.con.execute("BEGIN TRANSACTION")
        if mode == "raw":
            store.con.execute("DELETE FROM feature_days")
        t0 = time.monotonic()
        fitted = learning.fit(store, end, TZ)
        seconds = time.monotonic() - t0
        store.con.execute("ROLLBACK")
    digest = {agent: json.loads(b.to_json()) for agent, b in fitted.items()}
    return {"seconds": seconds, "agents": len(fitted), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "baselines": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--per-agent-day", type=int, default=1000)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--reference-memory-limit", help="the raw fit's (default: --memory-limit; at 23M events "
                        "it runs out of memory at 1GB)")
    parser.add_argument("--keep", type=Path, help="build the store in this directory and keep it")
    parser.add_argument("--measure", choices=("raw", "stored"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.db, args.measure, args.memory_limit), default=str))
        return
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="refit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "refit.duckdb"
    try:
        built = build(db, args.agents, args.per_agent_day)
        print(f"store: {built['events']:,} events, {args.agents} agents, {built['sealed_days']} sealed days "
              f"(built in {built['build_s']:.0f} s, sealed in {built['seal_s']:.0f} s)")
        print(f"per-day rows kept for {built['kept_days']} ended days: {built['feature_rows']:,} rows, "
              f"{built['features_s'] / built['kept_days']:.2f} s per day "
              f"({built['feature_rows'] / built['events']:.3f} rows per event)")
        results = {}
        for mode in ("raw", "stored"):
            limit = args.reference_memory_limit if mode == "raw" and args.reference_memory_limit else args.memory_limit
            done = subprocess.run([sys.executable, __file__, "--measure", mode, "--db", str(db),
                                   "--memory-limit", limit], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"the {mode} fit failed at memory_limit {limit}: {done.stderr.strip().splitlines()[-1]}")
            results[mode] = json.loads(done.stdout)
        raw, stored = results["raw"], results["stored"]
        same = raw["baselines"] == stored["baselines"]
        print(f"reference: fit from raw events   {raw['seconds']:7.2f} s  peak {raw['peak_mib']:6.0f} MiB  "
              f"({raw['agents']} agents; memory_limit {args.reference_memory_limit or args.memory_limit})")
        print(f"refit from per-day rows           {stored['seconds']:7.2f} s  peak {stored['peak_mib']:6.0f} MiB  "
              f"({stored['seconds'] / raw['seconds']:.2f}x the reference; same baselines: {same})")
        if not same:
            sys.exit("the two fits differ")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
