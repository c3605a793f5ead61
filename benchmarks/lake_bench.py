"""The tiered store at scale (issue 18, item 6's store part): a 10M- and a 100M-event store.

Builds a store directly with DuckDB (fast: the point is the store, not ingest): ``--days`` UTC days
ending yesterday, the last two hot in ``events_hot``, the older ones sealed as one zstd Parquet
file per day written and registered by ``lake``'s own steps (``_write_file``, ``lake_identities``,
``lake_files``, the view), with ``--agents`` agents of 2 identities and 1 AccessKey each plus as
many unregistered identities (~5% of events); agent 7 is busy (~1% of all events). Each event has
a real ~1.56 KB raw JSON (the ActionTrail shape, with its random parts: ids, request ids,
addresses, resource ids; a role's STS key one per hour, as a session), stored as the store stores it. A day's rows are generated
already in the seal's order (identity, then time), so no sort: ~75k events/s on this 2-core
machine when it is quiet (the old generator, which sorted each day, ~13k).

Then it measures, on that store:
- the service cycle (``trailwarden run``: ingest of 10,000 new events from a files source,
  detect, alert, seal, snapshot) after a settling cycle (the first with events of a UTC day
  also fits the baselines; a second ``--parts cycle`` on a kept store is the steady state);
- an inventory change (10 identities move agent): ``reattribute_if_changed``; beside it the scan
  the previous design started with (every stored event's identity columns: its UPDATE did more);
- the daily refit (``learning.refit`` for tomorrow: 28 days of history);
- the snapshot publish (the hot DuckDB file), beside copying the whole store (what it cost before);
- replay of the busy agent's last 7 days as JSON, beside a bare ``SELECT`` of the same rows;
- disk bytes per event.

Usage: python benchmarks/lake_bench.py --events 10000000 [--events 100000000] [--days 30] [--dir DIR]
       [--parts cycle,refit]
Prints peak RSS of each subprocess. Check ``df`` first: 100M events take ~18 GB.
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detect_bench import _sample  # noqa: E402 - the process-tree RSS sampler

from models.inventory import Inventory  # noqa: E402
from pipeline.store import lake  # noqa: E402
from pipeline.store.attribution import agent_filter, reattribute_if_changed  # noqa: E402
from pipeline.store.store import Store, open_store, publish_snapshot  # noqa: E402
from pipeline.store.tiers import STORED_COLUMNS, lake_dir, parquet_source  # noqa: E402

HOT_DAYS = 2
ACCOUNT = "1384926508761234"

# The identities of a day, in the order the sealed files are sorted (identity, then time): each
# gets a number of *units* (user and role of an agent 19 each, the busy agent's 60, an
# unregistered identity 2: ~5% of events), a unit being n / units consecutive rows of the day.
UNITS_USER, UNITS_BUSY, UNITS_STRAY = 19, 60, 2
BUSY_AGENT = 7  # ~1% of all events: the "busy agent" replay exports


def identities(agents: int) -> list[tuple[str, int, int, int]]:
    """(identity, agent number, kind 0 user / 1 role / 2 unregistered, units), sorted by identity
    as DuckDB sorts VARCHAR (bytewise: these are ASCII)."""
    rows = []
    for a in range(agents):
        units = UNITS_BUSY if a == BUSY_AGENT else UNITS_USER
        rows += [(f"ram-user:agent-{a}", a, 0, units), (f"role:role-{a}", a, 1, units),
                 (f"ram-user:stray-{a}", a, 2, UNITS_STRAY)]
    return sorted(rows, key=lambda r: r[0].encode())


def unit_codes(agents: int) -> list[int]:
    """One number per unit, in order: its identity's agent, kind and unit range [u0, u1), packed
    (``((u0 * 2**14 + u1) * 2**10 + agent) * 4 + kind``) so one list lookup per row finds them."""
    if agents > 1024:
        raise SystemExit("--agents: at most 1024")
    codes: list[int] = []
    for _identity, a, kind, units in identities(agents):
        u0 = len(codes)
        codes += [((u0 * 2**14 + u0 + units) * 2**10 + a) * 4 + kind] * units
    return codes


# One event of day ``$day`` (DATE), row ``i`` of ``$n``, in the units' order: row i is in unit
# i * $units // $n, whose identity owns rows [s, e); its events are spread over the day in order,
# so the rows come out sorted by identity then time and need no sort (a projection of range()
# keeps its order; a join does not). Random parts (ids, request ids, resource ids, STS keys) are
# hashes of (day, i, k); a role's STS key is a hash of (agent, day, hour): one session an hour.
_EVENTS = """
SELECT *, concat('{"eventId":"', event_id, '","eventVersion":"1","eventSource":"', event_source
   , '","eventType":"ApiCall","eventRW":"', event_rw, '","eventName":"', event_name
   , '","eventTime":"', strftime(event_time, '%Y-%m-%dT%H:%M:%SZ'), '","acsRegion":"cn-hangzhou",'
   , '"requestId":"', request_id, '","apiVersion":"2014-05-26","sourceIpAddress":"', source_ip
   , '","userAgent":"', user_agent, '","serviceName":"Ecs","recipientAccountId":"', recipient_account_id
   , '","userIdentity":{"type":"', identity_type, '","principalId":"', principal_id
   , '","accountId":"', account_id, '","userName":"', coalesce(user_name, ''), '","accessKeyId":"'
   , coalesce(access_key_id, ''), '","sessionContext":{"attributes":{"creationDate":"'
   , strftime(event_time - INTERVAL 1 HOUR, '%Y-%m-%dT%H:%M:%SZ'), '","mfaAuthenticated":"false"}}},'
   , '"requestParameters":{"RegionId":"cn-hangzhou","InstanceId":"i-', substr(r2, 1, 20)
   , '","SecurityGroupId":"sg-', substr(r2, 13, 20), '","PageSize":"100","PageNumber":"', (i % 7 + 1)
   , '","Tag.1.Key":"team","Tag.1.Value":"platform-', (a % 17), '","ClientToken":"', r3
   , '","AcceptLanguage":"en-US","Format":"JSON","SignatureMethod":"HMAC-SHA1","SignatureVersion":"1.0"},'
   , '"responseElements":{"RequestId":"', request_id, '","TotalCount":', (i % 250)
   , ',"Instances":{"Instance":[{"InstanceId":"i-', substr(r2, 1, 20), '","Status":"Running",'
   , '"VpcAttributes":{"VpcId":"vpc-', substr(r3, 1, 20), '","PrivateIpAddress":{"IpAddress":["10.'
   , (a % 250), '.', (i % 250), '.', (i % 199), '"]}},"ZoneId":"cn-hangzhou-h",'
   , '"InstanceType":"ecs.g7.large","CreationTime":"2026-0', (a % 9 + 1), '-11T02:14Z"}]}},'
   , '"additionalEventData":{"callbackUrl":"","Scheme":"https","OperationName":"', event_name
   , '"},"referencedResources":{"ACS::ECS::Instance":["i-', substr(r2, 1, 20), '"]}}') AS raw
