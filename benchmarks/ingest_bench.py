"""Ingest speed and memory of ``trailwarden ingest`` beside DuckDB's own ``read_json``.

What is measured, and why:

* **trailwarden**, twice: with DuckDB parsing the lines (``TRAILWARDEN_INGEST_PARSER=duckdb``, the
  default for files, ``pipeline/ingest/native.py``) and with the Python parser
  (``TRAILWARDEN_INGEST_PARSER=python``: a process pool running ``json.loads`` and ``normalize``), each ``trailwarden ingest --file events.ndjson --format json`` on N realistic
  ActionTrail events (``pipeline.demo.synthetic.stream``, about 1.3 KB each, NDJSON), into a fresh
  store, with a config holding only ``memory_limit`` so the user's ``config/`` plays no part
  (hence no inventory: every identity is attributed as unregistered). This is the whole command
  as a user runs it: interpreter start-up, hashing the file, parsing, normalizing, attributing,
  deduplicating, committing, closing.
* **reference**: DuckDB loading the same file into a table with ``read_json`` and keeping the raw
  JSON of each row (``to_json(r)::JSON AS raw``), under the same ``memory_limit``, in its own
  Python process: the same bytes into typed columns plus the raw event, with no Python in the
  loop, first with DuckDB's DEFAULT settings: the reference the ratio is taken against. With
  earlier generators' data it failed (the schema is inferred from the first 20,480 lines and a
  later event carried a key they lack, at line 21,762); it is then reported with its line, and the
  run with the schema inferred from the whole file (``sample_size=-1``, :data:`READ_JSON_OPTIONS`,
  measured always) is the reference. A last line loads plain ``read_json`` without the raw
  column, for scale only.

CPU: the user+system seconds of each method's whole process tree (``getrusage(RUSAGE_CHILDREN)``
before and after: it counts the parse workers too, as they are waited for), per 1M events. The two
parsers are measured in turn ``--rounds`` times (3): this machine's speed drifts by a third between
minutes, and one pair of runs put the CPU ratio anywhere from 53% to 61%; the ratio reported is the
median of the rounds' (each round's own), the table shows the first round.

Every method runs as a subprocess; wall time is taken around it. Memory is sampled every 0.1 s
from ``/proc``: the RSS of the subprocess alone (``VmRSS``), and the sum of RSS over it and all
its descendants (ingest parses large files on a spawn process pool), found by walking ppid chains
in ``/proc/*/stat``. The tree sum counts pages shared between processes (the interpreter, DuckDB's
library) once per process, so it errs high. Generating the file is not measured.

The ingest is checked: its JSON report must count N new events, and the store must hold N rows
with N distinct ``event_id`` s. Exit status: 0 when the measurement ran (whether or not the
targets are met), 1 when trailwarden fails or its result is wrong, 3 when a reference run fails.

    .venv/bin/python benchmarks/ingest_bench.py                 # 1,000,000 events
    .venv/bin/python benchmarks/ingest_bench.py --events 200000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
SAMPLE_EVERY = 0.1  # seconds
TARGET_RATIO = 0.30  # trailwarden events/s over the reference's
TARGET_TREE_MIB = 1024
EXIT_WRONG, EXIT_REFERENCE = 1, 3

# DuckDB's defaults infer the schema from the first 20,480 lines; later events carry keys those
# lack (``responseElements.Code`` of a throttled call, first seen around line 21,762 with seed 7),
# and the load stops with "has unknown key". Inferring from the whole file keeps the reference
# lossless and fully typed, at the price of a second pass over the JSON (about 10 of its 25 s
# for 1M events here). ``--read-json-options`` changes it: ``ignore_errors=true`` skips that pass
# but drops the keys the sample missed; ``maximum_depth=1`` makes every column JSON (untyped).
READ_JSON_OPTIONS = "sample_size=-1"

# Runs in its own interpreter: argv = database, NDJSON file, memory limit, "raw" or "plain",
# extra read_json options. Prints the rows loaded.
REFERENCE_PROGRAM = """
import sys
import duckdb

