"""SLS read speed: ``trailwarden ingest --source <sls source>`` end to end against a fake Log Service.

What is measured, and how:

* **The data**: N realistic ActionTrail events (``pipeline.demo.synthetic.stream``, about 1.3 KB each)
  in LogGroups of ``--group-size`` logs (each event's JSON in the content ``event``, as a trail
  delivers them), dealt round-robin over ``--shards`` shards of ``tests.fakes.sls.FakeSLS``. The
  fake runs in **its own process** (``--serve``), so it does not share the measured process's
  interpreter; it builds its LogGroups before it says it is ready, so generating the data is not
  timed. It lz4-compresses each pull's answer when asked (the SDK always asks), as SLS does.
* **The ingest**: ``python -m pipeline --config <cfg> ingest --source trail --format json`` as a
  subprocess, with fake credentials in the environment and a config whose only source points at
  the fake (``endpoint: http://127.0.0.1:PORT``), into a fresh store, once per parser
  (``--parser``, default both in one run: ``TRAILWARDEN_INGEST_PARSER=python``, then ``duckdb``,
  which parses each batch's ``event`` texts with DuckDB, issue 18). Wall time is taken around
  the whole command (interpreter start-up, list_shards, pulls, lz4, protobuf decode, JSON parse,
  normalize, Arrow, DuckDB insert and dedupe, commit, close). CPU is the child's user + system
  seconds and peak RSS its own ``ru_maxrss`` (both ``os.wait4``); the fake's are not counted.
* **The check**: the JSON report must count N new events, and the store must hold N rows with N
  distinct ``event_id`` s.
* **Where the time goes** (``--breakdown``, on by default): the same ingest again, in a child
  that wraps the stages with timers: the SDK's pull (HTTP + lz4), protobuf decode, ``json.loads``
  of each ``event``, normalize + attribute, Arrow (``Batch.seal``) on the reading thread; insert
  + dedupe and commit on the writer thread. The fake reports its own time per pull. With DuckDB
  parsing, ``NativeReader.texts`` (the parse statements and the per-group rules) replaces the
  Python parse and normalize.

Exit status: 0 when the measurement ran (whether or not the target is met), 1 when the ingest
fails or its result is wrong.

    .venv/bin/python benchmarks/sls_bench.py                        # 1,000,000 events, 4 shards, both parsers
    .venv/bin/python benchmarks/sls_bench.py --parser duckdb --no-breakdown
    .venv/bin/python benchmarks/sls_bench.py --events 200000 --pull-count 100 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_EVENTS_PER_S = 30_000
PROJECT, LOGSTORE = "bench-proj", "actiontrail_bench"
MIB = 1024 * 1024
EXIT_WRONG = 1
PARSERS = ("python", "duckdb")
PARSER_ENV = "TRAILWARDEN_INGEST_PARSER"  # pipeline.ingest.native.PARSER_ENV


# -- the fake, in its own process -------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    """Build the logstore, say READY (one JSON line), then serve; each ``stats`` line on stdin is
    answered with one JSON line of what the pulls since the last one cost; EOF stops."""
    sys.path.insert(0, str(ROOT))
    from datetime import datetime

    import lz4.block

    from pipeline.demo.synthetic import stream
    from tests.fakes.sls import FakeSLS

    started = time.perf_counter()
    fake = FakeSLS(PROJECT, LOGSTORE, shards=args.shards)
    group: list[dict[str, Any]] = []
    groups = events = raw = 0

    def flush() -> None:
        nonlocal groups, raw
        newest = max(e["eventTime"] for e in group)
        received = int(datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp()) + 60
        fake.add_events(groups % args.shards, group, receive_time=received)
        raw += len(fake.shards[groups % args.shards].groups[-1])
        groups += 1
        group.clear()

    for event in stream(args.events):
        group.append(event)
        events += 1
        if len(group) == args.group_size:
            flush()
    if group:
        flush()

    timers: dict[str, float] = {"pull_seconds": 0.0, "lz4_seconds": 0.0, "pulls": 0}
    answer, compress = fake._answer, lz4.block.compress

    def timed_answer(req: Any, accept: str) -> Any:
        t = time.perf_counter()
        try:
            return answer(req, accept)
        finally:
            if req.route == "pull_logs":
                timers["pull_seconds"] += time.perf_counter() - t
                timers["pulls"] += 1

    def timed_compress(data: bytes, **kw: Any) -> bytes:
        t = time.perf_counter()
        try:
            return compress(data, **kw)
        finally:
            timers["lz4_seconds"] += time.perf_counter() - t

    fake._answer = timed_answer  # type: ignore[method-assign,assignment]
    lz4.block.compress = timed_compress
    fake.start()
    print(json.dumps({"port": fake.port, "events": events, "groups": groups, "protobuf_bytes": raw,
                      "build_seconds": round(time.perf_counter() - started, 1)}), flush=True)
    cpu = time.process_time()
    for line in sys.stdin:  # "stats": report what the last run cost us and start again; EOF: stop
        if line.strip() == "stats":
            print(json.dumps({**timers, "cpu_seconds": round(time.process_time() - cpu, 2)}), flush=True)
            timers.update(pull_seconds=0.0, lz4_seconds=0.0, pulls=0)
            cpu = time.process_time()
    fake.stop()


# -- the breakdown child ----------------------------------------------------------------------------
BREAKDOWN = r"""
import json, sys, threading, time
from collections import defaultdict
sys.path.insert(0, sys.argv[1])
totals = defaultdict(float)
lock = threading.Lock()

