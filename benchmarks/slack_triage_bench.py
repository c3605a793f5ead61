"""Triage from Slack with the service running (issue 16 targets: an interaction is acknowledged
within 3 s and applied within one cycle).

Runs the real ``serve`` machinery (``Service``: its scheduler with the cycle every
``--interval`` seconds, and its Slack app in Socket Mode) against the local fakes of the Slack Web
API and Socket Mode WebSocket (``tests/fakes``), on a store with ``--incidents`` open incidents
already alerted. Each incident's Acknowledge button is pressed at a random moment (so some presses
land while a cycle holds the store); for each press it measures the time to Slack's
acknowledgement, and the time until the incident's message is updated in place to show it
(press -> applied by a cycle -> chat.update), against the cycle interval.

Usage: python benchmarks/slack_triage_bench.py [--incidents 20] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from detectors.base import Finding  # noqa: E402
from models.inventory import Inventory  # noqa: E402
from pipeline.core.config import Config  # noqa: E402
from pipeline.detection.findings import save_findings  # noqa: E402
from pipeline.detection.incidents import list_incidents  # noqa: E402
from pipeline.service.alerting.step import alert_once  # noqa: E402
from pipeline.service.cycle import Service  # noqa: E402
from pipeline.store.store import open_store  # noqa: E402
from tests.fakes.slack import CHANNEL_ID, FakeSlack  # noqa: E402
from tests.fakes.socket_mode import FakeSocketMode  # noqa: E402

GROUP, USER = "S0TRIAGE", "U0ALICE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=20)
    parser.add_argument("--interval", type=int, default=5, help="seconds between cycles")
    args = parser.parse_args()
    os.environ.update({"SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_APP_TOKEN": "xapp-bench", "NO_PROXY": "127.0.0.1"})
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(var, None)
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as slack, FakeSocketMode(slack) as socket:
        slack.groups[GROUP] = [USER]
        db = Path(tmp) / "store.duckdb"
        agents = [f"agent-{i:03d}" for i in range(args.incidents)]
        inventory = Inventory.model_validate({"agents": [
            {"name": a, "purpose": "bench", "owner": "team", "environment": "production",
             "identities": [f"ram-user:{a}"]} for a in agents]})
        config = Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": slack.base_url,
                                                  "triage_group": GROUP},
                                        "schedule": {"ingest_every": f"{int(args.interval)}s"}})
        t0 = datetime.now(UTC) - timedelta(hours=1)
        with open_store(db) as store:
            save_findings(store, [Finding(detector="out_of_scope", agent=a, severity="high", score=0.8, first_seen=t0,
                                          last_seen=t0, summary=f"{a} called ecs:StopInstance", event_ids=[f"ev-{a}"],
                                          evidence={"kind": "out_of_scope"}, dedup_key="k") for a in agents], {})
            alert_once(store, config, inventory, lambda _s: None, sleep=lambda _s: None)
            incidents = {i["id"]: i for i in list_incidents(store)}
        parents = {m.ts: m for m in slack.top_level()}
        by_incident = {json.dumps(m.blocks).split("incident `")[1].split("`")[0]: m for m in parents.values()}

        service = Service(config, lambda: inventory, db, echo=lambda _s: None)
        spans: list[tuple[float, float]] = []  # each cycle's (start, end)
        cycle = service.cycle

        def timed_cycle() -> None:
            started = time.monotonic()
            cycle()
            spans.append((started, time.monotonic()))

        service.cycle = timed_cycle  # type: ignore[method-assign]
        handler = service.start_triage()
        assert handler is not None, "the triage app did not connect"
        scheduler = service.build_scheduler()
        threading.Thread(target=scheduler.start, daemon=True).start()

        acks: list[float] = []
        applied: dict[int, float] = {}  # press number -> seconds until its message showed it
        presses: list[float] = []
        rng = random.Random(7)
        for n, iid in enumerate(incidents):
            time.sleep(rng.uniform(0, args.interval / 2))  # presses land anywhere in a cycle
            parent = by_incident[iid]
            pressed = time.monotonic()
            envelope = socket.send("interactive", {
                "type": "block_actions", "user": {"id": USER, "username": "alice"}, "team": {"id": "T0TRAILW"},
                "api_app_id": "A0TRAILW", "trigger_id": f"t{n}", "channel": {"id": CHANNEL_ID},
                "container": {"type": "message", "message_ts": parent.ts, "channel_id": CHANNEL_ID},
                "actions": [{"action_id": "tw_ack", "block_id": f"triage:{iid}", "value": iid, "type": "button",
                             "action_ts": f"{time.time():.6f}"}]})
            acks.append(socket.wait_ack(envelope))
            threading.Thread(target=_wait_applied, args=(slack, parent.ts, pressed, applied, n), daemon=True).start()
            presses.append(pressed)
        deadline = time.monotonic() + 3 * args.interval + 30
        while len(applied) < len(incidents) and time.monotonic() < deadline:
            time.sleep(0.05)
        scheduler.shutdown(wait=True)
        handler.close()
    print(f"{len(incidents)} presses, cycle every {args.interval:g}s, {service.cycles} cycles")
    print(f"acknowledged: median {statistics.median(acks) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms "
          f"(target < 3000 ms)")
    if applied:
        print(f"applied (message updated in place): {len(applied)}/{len(incidents)}, median "
              f"{statistics.median(applied.values()):.1f}s, max {max(applied.values()):.1f}s after the press; cycles took median "
              f"{statistics.median(e - b for b, e in spans):.1f}s")
        # whole cycles that started after a press and ended without applying it: 0 = applied by the
        # cycle running when it came or by the next one (the target: within one cycle)
        waited = [sum(1 for b, e in spans if b > presses[n] and e < presses[n] + a) for n, a in applied.items()]
        print(f"whole cycles that ran after a press without applying it: max {max(waited)} (target: 0)")
    else:
        print("applied: none")


def _wait_applied(slack: FakeSlack, ts: str, pressed: float, out: dict[int, float], n: int) -> None:
    deadline = pressed + 120
    while time.monotonic() < deadline:
        if any(u["ts"] == ts and "Acknowledged" in json.dumps(u["blocks"]) for u in list(slack.updates)):
            out[n] = time.monotonic() - pressed
            return
        time.sleep(0.02)


if __name__ == "__main__":
    main()