db, src, memory_limit, mode, options = sys.argv[1:6]
quote = lambda s: "'" + s.replace("'", "''") + "'"
select = "r.*, to_json(r)::JSON AS raw" if mode == "raw" else "r.*"
options = ", " + options if options.strip() else ""
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
con.execute(f"SET memory_limit = {quote(memory_limit)}")
con.execute(f"CREATE TABLE ref AS SELECT {select} "
            f"FROM read_json({quote(src)}, format='newline_delimited'{options}) r")
print(con.execute("SELECT count(*) FROM ref").fetchone()[0])
con.close()
"""


class BenchError(Exception):
    """A run failed or produced a wrong result; ``code`` is the exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class Result:
    method: str
    seconds: float
    events: int
    cpu_seconds: float  # user + system of the process tree
    peak_rss_main_mib: float
    peak_rss_tree_mib: float
    db_mib: float
    peak_hwm_main_mib: float  # the kernel's own high-water mark for the main process (VmHWM)
    tree_at_peak: dict[str, float] = field(default_factory=dict)  # process -> MiB at tree peak

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_million(self) -> float:
        return self.cpu_seconds * 1_000_000 / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s),
                "cpu_s_per_1m_events": round(self.cpu_per_million, 1)}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float
    peak_main_kib: int
    peak_tree_kib: int
    hwm_main_kib: int
    tree_at_peak: dict[str, int]


# -- /proc sampling ------------------------------------------------------------------------------
def _ppids() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # comm, in parentheses, may hold spaces and parentheses: fields resume after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out[int(entry.name)] = int(fields[1])
    return out


def _tree(root: int) -> list[int]:
    """``root`` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB; zeros once it has exited (or is a zombie)."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _label(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmdline = ""
    if "spawn_main" in cmdline:
        kind = "spawn worker"
    elif "resource_tracker" in cmdline:
        kind = "resource tracker"
    else:
        kind = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "process"
    return f"{kind} {pid}"


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and of its whole tree until :meth:`stop`."""

    def __init__(self, root: int):
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.peak_main = self.peak_tree = self.hwm_main = 0
        self.tree_at_peak: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(SAMPLE_EVERY)

    def sample(self) -> None:
        sizes: dict[int, int] = {}
        for pid in _tree(self.root):
            rss, hwm = _memory_kib(pid)
            sizes[pid] = rss
            if pid == self.root:
                self.peak_main = max(self.peak_main, rss)
                self.hwm_main = max(self.hwm_main, hwm)
        total = sum(sizes.values())
        if total > self.peak_tree:
            self.peak_tree = total
            self.tree_at_peak = {self._label(pid): kib for pid, kib in sizes.items() if kib}

    def _label(self, pid: int) -> str:
        if pid not in self._labels:
            self._labels[pid] = _label(pid, self.root)
        return self._labels[pid]

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_sampled(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd`` to completion, timing it and sampling its memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    try:
        stdout, stderr = proc.communicate()
    finally:
        seconds = time.perf_counter() - started
        sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(proc.returncode, stdout, stderr, seconds, cpu, sampler.peak_main, sampler.peak_tree,
               sampler.hwm_main, sampler.tree_at_peak)


# -- the steps -----------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(path: Path, n: int, seed: int) -> dict[str, Any]:
    """Write ``n`` synthetic events to ``path`` as NDJSON; not part of any measurement."""
    from pipeline.demo import synthetic

    started = time.perf_counter()
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for event in synthetic.stream(n, seed=seed):
            f.write(json.dumps(event, ensure_ascii=False))
            f.write("\n")
            count += 1
    if count != n:
        raise BenchError(f"the generator yielded {count:,} events, not {n:,}", EXIT_WRONG)
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    log(f"generated {n:,} events in {seconds:.1f}s: {path} ({size / MIB:,.1f} MiB, "
        f"{size / n:,.0f} bytes/event)")
    return {"seconds": round(seconds, 2), "bytes": size}


def db_mib(path: Path) -> float:
    """The store's size on disk, WAL included if one was left behind."""
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists()) / MIB


