"""run and serve: one cycle, the scheduler, stopping cleanly, and analysts reading meanwhile.

Cycles are driven in this process (``Service.cycle()``, one call per cycle) wherever what is
tested is what a cycle does; the analyst is another process (DuckDB's locks are per process),
told what to do and when. Two tests run ``serve`` itself, for its signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from models.inventory import load_inventory
from pipeline.core.config import load_config
from pipeline.service.cycle import Service
from tests.conftest import (
    BASE_EVENT,
    REAL_ATTACKS,
    ROOT,
    assert_one_line_error,
    run_cli,
    write_ndjson,
)

SECRET = "s3cr3t-do-not-print"
TOKEN = "xoxb-do-not-print"
INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")


def _config(tmp_path: Path, *, every: str = "1s", extra_sources: str = "") -> Path:
    (tmp_path / "incoming").mkdir(exist_ok=True)
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(
        f"database: {tmp_path / 'tw.duckdb'}\n"
        f"timezone: Asia/Shanghai\n"
        f"inventory: {ROOT / 'config' / 'agents.yaml'}\n"
        f"sources:\n  - {{name: drop, type: files, path: {tmp_path / 'incoming'}}}\n{extra_sources}"
        f"schedule: {{ingest_every: {every}}}\n")
    return cfg


def _count(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
    finally:
        con.close()


def _events(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (REAL_ATTACKS / name).read_text().splitlines()]


def _service(cfg: Path) -> Service:
    """``serve``'s service, whose cycles the test runs one at a time."""
    return Service(load_config(cfg), lambda: INVENTORY, cfg.parent / "tw.duckdb", echo=lambda _line: None)


def _cycle_runs(db: Path, where: str = "TRUE") -> list[dict[str, Any]]:
    out = run_cli("query", f"SELECT command, status, error, counts FROM runs WHERE command LIKE 'cycle.%' "
                  f"AND {where} ORDER BY id", "--db", str(db), "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- serve itself: a process, stopped with a signal --------------------------------------------------
def _serve(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ALIBABA_CLOUD_"))}
    full.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args, "--config", str(cfg), "serve"],
                            cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(300, proc.kill)  # a serve that hangs ends the test, not the suite
    watchdog.daemon = True
    watchdog.start()
    return proc


def _read_until(proc: subprocess.Popen[str], seen: list[str], found: Callable[[str], bool]) -> None:
    """Read serve's stderr, line by line into ``seen``, until a line is ``found``."""
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, ""):
        seen.append(line)
        if found(line):
            return
    raise AssertionError(f"serve ended (exit {proc.wait()}) before it logged that: {''.join(seen)[-2000:]}")


def test_run_is_one_cycle_and_publishes_a_snapshot(tmp_path):
    cfg = _config(tmp_path)
    (tmp_path / "incoming" / "stratus.jsonl").write_text((REAL_ATTACKS / "stratus.jsonl").read_text())
    result = run_cli("--config", str(cfg), "run")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[-3:]] == ["ingest", "detect", "alert"]
    assert "== " in result.stdout  # the console alerter printed the storms of the stratus traffic
    assert _count(tmp_path / "tw.duckdb") == 89
    assert (tmp_path / "tw.snapshot.duckdb").exists()
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    assert {s["step"]: s["status"] for s in status["service"]["steps"]} == {
        "ingest": "ok", "detect": "ok", "alert": "ok"}
    counts = {s["step"]: s["counts"] for s in status["service"]["steps"]}
    assert counts["ingest"]["new"] == 89 and counts["detect"]["new"] >= 1  # the storms the alerter printed
    assert counts["alert"]["alerts_sent"] == counts["alert"]["enqueued"] >= 1
    again = run_cli("--config", str(cfg), "run")
    assert again.returncode == 0 and "== " not in again.stdout  # nothing new: nothing alerted twice


