"""The `accounts` listing at scale (issue 19): the last event and event count per account.

    python benchmarks/accounts_bench.py [--events 5000000] [--accounts 20] [--days 180]

Writes a store directly with DuckDB: N events over A accounts and D days, in time order as ingest
writes them (a seventh are calls from one account's credentials into another, so
``recipient_account_id`` decides; the last account's trail stops three days early). Then it
times, in the same run:

* ``list_accounts``: the whole listing (the last sync, one grouped pass over the last 30 days of
  events, older row groups skipped by their time ranges);
* the reference: one bare scan of the same columns over all events, ``SELECT max(event_time),
  max(coalesce(recipient_account_id, account_id))`` (the least a listing over the whole history
  must read, without even grouping).

Prints seconds, events/s and peak RSS (the process's high-water mark after each step).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.config import Account, Config
from pipeline.ram.accounts import list_accounts
from pipeline.store.store import Store, open_store

START = datetime(2026, 10, 1, tzinfo=UTC)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def account(i: int) -> str:
    return f"{1000000000000000 + i}"


def fill(store: Store, events: int, accounts: int, days: int) -> None:
    """N events over ``days``, account i % A; the last account stops three days before the end."""
    store.con.execute(
        """
        INSERT INTO events_hot BY NAME
        SELECT 'ev-' || i AS event_id,
               $start::TIMESTAMPTZ + to_seconds((i * ($days * 86400 - CASE WHEN i % $a = $a - 1 THEN 3 * 86400 ELSE 0 END))
                                                 // $n) AS event_time,
               'DescribeInstances' AS event_name, 'ram-user' AS identity_type, 'ram-user:u' || (i % 500) AS identity,
               (1000000000000000 + i % $a)::VARCHAR AS account_id,
               CASE WHEN i % 7 = 0 THEN (1000000000000000 + (i + 1) % ($a - 1))::VARCHAR END AS recipient_account_id,
               'u' || (i % 500) AS agent, 'bench' AS source, now() AS ingested_at
        FROM range($n) t(i)
        """, {"start": START, "n": events, "a": accounts, "days": days})
    store.con.execute("CHECKPOINT")


def timed(label: str, events: int, run: object) -> float:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"{label:<34} {seconds:7.2f} s  {events / seconds:13,.0f} events/s  peak RSS {peak_mib():6.0f} MiB")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--days", type=int, default=180)
    args = parser.parse_args()
    config = Config(accounts=[Account(id=account(i), alias=f"acct-{i}") for i in range(args.accounts)])
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.duckdb") as store:
        started = time.perf_counter()
        fill(store, args.events, args.accounts, args.days)
        print(f"{args.events:,} events over {args.accounts} accounts and {args.days} days written in "
              f"{time.perf_counter() - started:.1f} s")
        view = None

        def listing() -> None:
            nonlocal view
            view = list_accounts(store, config)

        reference = timed("reference: bare scan, same columns", args.events, lambda: store.con.execute(
            "SELECT max(event_time), max(coalesce(recipient_account_id, account_id)) FROM events").fetchall())
        ours = timed("accounts listing", args.events, listing)
        assert view is not None
        gaps = [r["alias"] for r in view.rows if r["gap"]]
        print(f"listing / reference: {ours / reference:.1f}x; gaps: {', '.join(gaps) or 'none'}")


if __name__ == "__main__":
    main()
