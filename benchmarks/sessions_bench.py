"""Role-session linking at scale (issue 19): link N events made by role sessions to S sessions.

    python benchmarks/sessions_bench.py [--events 1000000] [--sessions 20000] [--ingest 200000]

Writes a store directly with DuckDB (not through ingest: the point is the linking): S AssumeRole
calls by 500 callers over three accounts (with their raw JSON, request parameters and all), and
N events of those sessions spread over each session's hour, with ~8% of the sessions reusing a
name a live session of the same role has (told apart by the caller's network), and ~1% of events
from sessions started before the store. Then it times:

* ``link_sessions(full=True)``: every session and link built from nothing (the worst case);
* an incremental run after 10,000 more events arrive (what each ingest pays);
* the reference, in the same run: one bare scan of the same events grouped by role and session
  name (the least any linking must read);
* with ``--ingest M``: ``ingest_files`` of M generated events through the real path, then the
  link step on them, to show what linking adds to an ingest.

Prints seconds, events/s and peak RSS (the process's high-water mark after each step).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.inventory import Attributor, Inventory
from pipeline.ingest.run import ingest_files
from pipeline.store.sessions import link_sessions
from pipeline.store.store import Store, open_store

ACCOUNTS = ("1111222233334444", "5555666677778888", "9999000011112222")
START = datetime(2026, 11, 1, tzinfo=UTC)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(store: Store, events: int, sessions: int, offset: int = 0) -> None:
    """S sessions (AssumeRole rows) and N role events, generated in SQL."""
    con = store.con
    params = {"accounts": list(ACCOUNTS), "start": START, "sessions": sessions}
    if offset == 0:
        con.execute(
            """
            INSERT INTO events_hot BY NAME
            SELECT 'ar-' || i AS event_id, $start::TIMESTAMPTZ + to_seconds(i * 120) AS event_time,
                   'AssumeRole' AS event_name, 'Sts' AS service_name, 'ram-user' AS identity_type,
                   'ram-user:caller-' || (i % 500) AS identity, $accounts[1 + i % 3] AS account_id,
                   'LTAI5tCaller' || (i % 500) AS access_key_id, '10.0.' || (i % 250) || '.9' AS source_ip,
                   'caller-' || (i % 500) AS agent, 'bench' AS source, now() AS ingested_at,
                   json_object('eventId', 'ar-' || i, 'eventName', 'AssumeRole',
                               'requestParameters', json_object(
                                   'RoleArn', 'acs:ram::' || $accounts[1 + (i + 1) % 3] || ':role/' || CASE WHEN i % 25 IN (0, 1) THEN 'role-shared'
                                                                                        ELSE 'role-' || (i % 200) END,
                                   'RoleSessionName', CASE WHEN i % 25 IN (0, 1) THEN 'shared' ELSE 's-' || i END,
                                   'DurationSeconds', '3600'),
                               'userAgent', 'aliyun-sdk-python/2.0 ' || repeat('x', 200)) AS raw
            FROM range($sessions) t(i)
            """, params)
    con.execute(
        """
        INSERT INTO events_hot BY NAME
        SELECT 'ev-' || ($offset + j) AS event_id,
               $start::TIMESTAMPTZ + to_seconds(s * 120 + 5 + (j * 7919) % 3500) AS event_time,
               'GetObject' AS event_name, 'Oss' AS service_name, 'assumed-role' AS identity_type,
               'role:role-' || (s % 200) AS identity, $accounts[1 + (s + 1) % 3] AS account_id,
               CASE WHEN s % 25 IN (0, 1) THEN 'role-shared' ELSE 'role-' || (s % 200) END AS role_name,
               CASE WHEN s % 25 IN (0, 1) THEN 'shared' WHEN j % 97 = 0 THEN 'gone-' || s ELSE 's-' || s END
                   AS session_name,
               'STS.' || s AS access_key_id, '10.0.' || (s % 250) || '.9' AS source_ip,
               'role:role-' || (s % 200) AS agent, 'bench' AS source, now() AS ingested_at,
               '{"eventName": "GetObject"}' AS raw
        FROM (SELECT j, (j * 2654435761) % $sessions AS s FROM range($offset, $offset + $events) t(j))
        """, {**params, "events": events, "offset": offset})


def ndjson(path: Path, events: int) -> Path:
    """M realistic events through the real parser: 1 AssumeRole per 50 role events."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(events):
            t = (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            s = i // 50
            if i % 50 == 0:
                ident = {"type": "ram-user", "principalId": "2001", "accountId": ACCOUNTS[0],
                         "accessKeyId": "LTAI5tBench", "userName": "ci"}
                extra = {"eventName": "AssumeRole", "serviceName": "Sts",
                         "requestParameters": {"RoleArn": f"acs:ram::{ACCOUNTS[1]}:role/r{s % 40}",
                                               "RoleSessionName": f"s{s}"}}
            else:
                ident = {"type": "assumed-role", "principalId": f"3001:s{s}", "accountId": ACCOUNTS[1],
                         "accessKeyId": f"STS.{s}", "userName": f"r{s % 40}:s{s}"}
                extra = {"eventName": "GetObject", "serviceName": "Oss", "requestParameters": {"ObjectName": f"k{i}"}}
            out.write(json.dumps({"eventId": f"n-{i}", "eventVersion": "1", "eventType": "ApiCall", "eventRW": "Read",
                                  "eventTime": t, "acsRegion": "cn-hangzhou", "sourceIpAddress": "198.51.100.4",
                                  "userAgent": "aliyun-sdk-python/2.0", "requestId": f"q{i}", "userIdentity": ident,
                                  **extra}) + "\n")
    return path


def timed(label: str, fn, rows: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    print(f"{label:<48} {seconds:8.2f} s  {rows / seconds:>12,.0f} events/s  peak {peak_mib():,.0f} MiB"
          + (f"  {result}" if result is not None else ""))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--ingest", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.duckdb") as store:
        fill(store, args.events, args.sessions)
        print(f"{args.events:,} role events, {args.sessions:,} sessions; peak after generating {peak_mib():,.0f} MiB")
        timed("reference: bare scan grouped by role, session", lambda: len(store.con.execute(
            "SELECT role_name, session_name, count(*) FROM events WHERE identity_type = 'assumed-role' "
            "GROUP BY ALL").fetchall()), args.events)
        timed("link_sessions(full=True)", lambda: _brief(link_sessions(store, full=True)), args.events)
        fill(store, 10_000, args.sessions, offset=args.events)
        timed("incremental: 10,000 new events", lambda: _brief(link_sessions(store)), 10_000)
        if args.ingest:
            ingest_overhead(Path(tmp), args.ingest)


def bound_inventory() -> Inventory:
    """The generated callers and roles as agents bound to their accounts (the rule of issue 19)."""
    agents = [{"name": "ci", "purpose": "p", "owner": "o", "environment": "e", "identities": ["ram-user:ci"],
               "accounts": [ACCOUNTS[0]]}]
    agents += [{"name": f"role-{r}", "purpose": "p", "owner": "o", "environment": "e", "identities": [f"role:r{r}"],
                "accounts": [ACCOUNTS[1]], "assumable_by": ["ci"]} for r in range(40)]
    return Inventory.model_validate({"agents": agents})


def _ingested(store: Store, path: Path, attribute: Attributor) -> int:
    """Ingest, then checkpoint: what ingest wrote is in the store file, not left in the WAL for
    the next commit (the link step's) to write."""
    new = ingest_files(store, [path], attribute, now=START + timedelta(days=30)).new
    store.con.execute("CHECKPOINT")
    return new


def ingest_overhead(tmp: Path, events: int) -> None:
    """ingest_files of the same file into fresh stores: plain (no accounts, no linking), then with
    an inventory bound to accounts and the link step, then plain again (the reference is the mean
    of the two plain runs, so the machine's drift counts on both sides)."""
    path = ndjson(tmp / "in.ndjson", events)
    plain: list[float] = []
    for run, attribute in enumerate((Attributor(None), Attributor(bound_inventory()), Attributor(None))):
        with open_store(tmp / f"ingest-{run}.duckdb") as fresh:
            label = "with accounts bound" if run == 1 else "plain"
            took = timed(f"ingest_files of {events:,} events ({label})", lambda a=attribute, f=fresh: _ingested(
                f, path, a), events)
            if run == 1:
                took += timed("  + link_sessions after it", lambda f=fresh: _brief(link_sessions(f)), events)
                bound = took
            else:
                plain.append(took)
    reference = sum(plain) / len(plain)
    print(f"accounts and session linking add {100 * (bound / reference - 1):.1f}% to ingest "
          f"(plain runs {plain[0]:.2f} s and {plain[1]:.2f} s)")


def _brief(report) -> str:  # type: ignore[no-untyped-def]
    return (f"sessions {report.sessions:,} linked {report.linked:,} ambiguous {report.ambiguous:,} "
            f"no-session {report.no_session:,}")


if __name__ == "__main__":
    main()
