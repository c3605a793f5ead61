"""How fast is ``trailwarden detect``, and does its memory follow the window or the history?
(Issue 4 target: at least 100,000 scored events/s; memory that grows with the window.)

Builds a store directly in DuckDB SQL (fast, and the point here is detection, not ingest): 1,000
agents, each with a declared RAM policy, over 4 weeks of history plus the week to score, about
10M events in all. 300 agents poll around the clock; 700 work weekdays 09:00-18:00 in
Asia/Shanghai. About 1% of calls fail, spread out (no storms), and a few agents act at 03:00 on the
scored Sunday (odd hours) so the detectors have something to find.

Then it runs ``trailwarden detect --since <week> --until <end>`` as a subprocess, twice: on the
4-week store, and on a store with 8 weeks of history and the same week to score. Printed: events
scored per second, and the peak RSS of the detect process - which should be about the same in
both runs, since baselines are aggregated in SQL and only the window's events reach pandas.

Usage: python benchmarks/detect_bench.py [--agents 1000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.store.store import open_store  # noqa: E402

END = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # Tuesday 00:00 in Asia/Shanghai
PER_DAY_POLLER = 280
PER_DAY_WORKER = 400
ODD_AGENTS = 5


def build_store(db: Path, agents: int, weeks: int) -> int:
    start = END - timedelta(weeks=weeks + 1)
    with open_store(db, memory_limit="2GB") as store:
        store.con.execute(
            f"""
            INSERT INTO events_hot (event_id, event_time, event_name, event_type, event_rw, event_version,
                service_name, acs_region, source_ip, ip_version, error_code, identity_type, identity,
                account_id, user_name, access_key_id, recipient_account_id, raw, agent, source, ingested_at)
            WITH days AS (
                SELECT d, ? + d * INTERVAL 1 DAY AS day_utc,
                       isodow(timezone('Asia/Shanghai', ? + d * INTERVAL 1 DAY + INTERVAL 12 HOUR)) AS dow
                FROM range({(weeks + 1) * 7}) t(d)
            ),
            slots AS (
                SELECT a, d, day_utc, s,
                       CASE WHEN a < {agents * 3 // 10}
                            THEN day_utc + s * INTERVAL (86400 // {PER_DAY_POLLER}) SECOND
                            ELSE day_utc + INTERVAL 1 HOUR + s * INTERVAL (32400 // {PER_DAY_WORKER}) SECOND
                       END AS t
                FROM range({agents}) r(a), days, range({PER_DAY_WORKER}) q(s)
                WHERE (a < {agents * 3 // 10} AND s < {PER_DAY_POLLER}) OR (a >= {agents * 3 // 10} AND dow <= 5)
            )
            SELECT 'ev-' || a || '-' || d || '-' || s, t,
                   ['DescribeInstances', 'DescribeDisks', 'DescribeImages', 'RunInstances'][1 + (s % 4)],
                   'ApiCall', CASE WHEN s % 4 = 3 THEN 'Write' ELSE 'Read' END, '1', 'Ecs', 'cn-hangzhou',
                   '203.0.113.' || (a % 250), 4,
                   CASE WHEN hash(a, d, s) % 100 = 0 THEN 'Throttling.User' END,
                   'ram-user', 'ram-user:agent-' || a, '1384926508761234', 'agent-' || a,
                   'LTAI5tBench' || a, '1384926508761234', '{{}}', 'agent-' || a, 'bench', now()
            FROM slots
            """, [start, start])  # noqa: S608 - integers from argparse, not text
        # a few agents act at 03:00 local on the scored Sunday: something to find
        sunday = END - timedelta(days=2) + timedelta(hours=3)
        store.con.execute(
            f"""
            INSERT INTO events_hot (event_id, event_time, event_name, event_type, event_rw, event_version,
                service_name, acs_region, source_ip, ip_version, identity_type, identity, account_id,
                user_name, access_key_id, recipient_account_id, raw, agent, source, ingested_at)
            SELECT 'odd-' || a || '-' || s, ? + s * INTERVAL 10 SECOND, 'DescribeInstances', 'ApiCall', 'Read',
                   '1', 'Ecs', 'cn-hangzhou', '203.0.113.9', 4, 'ram-user', 'ram-user:agent-' || a,
                   '1384926508761234', 'agent-' || a, 'LTAI5tBench' || a, '1384926508761234', '{{}}',
                   'agent-' || a, 'bench', now()
            FROM range({agents - ODD_AGENTS}, {agents}) r(a), range(30) q(s)
            """, [sunday - timedelta(hours=8)])  # noqa: S608 - integers, as above
        total = store.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        store.con.execute("CHECKPOINT")
    return int(total)


def write_config(workdir: Path, agents: int, actions: tuple[str, ...] = ("ecs:Describe*", "ecs:RunInstances")) -> Path:
    """Every agent declared, allowed ``actions`` on every resource."""
    allowed = ", ".join(f'"{a}"' for a in actions)
    lines = ["agents:"]
    for a in range(agents):
        lines += [f"  - name: agent-{a}", "    purpose: benchmark agent", "    owner: bench",
                  "    environment: production", f"    identities: [ram-user:agent-{a}]",
                  f'    policies: [{{Version: "1", Statement: [{{Effect: Allow, Action: [{allowed}], Resource: "*"}}]}}]',
                  "    regions: [cn-hangzhou]"]
    (workdir / "agents.yaml").write_text("\n".join(lines) + "\n")
    config = workdir / "trailwarden.yaml"
    config.write_text(f"timezone: Asia/Shanghai\ninventory: {workdir / 'agents.yaml'}\nmemory_limit: 1GB\n")
    return config


def run_over_week(command: str, db: Path, config: Path, window: timedelta = timedelta(weeks=1),
                  ) -> tuple[dict[str, Any], float, float]:
    """``trailwarden <command> --since <END - window> --until END --format json`` as a subprocess:
    its JSON report, the seconds it took and its peak RSS in MiB."""
    since = (END - window).isoformat()
    cmd = [sys.executable, "-m", "pipeline", command, "--since", since, "--until", END.isoformat(),
           "--config", str(config), "--db", str(db), "--format", "json"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    threading.Thread(target=_sample, args=(proc, peak), daemon=True).start()
    out, err = proc.communicate()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed: {err.strip()}")
    return json.loads(out), seconds, peak[0] / 1024


def run_detect(db: Path, config: Path) -> dict[str, Any]:
    report, seconds, peak_mib = run_over_week("detect", db, config)
    return {"events": report["events"], "seconds": seconds, "findings": report["new"], "peak_mib": peak_mib,
            "detectors": {name: stats["seconds"] for name, stats in report["detectors"].items()}}


def _sample(proc: subprocess.Popen[str], peak: list[int]) -> None:
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-detect-"))
    results = []
    try:
        config = write_config(workdir, args.agents)
        for weeks in (4, 8):
            db = workdir / f"w{weeks}.duckdb"
            started = time.monotonic()
            total = build_store(db, args.agents, weeks)
            print(f"built a store of {total:,} events ({weeks} weeks of history + 1 scored) "
                  f"in {time.monotonic() - started:.0f}s (not measured)", flush=True)
            results.append((weeks, total, run_detect(db, config)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'history':<10} {'events in store':>16} {'scored':>11} {'seconds':>8} {'scored/s':>10} "
          f"{'peak MiB':>9} {'findings':>9}")
    for weeks, total, r in results:
        print(f"{weeks} weeks{'':<3} {total:>16,} {r['events']:>11,.0f} {r['seconds']:>8.1f} "
              f"{r['events'] / r['seconds']:>10,.0f} {r['peak_mib']:>9.0f} {r['findings']:>9.0f}")
    for weeks, _, r in results:
        spent = sorted(r["detectors"].items(), key=lambda kv: -kv[1])
        print(f"{weeks} weeks, seconds in each detector ({sum(r['detectors'].values()):.1f} of {r['seconds']:.1f}; "
              f"the rest is loading events and fitting baselines): "
              + ", ".join(f"{name} {sec:.1f}" for name, sec in spent))
    rate = results[0][2]["events"] / results[0][2]["seconds"]
    print(f"target >= 100,000 scored events/s: {'met' if rate >= 100_000 else 'NOT MET'}")


if __name__ == "__main__":
    main()
