"""Can a responder export a busy agent's evidence? (Issue 18 item 5: replay and evidence export
stream - memory flat in the number of events, at most 2x a bare SELECT of the same rows in wall
time for the table and JSON formats, an agent with 1M events exported within the default memory
limit.)

Builds a store directly in DuckDB: one agent, ``busy``, with N events (default 1,000,000) over 30
days, each with a realistic raw event (~1 KB of ActionTrail JSON: identity, request parameters,
resources), beside 20 quieter agents. Then, each in a process of its own so its peak memory is
its own:

* the reference: a bare ``SELECT`` of the same rows and columns the replay reads (raw JSON
  included), fetched in batches and dropped;
* ``trailwarden replay busy --format json|table|html -o FILE`` end to end, with the store's
  default memory limit.

Each round measures the reference and then each format, ``--rounds`` times (3): this machine's
speed drifts by a third between minutes, so one pair of runs can say 2x or 3.3x of the same code.
Prints the median seconds (with their spread), CPU seconds, events/s and the peak RSS of each, and
each format's ratio to the reference (the median of its ratios to its own round's), and checks that
the JSON export holds every event (one timeline entry a line). Every event names an object of its
own (``referenced_resources`` as ingest stores it), so the RAM mapping sees a distinct call per event
and the blast radius lists N resources: the worst case for the export, which maps each distinct call
once. ``--resources shared``: one of 7 buckets instead, calls that repeat (the usual agent).
``--memory-limit``: the config's ``memory_limit`` for the replay (default: the store's default,
256MB; the reference keeps DuckDB's own, 80% of RAM). Near its limit DuckDB 2.0.1 flushes its
allocator as it makes room (``BufferPool::EvictBlocks`` -> ``Allocator::FlushAll``: glibc's
``malloc_trim(0)`` and a jemalloc purge, seen in gdb and strace here), and the export then
touches that memory afresh: at 1M events, 1.68M page faults at 256MB against 0.96M at 4GB.

Each run exports to a new file, as a responder does (removed once counted): replacing a file makes
ext4 write the new one out before the rename returns (``auto_da_alloc``, what keeps a replaced file
whole on a crash), ~1 s more for the 1.6 GiB JSON export on this disk, which the first round did
not pay and the later ones did.

Usage: python benchmarks/replay_export_bench.py [--events 1000000] [--resources own|shared] [--rounds 3]
       [--memory-limit 256MB] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.store.store import DEFAULT_MEMORY_LIMIT, open_store  # noqa: E402

END = datetime(2026, 11, 30, tzinfo=UTC)
SINCE = END - timedelta(days=30)
COLUMNS = ("event_id, event_time, event_name, event_type, event_rw, service_name, service_code, acs_region, "
           "source_ip, user_agent, access_key_id, error_code, error_message, identity, referenced_resources, "
           "resource_type, resource_name, recipient_account_id, account_id, raw")

REFERENCE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
result = con.execute("SELECT {columns} FROM events WHERE agent = 'busy' AND event_time >= ? AND event_time < ? "
                     "ORDER BY event_time, event_id", [sys.argv[2], sys.argv[3]])
n = 0
while batch := result.fetchmany(2048):
    n += len(batch)
print(n)
"""


def build_store(db: Path, events: int, own_objects: bool = True) -> int:
    span = int((END - SINCE).total_seconds())
    with open_store(db, memory_limit="4GB") as store:
        store.con.execute(
            f"""
            INSERT INTO events_hot (event_id, event_time, event_name, event_type, event_rw, event_version,
                service_name, acs_region, source_ip, ip_version, user_agent, error_code, identity_type, identity,
                account_id, user_name, access_key_id, recipient_account_id, referenced_resources, raw, agent, source,
                ingested_at)
            WITH calls AS (
                SELECT i, CASE WHEN i % 21 = 0 OR i < {events} THEN 'busy' ELSE 'quiet-' || (i % 20) END AS who,
                       ? + (i * {span} // {events + events // 20}) * INTERVAL 1 SECOND AS t,
                       ['GetObject', 'PutObject', 'DescribeInstances', 'ListObjects'][1 + (i % 4)] AS name,
                       CASE WHEN i % 97 = 0 THEN 'AccessDenied' END AS err
                FROM range({events + events // 20}) r(i)
            )
            SELECT printf('%08x-0000-4000-8000-%012d', i, i), t, name, 'ApiCall',
                   CASE WHEN name = 'PutObject' THEN 'Write' ELSE 'Read' END, '1',
                   CASE WHEN name LIKE '%Object%' THEN 'Oss' ELSE 'Ecs' END, 'cn-hangzhou',
                   '203.0.113.' || (i % 250), 4, 'aliyun-sdk-python/2.13.37 Python/3.11.7 Linux/5.15', err,
                   'ram-user', 'ram-user:' || who, '1384926508761234', who, 'LTAI5tBench' || who,
                   '1384926508761234',
                   {REFERENCED if own_objects else SHARED}::VARCHAR,  -- as ingest normalises it
                   json_object('eventId', printf('%08x-0000-4000-8000-%012d', i, i), 'eventVersion', '1',
                       'eventTime', strftime(t, '%Y-%m-%dT%H:%M:%SZ'), 'eventName', name, 'eventType', 'ApiCall',
                       'eventRW', CASE WHEN name = 'PutObject' THEN 'Write' ELSE 'Read' END,
                       'acsRegion', 'cn-hangzhou', 'sourceIpAddress', '203.0.113.' || (i % 250),
                       'userAgent', 'aliyun-sdk-python/2.13.37 Python/3.11.7 Linux/5.15',
                       'requestId', printf('%08X-1B2C-4D5E-8F90-%012d', i * 7, i),
                       'serviceName', CASE WHEN name LIKE '%Object%' THEN 'Oss' ELSE 'Ecs' END,
                       'userIdentity', json_object('type', 'ram-user', 'principalId', '27654321098765' || (i % 9),
                           'accountId', '1384926508761234', 'userName', who, 'accessKeyId', 'LTAI5tBench' || who),
                       'requestParameters', json_object('BucketName', 'evidence-bucket-' || (i % 7),
                           'ObjectName', 'exports/2026/11/' || printf('%010d', i) || '/part-0000.parquet',
                           'RegionId', 'cn-hangzhou', 'HostId', 'evidence-bucket.oss-cn-hangzhou.aliyuncs.com',
                           'x-oss-request-id', printf('%024X', i * 31)),
                       'referencedResources', json_object('ACS::OSS::Object',
                           ['evidence-bucket-' || (i % 7) || '/exports/2026/11/' || printf('%010d', i)]),
                       'additionalEventData', json_object('callerBucketLocation', 'oss-cn-hangzhou',
                           'bytesTransferred', (i * 131) % 9000000),
                       'errorCode', err, 'errorMessage', CASE WHEN err IS NOT NULL THEN 'The bucket policy denies'
                       END, 'recipientAccountId', '1384926508761234')::VARCHAR,
                   who, 'bench', now()
            FROM calls
            """, [SINCE])  # noqa: S608 - integers from argparse, not text
        busy = store.con.execute("SELECT count(*) FROM events WHERE agent = 'busy'").fetchall()[0][0]
        store.con.execute("CHECKPOINT")
    return int(busy)


