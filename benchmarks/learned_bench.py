"""What the second generation of learned behaviour (issue 15: ``volume``, ``novelty``,
``enumeration``, ``anomalous_behaviour``, ``credential_misuse``, ``signin_hygiene``) costs
``trailwarden detect``, measured against the detectors of before in the same run, and whether its
memory follows the history.

Builds stores of an organisation directly in DuckDB (``INSERT ... SELECT`` over generated rows:
writing 8 weeks of 500 agents as ActionTrail JSON and ingesting it would take hours here; the
point is detection) with 4 and 8 weeks of history plus the scored day, then runs ``trailwarden
detect`` over the last day of each as a subprocess, twice: with the six new detectors disabled in
the config (the reference: the detectors before issue 15) and with every detector. The rows are
what the new detectors work on, not a single repeated call: each agent calls 6-20 APIs of up to
6 services, reads objects of its own buckets, from its own networks and clients - pollers around
the clock from a VPC with a long-term key, people on weekdays from an office with several
clients and console sign-ins with MFA, roles with an STS key per hourly session from Alibaba's
service network - and ~1% of calls fail. ``--per-agent-day`` sets the volume (default 3,400: a
500-agent day is ~1.6M events, issue 15's size).

Printed per run: scored events per second, seconds, peak RSS and the seconds in each new
detector; then the per-event cost of the full set over the reference (issue 15's target: at most
2x) and the peak RSS at 8 weeks over 4 (flat: the baselines are aggregated in DuckDB).

Usage: python benchmarks/learned_bench.py [--agents 500] [--per-agent-day 3400] [--weeks 4 8] [--keep]
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

import detect_bench  # noqa: E402
from detect_bench import END, run_over_week  # noqa: E402

from pipeline.store.store import open_store  # noqa: E402

NEW = ("volume", "novelty", "enumeration", "anomalous_behaviour", "credential_misuse", "signin_hygiene")
SERVICES = ("Ecs", "Oss", "Rds", "Vpc", "Slb", "Cms")
UAS = ("aliyun-cli/3.0.200", "AlibabaCloud (Linux; x86_64) Python/3.11.9 Core/2.14.0", "Terraform/1.9.8",
       "AlibabaCloud (linux; amd64) Go/go1.22.5 Core/1.0.0", "AliyunConsole")


def build_store(db: Path, agents: int, weeks: int, per_day: int) -> int:
    """``weeks`` of history and the scored day of ``agents`` agents, ``per_day`` calls each a day
    (people: on weekdays), written in SQL. Agent ``a`` is a poller when ``a % 10 < 3``, a person
    when ``< 7``, else a role; its calls cycle through its own APIs (6 to 20), buckets and clients."""
    start = END - timedelta(weeks=weeks, days=1)
    days = weeks * 7 + 1
    with open_store(db, memory_limit="2GB") as store:
        store.con.execute(
            f"""
            INSERT INTO events_hot (event_id, event_time, event_name, event_type, event_rw, event_version,
                service_name, acs_region, source_ip, ip_version, user_agent, error_code, identity_type, identity,
                account_id, user_name, access_key_id, mfa_authenticated, session_created, vpc_id,
                referenced_resources, recipient_account_id, raw, agent, source, ingested_at)
            WITH days AS (
                SELECT d, ? + d * INTERVAL 1 DAY AS day_utc,
                       isodow(timezone('Asia/Shanghai', ? + d * INTERVAL 1 DAY + INTERVAL 12 HOUR)) AS dow
                FROM range({days}) t(d)),
            calls AS (
                SELECT a, d, s, a % 10 AS flavour, CAST(hash(a, d, s) % 1000003 AS BIGINT) AS h,
                       CASE WHEN a % 10 >= 3 AND a % 10 < 7
                            THEN day_utc + INTERVAL 1 HOUR + (s * 32400 // {per_day}) * INTERVAL 1 SECOND
                            ELSE day_utc + (s * 86400 // {per_day}) * INTERVAL 1 SECOND END AS t,
                       s % (6 + a % 15) AS api
                FROM range({agents}) r(a), days, range({per_day}) q(s)
                WHERE NOT (a % 10 >= 3 AND a % 10 < 7 AND dow > 5))
            SELECT 'ev-' || a || '-' || d || '-' || s, t,
                   CASE WHEN flavour >= 3 AND flavour < 7 AND s = 0 THEN 'ConsoleSignin'
                        ELSE ['Describe', 'List', 'Get', 'Query'][1 + api % 4] || 'Thing' || api END,
                   'ApiCall', CASE WHEN api % 7 = 6 THEN 'Write' ELSE 'Read' END, '1',
                   [{", ".join(f"'{x}'" for x in SERVICES)}][1 + (api + a) % 6], 'cn-hangzhou',
                   CASE WHEN flavour < 3 THEN '172.16.' || (a % 200) || '.' || (1 + h % 3)
                        WHEN flavour < 7 THEN '203.0.' || (a % 100) || '.' || (1 + h % 50)
                        ELSE '11.' || (a % 200) || '.' || (h % 250) || '.' || (1 + s % 250) END, 4,
                   [{", ".join(f"'{x}'" for x in UAS)}][1 + CASE WHEN flavour < 7 AND flavour >= 3 THEN h % 3
                                                                  ELSE a % 4 END],
                   CASE WHEN h % 100 = 0 THEN 'Throttling.User' END,
                   CASE WHEN flavour < 7 THEN 'ram-user' ELSE 'assumed-role' END, 'ram-user:agent-' || a,
                   '1384926508761234', 'agent-' || a,
                   CASE WHEN flavour < 7 THEN 'LTAI5tBench' || a
                        ELSE 'STS.Bench' || a || '-' || d || '-' || (s * 24 // {per_day}) END,
                   CASE WHEN flavour >= 3 AND flavour < 7 AND s = 0 THEN true END,
                   CASE WHEN flavour >= 3 AND flavour < 7 AND s = 0 THEN t END,
                   CASE WHEN flavour < 3 THEN 'vpc-bench' END,
                   CASE WHEN ((api + a) % 6) = 1
                        THEN '{{"ACS::OSS::Object": ["bucket-' || a || '-' || (h % 3) || '/o/' || s || '"]}}' END,
                   '1384926508761234', '{{}}', 'agent-' || a, 'bench', now()
            FROM calls
            """, [start, start])  # noqa: S608 - integers from argparse, not text
        total = store.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        store.con.execute("CHECKPOINT")
    return int(total)


def write_config(workdir: Path, agents: int) -> Path:
    """Every agent declared, allowed what it does (``out_of_scope`` still evaluates each call)."""
    return detect_bench.write_config(workdir, agents, ("ecs:*", "oss:*", "rds:*", "vpc:*", "slb:*", "cms:*"))


def detect_day(db: Path, config: Path) -> dict[str, Any]:
    report, seconds, peak = run_over_week("detect", db, config, timedelta(days=1))
    return {"events": report["events"], "seconds": seconds, "peak_mib": peak, "findings": report["new"],
            "detectors": {k: v["seconds"] for k, v in report["detectors"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--per-agent-day", type=int, default=3400)
    parser.add_argument("--weeks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-learned-"))
    rows = []
    try:
        config = write_config(workdir, args.agents)
        reference = workdir / "reference.yaml"
        reference.write_text(config.read_text() + "detectors:\n" + "".join(f"  {d}: {{enabled: false}}\n" for d in NEW))
        for weeks in args.weeks:
            db = workdir / f"w{weeks}.duckdb"
            started = time.monotonic()
            total = build_store(db, args.agents, weeks, args.per_agent_day)
            print(f"built {total:,} events ({weeks} weeks + 1) in {time.monotonic() - started:.0f}s", flush=True)
            for name, cfg in (("reference", reference), ("every detector", config)):
                detect_day(db, cfg)  # the first run fits and stores the day's baselines: not measured
                rows.append((weeks, name, detect_day(db, cfg)))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'history':<8} {'detectors':<15} {'scored':>9} {'seconds':>8} {'scored/s':>9} {'peak MiB':>9} {'findings':>8}  new detectors' seconds")
    for weeks, name, r in rows:
        spent = ", ".join(f"{d} {r['detectors'].get(d, 0):.2f}" for d in NEW if d in r["detectors"]) or "-"
        print(f"{weeks} weeks  {name:<15} {r['events']:>9,} {r['seconds']:>8.1f} {r['events'] / r['seconds']:>9,.0f} "
              f"{r['peak_mib']:>9.0f} {r['findings']:>8}  {spent}")
    by = {(w, n): r for w, n, r in rows}
    for weeks in args.weeks:
        ref, full = by[(weeks, "reference")], by[(weeks, "every detector")]
        cost = (full["seconds"] / full["events"]) / (ref["seconds"] / ref["events"])
        print(f"{weeks} weeks: time per event with every detector = {cost:.2f}x the reference (target <= 2x)")
    if (8, "every detector") in by and (4, "every detector") in by:
        print(f"peak RSS, every detector, 8 weeks / 4 weeks = "
              f"{by[(8, 'every detector')]['peak_mib'] / by[(4, 'every detector')]['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