def to_result(method: str, run: Run, events: int, db: Path) -> Result:
    return Result(
        method=method, seconds=round(run.seconds, 2), events=events, cpu_seconds=round(run.cpu_seconds, 2),
        peak_rss_main_mib=round(run.peak_main_kib / 1024, 1),
        peak_rss_tree_mib=round(run.peak_tree_kib / 1024, 1),
        db_mib=round(db_mib(db), 1),
        peak_hwm_main_mib=round(run.hwm_main_kib / 1024, 1),
        tree_at_peak={k: round(v / 1024, 1) for k, v in
                      sorted(run.tree_at_peak.items(), key=lambda kv: -kv[1])},
    )


def trailwarden_command() -> str:
    beside = Path(sys.executable).with_name("trailwarden")
    found = str(beside) if beside.exists() else shutil.which("trailwarden")
    if not found:
        raise BenchError("no `trailwarden` command beside this Python or on PATH", EXIT_WRONG)
    return found


PARSERS = {"duckdb": "trailwarden ingest (DuckDB parses, default)", "python": "trailwarden ingest (Python parser)"}


def measure_trailwarden(src: Path, workdir: Path, memory_limit: str, n: int, parser: str = "duckdb") -> Result:
    config = workdir / "bench-config.yaml"
    config.write_text(f"memory_limit: {json.dumps(memory_limit)}\n", encoding="utf-8")
    db = workdir / f"tw-{parser}.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):  # an earlier round's store would skip the file
        stale.unlink(missing_ok=True)
    env = {**os.environ, "TRAILWARDEN_CONFIG": str(config), "TRAILWARDEN_INGEST_PARSER": parser}
    cmd = [trailwarden_command(), "ingest", "--config", str(config), "--file", str(src),
           "--db", str(db), "--format", "json"]
    log(f"running ({parser} parser): " + " ".join(cmd))
    run = run_sampled(cmd, env=env, cwd=workdir)
    if run.returncode != 0:
        raise BenchError(f"trailwarden ingest exited with {run.returncode}:\n{run.stderr}",
                         EXIT_WRONG)
    check_ingest(run.stdout, db, n)
    return to_result(PARSERS[parser], run, n, db)


def check_ingest(stdout: str, db: Path, n: int) -> None:
    """The report counts ``n`` new events and the store holds ``n`` distinct ones, or raise."""
    import duckdb

    try:
        new = json.loads(stdout)["sources"]["files"]["new"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"cannot read the ingest report ({exc!r}):\n{stdout}", EXIT_WRONG) from None
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() or (0, 0)
    finally:
        con.close()
    if not new == rows == distinct == n:
        raise BenchError(f"WRONG RESULT: expected {n:,} events; the ingest reported {new:,} new, "
                         f"the store holds {rows:,} rows with {distinct:,} distinct event_id",
                         EXIT_WRONG)
    log(f"checked: {n:,} new events reported, {rows:,} rows, {distinct:,} distinct event_id")


def measure_default_read_json(src: Path, workdir: Path, args: argparse.Namespace) -> tuple[Result | None, dict[str, Any]]:
    """``read_json`` with DuckDB's default settings (and the raw column): the reference when it
    loads every event; else None and where and why it failed (earlier generators' data made it
    fail at line ~21,762: the default sample of 20,480 lines missed a later key)."""
    n = args.events
    db = workdir / "ref-default.duckdb"
    cmd = [sys.executable, "-c", REFERENCE_PROGRAM, str(db), str(src), args.memory_limit, "raw", ""]
    log(f"running: duckdb read_json, default settings: {reference_sql(True, '')}")
    run = run_sampled(cmd, cwd=workdir)
    if run.returncode == 0 and int((run.stdout.split() or ["0"])[-1]) == n:
        return to_result("duckdb read_json + raw, default settings (reference)", run, n, db), {}
    error = next((line for line in run.stderr.splitlines() if "Error" in line), run.stderr.strip()[-300:])
    found = re.search(r"line (\d[\d,]*)", run.stderr)
    return None, {"failed": error[:300], "failed_at_line": int(found.group(1).replace(",", "")) if found else None,
                  "seconds": round(run.seconds, 2), "cpu_seconds": round(run.cpu_seconds, 2)}