FROM (
    SELECT i, a, stray, r2, r3,
           'ev-' || $day || '-' || i AS event_id,
           $day::TIMESTAMPTZ + to_milliseconds((i - s) * 86400000 // (e - s)) AS event_time,
           ['DescribeInstances', 'DescribeDisks', 'DescribeSecurityGroups', 'RunInstances',
            'CreateSnapshot', 'DescribeImages'][1 + i % 6] AS event_name,
           'ApiCall' AS event_type, CASE WHEN i % 6 IN (3, 4) THEN 'Write' ELSE 'Read' END AS event_rw,
           'ecs.aliyuncs.com' AS event_source, '1' AS event_version, 'Ecs' AS service_name,
           NULL::VARCHAR AS service_code, 'cn-hangzhou' AS acs_region, false AS is_global,
           '203.0.' || (a % 250) || '.' || (i % 250) AS source_ip, 4::TINYINT AS ip_version,
           true AS secure_transport, 'aliyun-sdk-python/2.' || (a % 40) || '.0 Python/3.11' AS user_agent,
           r1 AS request_id, '2014-05-26' AS api_version,
           CASE WHEN i % 97 = 0 THEN 'Throttling.User' END AS error_code,
           CASE WHEN i % 97 = 0 THEN 'Request was denied due to user flow control.' END AS error_message,
           CASE WHEN kind = 1 THEN 'assumed-role' ELSE 'ram-user' END AS identity_type,
           identity, $account AS account_id, (200000 + a)::VARCHAR AS principal_id,
           CASE WHEN kind <> 1 THEN (CASE WHEN stray THEN 'stray-' ELSE 'agent-' END) || a END AS user_name,
           CASE WHEN kind = 1 THEN 'role-' || a END AS role_name,
           CASE WHEN kind = 1 THEN '3' || a END AS role_id,
           CASE WHEN kind = 1 THEN 'session-' || ((i - s) * 24 // (e - s)) END AS session_name,
           -- a role's STS key lasts its session: one an hour (not one per event)
           CASE WHEN kind = 0 THEN 'LTAI5tBench' || a WHEN kind = 1
                THEN 'STS.' || lpad(to_hex(hash(a, $day, (i - s) * 24 // (e - s))), 24, '0') END AS access_key_id,
           false AS mfa_authenticated, NULL::TIMESTAMPTZ AS session_created, $account AS recipient_account_id,
           NULL::VARCHAR AS vpc_id, 'ACS::ECS::Instance' AS resource_type, 'i-' || substr(r2, 1, 20) AS resource_name,
           ('{"ACS::ECS::Instance":["i-' || substr(r2, 1, 20) || '"]}') AS referenced_resources,
           CASE WHEN stray THEN identity ELSE 'agent-' || a END AS agent,
           'bench' AS source, $day::TIMESTAMPTZ + INTERVAL 1 DAY AS ingested_at
    FROM (SELECT i, a, kind, kind = 2 AS stray,
                 CASE kind WHEN 0 THEN 'ram-user:agent-' || a WHEN 1 THEN 'role:role-' || a
                      ELSE 'ram-user:stray-' || a END AS identity,
                 (u0 * $n + $units - 1) // $units AS s, (u1 * $n + $units - 1) // $units AS e,
                 lpad(to_hex(hash(i, $day, 1)), 16, '0') || lpad(to_hex(hash(i, $day, 2)), 16, '0') AS r1,
                 lpad(to_hex(hash(i, $day, 3)), 16, '0') || lpad(to_hex(hash(i, $day, 4)), 16, '0') AS r2,
                 lpad(to_hex(hash(i, $day, 5)), 16, '0') || lpad(to_hex(hash(i, $day, 6)), 16, '0') AS r3
          FROM (SELECT i, v % 4 AS kind, (v // 4) % 1024 AS a, (v // 4096) % 16384 AS u1, v // 67108864 AS u0
                FROM (SELECT i, $codes[1 + i * $units // $n] AS v FROM range($n) t(i))))
)
"""


def _day_events(con: Any) -> str:
    """The stored columns of a generated day, cast to ``events_hot``'s types (so the Parquet
    files have the schema ``lake.seal_day`` writes: ``raw`` and ``referenced_resources`` JSON)."""
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                             "WHERE table_name = 'events_hot' AND schema_name = 'main'").fetchall())
    columns = ", ".join(f"CAST({c} AS {types[c]}) AS {c}" for c in STORED_COLUMNS)
    return f"SELECT {columns} FROM ({_EVENTS})"  # noqa: S608 - fixed text


def inventory(agents: int, moved: int = 0) -> Inventory:
    """``agents`` agents of two identities and an AccessKey each; ``moved`` of them give their
    role to agent 0 (an inventory change)."""
    rows = []
    for a in range(agents):
        ids = [f"ram-user:agent-{a}", f"access-key:LTAI5tBench{a}"]
        if not (0 < a <= moved):
            ids.append(f"role:role-{a}")
        if a == 0:
            ids += [f"role:role-{m}" for m in range(1, moved + 1)]
        rows.append({"name": f"agent-{a}", "purpose": "bench", "owner": "bench", "environment": "production",
                     "identities": ids})
    return Inventory.model_validate({"agents": rows})


def _seal_generated(store: Store, day: date, select: str, params: dict[str, Any]) -> int:
    """Write one generated day as ``lake.seal_day`` writes a day (a temp name, fsync, rename; zstd,
    row groups of 16,384, sorted by identity then time - here by construction, so on both
    threads) and register it as it does (``lake_identities``, ``lake_files``, the view)."""
    rel, path = lake._new_file(store, day)
    rows = lake._write_file(store.con, select, params, path, single_thread=False)
    size, digest = lake._measure(path)
    with store.transaction() as con:
        con.execute("INSERT INTO lake_identities BY NAME SELECT ? AS path, identity, access_key_id, account_id, "  # noqa: S608
                    f"agent, count(*) AS events FROM {parquet_source([str(path)])} GROUP BY ALL", [rel])
        lake._register(store, rel, day, rows, size, digest)
    return rows


def _check_sorted(store: Store, day: date) -> None:
    """The generated order is the seal's order (identity, then time): checked on one file."""
    files = ", ".join(f"'{f}'" for f in lake.day_files(store, day, day))
    row = store.con.execute(
        "SELECT count(*) FILTER (WHERE pi IS NOT NULL AND (identity, event_time) < (pi, pt)) FROM ("  # noqa: S608
        "SELECT identity, event_time, lag(identity) OVER w AS pi, lag(event_time) OVER w AS pt "
        f"FROM read_parquet([{files}], file_row_number = true) WINDOW w AS (ORDER BY file_row_number))"
    ).fetchall()[0][0]
    if row:
        raise SystemExit(f"generated day {day} is not sorted by identity, time ({row} rows out of order)")


def build(db: Path, total: int, days: int, agents: int) -> float:
    """The store: ``days`` days ending yesterday, ``total`` events; returns the seconds it took."""
    started = time.monotonic()
    per_day = total // days
    today = datetime.now(UTC).date()
    with open_store(db, memory_limit="1GB") as store:
        con = store.con
        codes = unit_codes(agents)
        select = _day_events(con)
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            params = {"day": day.isoformat(), "n": per_day, "units": len(codes), "codes": codes,
                      "account": ACCOUNT}
            if back <= HOT_DAYS:
                con.execute("SET preserve_insertion_order = false")
                con.execute(f"INSERT INTO events_hot {select}", params)
                con.execute("SET preserve_insertion_order = true")
            else:
                _seal_generated(store, day, select, params)
                if back == days:
                    _check_sorted(store, day)
            took = time.monotonic() - started
            print(f"  {day}: {per_day:,} events {'hot' if back <= HOT_DAYS else 'sealed'}, {took:.0f}s "
                  f"({per_day * (days - back + 1) / took:,.0f} events/s)", flush=True)
        reattribute_if_changed(store, inventory(agents))
        con.execute("CHECKPOINT")
    _scored(db)
    return time.monotonic() - started


def extend(db: Path, agents: int, seconds: float) -> int:
    """Add sealed days *before* the store's oldest one, of its days' size, for ``seconds``: more
    history and nothing else (the hot days, the mapping, what detect has scored stay as they
    are), so a cycle measured before and after shows what history costs. Returns events added."""
    started, added = time.monotonic(), 0
    with open_store(db, memory_limit="1GB") as store:
        codes = unit_codes(agents)
        select = _day_events(store.con)
        first, per_day = store.con.execute("SELECT min(day), max(rows) FROM lake_files").fetchall()[0]
        day = first
        while time.monotonic() - started < seconds:
            day -= timedelta(days=1)
            params = {"day": day.isoformat(), "n": per_day, "units": len(codes), "codes": codes, "account": ACCOUNT}
            added += _seal_generated(store, day, select, params)
            took = time.monotonic() - started
            print(f"  {day}: {per_day:,} events sealed, {took:.0f}s ({added / took:,.0f} events/s)", flush=True)
        store.con.execute("CHECKPOINT")
    return added


def _scored(db: Path) -> None:
    """The history was scored before (as in a running service): detect scores what is new."""
    with open_store(db, memory_limit="1GB") as store:
        newest = store.con.execute("SELECT max(ingested_at) FROM events_hot").fetchall()[0][0]
        with store.transaction():
            store.write_state("detect.ingested_until", newest.isoformat())


def write_config(workdir: Path, db: Path, agents: int) -> Path:
    inv = inventory(agents)
    lines = ["agents:"]
    for agent in inv.agents:
        lines += [f"  - name: {agent.name}", "    purpose: bench", "    owner: bench", "    environment: production",
                  f"    identities: [{', '.join(agent.identities)}]"]
    (workdir / "agents.yaml").write_text("\n".join(lines) + "\n")
    incoming = workdir / "incoming"
    incoming.mkdir(exist_ok=True)
    config = workdir / "trailwarden.yaml"
    config.write_text(f"inventory: {workdir / 'agents.yaml'}\nmemory_limit: 1GB\ndatabase: {db}\n"
                      f"store: {{seal_after: {HOT_DAYS}d}}\n"
                      f"sources:\n  - {{name: drop, type: files, path: {incoming}}}\n")
    return config


def new_events(path: Path, agents: int, n: int, tag: str) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    with path.open("w") as fh:
        for i in range(n):
            a = i % agents
            fh.write(json.dumps({
                "eventId": f"new-{tag}-{i}", "eventTime": (now + timedelta(milliseconds=i * 20)).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
                "eventVersion": "1", "eventType": "ApiCall", "eventRW": "Read", "eventName": "DescribeInstances",
                "eventSource": "ecs.aliyuncs.com", "serviceName": "Ecs", "acsRegion": "cn-hangzhou",
                "sourceIpAddress": f"203.0.{a % 250}.{i % 250}", "userAgent": "aliyun-sdk-python/2.1.0",
                "requestId": f"req-{tag}-{i}", "recipientAccountId": ACCOUNT,
                "userIdentity": {"type": "ram-user", "principalId": str(200000 + a), "accountId": ACCOUNT,
                                 "userName": f"agent-{a}", "accessKeyId": f"LTAI5tBench{a}"},
                "requestParameters": {"RegionId": "cn-hangzhou", "PageSize": "100"}}) + "\n")


def _timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``cmd``; its result, seconds and peak RSS (MiB)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    threading.Thread(target=_sample, args=(proc, peak), daemon=True).start()
    out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.monotonic() - started, peak[0] / 1024


def cycle(config: Path, workdir: Path, agents: int, n: int, tag: str) -> dict[str, Any]:
    new_events(workdir / "incoming" / f"{tag}.ndjson", agents, n, tag)
    proc, seconds, peak = _timed([sys.executable, "-m", "pipeline", "--config", str(config), "run"])
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr.strip()}")
    steps = {line.split()[0]: line for line in proc.stdout.splitlines()
             if line.split()[:1] in (["ingest"], ["detect"], ["alert"], ["seal"])}
    return {"seconds": round(seconds, 2), "peak_mib": round(peak), "steps": steps}


def inventory_change(db: Path, agents: int) -> dict[str, Any]:
    with open_store(db, memory_limit="1GB") as store:
        started = time.monotonic()
        changed = reattribute_if_changed(store, inventory(agents, moved=10), allow_orphans=True)
        ours = time.monotonic() - started
        started = time.monotonic()
        # the previous design's first step: every stored event's identity columns, read and joined
        try:
            store.con.execute("SELECT count(*), count(DISTINCT identity), count(DISTINCT access_key_id) FROM "
                              "(SELECT event_id, identity, access_key_id FROM events)").fetchall()
            scan: float | str = round(time.monotonic() - started, 2)
        except duckdb.OutOfMemoryException:
            scan = f"out of memory at 1 GB after {time.monotonic() - started:.1f}s"
        reattribute_if_changed(store, inventory(agents), allow_orphans=True)  # back, for what follows
    return {"seconds": round(ours, 3), "events_changed": changed, "reference_scan_seconds": scan}


def _snippet(code: str, db: Path, what: str, fields: int) -> tuple[list[str], float]:
    """Run ``code`` on the store in a process of its own: the last ``fields`` words it printed,
    and its peak RSS (MiB)."""
    proc, _, peak = _timed([sys.executable, "-c", code, str(db)])
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed: {proc.stderr.strip()}")
    return proc.stdout.split()[-fields:], peak


def daily_refit(db: Path) -> dict[str, Any]:
    """The first cycle of a UTC day refits every agent's baselines: ``learning.refit`` for
    tomorrow (28 days of history ending at midnight), in a subprocess for its peak memory."""
    code = ("import sys, time; from datetime import timedelta; from pipeline.core.times import utcnow; "
            "from pipeline.detection import features, learning; from pipeline.store.store import open_store\n"
            "with open_store(sys.argv[1], memory_limit='1GB') as store:\n"
            "    tomorrow = utcnow() + timedelta(days=1)\n"
            # what the `features` steps of the cycles before have kept: every ended day's rows
            "    t = time.monotonic(); kept = features.refresh(store, 'UTC', max_days=100, now=tomorrow)\n"
            "    keep = time.monotonic() - t\n"
            "    t = time.monotonic(); fitted = learning.refit(store, tomorrow, 'UTC')\n"
            "    print(len(kept.days), keep, len(fitted), time.monotonic() - t)")
    (days, keep, agents, seconds), peak = _snippet(code, db, "refit", 4)
    return {"seconds": round(float(seconds), 2), "agents": int(agents), "peak_mib": round(peak),
            "kept_days": int(days), "keeping_seconds": round(float(keep), 2)}


def keep_rows(db: Path) -> dict[str, Any]:
    """Keep the per-day rows of every ended day the baselines read, as a running service's
    ``features`` steps have (one or two days a cycle): a store built here has none yet, and
    without them the first cycles fit from raw events, which is not the steady state."""
    code = ("import sys, time; from pipeline.detection import features; from pipeline.store.store import open_store\n"
            "with open_store(sys.argv[1], memory_limit='1GB') as store:\n"
            "    t = time.monotonic(); kept = features.refresh(store, 'UTC', max_days=100)\n"
            "    print(len(kept.days), kept.rows, time.monotonic() - t)")
    (days, rows, seconds), peak = _snippet(code, db, "keeping the per-day rows", 3)
    return {"days": int(days), "rows": int(rows), "seconds": round(float(seconds), 1), "peak_mib": round(peak)}


def snapshot(db: Path, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    publish_snapshot(db)
    ours = time.monotonic() - started
    started = time.monotonic()
    target = workdir / "whole-copy"
    shutil.copyfile(db, target)  # the whole store, as the previous design copied it
    shutil.copytree(lake_dir(db), workdir / "whole-copy.lake")
    whole = time.monotonic() - started
    target.unlink()
    shutil.rmtree(workdir / "whole-copy.lake")
    return {"seconds": round(ours, 2), "bytes": db.stat().st_size, "reference_whole_copy_seconds": round(whole, 2)}


def replay(config: Path, db: Path) -> dict[str, Any]:
    agent = f"agent-{BUSY_AGENT}"
    since = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    proc, seconds, peak = _timed([sys.executable, "-m", "pipeline", "--config", str(config), "--db", str(db),
                                  "replay", agent, "--since", since, "--format", "json", "-o", "/dev/null"])
    if proc.returncode != 0:
        raise SystemExit(f"replay failed: {proc.stderr.strip()}")
    with open_store(db, read_only=True, memory_limit="1GB") as store:
        started = time.monotonic()
        where, params = agent_filter(store, agent)  # what replay does: identity IN (...) AND agent = ?
        result = store.con.execute(f"SELECT * FROM events WHERE {where} AND event_time >= ?",  # noqa: S608
                                   [*params, since])
        rows = 0
        while batch := result.fetchmany(10_000):
            rows += len(batch)
        bare = time.monotonic() - started
    return {"events": rows, "seconds": round(seconds, 2), "peak_mib": round(peak),
            "bare_select_seconds": round(bare, 2)}


def disk(db: Path) -> dict[str, Any]:
    with open_store(db, read_only=True) as store:
        events = store.con.execute("SELECT (SELECT count(*) FROM events_hot) + (SELECT sum(rows) FROM lake_files)"
                                   ).fetchall()[0][0]
    sealed = sum(p.stat().st_size for p in lake_dir(db).glob("day=*/*.parquet"))
    hot = db.stat().st_size
    return {"events": int(events), "hot_file_bytes": hot, "sealed_bytes": sealed,
            "bytes_per_event": round((hot + sealed) / events, 1)}


def measure(total: int, days: int, agents: int, workdir: Path, only: set[str] | None = None,
            extend_for: float = 0) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "tw.duckdb"
    if db.exists():  # --dir kept from an earlier run: measure it again
        print(f"reusing the store in {workdir}", flush=True)
        built = 0.0
        if extend_for:
            print(f"extending its history for {extend_for:.0f}s", flush=True)
            print(f"  {extend(db, agents, extend_for):,} events added", flush=True)
        _scored(db)
    else:
        print(f"building {total:,} events over {days} days in {workdir}", flush=True)
        built = build(db, total, days, agents)
    config = write_config(workdir, db, agents)
    kept = keep_rows(db)  # what the `features` steps of a running service's cycles have kept
    print("kept", json.dumps(kept), flush=True)
    settle, _, _ = _timed([sys.executable, "-m", "pipeline", "--config", str(config), "run"])
    if settle.returncode != 0:
        raise SystemExit(f"settling run failed: {settle.stderr.strip()}")
    out: dict[str, Any] = {"events": total, "build_seconds": round(built), "kept": kept}
    parts: list[tuple[str, Any]] = [
        ("disk", lambda: disk(db)),
        ("cycle", lambda: cycle(config, workdir, agents, 10_000, f"c{int(time.time())}")),
        ("inventory_change", lambda: inventory_change(db, agents)),
        ("refit", lambda: daily_refit(db)),
        ("snapshot", lambda: snapshot(db, workdir)),
        ("replay", lambda: replay(config, db))]
    for name, part in parts:
        if only and name not in only:
            continue
        out[name] = part()
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, action="append", help="store sizes (repeatable)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--dir", type=Path, help="work here (and keep it) instead of a temp dir")
    parser.add_argument("--extend-for", type=float, default=0, metavar="SECONDS",
                        help="on a kept store: add older sealed days for this long first (history only)")
    parser.add_argument("--parts", help="measure only these (comma-separated: disk, cycle, inventory_change, "
                        "refit, snapshot, replay); on a kept store, a second `cycle` is the steady state (the "
                        "first of a UTC day fits the baselines)")
    args = parser.parse_args()
    sizes = args.events or [10_000_000]
    results = []
    for total in sizes:
        workdir = (args.dir / str(total)) if args.dir else Path(tempfile.mkdtemp(prefix="trailwarden-lake-"))
        try:
            results.append(measure(total, args.days, args.agents, workdir,
                                   set(args.parts.split(",")) if args.parts else None, args.extend_for))
        finally:
            if not args.dir:
                shutil.rmtree(workdir, ignore_errors=True)
    if len(results) > 1 and all("cycle" in r for r in results):
        a, b = results[0]["cycle"]["seconds"], results[-1]["cycle"]["seconds"]
        print(f"cycle at {results[-1]['events']:,} / at {results[0]['events']:,}: {b / a:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
