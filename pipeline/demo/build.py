"""``trailwarden demo``: generate a month of traffic for the sample inventory, write it the way an
OSS trail delivers it, ingest it into a fresh store and show what is there.

The store is the one every other command reads (``--db``, else the config's ``database``), so
``trailwarden status`` works right after the demo. It is marked (``pipeline_state`` row
``demo``) and built beside its target, then moved into place: a store without the mark is never
replaced, and a demo killed half-way leaves the previous store (or none) untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from models.inventory import Attributor, Inventory, load_inventory
from pipeline.core.config import load_config
from pipeline.core.errors import TrailwardenError, TransientError, UsageError
from pipeline.core.output import render
from pipeline.demo import synthetic
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.store.attribution import STATE_KEY
from pipeline.store.sessions import link_sessions
from pipeline.store.store import open_store, snapshot_path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SCORED_DAYS = 8  # the planted incidents all fall in the last 7 local days
DEMO_KEY = "demo"  # pipeline_state row that marks a store as the demo's (value: when it was generated)


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


def is_demo_store(db: Path) -> bool:
    """Whether ``db`` holds a store the demo made (its ``demo`` mark). A file that is not a store
    at all, or one from an older schema, is not the demo's. A store another process holds is
    reported (transient: retry when it is free), never guessed at."""
    try:
        with open_store(db, read_only=True, lock_wait=0.0) as store:
            return store.read_state(DEMO_KEY) is not None
    except TransientError:
        raise
    except (TrailwardenError, duckdb.Error):
        return False


def check_target(db: Path) -> None:
    """Refuse (exit 2) to replace anything but a demo's store: a real store is never overwritten."""
    if db.exists() and not is_demo_store(db):
        raise UsageError(f"{db} holds a store that is not the demo's; pass --db OTHER")


def _remove_store_files(db: Path) -> None:
    for suffix in ("", ".wal"):
        Path(str(db) + suffix).unlink(missing_ok=True)


def _move_into_place(built: Path, db: Path) -> None:
    """Replace the old demo store (and its stale WAL and snapshot) with the one just built."""
    Path(str(db) + ".wal").unlink(missing_ok=True)
    snapshot_path(db).unlink(missing_ok=True)
    if Path(str(built) + ".wal").exists():  # not expected after a clean close; keep it with its file
        os.replace(str(built) + ".wal", str(db) + ".wal")
    os.replace(built, db)


def run_demo(db: Path, *, days: int = 30, seed: int = 7, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the demo store at ``db``: refused when ``db`` holds a store that is not a demo's."""
    check_target(db)
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
    building = db.with_name(db.name + ".demo-building")  # left by a killed demo: start it again
    _remove_store_files(building)
    started = time.monotonic()
    with open_store(building) as store:
        store.write_state(DEMO_KEY, datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        run_id = store.start_run("demo")
        store.write_state(STATE_KEY, inventory.fingerprint())
        report = ingest_files(store, [dump], Attributor(inventory), source="demo")
        sessions = link_sessions(store)  # as `ingest` does: role sessions traced to who started them
        store.finish_run(run_id, {"demo": report.as_dict(), "role_sessions": vars(sessions)})
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
        permission_review = _ram_review(store, inventory)
    check_target(db)  # still the demo's (or nothing) now that it is about to be replaced
    _move_into_place(building, db)
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
        hits = incident_hits(found, inc.agent, start, stop)
        caught += bool(hits)
        mark = f"caught by {', '.join(sorted({f['detector'] for f in hits}))}" if hits else "not caught yet"
        if hits:  # when it began, in UTC (as stored and backtested) and in business time
            first = min(f["first_seen"] for f in hits)
            when = (f"from {first:%Y-%m-%d %H:%M}Z, "
                    f"{first.astimezone(synthetic.BUSINESS_TZ):%a %Y-%m-%d %H:%M} {synthetic.BUSINESS_TZ}")
        else:
            when = f"{start.astimezone(synthetic.BUSINESS_TZ):%a %Y-%m-%d} {synthetic.BUSINESS_TZ}"
        echo(f"  - {inc.agent}: {inc.what} ({when}): {mark}")
    return {"events": len(events), "files": files, "ingest": report.as_dict(), "findings": len(found),
            "incidents_caught": caught, "review": permission_review}


def incident_hits(found: list[dict[str, Any]], agent: str, start: datetime, stop: datetime) -> list[dict[str, Any]]:
    """The findings of a planted incident in [start, stop): the agent's own, those on what it did
    through a role it assumed (their ``origin_agent``), and a role's finding that it was the
    unexpected caller of its ``AssumeRole`` (``cross_account``'s evidence names it)."""
    return [f for f in found if agent in (f["agent"], f.get("origin_agent"), _caller(f))
            and f["first_seen"] < stop and f["last_seen"] >= start]


def _caller(finding: dict[str, Any]) -> str | None:
    evidence = finding.get("evidence")
    return evidence.get("caller") if finding["detector"] == "cross_account" and isinstance(evidence, dict) else None


RAM_SEED = CONFIG_DIR / "demo-ram-account.yaml"


def _ram_review(store: Any, inventory: Inventory) -> dict[str, Any]:
    """The demo account's RAM state (``config/demo-ram-account.yaml``, with its planted posture
    problems) stored as a snapshot, as `ram sync` would (no network), and the permission review
    of the sample inventory against it."""
    from pipeline.investigate.review import review
    from pipeline.ram.seed import load_seed
    from pipeline.ram.snapshots import save_snapshot

    snapshot = load_seed(RAM_SEED, datetime.now(UTC))
    save_snapshot(store, snapshot, source="demo")
    return review(store, inventory, snapshot)


def write_demo_config(db: Path) -> Path | None:
    """Write ``config/trailwarden.yaml`` naming the sample inventory and the demo's store, so the
    next commands work from this directory (called where no config was found). Never overwrites a
    file; returns the path written, or None when one appeared meanwhile."""
    from pipeline.core.config import DEFAULT_CONFIG_PATH

    text = ("# Written by `trailwarden demo`, where no config was found: the sample inventory and the\n"
            "# demo's store. Edit it to watch a real account (README: Config).\n"
            f"database: {json.dumps(str(db))}\n"
            "timezone: Asia/Shanghai\n"
            f"inventory: {json.dumps(str(CONFIG_DIR / 'agents.yaml'))}\n"
            "accounts:                          # the demo's organisation\n"
            + "".join(f'  - {{id: "{account}", alias: {alias}}}\n' for alias, account in synthetic.ACCOUNTS.items()))
    DEFAULT_CONFIG_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        with DEFAULT_CONFIG_PATH.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:  # appeared meanwhile: it is the user's, leave it
        return None
    return DEFAULT_CONFIG_PATH
