"""What do ``credential_misuse`` and ``signin_hygiene`` cost on a day of a large organisation?
(Issue 15: detect over one day of 500 agents, about 2M events, within 2x of today's detect speed.)

Builds, in DuckDB SQL, one day of 500 agents (about 2M events, the columns those detectors read)
plus 28 days of lighter history: 150 roles in a VPC or Function Compute (an STS session per host
and six hours, service addresses that change every call), 250 people (an AccessKey from the office,
console sessions, a sign-in or two with MFA), 100 CI keys from a hosted pool (a new /24 a run).
Then it times, for each detector: fitting its learned part on the history (as ``detect`` does once
a day), loading the day's events with its columns, and ``score`` on them. Printed: seconds and
events per second for each step, and the findings (on this benign day: none above low expected).

Usage: python benchmarks/misuse_bench.py [--agents 500] [--events 2000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.base import Models  # noqa: E402
from detectors.credential_misuse import CredentialMisuse  # noqa: E402
from detectors.signin_hygiene import SigninHygiene  # noqa: E402
from models.baselines import SHARED, SHARED_DAILY, History, fit_shared  # noqa: E402
from models.inventory import Inventory  # noqa: E402
from models.scope import compile_scopes  # noqa: E402
from pipeline.detection.detect import load_events  # noqa: E402
from pipeline.detection.learning import learnable  # noqa: E402
from pipeline.store.store import open_store  # noqa: E402

DAY = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # Tuesday 00:00 in Asia/Shanghai
TZ = "Asia/Shanghai"


def build(db: Path, agents: int, events: int, history_share: float = 0.1) -> int:
    """One day of ``events`` calls by ``agents`` agents, and 28 days before it at ``history_share``
    of that rate. Agent a: a < 30% roles in the cloud, < 80% people, the rest hosted CI."""
    roles, people = agents * 3 // 10, agents * 8 // 10
    with open_store(db, memory_limit="2GB") as store:
        for day in range(-28, 1):
            n = events if day == 0 else int(events * history_share)
            store.con.execute(
                f"""
                INSERT INTO events_hot (event_id, event_time, event_name, event_type, service_name, acs_region,
                    source_ip, ip_version, vpc_id, user_agent, identity_type, identity, user_name, access_key_id,
                    session_created, mfa_authenticated, raw, agent, source, ingested_at)
                WITH calls AS (
                    SELECT i, i % {agents} AS a, ? + INTERVAL (i * 86400 // {n}) SECOND AS t FROM range({n}) r(i)
                )
                SELECT 'e{day + 28:02d}-' || i, t,
                       CASE WHEN a >= {roles} AND a < {people} AND i % 997 = 0 THEN 'ConsoleSignin'
                            ELSE 'GetObject' END,
                       CASE WHEN a >= {roles} AND a < {people} AND i % 997 = 0 THEN 'ConsoleSignin'
                            ELSE 'ApiCall' END,
                       'Oss', 'cn-hangzhou',
                       CASE WHEN a < {roles} AND a % 2 = 0 THEN '172.16.' || (a % 250) || '.' || (i % 200 + 1)
                            WHEN a < {roles} THEN CASE WHEN i % 3 = 0 THEN 'Internal'
                                                       ELSE '11.' || (i % 250) || '.' || (i // 250 % 250) || '.7' END
                            WHEN a < {people} THEN '115.' || (192 + a % 16) || '.' || (a % 250) || '.9'
                            ELSE '20.' || (40 + (i // {agents}) % 2) || '.' || (i // {agents * 40} % 250) || '.4' END,
                       CASE WHEN a < {roles} AND a % 2 = 1 AND i % 3 = 0 THEN NULL ELSE 4 END,
                       CASE WHEN a < {roles} AND a % 2 = 0 THEN 'vpc-bp1bench' END,
                       CASE WHEN a < {roles} THEN 'AlibabaCloud (Linux; x86_64) Java/1.8.0 Core/4.6.4'
                            WHEN a < {people} THEN 'aliyun-cli/3.0.204' ELSE 'aliyun-cli/3.0.204' END,
                       CASE WHEN a < {roles} THEN 'assumed-role' ELSE 'ram-user' END,
                       'agent-' || a, 'agent-' || a,
                       CASE WHEN a < {roles} THEN 'STS.' || a || '-' || (hour(t) // 6) || '-{day + 28}'
                            ELSE 'LTAI' || a END,
                       NULL,
                       CASE WHEN a >= {roles} AND a < {people} AND i % 997 = 0 THEN true END,
                       NULL, 'agent-' || a, 'bench', now()
                FROM calls
                """,  # noqa: S608 - numbers only
                [DAY + timedelta(days=day)])
        row = store.con.execute("SELECT count(*) FROM events WHERE event_time >= ?", [DAY]).fetchone()
        return int(row[0]) if row else 0


def run(db: Path) -> None:
    with open_store(db, read_only=True) as store:
        def query(sql: str, values: list[object]) -> list[tuple[object, ...]]:
            return store.con.execute(sql, list(values)).fetchall()
        start = DAY - timedelta(days=28)
        where, params = learnable(start, DAY)
        t0 = time.monotonic()
        history = History(query, where, params, start, DAY, TZ, {})  # from the events (nothing kept)
        shared = fit_shared(history.daily(SHARED, SHARED_DAILY), query, start, DAY, TZ)
        print(f"shared baseline fit ({len(shared)} agents): {time.monotonic() - t0:.2f}s")
        history.agents = shared
        for det in (CredentialMisuse(), SigninHygiene()):
            assert det.learns is not None
            t0 = time.monotonic()
            fitted = det.learns.fit(history)
            fit_s = time.monotonic() - t0
            for agent, b in shared.items():
                b.parts[det.learns] = fitted.get(agent, det.learns())
            t0 = time.monotonic()
            df = load_events(store, list(dict.fromkeys(["event_id", "event_time", "agent", *det.columns])), DAY, DAY + timedelta(days=1),
                             det.parameter_events)
            load_s = time.monotonic() - t0
            models = Models(Inventory(), compile_scopes(Inventory()), ZoneInfo(TZ), shared)
            t0 = time.monotonic()
            found = det.score(df, models, DAY + timedelta(days=1))
            score_s = time.monotonic() - t0
            print(f"{det.id}: fit {fit_s:.2f}s; load {len(df):,} events {load_s:.2f}s; score {score_s:.2f}s "
                  f"({len(df) / score_s:,.0f} events/s); findings {dict(Counter(f.severity for f in found))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keep", type=Path, help="build the store in this directory and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="misuse-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.duckdb"
    try:
        if not db.exists():
            t0 = time.monotonic()
            n = build(db, args.agents, args.events)
            print(f"built {n:,} events of the day (+28 days of history) in {time.monotonic() - t0:.1f}s")
        run(db)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