def test_a_failing_source_does_not_stop_the_others(tmp_path, monkeypatch):
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cfg = _config(tmp_path, extra_sources="  - {name: history, type: lookup_events, region: cn-hangzhou}\n")
    write_ndjson(tmp_path / "incoming" / "a.jsonl", _events("otrf.jsonl"))
    result = run_cli("--config", str(cfg), "run")  # no Alibaba credentials: the API source fails
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("trailwarden: error: cycle step(s) failed: ingest: history:")
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in lines[-1]
    assert _count(tmp_path / "tw.duckdb") == 103  # the files source went in all the same
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    errors = {s["source"]: s["last_error"] for s in status["sources"]}
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in errors["history"] and errors["drop"] is None


@pytest.mark.slow  # serve in a process of its own, stopped with a signal
def test_serve_cycles_then_stops_cleanly_on_sigterm(tmp_path):
    cfg = _config(tmp_path)
    proc = _serve(cfg, "--log-format", "json", env={"SLACK_BOT_TOKEN": TOKEN, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET})
    seen: list[str] = []
    try:
        for _ in range(3):  # three cycles
            _read_until(proc, seen, lambda line: '"step alert ok' in line)
        write_ndjson(tmp_path / "incoming" / "late.jsonl", _events("stratus.jsonl"))
        _read_until(proc, seen, lambda line: '"step ingest ok' in line and '"new": 89' in line)  # the next cycle
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    logs = [json.loads(line) for line in "".join(seen).splitlines() + err.splitlines() if line.strip()]
    [stop] = [i for i, entry in enumerate(logs) if "SIGTERM" in entry["message"]]
    assert logs[-1]["message"].startswith("stopped after")
    # it finished the cycle in flight, if any, and began none after the signal
    assert sum(entry["message"].startswith("step ingest") for entry in logs[stop:]) <= 1
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logs)
    assert TOKEN not in out + "".join(seen) + err and SECRET not in out + "".join(seen) + err
    assert _count(tmp_path / "tw.duckdb") == 89


def test_a_step_failing_three_cycles_running_is_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID", raising=False)  # the lookup_events source fails
    cfg = _config(tmp_path, extra_sources="  - {name: history, type: lookup_events, region: cn-hangzhou}\n")
    service = _service(cfg)
    with caplog.at_level("INFO", logger="trailwarden.service"):
        for _ in range(6):
            service.cycle()
    reports = [r.getMessage() for r in caplog.records if "cycles in a row" in r.getMessage()]
    assert len(reports) == 1  # said once, not every cycle after
    assert reports[0].startswith("trailwarden: step ingest has failed 3 cycles in a row: history:")
    assert [r["status"] for r in _cycle_runs(tmp_path / "tw.duckdb", "command = 'cycle.ingest'")] == ["failed"] * 6


# -- analysts read while the service writes --------------------------------------------------------
ANALYST = """
import json, sys
import duckdb
from pipeline.store.store import open_for_reading

db, held, lock = sys.argv[1], None, None

def count(store):
    return {"events": store.con.execute("SELECT count(*) FROM events").fetchall()[0][0],
            "read_from": store.read_from}

for line in sys.stdin:
    command = line.strip()
    try:
        if command == "query":  # a query, as `trailwarden query` or a notebook cell runs it
            with open_for_reading(db) as store:
                answer = count(store)
        elif command == "hold":  # a notebook that keeps its store open
            held = open_for_reading(db)
            answer = count(held)
        elif command == "held":
            answer = count(held)
        elif command == "release":
            held.close()
            answer = {}
        elif command == "lock":  # the live file opened with the duckdb CLI: not through trailwarden
            lock = duckdb.connect(db, read_only=True)
            answer = {}
        elif command == "unlock":
            lock.close()
            answer = {}
    except Exception as exc:  # any failure is what the tests exist to catch
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
"""