def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            with lock:
                totals[name] += time.perf_counter() - t
    return wrapper

from aliyun.log import logclient, pulllog_response
from pipeline.ingest import batches, native
from pipeline.ingest import run as ingest
from pipeline.ingest.sources import sls
logclient.LogClient.pull_logs = timed("read: SDK pull_logs (HTTP + lz4)", logclient.LogClient.pull_logs)
pulllog_response.PullLogResponse._parse_loggroup_list = timed(
    "read: protobuf decode", pulllog_response.PullLogResponse._parse_loggroup_list)
sls._parsed = timed("read: strict JSON parse of `event` (Python)", sls._parsed)
batches.normalize = timed("read: normalize", batches.normalize)
native.NativeReader.texts = timed("read: DuckDB parse + rules (NativeReader.texts)", native.NativeReader.texts)
batches.Batch.seal = timed("read: Arrow (Batch.seal)", batches.Batch.seal)
ingest.Transaction.add = timed("write: DuckDB insert + dedupe", ingest.Transaction.add)
ingest.Transaction.commit = timed("write: DuckDB commit", ingest.Transaction.commit)
from pipeline.cli.main import main
started = time.perf_counter()
try:
    main(["--config", sys.argv[2], "ingest", "--source", "trail", "--format", "json"])
except SystemExit as exc:
    code = exc.code
totals["wall"] = time.perf_counter() - started
print(json.dumps({"exit": code, "seconds": dict(totals)}), file=sys.stderr, flush=True)
"""


# The launchers run as script files: under ``python -c`` DuckDB turns its progress bar on (it
# takes a main module without a file for an interactive session) and prints it into stdout.


# -- the bench --------------------------------------------------------------------------------------
def _config(tmp: Path, port: int, pull_count: int | None) -> Path:
    source: dict[str, Any] = {"name": "trail", "type": "sls", "endpoint": f"http://127.0.0.1:{port}",
                              "project": PROJECT, "logstore": LOGSTORE, "max_batches": 100_000}
    if pull_count:
        source["batch_size"] = pull_count
    path = tmp / "trailwarden.yaml"
    path.write_text(json.dumps({"database": str(tmp / "store.duckdb"), "memory_limit": "256MB",
                                "sources": [source]}), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "trailwarden_config")}
    env.update({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tBenchFakeKey00", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "bench-secret",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    return env


def _measure(cmd: list[str], tmp: Path, env: dict[str, str]) -> tuple[int, float, int, str, str, int, float]:
    """Run ``cmd``; return (exit status, wall seconds, peak RSS bytes, stdout, stderr, max sampled
    RSS, CPU seconds: user + system)."""
    out, err = tmp / "stdout", tmp / "stderr"
    with out.open("w") as o, err.open("w") as e:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=o, stderr=e)
        sampled = [0]
        done = threading.Event()

        def sample() -> None:
            status = Path(f"/proc/{proc.pid}/status")
            while not done.is_set():
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            sampled[0] = max(sampled[0], int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    return (proc.returncode, wall, usage.ru_maxrss * 1024, out.read_text(), err.read_text(), sampled[0],
            usage.ru_utime + usage.ru_stime)


def _default_pull_count() -> int:
    sys.path.insert(0, str(ROOT))
    from pipeline.core.config import SlsSource

    return int(SlsSource.model_fields["batch_size"].default)


def _reference(tmp: Path, events: int, env: dict[str, str]) -> dict[str, Any]:
    """DuckDB's own ``read_json`` (keeping each event's raw JSON, as trailwarden does) loading the
    same events from an NDJSON file, in its own interpreter: what a bulk load costs here, with no
    network, protobuf or per-event Python at all. Writing the file is not timed."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ingest_bench import READ_JSON_OPTIONS, REFERENCE_PROGRAM

    from pipeline.demo.synthetic import stream

    src = tmp / "events.ndjson"
    with src.open("w", encoding="utf-8") as out:
        for event in stream(events):  # the same events the fake serves (the generator is seeded)
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    script = tmp / "reference.py"  # a file, not -c: see the note on the launchers
    script.write_text(REFERENCE_PROGRAM, encoding="utf-8")
    code, wall, peak, stdout, stderr, _, cpu = _measure(
        [sys.executable, str(script), str(tmp / "ref.duckdb"), str(src), "256MB", "raw", READ_JSON_OPTIONS], tmp, env)
    src.unlink()
    rows = int((stdout.split() or ["0"])[-1]) if code == 0 else 0
    if rows != events:
        return {"error": f"read_json loaded {rows} rows (exit {code}): {stderr.strip()[-300:]}"}
    return {"seconds": round(wall, 2), "events_per_s": round(events / wall), "peak_rss_mib": round(peak / MIB),
            "cpu_s_per_1m_events": round(cpu * 1_000_000 / events, 1)}


