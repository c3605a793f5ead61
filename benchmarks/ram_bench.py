"""How fast are ``trailwarden ram sync`` and ``trailwarden review`` at organisation scale? (Issue 17:
sync of 1,000 users, 300 roles and 2,000 custom policies, bounded by the API's own rate; review of
500 agents over 90 days of events in under 30 s and 1 GiB.)

The account: 1,000 RAM users (``agent-0`` ... ``agent-999``; the first 500 are the inventory's
agents, the rest undeclared), each with two of the 2,000 custom policies attached and one AccessKey
(every tenth user two), 20 groups of 50 members with a system policy each, 300 roles with a trust
policy and a custom policy each. The fake RAM/IMS endpoint (``tests/fakes/ram.py``) serves it in
its own process on 127.0.0.1; the real SDK clients read it, signing every request. The sync runs
twice (``trailwarden ram sync`` as a subprocess): the second time every policy document is already
stored (no ``GetPolicy``).

Then 90 days of events for the 500 agents are generated straight into the store (the event shape of
``detect_bench.py``, ~12M events), and ``trailwarden review --format json`` runs as a subprocess
over it. Printed: API calls, wall time, calls/s and peak RSS of the sync; wall time and peak RSS
of the review (each command's own process).

Usage: python benchmarks/ram_bench.py [--users 1000] [--roles 300] [--policies 2000] [--agents 500] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detect_bench import write_config  # noqa: E402

from tests.fakes.ram import RamFakeProcess, credentials_env  # noqa: E402


def account(users: int, roles: int, policies: int) -> dict[str, Any]:
    """The seed (``pipeline/ram/seed.py``'s format) of the benchmark's account."""
    def document(n: int) -> dict[str, Any]:
        return {"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["ecs:Describe*", "oss:GetObject"], "Resource": f"acs:oss:*:*:bucket-{n}/*"},
            {"Effect": "Allow", "Action": "ecs:RunInstances", "Resource": "*",
             "Condition": {"StringEquals": {"acs:CurrentRegion": "cn-hangzhou"}}}]}

    return {
        "account": "1384926508761234",
        "users": [{"name": f"agent-{u}", "created": "-400d", "console": u % 7 == 0, "mfa": u % 14 == 0,
                   "groups": [f"group-{u % 20}"],
                   "policies": [f"Policy{(2 * u) % policies}", f"Policy{(2 * u + 1) % policies}"],
                   "keys": [{"id": f"LTAI5tBench{u}", "status": "Active", "created": "-200d", "last_used": "-1d"}]
                   + ([{"id": f"LTAI5tBenchOld{u}", "status": "Inactive", "created": "-700d"}] if u % 10 == 0 else [])}
                  for u in range(users)],
        "groups": [{"name": f"group-{g}", "policies": [{"system": "ReadOnlyAccess"}]} for g in range(20)],
        "roles": [{"name": f"Role{r}", "created": "-300d", "policies": [f"Policy{r % policies}"],
                   "trust": {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                            "Principal": {"Service": ["ecs.aliyuncs.com"]}}]}}
                  for r in range(roles)],
        "policies": [{"name": f"Policy{p}", "version": "v1", "updated": "-100d", "document": document(p)}
                     for p in range(policies)],
    }


def command(workdir: Path, config: Path, *args: str) -> tuple[str, float, float]:
    """``trailwarden ARGS`` as a subprocess: its output, wall seconds and peak RSS (MiB)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("TRAILWARDEN_CONFIG", "COLUMNS")},
           **credentials_env()}
    out = workdir / "out.json"
    started = time.monotonic()
    with out.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), *args], cwd=ROOT,
                                env=env, stdout=fh, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"trailwarden {' '.join(args)} failed: {proc.stderr.read() if proc.stderr else ''}")
    return out.read_text(encoding="utf-8"), seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--roles", type=int, default=300)
    parser.add_argument("--policies", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="trailwarden-ram-"))
    try:
        seed = workdir / "account.yaml"
        seed.write_text(yaml.safe_dump(account(args.users, args.roles, args.policies)), encoding="utf-8")
        db = workdir / "tw.duckdb"
        started = time.monotonic()
        # 13 weeks of events (the 90-day window and more), built in a process of its own so that this
        # one stays small: a child's peak RSS starts from its parent's on Linux
        total = int(subprocess.run(
            [sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:3]; from detect_bench import build_store; "
             "from pathlib import Path; print(build_store(Path(sys.argv[3]), int(sys.argv[4]), weeks=12))",
             str(ROOT), str(ROOT / "benchmarks"), str(db), str(args.agents)],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()[-1])
        print(f"store: {total:,} events for {args.agents} agents in {time.monotonic() - started:.0f}s")
        config_path = write_config(workdir, args.agents)
        with RamFakeProcess(seed) as fake:
            text = config_path.read_text(encoding="utf-8")
            config_path.write_text(text + f"database: {db}\nram: {{endpoint: {fake.endpoint}}}\n", encoding="utf-8")
            for attempt in ("first", "again"):
                out, seconds, peak = command(workdir, config_path, "ram", "sync", "--format", "json")
                r = json.loads(out)
                print(f"ram sync ({attempt}): {r['users']:,} users, {r['groups']} groups, {r['roles']} roles, "
                      f"{r['policies']:,} policies ({r['documents_reused']:,} documents already stored), "
                      f"{r['access_keys']:,} keys; {r['calls']:,} calls in {r['seconds']:.1f}s = "
                      f"{r['calls_per_second']} calls/s; errors {len(r['errors'])}; whole command {seconds:.1f}s, "
                      f"peak RSS {peak:.0f} MiB")
            out, seconds, peak = command(workdir, config_path, "review", "--days", "90", "--format", "json")
        s = json.loads(out)["summary"]
        print(f"review: {s['agents']} agents ({s['fail']} fail, {s['warn']} warn, {s['pass']} pass), "
              f"{s['undeclared']} undeclared principals, over 90 days: {seconds:.1f}s (whole command), "
              f"peak RSS {peak:.0f} MiB")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
