"""How long is one service cycle on a big store? (Issue 7 target: 10,000 new events on a store
holding 10M, under 10 seconds.)

Builds the 10M-event store of ``detect_bench.py`` (1,000 agents, 4 weeks + 1), then drops 10,000
new events for those agents (a few minutes of traffic, just after the store's last event) into a
files source and times ``trailwarden run``: ingest, detect (incremental: only what is new, plus
the detectors' lookback), alert (to the console), and the snapshot the service publishes for
readers. The cycle time bounds the latency from an event reaching the source to its alert:
at most one interval plus one cycle.

Usage: python benchmarks/cycle_bench.py [--agents 1000] [--new 10000] [--keep]
"""

from __future__ import annotations

import argparse
import json
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


def new_events(path: Path, agents: int, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            a = i % agents
            when = END + timedelta(seconds=i * 0.05)
            fh.write(json.dumps({
                "eventId": f"new-{i}", "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventVersion": "1",
                "eventType": "ApiCall", "eventRW": "Read", "eventName": "DescribeInstances",
                "eventSource": "ecs.cn-hangzhou.aliyuncs.com", "serviceName": "Ecs", "acsRegion": "cn-hangzhou",
                "sourceIpAddress": f"203.0.113.{a % 250}", "userAgent": "aliyun-cli/3.0.204",
                "requestId": f"req-{i}", "recipientAccountId": "1384926508761234",
                "userIdentity": {"type": "ram-user", "principalId": str(2000 + a), "accountId": "1384926508761234",
                                 "userName": f"agent-{a}", "accessKeyId": f"LTAI5tBench{a}"},
                "requestParameters": {"RegionId": "cn-hangzhou", "PageSize": "100"}}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-cycle-"))
    try:
        config = write_config(workdir, args.agents)
        db = workdir / "tw.duckdb"
        started = time.monotonic()
        total = build_store(db, args.agents, weeks=4)
        incoming = workdir / "incoming"
        incoming.mkdir()
        config.write_text(config.read_text() + f"database: {db}\nsources:\n"
                          f"  - {{name: drop, type: files, path: {incoming}}}\n")
        # a first cycle to settle the store (baselines for today, detect watermark), then the measured one
        subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config), "run"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
        print(f"built and settled a store of {total:,} events in {time.monotonic() - started:.0f}s (not measured)")
        new_events(incoming / "new.ndjson", args.agents, args.new)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config), "run"], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"run failed: {proc.stderr.strip()}")
        steps = [line for line in proc.stdout.splitlines() if line.split()[:1] in (["ingest"], ["detect"], ["alert"])]
        size = db.stat().st_size / 2**20
        print(f"\none cycle with {args.new:,} new events on a store of {total + args.new:,} ({size:,.0f} MiB):")
        print("\n".join("  " + s for s in steps))
        print(f"  total, with start-up and the snapshot for readers: {seconds:.1f}s")
        print(f"target < 10 s: {'met' if seconds < 10 else 'NOT MET'}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