def _server_stats(server: subprocess.Popen[str]) -> dict[str, Any]:
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write("stats\n")
    server.stdin.flush()
    return dict(json.loads(server.stdout.readline()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=200, help="logs per LogGroup")
    parser.add_argument("--pull-count", type=int, default=None,
                        help="LogGroups per pull (the source's batch_size; default: the config default)")
    parser.add_argument("--parser", choices=(*PARSERS, "both"), default="both",
                        help="TRAILWARDEN_INGEST_PARSER of the ingest (default: both, in one run)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented second run")
    parser.add_argument("--no-reference", action="store_true", help="skip DuckDB's read_json of the same events")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="sls-bench-"))
    env = _env()
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--events", str(args.events), "--shards",
                               str(args.shards), "--group-size", str(args.group_size)],
                              cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        if not args.json:
            print(f"building {args.events:,} events in LogGroups of {args.group_size} over {args.shards} shards "
                  "(fake SLS process, not timed) ...", flush=True)
        ready = json.loads(server.stdout.readline())
        config = _config(tmp, ready["port"], args.pull_count)
        result: dict[str, Any] = {
            "events": ready["events"], "groups": ready["groups"], "shards": args.shards,
            "group_size": args.group_size, "pull_count": args.pull_count or _default_pull_count(),
            "protobuf_mib": round(ready["protobuf_bytes"] / MIB, 1), "target_events_per_s": TARGET_EVENTS_PER_S,
            "load_before": os.getloadavg(), "parsers": {},
        }
        wrong = False
        for name in PARSERS if args.parser == "both" else (args.parser,):
            run = _ingest(name, tmp, config, {**env, PARSER_ENV: name}, server, ready["events"], args.no_breakdown)
            result["parsers"][name] = run
            wrong = wrong or "error" in run
        result["load_after"] = os.getloadavg()
        if not args.no_reference and not wrong:
            result["reference"] = _reference(tmp, ready["events"], env)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    _print(result, args.json)
    return EXIT_WRONG if wrong else 0


def _ingest(parser: str, tmp: Path, config: Path, env: dict[str, str], server: subprocess.Popen[str],
            events: int, no_breakdown: bool) -> dict[str, Any]:
    """One parser's ingest into a fresh store (then, unless ``no_breakdown``, the instrumented one)."""
    for f in tmp.glob("store.duckdb*"):
        f.unlink()
    cmd = [sys.executable, "-m", "pipeline", "--config", str(config), "ingest", "--source", "trail",
           "--format", "json"]
    code, wall, peak, stdout, stderr, sampled, cpu = _measure(cmd, tmp, env)
    result: dict[str, Any] = {
        "seconds": round(wall, 2), "events_per_s": round(events / wall),
        "cpu_s_per_1m_events": round(cpu * 1_000_000 / events, 1), "peak_rss_mib": round(peak / MIB),
        "sampled_rss_mib": round(sampled / MIB), "exit": code, "fake_server": _server_stats(server),
    }
    if _check(code, stdout, stderr, tmp / "store.duckdb", events, result) or no_breakdown:
        return result
    for f in tmp.glob("store.duckdb*"):
        f.unlink()
    script = tmp / "trailwarden_breakdown.py"
    script.write_text(BREAKDOWN, encoding="utf-8")
    _, wall2, _, _, stderr2, _, _ = _measure([sys.executable, str(script), str(ROOT), str(config)], tmp, env)
    lines = [ln for ln in stderr2.splitlines() if ln.startswith('{"exit"')]
    result["breakdown"] = json.loads(lines[-1])["seconds"] if lines else {"error": stderr2[-500:]}
    result["breakdown_wall"] = round(wall2, 2)
    result["breakdown_fake_server"] = _server_stats(server)
    return result


