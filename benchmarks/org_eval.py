"""Run trailwarden on an organisation-scale scenario exactly as issue 15's held-out one is run, and
score what it raised against the scenario's labels.

    python benchmarks/org_eval.py SCENARIO_DIR                       # a scenario already written
    python benchmarks/org_eval.py SCENARIO_DIR --generate --agents 60 --weeks 8 --seed 3 --volume 1.0

From the scenario's directory, with a fresh store (``data/trailwarden.duckdb``, removed first):

    trailwarden --config config/trailwarden.yaml ingest --file events/
    trailwarden --config config/trailwarden.yaml detect --since <detect_since> --until <end>
    trailwarden --config config/trailwarden.yaml findings --status all --format json

(``detect_since`` is the start of the last two weeks and ``end`` the scenario's end, both in
``labels.json``), then prints the score table of :func:`pipeline.demo.score.score`: per incident
raised or missed, per trap quiet or tripped, the other findings at medium or above per 100 agents
per day, and how long each step took. ``--json FILE`` also writes the whole score.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.demo.organisation import generate  # noqa: E402
from pipeline.demo.score import load_labels, score, table  # noqa: E402


def trailwarden(scenario: Path, *args: str) -> tuple[str, float]:
    """One CLI command from the scenario's directory; its stdout and seconds. Fails loudly."""
    cmd = [sys.executable, "-m", "pipeline", "--config", "config/trailwarden.yaml", *args]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=scenario, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"`trailwarden {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout, time.monotonic() - started


def evaluate(scenario: Path) -> tuple[dict[str, Any], dict[str, float]]:
    labels, meta = load_labels(scenario / "labels.json")
    shutil.rmtree(scenario / "data", ignore_errors=True)
    timings: dict[str, float] = {}
    _, timings["ingest"] = trailwarden(scenario, "ingest", "--file", "events/")
    _, timings["detect"] = trailwarden(scenario, "detect", "--since", meta["detect_since"], "--until", meta["end"])
    out, timings["findings"] = trailwarden(scenario, "findings", "--status", "all", "--format", "json")
    days = (_seconds(meta["end"]) - _seconds(meta["detect_since"])) / 86400
    return score(json.loads(out), labels, int(meta["agents"]), days), timings


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--generate", action="store_true", help="write the scenario first")
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--volume", type=float, default=1.0)
    parser.add_argument("--json", type=Path, help="also write the whole score here")
    args = parser.parse_args()
    if args.generate:
        sc = generate(args.scenario, agents=args.agents, weeks=args.weeks, seed=args.seed, volume=args.volume)
        print(f"generated {sc.events:,} events ({sc.events / sc.agents / (sc.weeks * 7):,.0f} per agent per day) "
              f"in {sc.files} files in {sc.seconds:.1f}s")
    if not (args.scenario / "labels.json").is_file():
        parser.exit(2, f"org_eval: error: {args.scenario} has no labels.json: not a scenario, or its generation was "
                       "interrupted (write it with --generate)\n")
    result, timings = evaluate(args.scenario)
    print(table(result))
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json:
        args.json.write_text(json.dumps({"score": result, "seconds": timings}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