class Analyst:
    """Another process reading the store, one command at a time (see :data:`ANALYST`)."""

    def __init__(self, db: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ANALYST, str(db)], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._lock = threading.Lock()  # asked from the test and from the fake's request threads

    def __call__(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            watchdog = threading.Timer(120, self.proc.kill)  # readers never wait: a hang is a failure
            watchdog.start()
            try:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            finally:
                watchdog.cancel()
        assert line, f"the analyst died at {command!r} (exit {self.proc.poll()})"
        answer = json.loads(line)
        assert "error" not in answer, (command, answer["error"])
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def analyst() -> Iterator[Callable[[Path], Analyst]]:
    started: list[Analyst] = []

    def start(db: Path) -> Analyst:
        started.append(Analyst(db))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_analysts_read_while_the_service_cycles(tmp_path, monkeypatch, analyst):
    """Twelve cycles with new events arriving, while another process queries during each cycle
    (the store is the service's then) and between cycles, and a third holds its store open for
    five cycles, as a notebook would: every query succeeds and sees every event of the last cycle
    done, the notebook's view stays as it was, every cycle succeeds, and every event arrives once.

    (It replaces a minute of one-second ``serve`` cycles with a reader querying in a loop, which
    asserted how many cycles and queries that minute held: a count of the machine's speed.)"""
    from tests.fakes.sls import FakeSLS

    for name, value in {**SLS_ENV, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(name, value)
    events = _events("invictus.jsonl")[:130]
    db, snapshot = tmp_path / "tw.duckdb", str(tmp_path / "tw.snapshot.duckdb")
    with FakeSLS(SLS_PROJECT, SLS_LOGSTORE, shards=1) as sls:
        service = _service(_sls_config(tmp_path, sls.endpoint))
        sls.add_events(0, events[:10])
        service.cycle()  # the first cycle publishes the first snapshot
        # two people: in one process, a store held open is the one every later reader there gets
        reader, notebook = analyst(db), analyst(db)
        during: list[dict[str, Any]] = []
        armed = threading.Event()

        def mid_cycle(_request: Any) -> None:  # the cycle is pulling from SLS: it holds the store
            if armed.is_set():
                armed.clear()
                try:
                    during.append(reader("query"))
                except AssertionError as exc:  # raised here, it would only fail the fake's request
                    during.append({"error": str(exc)})

        sls.before("pull_logs", mid_cycle)
        for part in range(1, 13):
            sls.add_events(0, events[part * 10:(part + 1) * 10])
            armed.set()
            service.cycle()
            assert during[-1] == {"events": 10 * part, "read_from": snapshot}  # the last cycle's snapshot
            assert reader("query") == {"events": 10 * (part + 1), "read_from": snapshot}  # all of it
            if part == 3:
                assert notebook("hold") == {"events": 40, "read_from": snapshot}
            elif 3 < part <= 8:
                assert notebook("held") == {"events": 40, "read_from": snapshot}  # its view stays put
            if part == 8:
                notebook("release")
        assert len(during) == 12
    runs = _cycle_runs(db)
    assert len(runs) == 3 * 13 and all(r["status"] == "ok" for r in runs), runs
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    con.close()
    assert stored == (130, 130)  # nothing lost, nothing doubled


def test_a_reader_holding_the_store_open_does_not_stall_serve(tmp_path, analyst, caplog):
    """A notebook keeps its store open across several cycles: the cycles still run, and succeed."""
    cfg = _config(tmp_path)
    db = tmp_path / "tw.duckdb"
    service = _service(cfg)
    service.cycle()
    write_ndjson(tmp_path / "incoming" / "a.jsonl", _events("stratus.jsonl"))
    service.cycle()
    notebook = analyst(db)
    assert notebook("hold")["events"] == 89  # as a notebook does, and then keeps it
    with caplog.at_level("INFO", logger="trailwarden"):
        for _ in range(3):
            service.cycle()
    assert notebook("held")["events"] == 89
    notebook("release")
    assert _cycle_runs(db, "status <> 'ok'") == []
    assert len(_cycle_runs(db)) == 3 * 5
    assert "locked" not in caplog.text


class _QuickToGiveUp(Service):
    lock_wait = 0.5  # the property: how long a cycle waits for a store another process holds


def test_a_cycle_that_finds_the_store_locked_is_recorded_and_the_next_one_runs(tmp_path, analyst, caplog):
    """Someone opens the live file with the duckdb CLI: the cycle that waited in vain is logged and
    recorded in `runs` (one row per step), and the next cycles run once the file is free."""
    cfg = _config(tmp_path)
    db = tmp_path / "tw.duckdb"
    service = _QuickToGiveUp(load_config(cfg), lambda: INVENTORY, db, echo=lambda _line: None)
    service.cycle()
    someone = analyst(db)
    someone("lock")  # not through trailwarden: it holds the lock
    with caplog.at_level("ERROR", logger="trailwarden.service"):
        service.cycle()
    someone("unlock")
    assert "cycle failed:" in caplog.text and "locked by another process" in caplog.text
    service.cycle()
    service.cycle()
    failed = _cycle_runs(db, "status <> 'ok'")
    assert sorted(r["command"] for r in failed) == ["cycle.alert", "cycle.detect", "cycle.ingest"]
    assert all("locked by another process" in r["error"] for r in failed)
    assert all(json.loads(r["counts"])["cycles"] == 1 for r in failed)
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    assert {s["step"]: s["status"] for s in status["service"]["steps"]} == {
        "ingest": "ok", "detect": "ok", "alert": "ok"}  # recovered


def test_the_nightly_refit_and_a_cycle_never_run_at_once(tmp_path):
    """Both due at once: the job the scheduler starts first is still running when the other is
    handed to the executor, which starts the other only once the first has ended."""
    from apscheduler.events import EVENT_JOB_SUBMITTED

    submitted = {"cycle": threading.Event(), "nightly": threading.Event()}
    started = {"cycle": threading.Event(), "nightly": threading.Event()}
    log: list[str] = []
    first_two_done = threading.Event()

    class Probe(Service):
        def _job(self, name: str) -> None:
            other = "nightly" if name == "cycle" else "cycle"
            log.append(f"start {name}")
            started[name].set()
            if f"end {other}" not in log and submitted[other].wait(60):  # the first, with the other due
                started[other].wait(0.5)  # started beside this one? (it must not: the log shows it)
            log.append(f"end {name}")
            if len(log) >= 4:
                first_two_done.set()

        def cycle(self) -> None:
            self._job("cycle")

        def nightly(self) -> None:
            self._job("nightly")

    probe = Probe(load_config(_config(tmp_path)), lambda: INVENTORY, tmp_path / "tw.duckdb")
    scheduler = probe.build_scheduler()
    scheduler.add_listener(lambda event: submitted[event.job_id].set(), EVENT_JOB_SUBMITTED)
    scheduler.modify_job("nightly", next_run_time=datetime.now(UTC))  # due together with the first cycle
    thread = threading.Thread(target=scheduler.start, daemon=True)
    thread.start()
    try:
        assert first_two_done.wait(120), log
    finally:
        scheduler.shutdown(wait=True)
        thread.join(timeout=10)
    first = log[0].split()[1]
    second = "nightly" if first == "cycle" else "cycle"
    assert log[:4] == [f"start {first}", f"end {first}", f"start {second}", f"end {second}"]


def test_a_schedule_shorter_than_a_second_is_refused(tmp_path):
    for every in ("0s", "0"):
        cfg = _config(tmp_path, every=every)
        result = run_cli("--config", str(cfg), "serve")
        assert_one_line_error(result, 2, str(cfg), "schedule.ingest_every", "at least 1s")


SLS_PROJECT, SLS_LOGSTORE = "audit-proj", "actiontrail_main"


def _sls_config(tmp_path: Path, sls_endpoint: str, slack_url: str | None = None, **sls: object) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in sls.items())
    cfg = tmp_path / "trailwarden.yaml"
    cfg.write_text(
        f"database: {tmp_path / 'tw.duckdb'}\n"
        f"timezone: Asia/Shanghai\n"
        f"inventory: {ROOT / 'config' / 'agents.yaml'}\n"
        f"sources:\n  - {{name: trail, type: sls, endpoint: '{sls_endpoint}', project: {SLS_PROJECT}, "
        f"logstore: {SLS_LOGSTORE}{extra}}}\n"
        f"schedule: {{ingest_every: 1s}}\n"
        + (f"slack: {{channel: '#sec-alerts', base_url: '{slack_url}'}}\n" if slack_url else ""))
    return cfg


def _calls(prefix: str, n: int, **fields: object) -> list[dict]:
    """ci-deploy's ordinary calls: from its network, in its region, a Monday 11:04 in Shanghai."""
    return [{**BASE_EVENT, "eventId": f"{prefix}-{i:05d}", **fields} for i in range(n)]


SLS_ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tFakeKeyId000", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET}


def _env(**extra: str) -> dict[str, str]:
    """The environment of a trailwarden run talking to fakes on 127.0.0.1: no proxies, no
    credentials or token from outside, then ``extra``."""
    drop = ("SLACK_", "ALIBABA_CLOUD_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "TRAILWARDEN_CONFIG")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra})
    return env


@pytest.mark.slow  # serve in a process of its own, stopped with a signal
def test_sigterm_stops_a_long_sls_ingest_at_a_pull_and_loses_nothing(tmp_path):
    """SIGTERM while a logstore is being read: serve stops after the pull in flight, commits what
    it read with its cursor and exits 0; the next run reads the rest, nothing twice."""
    from tests.fakes.sls import FakeSLS

    with FakeSLS(SLS_PROJECT, SLS_LOGSTORE, shards=1) as fake:
        fake.add_events(0, _calls("e", 400), group_size=2)  # 200 pulls of one group
        tenth, stopping = threading.Event(), threading.Event()

        def hold_the_tenth_pull(_request: Any) -> None:  # until serve has taken the signal
            if len(fake.of("pull_logs")) == 9:
                tenth.set()
                stopping.wait(120)

        fake.before("pull_logs", hold_the_tenth_pull)
        cfg = _sls_config(tmp_path, fake.endpoint, batch_size=1, max_batches=1000)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(cfg), "serve"], cwd=ROOT,
                                env=_env(**SLS_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[str] = []
        try:
            assert tenth.wait(180), "serve never got to its tenth pull"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _read_until(proc, seen, lambda line: "received SIGTERM" in line)
            finally:
                stopping.set()  # the tenth pull is answered; no other begins
                _, err = proc.communicate(timeout=120)
        err = "".join(seen) + err
        assert proc.returncode == 0, err
        pulled = len(fake.of("pull_logs"))
        assert pulled <= 11, pulled  # it did not read on to the end
        db = tmp_path / "tw.duckdb"
        assert 0 < _count(db) <= 2 * pulled  # what was read is stored
        rest = run_cli("--config", str(cfg), "run", env=_env(**SLS_ENV))
        assert rest.returncode == 0, rest.stderr
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    con.close()
    assert stored == (400, 400)  # nothing lost, nothing doubled
    assert SECRET not in err + rest.stdout + rest.stderr
def test_run_against_the_fake_sls_and_slack_alerts_once(tmp_path):
    """`trailwarden run` end to end with the real SDKs: ActionTrail events from SLS, one of them a
    call outside ci-deployer's scope, go in; the out-of-scope finding is posted to Slack once."""
    from tests.fakes.slack import FakeSlack
    from tests.fakes.sls import FakeSLS

    planted = {**BASE_EVENT, "eventId": "planted-stop-instance", "eventName": "StopInstance", "eventRW": "Write",
               "requestParameters": {"RegionId": "cn-hangzhou", "InstanceId": "i-bp1payments01"},
               "referencedResources": {"ACS::ECS::Instance": ["i-bp1payments01"]}}
    with FakeSLS(SLS_PROJECT, SLS_LOGSTORE, shards=2) as sls, FakeSlack() as slack:
        sls.add_events(0, _calls("a", 30), group_size=10)
        sls.add_events(1, [*_calls("b", 20), planted], group_size=7)
        cfg = _sls_config(tmp_path, sls.endpoint, slack.base_url)
        env = _env(**SLS_ENV, SLACK_BOT_TOKEN=TOKEN)
        first = run_cli("--config", str(cfg), "run", env=env)
        assert first.returncode == 0, first.stderr
        assert _count(tmp_path / "tw.duckdb") == 51
        findings = json.loads(run_cli("--config", str(cfg), "findings", "--format", "json").stdout)
        assert [(f["detector"], f["agent"], f["event_ids"]) for f in findings] == [
            ("out_of_scope", "ci-deployer", ["planted-stop-instance"])]
        [message] = slack.top_level()  # the incident's message, and the finding's evidence in its thread
        assert len(slack.posts) == 2 and len(slack.replies(message.ts)) == 1
        assert "StopInstance" in json.dumps(slack.posts[0].body)
        again = run_cli("--config", str(cfg), "run", env=env)
        assert again.returncode == 0, again.stderr
        assert len(slack.posts) == 2  # nothing new: nothing posted
        assert _count(tmp_path / "tw.duckdb") == 51
    assert TOKEN not in first.stdout + first.stderr + again.stdout + again.stderr
    assert SECRET not in first.stdout + first.stderr + again.stdout + again.stderr


# -- a configured Slack without its token (issue 13, item 2) ---------------------------------------
def _slack_config(tmp_path: Path, slack_url: str) -> Path:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + f"slack: {{channel: '#sec-alerts', base_url: '{slack_url}'}}\n")
    return cfg


def test_run_with_slack_and_no_token_fails_the_alert_step_and_keeps_the_alerts_pending(tmp_path, monkeypatch):
    """It used to print the alerts to stdout, exit 0 and leave `status` at "alert ok, 0 pending"."""
    from tests.fakes.slack import FakeSlack

    paced: list[float] = []  # the sender's pause between posts, recorded instead of slept
    monkeypatch.setattr("pipeline.core.times.sleep", paced.append)

    with FakeSlack() as slack:
        cfg = _slack_config(tmp_path, slack.base_url)
        (tmp_path / "incoming" / "stratus.jsonl").write_text((REAL_ATTACKS / "stratus.jsonl").read_text())
        result = run_cli("--config", str(cfg), "run", env=_env())
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("trailwarden: error: cycle step(s) failed: alert: SLACK_BOT_TOKEN is not set")
        assert "set SLACK_BOT_TOKEN" in last and "#sec-alerts" in last
        assert "== " not in result.stdout  # never the console instead
        assert [line.split()[0] for line in result.stdout.splitlines()[-3:]] == ["ingest", "detect", "alert"]
        status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
        steps = {s["step"]: s for s in status["service"]["steps"]}
        assert (steps["ingest"]["status"], steps["detect"]["status"], steps["alert"]["status"]) == (
            "ok", "ok", "failed")
        assert "SLACK_BOT_TOKEN" in steps["alert"]["error"]
        owed = steps["alert"]["counts"]["pending"]
        assert owed >= 1 and status["service"]["pending_alerts"] == owed
        assert status["service"]["alert_destination"] == "#sec-alerts"
        text = run_cli("--config", str(cfg), "status").stdout
        assert f"alerts      {owed} pending for #sec-alerts" in text
        assert slack.requests == []

        fixed = run_cli("--config", str(cfg), "run", env=_env(SLACK_BOT_TOKEN=TOKEN))  # the token is set
        assert fixed.returncode == 0, fixed.stderr
        assert len(slack.top_level()) >= 1  # what waited went to Slack, once
        assert paced and set(paced) == {1.0}  # paced as Slack asks (one post a second), not waited out here
        status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
        assert status["service"]["pending_alerts"] == 0
    assert TOKEN not in fixed.stdout + fixed.stderr


def test_serve_reports_an_alert_step_without_its_token_after_three_cycles(tmp_path, monkeypatch, caplog):
    """The service's health report fires for a Slack it cannot reach, and says why it cannot post
    the report to Slack either."""
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    config = load_config(_slack_config(tmp_path, "http://127.0.0.1:9/api/"))
    service = Service(config, lambda: load_inventory(config.inventory), tmp_path / "tw.duckdb", echo=lambda _s: None)
    with caplog.at_level("ERROR", logger="trailwarden.service"):
        for _ in range(3):
            service.cycle()
    messages = [r.getMessage() for r in caplog.records]
    [report] = [m for m in messages if "cycles in a row" in m]
    assert report.startswith("trailwarden: step alert has failed 3 cycles in a row: SLACK_BOT_TOKEN is not set")
    assert "could not post the health warning to Slack: SLACK_BOT_TOKEN is not set" in messages