def measure_reference(src: Path, workdir: Path, args: argparse.Namespace, *, raw: bool,
                      reference: bool = True) -> Result:
    n = args.events
    db = workdir / ("ref-raw.duckdb" if raw else "ref-plain.duckdb")
    cmd = [sys.executable, "-c", REFERENCE_PROGRAM, str(db), str(src), args.memory_limit,
           "raw" if raw else "plain", args.read_json_options]
    options = args.read_json_options
    method = (f"duckdb read_json + raw, {options}{' (reference)' if reference else ''}" if raw
              else f"duckdb read_json, {options}, no raw (scale)")
    log(f"running: {method}: {reference_sql(raw, args.read_json_options)}")
    run = run_sampled(cmd, cwd=workdir)
    if run.returncode != 0:
        raise BenchError(f"{method} exited with {run.returncode}:\n{run.stderr}", EXIT_REFERENCE)
    rows = int((run.stdout.split() or ["0"])[-1])
    if rows != n:
        raise BenchError(f"{method} loaded {rows:,} rows, not {n:,}", EXIT_REFERENCE)
    return to_result(method, run, n, db)


def reference_sql(raw: bool, options: str) -> str:
    select = "r.*, to_json(r)::JSON AS raw" if raw else "*"
    extra = f", {options}" if options.strip() else ""
    # Shown to the reader, never executed: REFERENCE_PROGRAM builds the same statement.
    return (f"CREATE TABLE ref AS SELECT {select} FROM "  # noqa: S608
            f"read_json('events.ndjson', format='newline_delimited'{extra}) r")


# -- report --------------------------------------------------------------------------------------
def summary(results: list[Result], rounds: list[tuple[Result, Result]] | None = None) -> dict[str, Any]:
    """The ratios and targets. ``rounds``: each round's (DuckDB parsing, Python parser) runs; the
    CPU ratio is then the median of the rounds' (the machine's speed drifts between minutes)."""
    tw = results[0]
    before = next((r for r in results if r.method == PARSERS["python"]), None)
    ref = next((r for r in results if "reference" in r.method), None)
    ratio = tw.events_per_s / ref.events_per_s if ref else None
    before_ratio = before.events_per_s / ref.events_per_s if ref and before else None
    cpu = tw.cpu_per_million / before.cpu_per_million if before and before.cpu_per_million else None
    per_round = [d.cpu_per_million / p.cpu_per_million for d, p in rounds or [] if p.cpu_per_million]
    if per_round:
        cpu = statistics.median(per_round)
    return {
        "cpu_vs_before_rounds_pct": [round(100 * r, 1) for r in per_round],
        "ratio_pct": round(100 * ratio, 1) if ratio is not None else None,
        "before_ratio_pct": round(100 * before_ratio, 1) if before_ratio is not None else None,
        "cpu_vs_before_pct": round(100 * cpu, 1) if cpu is not None else None,
        "targets": {
            f"events/s >= {TARGET_RATIO:.0%} of reference": (
                ratio >= TARGET_RATIO if ratio is not None else None),
            "DuckDB parsing: CPU per event <= 50% of the Python parser's": cpu <= 0.5 if cpu is not None else None,
            f"trailwarden tree peak < {TARGET_TREE_MIB} MiB": tw.peak_rss_tree_mib < TARGET_TREE_MIB,
        },
    }


