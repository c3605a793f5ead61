"""The tiered store at scale (issue 18, item 6's store part): a 10M- and a 100M-event store.

Builds a store directly with DuckDB (fast: the point is the store, not ingest): ``--days`` UTC days
ending yesterday, the last two hot in ``events_hot``, the older ones sealed as one zstd Parquet
file per day registered in ``lake_files`` (as ``lake.seal`` writes them), with ``--agents``
agents of 2 identities and 1 AccessKey each plus as many unregistered identities. Each event has a
real ~1.3 KB raw JSON (the ActionTrail shape, with its random parts: ids, request ids, addresses,
resource ids), stored compressed as the store stores it.

Then it measures, on that store:
- the service cycle (``trailwarden run``: ingest of 10,000 new events from a files source,
  detect, alert, seal, snapshot) after a settling cycle;
- an inventory change (10 identities move agent): ``reattribute_if_changed``; beside it the scan
  the previous design started with (every stored event's identity columns: its UPDATE did more);
- the snapshot publish (the hot DuckDB file), beside copying the whole store (what it cost before);
- replay of one agent's last 7 days as JSON, beside a bare ``SELECT`` of the same rows;
- disk bytes per event.

Usage: python benchmarks/lake_bench.py --events 10000000 [--events 100000000] [--days 30] [--keep DIR]
Prints peak RSS of each subprocess. Check ``df`` first: 100M events take ~25-30 GB.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from detect_bench import _sample  # noqa: E402 - the process-tree RSS sampler

from models.inventory import Inventory  # noqa: E402
from pipeline.store import lake  # noqa: E402
from pipeline.store.attribution import agent_filter, reattribute_if_changed  # noqa: E402
from pipeline.store.store import open_store, publish_snapshot  # noqa: E402
from pipeline.store.tiers import lake_dir  # noqa: E402

HOT_DAYS = 2
ACCOUNT = "1384926508761234"

# One event of day ``$day`` (DATE), row ``i`` of ``n``: agent a's identities are
# ram-user:agent-a and role:role-a (half the calls each), unregistered ones ram-user:stray-a.
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
           $day::TIMESTAMPTZ + INTERVAL (i * 86400 // $n) SECOND + INTERVAL (i % 1000) MILLISECOND AS event_time,
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
           CASE WHEN i % 2 = 0 OR stray THEN 'ram-user' ELSE 'assumed-role' END AS identity_type,
           CASE WHEN stray THEN 'ram-user:stray-' || a WHEN i % 2 = 0 THEN 'ram-user:agent-' || a
                ELSE 'role:role-' || a END AS identity,
           $account AS account_id, (200000 + a)::VARCHAR AS principal_id,
           CASE WHEN i % 2 = 0 OR stray THEN (CASE WHEN stray THEN 'stray-' ELSE 'agent-' END) || a END AS user_name,
           CASE WHEN i % 2 = 1 AND NOT stray THEN 'role-' || a END AS role_name,
           CASE WHEN i % 2 = 1 AND NOT stray THEN '3' || a END AS role_id,
           CASE WHEN i % 2 = 1 AND NOT stray THEN 'session-' || (i % 50) END AS session_name,
           CASE WHEN i % 2 = 0 AND NOT stray THEN 'LTAI5tBench' || a
                WHEN NOT stray THEN 'STS.' || substr(r3, 1, 24) END AS access_key_id,
           false AS mfa_authenticated, NULL::TIMESTAMPTZ AS session_created, $account AS recipient_account_id,
           NULL::VARCHAR AS vpc_id, 'ACS::ECS::Instance' AS resource_type, 'i-' || substr(r2, 1, 20) AS resource_name,
           ('{"ACS::ECS::Instance":["i-' || substr(r2, 1, 20) || '"]}')::JSON AS referenced_resources,
           CASE WHEN stray THEN 'ram-user:stray-' || a ELSE 'agent-' || a END AS agent,
           'bench' AS source, $day::TIMESTAMPTZ + INTERVAL 1 DAY AS ingested_at
    FROM (SELECT i, hash(i, $day) % $agents AS a, hash(i, $day) % 20 = 0 AS stray,
                 md5(i::VARCHAR || $day) AS r1, md5(i::VARCHAR || 'x' || $day) AS r2,
                 md5(i::VARCHAR || 'y' || $day) AS r3
          FROM range($n) t(i))
)
"""


