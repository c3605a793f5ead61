"""``trailwarden demo``: generate a month of traffic for the sample inventory, write it the way an
OSS trail delivers it, ingest it into a fresh store and show what is there."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from models.inventory import Attributor, Inventory, load_inventory
from pipeline import synthetic
from pipeline.attribution import STATE_KEY
from pipeline.config import load_config
from pipeline.detect import run_detect
from pipeline.errors import UsageError
from pipeline.findings import list_findings
from pipeline.ingest import ingest_files
from pipeline.output import render
from pipeline.store import open_store

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SCORED_DAYS = 8  # the planted incidents all fall in the last 7 local days


def demo_inventory() -> Inventory:
    path = CONFIG_DIR / "agents.yaml"
    if not path.exists():
        raise UsageError("the demo needs the sample inventory of a source checkout "
                         "(config/agents.yaml next to the pipeline package)", path=str(path))
    return load_inventory(path)


def write_oss_dump(events: list[dict[str, Any]], root: Path) -> int:
    """Hourly gzip files in the OSS delivery layout; returns how many files were written.

    ``AliyunLogs/Actiontrail/<region>/YYYY/MM/DD/Actiontrail_<region>_<stamp>_1002_<n>_<size>_<md5>.gz``.
    Even hours hold a JSON array, odd hours NDJSON: the layout inside real files is unconfirmed
    (../shared/notes/actiontrail.md section 2.2), and the reader must take both.
    """
    by_hour: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        by_hour[ev["eventTime"][:13]].append(ev)
    for hour, evs in by_hour.items():
        stamp = hour.replace("-", "").replace("T", "") + "0000"
        if int(hour[-2:]) % 2 == 0:
            body = json.dumps(evs, ensure_ascii=False).encode()
        else:
            body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in evs).encode()
        data = gzip.compress(body, mtime=0)
        folder = root / "AliyunLogs" / "Actiontrail" / "cn-hangzhou" / hour[:4] / hour[5:7] / hour[8:10]
        folder.mkdir(parents=True, exist_ok=True)
        name = (f"Actiontrail_cn-hangzhou_{stamp}_1002_{len(evs)}_{len(data)}_"
                f"{hashlib.md5(data).hexdigest()}.gz")
        (folder / name).write_bytes(data)
    return len(by_hour)


def run_demo(db: Path, *, days: int = 30, seed: int = 7, echo: Callable[[str], None] = print) -> dict[str, Any]:
    inventory = demo_inventory()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    vendor = inventory.agent("vendor-acme")
    events = synthetic.month(end, days=days, seed=seed, vendor_expires=vendor.expires if vendor else None)
    dump = db.parent / "demo-actiontrail"
    shutil.rmtree(dump, ignore_errors=True)
    files = write_oss_dump(events, dump)
    echo(f"Generated {len(events):,} ActionTrail events for {len(inventory.agents)} agents over {days} days "
         f"({end - timedelta(days=days):%Y-%m-%d} .. {end:%Y-%m-%d}), with {len(synthetic.INCIDENTS)} planted "
         f"incidents; wrote {files} OSS-style files to {dump}/")
    for suffix in ("", ".wal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    started = time.monotonic()
    with open_store(db) as store:
        run_id = store.start_run("demo")
        store.write_state(STATE_KEY, inventory.fingerprint())
        report = ingest_files(store, [dump], Attributor(inventory), source="demo")
        store.finish_run(run_id, {"demo": report.as_dict()})
        echo(f"Ingested {report.new:,} events ({report.quarantined} quarantined) into {db} "
             f"in {time.monotonic() - started:.1f}s.\n")
        rows = store.con.execute(
            """
            SELECT agent, count(*) AS events, count(*) FILTER (WHERE error_code IS NOT NULL) AS failed,
                   count(DISTINCT event_name) AS apis, min(event_time) AS first_seen,
                   max(event_time) AS last_seen
            FROM events GROUP BY agent ORDER BY events DESC
            """).fetchall()
        # the last week is scored; the weeks before it are the history the baselines learn from
        detect = run_detect(store, load_config(CONFIG_DIR / "trailwarden.yaml"), inventory,
                            since=end - timedelta(days=SCORED_DAYS), until=end)
        found = list_findings(store)
    registered = {a.name for a in inventory.agents}
    echo("Activity by agent (unregistered identities are marked *):")
    echo(render(["agent", "events", "failed", "apis", "first_seen", "last_seen"],
                [[r[0] if r[0] in registered else r[0] + " *", *r[1:]] for r in rows], "table"))
    echo(f"\nDetectors ({', '.join(detect.detectors) or 'none'}) scored the last {SCORED_DAYS} days against "
         f"baselines learned from the {days - SCORED_DAYS} before, and raised {len(found)} findings:")
    if found:
        cols = ["severity", "detector", "agent", "last_seen", "event_count", "summary"]
        echo(render(cols, [[f[c] for c in cols] for f in found], "table"))
    echo("\nPlanted incidents:")
    caught = 0
    for inc in synthetic.INCIDENTS:
        start, stop = synthetic.incident_window(inc, end)
        hits = [f for f in found if f["agent"] == inc.agent and f["first_seen"] < stop and f["last_seen"] >= start]
        caught += bool(hits)
        mark = f"caught by {', '.join(sorted({f['detector'] for f in hits}))}" if hits else "not caught yet"
        if hits:  # when it began, in UTC (as stored and backtested) and in business time
            first = min(f["first_seen"] for f in hits)
            when = (f"from {first:%Y-%m-%d %H:%M}Z, "
                    f"{first.astimezone(synthetic.BUSINESS_TZ):%a %Y-%m-%d %H:%M} {synthetic.BUSINESS_TZ}")
        else:
            when = f"{start.astimezone(synthetic.BUSINESS_TZ):%a %Y-%m-%d} {synthetic.BUSINESS_TZ}"
        echo(f"  - {inc.agent}: {inc.what} ({when}): {mark}")
    echo(f"\nExplore: trailwarden --db {db} findings --format json\n"  # noqa: S608 - help text, not SQL
         f"         trailwarden --db {db} alert        # the Slack messages, printed (no token needed)\n"
         f"         trailwarden --db {db} query \"SELECT event_time, event_name, source_ip, error_code "
         f"FROM events WHERE agent = 'ci-deployer' ORDER BY event_time DESC LIMIT 20\"")
    return {"events": len(events), "files": files, "ingest": report.as_dict(), "findings": len(found),
            "incidents_caught": caught}
