"""Saving findings with their account (issue 19, `findings --account`): what the account lookup
at raise time costs.

    python benchmarks/finding_account_bench.py [--events 5000000] [--days 30] [--findings 200]

Writes a store directly with DuckDB: N events over D days in time order, as ingest writes them, a
seventh recorded in another account than the caller's. Then it saves F findings, each spanning a
whole day (the longest dedup window, ``cross_account``'s) with 100 of that day's events, twice in
the same run, into the same store (other agents, so nothing is deduplicated):

* the reference: ``save_findings`` as before (the role-session origin looked up, no account);
* ours: ``save_findings`` looking up each finding's account and home account from its events
  (``pipeline.detection.findings._ACCOUNTS``: one pass over the events of the saved findings' time span).

Prints seconds, findings/s and peak RSS (the process's high-water mark after each step).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.base import Finding
from pipeline.detection import findings as saving
from pipeline.store.store import Store, open_store

START = datetime(2026, 10, 1, tzinfo=UTC)
NO_ACCOUNTS = "SELECT NULL, NULL, NULL WHERE $1 IS NULL AND $2 IS NULL AND $3 IS NULL AND $4 IS NULL"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(store: Store, events: int, days: int) -> None:
    store.con.execute(
        """
        INSERT INTO events BY NAME
        SELECT 'ev-' || i AS event_id, $start::TIMESTAMPTZ + to_seconds(i * ($days * 86400) // $n) AS event_time,
               'DescribeInstances' AS event_name, 'ram-user' AS identity_type, 'ram-user:u' || (i % 500) AS identity,
               (1000000000000000 + i % 3)::VARCHAR AS account_id,
               CASE WHEN i % 7 = 0 THEN (1000000000000000 + (i + 1) % 3)::VARCHAR END AS recipient_account_id,
               'u' || (i % 500) AS agent, 'bench' AS source, now() AS ingested_at
        FROM range($n) t(i)
        """, {"start": START, "n": events, "days": days})
    store.con.execute("CHECKPOINT")


def day_findings(prefix: str, count: int, events: int, days: int) -> list[Finding]:
    """``count`` findings, each over one whole day with 100 of its events."""
    per_day = events // days
    out = []
    for k in range(count):
        day = k % days
        first = START + timedelta(days=day)
        ids = [f"ev-{day * per_day + j * (per_day // 100)}" for j in range(100)]
        out.append(Finding(detector="cross_account", agent=f"{prefix}-{k}", severity="medium", score=0.5,
                           first_seen=first, last_seen=first + timedelta(days=1) - timedelta(seconds=1),
                           summary="bench", event_ids=ids, evidence={}, dedup_key="bench"))
    return out


def timed(label: str, count: int, run: object) -> float:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"{label:<44} {seconds:7.2f} s  {count / seconds:9,.1f} findings/s  peak RSS {peak_mib():6.0f} MiB")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--findings", type=int, default=200)
    args = parser.parse_args()
    dedup = {"cross_account": timedelta(hours=24)}
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.duckdb") as store:
        started = time.perf_counter()
        fill(store, args.events, args.days)
        print(f"{args.events:,} events over {args.days} days written in {time.perf_counter() - started:.1f} s; "
              f"{args.findings} findings of a whole day ({args.events // args.days:,} events) each")
        lookup = saving._ACCOUNTS
        saving._ACCOUNTS = NO_ACCOUNTS
        reference = timed("reference: save_findings without the account", args.findings,
                          lambda: saving.save_findings(store, day_findings("ref", args.findings, args.events,
                                                                           args.days), dedup))
        saving._ACCOUNTS = lookup
        ours = timed("save_findings with account and home account", args.findings,
                     lambda: saving.save_findings(store, day_findings("acct", args.findings, args.events,
                                                                      args.days), dedup))
        filled = store.con.execute("SELECT count(*) FILTER (WHERE account IS NOT NULL), count(*) FROM findings "
                                   "WHERE agent LIKE 'acct-%'").fetchall()[0]
        print(f"with / reference: {ours / reference:.2f}x; accounts filled: {filled[0]} of {filled[1]}")


if __name__ == "__main__":
    main()