# referenced_resources: every event an object of its own, or one of 7 buckets (calls that repeat)
REFERENCED = ("json_object('ACS::OSS::Object', ['evidence-bucket-' || (i % 7) || '/exports/2026/11/' "
              "|| printf('%010d', i)])")
SHARED = "json_object('ACS::OSS::Bucket', ['evidence-bucket-' || (i % 7)])"


def measure(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of a child process."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv[:4])}… failed: {proc.stderr.read() if proc.stderr else ''}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the busy agent")
    parser.add_argument("--resources", choices=("own", "shared"), default="own",
                        help="own: every event names an object of its own (the worst case: a blast radius of "
                             "N resources, a RAM mapping per event); shared: one of 7 buckets")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT,
                        help="the config's memory_limit for the replay (default: %(default)s, the store's default)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each round measures the reference and then each format; the medians are shown, "
                             "each format's ratio the median of its ratios to its own round's reference")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-replay-export-"))
    try:
        db = workdir / "tw.duckdb"
        (workdir / "agents.yaml").write_text("agents: []\n")
        config = workdir / "trailwarden.yaml"
        config.write_text(f"timezone: Asia/Shanghai\ninventory: {workdir / 'agents.yaml'}\n"
                          f"memory_limit: {args.memory_limit}\n")
        started = time.monotonic()
        n = build_store(db, args.events, args.resources == "own")
        print(f"store: busy has {n:,} events ({db.stat().st_size / 2**20:,.0f} MiB on disk), "
              f"built in {time.monotonic() - started:.0f} s; the replay's memory_limit: {args.memory_limit}")
        window = [SINCE.isoformat(), END.isoformat()]
        runs: dict[str, list[tuple[float, float, float]]] = {}
        ratios: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for _ in range(max(1, args.rounds)):
            reference = measure([sys.executable, "-c", REFERENCE.format(columns=COLUMNS), str(db), *window])
            runs.setdefault("reference", []).append(reference)
            for fmt in ("table", "json", "html"):
                out = workdir / f"out.{fmt}"
                run = measure([sys.executable, "-m", "pipeline", "--config", str(config), "replay", "busy",
                               "--since", window[0], "--until", window[1], "--db", str(db), "--format", fmt,
                               "-o", str(out)])
                if fmt == "json":
                    with out.open(encoding="utf-8") as f:
                        exported = sum(line.startswith('    {"event_id":') for line in f)
                    if exported != n:
                        raise SystemExit(f"the JSON export holds {exported:,} events of {n:,}")
                runs.setdefault(fmt, []).append(run)
                ratios.setdefault(fmt, []).append(run[0] / reference[0])
                sizes[fmt] = out.stat().st_size
                out.unlink()  # each run writes a new file (see the docstring)
        print(f"{len(runs['reference'])} rounds; medians (each ratio: the median of the format's ratios to its "
              "round's reference, then the lowest and highest; the spread of wall times in brackets)")
        print(f"{'measure':<46} {'seconds':>8} {'(spread)':>13} {'CPU s':>7} {'events/s':>10} {'peak RSS':>10} "
              f"{'x SELECT':>9} {'(spread)':>11}")
        for name, measured in runs.items():
            wall = statistics.median(m[0] for m in measured)
            cpu = statistics.median(m[1] for m in measured)
            rss = max(m[2] for m in measured)
            spread = f"({min(m[0] for m in measured):.1f}-{max(m[0] for m in measured):.1f})"
            ratio = statistics.median(ratios[name]) if name in ratios else 1.0
            label = ("reference: bare SELECT of the rows (raw incl.)" if name == "reference"
                     else f"replay --format {name} ({sizes[name] / 2**20:,.0f} MiB)")
            ratio_spread = f"({min(ratios[name]):.2f}-{max(ratios[name]):.2f})" if name in ratios else ""
            print(f"{label:<46} {wall:>8.2f} {spread:>13} {cpu:>7.1f} {n / wall:>10,.0f} {rss:>6,.0f} MiB "
                  f"{ratio:>9.2f} {ratio_spread:>11}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
