"""What the second generation of learned behaviour (issue 15: ``volume``, ``novelty``,
``enumeration``, ``anomalous_behaviour``) costs ``trailwarden detect``, measured against the
detectors of before in the same run, and whether its memory follows the history.

Builds the stores of ``benchmarks/detect_bench.py`` (agents with declared policies, pollers and
weekday workers, 1% of calls failing; built in DuckDB SQL, not measured) with 4 and 8 weeks of
history, then runs ``trailwarden detect`` over the last day of each as a subprocess, twice: with
the four new detectors disabled in the config (the reference: today's set) and with every
detector. Printed per run: scored events per second, seconds, peak RSS and the seconds in each
new detector; then the per-event cost of the full set over the reference (issue 15's target: at
most 2x) and the peak RSS at 8 weeks over 4 (flat: the baselines are aggregated in DuckDB).

Usage: python benchmarks/learned_bench.py [--agents 500] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detect_bench import build_store, run_over_week, write_config  # noqa: E402

NEW = ("volume", "novelty", "enumeration", "anomalous_behaviour")


def detect_day(db: Path, config: Path) -> dict[str, Any]:
    report, seconds, peak = run_over_week("detect", db, config, timedelta(days=1))
    return {"events": report["events"], "seconds": seconds, "peak_mib": peak, "findings": report["new"],
            "detectors": {k: v["seconds"] for k, v in report["detectors"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-learned-"))
    rows = []
    try:
        config = write_config(workdir, args.agents)
        reference = workdir / "reference.yaml"
        reference.write_text(config.read_text() + "detectors:\n" + "".join(f"  {d}: {{enabled: false}}\n" for d in NEW))
        for weeks in (4, 8):
            db = workdir / f"w{weeks}.duckdb"
            started = time.monotonic()
            total = build_store(db, args.agents, weeks)
            print(f"built {total:,} events ({weeks} weeks + 1) in {time.monotonic() - started:.0f}s", flush=True)
            for name, cfg in (("reference", reference), ("every detector", config)):
                detect_day(db, cfg)  # the first run fits and stores the day's baselines: not measured
                rows.append((weeks, name, detect_day(db, cfg)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'history':<8} {'detectors':<15} {'scored':>9} {'seconds':>8} {'scored/s':>9} {'peak MiB':>9}  new detectors' seconds")
    for weeks, name, r in rows:
        spent = ", ".join(f"{d} {r['detectors'].get(d, 0):.2f}" for d in NEW if d in r["detectors"]) or "-"
        print(f"{weeks} weeks  {name:<15} {r['events']:>9,} {r['seconds']:>8.1f} {r['events'] / r['seconds']:>9,.0f} "
              f"{r['peak_mib']:>9.0f}  {spent}")
    by = {(w, n): r for w, n, r in rows}
    for weeks in (4, 8):
        ref, full = by[(weeks, "reference")], by[(weeks, "every detector")]
        cost = (full["seconds"] / full["events"]) / (ref["seconds"] / ref["events"])
        print(f"{weeks} weeks: time per event with every detector = {cost:.2f}x the reference (target <= 2x)")
    print(f"peak RSS, every detector, 8 weeks / 4 weeks = "
          f"{by[(8, 'every detector')]['peak_mib'] / by[(4, 'every detector')]['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