def _check(code: int, stdout: str, stderr: str, db: Path, expected: int, result: dict[str, Any]) -> bool:
    """Record what is wrong with the ingest in ``result``; return whether anything is."""
    if code != 0:
        result["error"] = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}"
        return True
    start = stdout.find("\n{\n") + 1 if not stdout.startswith("{") else 0
    if start:  # DuckDB printed its progress bar into our JSON (a statement ran over 2 s)
        result["stdout_polluted"] = stdout[:start].strip()[:120]
    try:
        report = json.loads(stdout[start:])["sources"]["trail"]
    except (ValueError, KeyError) as exc:
        result["error"] = f"unreadable report ({exc}): {stdout[:300]!r} ... {stderr[-300:]!r}"
        return True
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    con.close()
    result["stored"] = rows
    if report.get("new") != expected or rows != expected or distinct != expected:
        result["error"] = f"expected {expected} new events; report says {report.get('new')}, store has {rows} ({distinct} distinct)"
        return True
    return False


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"trailwarden ingest --source <sls>: {result['events']:,} events, {result['groups']:,} LogGroups "
          f"({result['protobuf_mib']} MiB protobuf), {result['shards']} shards, {result['pull_count']} groups/pull; "
          f"load average {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after")
    ref = result.get("reference")
    for name, run in result["parsers"].items():
        _print_run(name, run, ref if ref and "error" not in ref else None)
    if ref and "error" not in ref:
        print(f"  reference, DuckDB read_json + raw of the same events from an NDJSON file: {ref['seconds']:.1f} s "
              f"->  {ref['events_per_s']:,} events/s, {ref['cpu_s_per_1m_events']:.1f} CPU s per 1M events; "
              f"peak RSS {ref['peak_rss_mib']:,} MiB")
    elif ref:
        print(f"  reference failed: {ref['error']}")
    runs = result["parsers"]
    if all(p in runs and "error" not in runs[p] for p in PARSERS):
        duck, python = runs["duckdb"], runs["python"]
        cpu = 100 * duck["cpu_s_per_1m_events"] / python["cpu_s_per_1m_events"]
        speed = 100 * duck["events_per_s"] / python["events_per_s"]
        print(f"  DuckDB parsing / Python parser: CPU per event {cpu:.1f}%, events/s {speed:.1f}%")


def _print_run(name: str, run: dict[str, Any], ref: dict[str, Any] | None) -> None:
    print(f"  parser {name}:")
    if "error" in run:
        print(f"    FAILED: {run['error']}")
        return
    if run.get("stdout_polluted"):
        print(f"    note: the command's --format json output began with DuckDB's progress bar: "
              f"{run['stdout_polluted']!r}")
    verdict = "meets" if run["events_per_s"] >= TARGET_EVENTS_PER_S else "BELOW"
    share = f" ({100 * run['events_per_s'] / ref['events_per_s']:.0f}% of the reference)" if ref else ""
    print(f"    {run['seconds']:.1f} s  ->  {run['events_per_s']:,} events/s{share} ({verdict} the "
          f"{TARGET_EVENTS_PER_S:,}/s target); {run['cpu_s_per_1m_events']:.1f} CPU s per 1M events; "
          f"peak RSS {run['peak_rss_mib']:,} MiB")
    server = run.get("fake_server")
    if server:
        print(f"    fake SLS process (its own process, sharing the cores): {server['pulls']} pulls, "
              f"{server['pull_seconds']:.1f} s answering them ({server['lz4_seconds']:.1f} s of it lz4), "
              f"{server['cpu_seconds']:.1f} s CPU")
    breakdown = run.get("breakdown")
    if breakdown and "error" not in breakdown:
        print(f"    where the time goes (instrumented run, {run['breakdown_wall']:.1f} s wall; the reading "
              "and writing threads overlap):")
        for stage, seconds in sorted(breakdown.items(), key=lambda kv: kv[0]):
            if stage != "wall":
                print(f"      {stage:<46} {seconds:7.2f} s")
    elif breakdown:
        print(f"    breakdown failed: {breakdown['error']}")


if __name__ == "__main__":
    sys.exit(main())