def _day_events(columns: str) -> str:
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


def build(db: Path, total: int, days: int, agents: int) -> float:
    """The store: ``days`` days ending yesterday, ``total`` events; returns the seconds it took."""
    started = time.monotonic()
    per_day = total // days
    today = datetime.now(UTC).date()
    with open_store(db, memory_limit="1GB") as store:
        con = store.con
        con.execute("SET preserve_insertion_order = false")
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            params = {"day": day.isoformat(), "n": per_day, "agents": agents, "account": ACCOUNT}
            if back <= HOT_DAYS:
                con.execute(f"INSERT INTO events_hot {_day_events(lake._STORED)}", params)
                continue
            rel = f"day={day.isoformat()}/part-bench.parquet"
            path = lake_dir(db) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY ({_day_events(lake._STORED)} ORDER BY identity, event_time) TO '{path}' "
                        "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 16384)", params)
            with store.transaction():
                con.execute("INSERT INTO lake_identities SELECT $rel, identity, access_key_id, agent, count(*) "
                            "FROM read_parquet($path) GROUP BY ALL", {"rel": rel, "path": str(path)})
                con.execute("INSERT INTO lake_files VALUES (?, ?, ?, ?, ?, now(), false)",
                            [rel, day, per_day, path.stat().st_size, "bench"])
            print(f"  {day}: {per_day:,} events sealed, {time.monotonic() - started:.0f}s", flush=True)
        with store.transaction():
            lake.refresh_view(store)
        reattribute_if_changed(store, inventory(agents))
        con.execute("CHECKPOINT")
    _scored(db)
    return time.monotonic() - started


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
        store.con.execute("SELECT count(*), count(DISTINCT identity), count(DISTINCT access_key_id) FROM "
                          "(SELECT event_id, identity, access_key_id FROM events)").fetchall()
        scan = time.monotonic() - started
        reattribute_if_changed(store, inventory(agents), allow_orphans=True)  # back, for what follows
    return {"seconds": round(ours, 3), "events_changed": changed, "reference_scan_seconds": round(scan, 2)}


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
    agent = "agent-7"
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


def measure(total: int, days: int, agents: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "tw.duckdb"
    if db.exists():  # --dir kept from an earlier run: measure it again
        print(f"reusing the store in {workdir}", flush=True)
        built = 0.0
        _scored(db)
    else:
        print(f"building {total:,} events over {days} days in {workdir}", flush=True)
        built = build(db, total, days, agents)
    config = write_config(workdir, db, agents)
    settle, _, _ = _timed([sys.executable, "-m", "pipeline", "--config", str(config), "run"])
    if settle.returncode != 0:
        raise SystemExit(f"settling run failed: {settle.stderr.strip()}")
    out: dict[str, Any] = {"events": total, "build_seconds": round(built)}
    parts: list[tuple[str, Any]] = [
        ("disk", lambda: disk(db)),
        ("cycle", lambda: cycle(config, workdir, agents, 10_000, f"c{int(time.time())}")),
        ("inventory_change", lambda: inventory_change(db, agents)),
        ("snapshot", lambda: snapshot(db, workdir)),
        ("replay", lambda: replay(config, db))]
    for name, part in parts:
        out[name] = part()
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, action="append", help="store sizes (repeatable)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--dir", type=Path, help="work here (and keep it) instead of a temp dir")
    args = parser.parse_args()
    sizes = args.events or [10_000_000]
    results = []
    for total in sizes:
        workdir = (args.dir / str(total)) if args.dir else Path(tempfile.mkdtemp(prefix="trailwarden-lake-"))
        try:
            results.append(measure(total, args.days, args.agents, workdir))
        finally:
            if not args.dir:
                shutil.rmtree(workdir, ignore_errors=True)
    if len(results) > 1:
        a, b = results[0]["cycle"]["seconds"], results[-1]["cycle"]["seconds"]
        print(f"cycle at {results[-1]['events']:,} / at {results[0]['events']:,}: {b / a:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