def render(results: list[Result], verdict: dict[str, Any]) -> str:
    head = ("method", "seconds", "events/s", "CPU s/1M ev", "RSS main MiB", "RSS tree MiB", "DB MiB")
    rows = [head] + [(r.method, f"{r.seconds:.2f}", f"{r.events_per_s:,.0f}", f"{r.cpu_per_million:,.1f}",
                      f"{r.peak_rss_main_mib:,.1f}", f"{r.peak_rss_tree_mib:,.1f}",
                      f"{r.db_mib:,.1f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=True))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for r in results:
        parts = ", ".join(f"{k} {v:,.1f} MiB" for k, v in r.tree_at_peak.items())
        lines.append(f"{r.method}: at the tree's peak: {parts} (main VmHWM "
                     f"{r.peak_hwm_main_mib:,.1f} MiB)")
    lines.append("")
    default = verdict.get("default_read_json")
    if default:
        lines.append(f"duckdb read_json with default settings FAILED at line {default.get('failed_at_line')}: "
                     f"{default['failed']} ({default['seconds']:.2f} s); the reference is sample_size=-1")
    if verdict.get("reference_sql"):
        lines.append(f"reference: {verdict['reference_sql']}")
    if verdict["ratio_pct"] is not None:
        lines.append(f"trailwarden events/s / reference (with raw) events/s: "
                     f"{verdict['ratio_pct']:.1f}% (Python parser: {verdict['before_ratio_pct']}%)")
    if verdict.get("cpu_vs_before_pct") is not None:
        rounds = verdict.get("cpu_vs_before_rounds_pct") or []
        each = f" (the median of {len(rounds)} rounds: {', '.join(f'{r:.1f}%' for r in rounds)})" if rounds else ""
        lines.append(f"trailwarden CPU per event, DuckDB parsing / Python parser: "
                     f"{verdict['cpu_vs_before_pct']:.1f}%{each}")
    for name, met in verdict["targets"].items():
        state = "not measured" if met is None else ("met" if met else "NOT MET")
        lines.append(f"target {name}: {state}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def memory_size(value: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value.strip(), re.I):
        raise argparse.ArgumentTypeError(f"not a memory size: {value!r} (e.g. 512MB, 2GB)")
    return value.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events to generate (1000000)")
    p.add_argument("--workdir", type=Path, help="where the files go (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated file and databases")
    p.add_argument("--memory-limit", type=memory_size, default="256MB",
                   help="DuckDB memory_limit for every method (256MB, trailwarden's default)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (7)")
    p.add_argument("--skip-reference", action="store_true", help="measure trailwarden only")
    p.add_argument("--read-json-options", default=READ_JSON_OPTIONS, metavar="SQL",
                   help=f"extra read_json arguments for the references ({READ_JSON_OPTIONS!r})")
    p.add_argument("--rounds", type=int, default=3,
                   help="measure the two parsers in turn this many times; the CPU ratio is the median of "
                        "the rounds' (3; the table shows the first round)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error("--events must be at least 1")
    return args


def prepare_workdir(given: Path | None) -> tuple[Path, bool]:
    """The directory to work in, and whether this run created it."""
    if given is None:
        return Path(tempfile.mkdtemp(prefix="trailwarden-bench-")), True
    given.mkdir(parents=True, exist_ok=True)
    return given.resolve(), False


OUTPUTS = ("events.ndjson", "bench-config.yaml", "tw-duckdb.duckdb", "tw-python.duckdb", "ref-default.duckdb",
           "ref-raw.duckdb", "ref-plain.duckdb")


def remove_outputs(workdir: Path) -> None:
    for name in OUTPUTS:
        for path in (workdir / name, workdir / (name + ".wal")):
            path.unlink(missing_ok=True)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    remove_outputs(workdir)  # a store left by an earlier run would skip the file as ingested
    src = workdir / "events.ndjson"
    generation = generate(src, args.events, args.seed)
    rounds = [(measure_trailwarden(src, workdir, args.memory_limit, args.events, "duckdb"),
               measure_trailwarden(src, workdir, args.memory_limit, args.events, "python"))
              for _ in range(max(1, args.rounds))]
    results = list(rounds[0])
    default: dict[str, Any] | None = None
    if not args.skip_reference:
        loaded, default = measure_default_read_json(src, workdir, args)
        results += [loaded] if loaded else []
        for raw in (True, False):
            results.append(measure_reference(src, workdir, args, raw=raw, reference=loaded is None))
    return {"events": args.events, "memory_limit": args.memory_limit, "seed": args.seed,
            "cpus": os.cpu_count(), "load_before": os.getloadavg(), "generation": generation,
            "default_read_json": default,
            "reference_sql": None if args.skip_reference else reference_sql(
                True, "" if not default else args.read_json_options),
            "results": [r.as_dict() for r in results], **summary(results, rounds), "load_after": os.getloadavg(),
            "_results": results}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir, created = prepare_workdir(args.workdir)
    log(f"workdir: {workdir}")
    try:
        report = measure(args, workdir)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return exc.code
    finally:
        if args.keep:
            log(f"kept: {workdir}")
        elif created:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            remove_outputs(workdir)
    results = report.pop("_results")
    print(json.dumps(report, indent=2) if args.json else render(results, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
