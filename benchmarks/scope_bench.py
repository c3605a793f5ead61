"""How fast is the out_of_scope detector? (Issue 3 target: at least 100,000 events/s.)

Generates N events of the demo's everyday traffic (default 1,000,000; the six sample agents of
config/agents.yaml, whose RAM policies are compiled once), ingests them into a scratch store (not
timed), then measures:

1. the detector alone: ``OutOfScope().score(events, models, now)`` over all N events already in a
   DataFrame - the evaluator's hot path (events/s);
2. loading those events from DuckDB into the DataFrame (``pipeline.detection.detect.load_events``), the
   cost every detector run shares;
3. ``trailwarden detect`` end to end over the whole store, as a subprocess, with its peak RSS
   (detect scores whole days in chunks of at most ~100,000 events, so memory follows the chunk,
   not the history).

Usage: python benchmarks/scope_bench.py [--events N] [--keep]
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
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.base import Models  # noqa: E402
from detectors.out_of_scope import OutOfScope  # noqa: E402
from models.inventory import Attributor, load_inventory  # noqa: E402
from models.scope import compile_scopes  # noqa: E402
from pipeline.demo import synthetic  # noqa: E402
from pipeline.detection.detect import load_events  # noqa: E402
from pipeline.ingest.run import ingest_files  # noqa: E402
from pipeline.store.store import open_store  # noqa: E402

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def prepare(workdir: Path, n: int) -> tuple[Path, Path]:
    events = workdir / "events.ndjson"
    started = time.monotonic()
    with events.open("w", encoding="utf-8") as fh:
        for ev in synthetic.stream(n, seed=11):
            fh.write(json.dumps(ev) + "\n")
    db = workdir / "scope.duckdb"
    inventory = load_inventory(ROOT / "config" / "agents.yaml")
    with open_store(db) as store:
        ingest_files(store, [events], Attributor(inventory))
    print(f"prepared {n:,} events in {time.monotonic() - started:.1f}s (not measured)")
    return db, events


def measure_detector(db: Path) -> dict[str, float]:
    inventory = load_inventory(ROOT / "config" / "agents.yaml")
    det = OutOfScope()
    columns = list(dict.fromkeys(("event_id", "event_time", "agent", *det.columns)))
    with open_store(db, read_only=True) as store:
        started = time.monotonic()
        frame = load_events(store, columns, EPOCH, FAR)
        load_s = time.monotonic() - started
    models = Models(inventory=inventory, scopes=compile_scopes(inventory), timezone=ZoneInfo("Asia/Shanghai"))
    started = time.monotonic()
    found = det.score(frame, models, datetime.now(UTC))
    score_s = time.monotonic() - started
    return {"events": len(frame), "load_s": load_s, "score_s": score_s, "findings": len(found),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_cli(db: Path, workdir: Path) -> dict[str, float]:
    config = workdir / "bench.yaml"
    config.write_text(f"timezone: Asia/Shanghai\ninventory: {ROOT / 'config' / 'agents.yaml'}\n")
    cmd = [sys.executable, "-m", "pipeline", "detect", "--since", "2000-01-01", "--config", str(config),
           "--db", str(db), "--format", "json"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"detect failed: {proc.stderr.strip()}")
    report = json.loads(proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"events": report["events"], "seconds": seconds, "findings": report["new"], "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-scope-"))
    try:
        db, _ = prepare(workdir, args.events)
        cli = measure_cli(db, workdir)  # first: a child forked from a big parent inherits its peak
        det = measure_detector(db)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rate = det["events"] / det["score_s"]
    print(f"{'measure':<44} {'seconds':>8} {'events/s':>10} {'peak MiB':>9}")
    print(f"{'out_of_scope.score(), all events in one frame':<44} {det['score_s']:>8.2f} {rate:>10,.0f} "
          f"{det['peak_mib']:>9.0f}")
    print(f"{'load_events() into pandas (shared)':<44} {det['load_s']:>8.2f} "
          f"{det['events'] / det['load_s']:>10,.0f} {'':>9}")
    print(f"{'trailwarden detect, end to end':<44} {cli['seconds']:>8.2f} "
          f"{cli['events'] / cli['seconds']:>10,.0f} {cli['peak_mib']:>9.0f}")
    print(f"findings on everyday traffic: {det['findings']} (detector), {cli['findings']} (detect)")
    print(f"target >= 100,000 events/s for out_of_scope: {'met' if rate >= 100_000 else 'NOT MET'}")


if __name__ == "__main__":
    main()
