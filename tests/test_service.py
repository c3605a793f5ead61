"""run and serve: one cycle, the scheduler loop, stopping cleanly, and analysts reading meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

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


def _serve(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ALIBABA_CLOUD_"))}
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args, "--config", str(cfg), "serve"],
                            cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _take_the_lock(db: Path) -> duckdb.DuckDBPyConnection:
    """Open the live file as another program would, once serve is between cycles."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return duckdb.connect(str(db), read_only=True)
        except duckdb.IOException:  # serve is mid-cycle: try again when it is not
            assert time.monotonic() < deadline, "serve never let go of the store"
            time.sleep(0.1)


def _cycles(db: Path) -> int:
    out = run_cli("query", "SELECT count(*) AS n FROM runs WHERE command = 'cycle.alert'", "--db", str(db),
                  "--format", "json")
    return json.loads(out.stdout)[0]["n"] if out.returncode == 0 else 0


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


def test_a_failing_source_does_not_stop_the_others(tmp_path):
    cfg = _config(tmp_path, extra_sources="  - {name: history, type: lookup_events, region: cn-hangzhou}\n")
    write_ndjson(tmp_path / "incoming" / "a.jsonl", [json.loads(x) for x in
                                                   (REAL_ATTACKS / "otrf.jsonl").read_text().splitlines()])
    result = run_cli("--config", str(cfg), "run")  # no Alibaba credentials: the API source fails
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("trailwarden: error: cycle step(s) failed: ingest: history:")
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in lines[-1]
    assert _count(tmp_path / "tw.duckdb") == 103  # the files source went in all the same
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    errors = {s["source"]: s["last_error"] for s in status["sources"]}
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in errors["history"] and errors["drop"] is None


def test_serve_cycles_then_stops_cleanly_on_sigterm(tmp_path):
    cfg = _config(tmp_path)
    proc = _serve(cfg, "--log-format", "json", env={"SLACK_BOT_TOKEN": TOKEN, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET})
    try:
        _wait_for(lambda: _cycles(tmp_path / "tw.duckdb") >= 3)
        write_ndjson(tmp_path / "incoming" / "late.jsonl", [json.loads(x) for x in
                                                          (REAL_ATTACKS / "stratus.jsonl").read_text().splitlines()])
        _wait_for(lambda: _count_or_zero(tmp_path / "tw.duckdb") == 89)
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - stopped < 10
    logs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any("SIGTERM" in entry["message"] for entry in logs)
    assert any(entry["message"].startswith("stopped after") for entry in logs)
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logs)
    assert TOKEN not in out + err and SECRET not in out + err


def _count_or_zero(db: Path) -> int:
    out = run_cli("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    return json.loads(out.stdout)[0]["n"] if out.returncode == 0 else 0


def test_a_step_failing_three_cycles_running_is_reported(tmp_path):
    cfg = _config(tmp_path, extra_sources="  - {name: history, type: lookup_events, region: cn-hangzhou}\n")
    proc = _serve(cfg)
    try:
        _wait_for(lambda: _cycles(tmp_path / "tw.duckdb") >= 4)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "step ingest has failed 3 cycles in a row" in err
    assert err.count("has failed 3 cycles in a row") == 1  # said once, not every cycle after


READER = """
import sys, time, duckdb
from pipeline.store.store import open_for_reading
db, seconds = sys.argv[1], float(sys.argv[2])
ok = failures = 0
held = None
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        with open_for_reading(db) as store:
            store.con.execute("SELECT agent, count(*) FROM events GROUP BY agent").fetchall()
        ok += 1
        if held is None and ok == 20:  # a notebook that keeps the snapshot open for a while
            held = duckdb.connect(db.replace('.duckdb', '.snapshot.duckdb'), read_only=True)
            held_since = time.monotonic()
        if held is not None and time.monotonic() - held_since > 10:
            held.close()
            held = None
    except Exception as exc:  # any failure is what this test exists to catch
        failures += 1
        print("reader failure:", type(exc).__name__, exc, file=sys.stderr)
    time.sleep(0.05)
print(ok, failures)
"""


@pytest.mark.slow
def test_analysts_read_while_serve_cycles_every_second(tmp_path):
    """A minute of 1-second cycles with new files arriving, while another process queries in a
    loop (and holds the snapshot open for ten seconds, as a notebook would): every query
    succeeds, every cycle succeeds, and every event arrives."""
    cfg = _config(tmp_path)
    events = [json.loads(x) for x in (REAL_ATTACKS / "invictus.jsonl").read_text().splitlines()]
    write_ndjson(tmp_path / "incoming" / "part-00.jsonl", events[:10])
    db = tmp_path / "tw.duckdb"
    proc = _serve(cfg)
    try:
        _wait_for(lambda: db.with_name("tw.snapshot.duckdb").exists())
        reader = subprocess.Popen([sys.executable, "-c", READER, str(db), "60"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for part in range(1, 31):  # a new file every two seconds
            time.sleep(2)
            write_ndjson(tmp_path / "incoming" / f"part-{part:02d}.jsonl", events[part * 10:(part + 1) * 10])
        out, err = reader.communicate(timeout=120)
        _wait_for(lambda: _count_or_zero(db) == 310)  # the last file, written just now
    finally:
        proc.send_signal(signal.SIGTERM)
        _, serve_err = proc.communicate(timeout=60)
    ok, failures = (int(x) for x in out.split())
    assert failures == 0, err
    assert ok > 200  # it really did query all along
    assert proc.returncode == 0, serve_err
    con = duckdb.connect(str(db), read_only=True)
    cycles, failed = con.execute("SELECT count(*), count(*) FILTER (WHERE status <> 'ok') FROM runs "
                                 "WHERE command LIKE 'cycle.%'").fetchall()[0]
    stored = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchall()[0]
    con.close()
    assert cycles >= 3 * 45 and failed == 0, serve_err  # ~60 cycles of three steps
    assert stored == (310, 310)  # nothing lost, nothing doubled


# -- readers, locks, stopping, scheduling -----------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    """The environment of a trailwarden subprocess talking to fakes on 127.0.0.1: no proxies, no
    credentials or token from outside, then ``extra``."""
    drop = ("SLACK_", "ALIBABA_CLOUD_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "TRAILWARDEN_CONFIG")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **extra})
    return env


def _failed_cycle_runs(db: Path) -> list[dict]:
    out = run_cli("query", "SELECT command, error, counts FROM runs WHERE command LIKE 'cycle.%' "
                  "AND status <> 'ok' ORDER BY id", "--db", str(db), "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_reader_holding_the_store_open_does_not_stall_serve(tmp_path):
    """A notebook keeps its store open across several cycles: the cycles still run, and succeed."""
    from pipeline.store.store import open_for_reading

    cfg = _config(tmp_path)
    db = tmp_path / "tw.duckdb"
    proc = _serve(cfg)
    try:
        _wait_for(lambda: db.with_name("tw.snapshot.duckdb").exists() and _cycles(db) >= 1)
        write_ndjson(tmp_path / "incoming" / "a.jsonl", [json.loads(x) for x in
                                                       (REAL_ATTACKS / "stratus.jsonl").read_text().splitlines()])
        _wait_for(lambda: _count_or_zero(db) == 89)
        with open_for_reading(db) as store:  # as a notebook does, and then keeps it
            assert store.con.execute("SELECT count(*) FROM events").fetchall() == [(89,)]
            held_at = _cycles(db)
            _wait_for(lambda: _cycles(db) >= held_at + 3)
            assert store.con.execute("SELECT count(*) FROM events").fetchall() == [(89,)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _failed_cycle_runs(db) == []
    assert "locked" not in err


def test_a_cycle_that_finds_the_store_locked_is_recorded_and_the_next_one_runs(tmp_path):
    """Someone opens the live file with the duckdb CLI for eight seconds: the cycle that waited in
    vain is logged and recorded in `runs` (one row per step), and serve goes on afterwards."""
    cfg = _config(tmp_path)
    db = tmp_path / "tw.duckdb"
    proc = _serve(cfg)
    try:
        _wait_for(lambda: _cycles(db) >= 1)
        con = _take_the_lock(db)  # not through trailwarden: it holds the lock
        time.sleep(8)  # more than a 1-second interval's lock wait (5 s)
        con.close()
        held_until = _cycles(db)
        _wait_for(lambda: _cycles(db) >= held_until + 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "cycle failed:" in err and "locked by another process" in err
    failed = _failed_cycle_runs(db)
    assert sorted(r["command"] for r in failed) == ["cycle.alert", "cycle.detect", "cycle.ingest"]
    assert all("locked by another process" in r["error"] for r in failed)
    assert all(json.loads(r["counts"])["cycles"] >= 1 for r in failed)
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    assert {s["step"]: s["status"] for s in status["service"]["steps"]} == {
        "ingest": "ok", "detect": "ok", "alert": "ok"}  # recovered


def test_the_nightly_refit_and_a_cycle_never_run_at_once(tmp_path):
    from pipeline.core.config import load_config
    from pipeline.service.cycle import Service

    spans: list[tuple[str, float, float]] = []

    class Probe(Service):
        def _job(self, name: str) -> None:
            began = time.monotonic()
            time.sleep(0.5)
            spans.append((name, began, time.monotonic()))

        def cycle(self) -> None:
            self._job("cycle")

        def nightly(self) -> None:
            self._job("nightly")

    probe = Probe(load_config(_config(tmp_path)), lambda: None, tmp_path / "tw.duckdb")  # type: ignore[arg-type]
    scheduler = probe.build_scheduler()
    scheduler.modify_job("nightly", next_run_time=datetime.now(UTC))  # due together with the first cycle
    thread = threading.Thread(target=scheduler.start, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: {s[0] for s in spans} == {"cycle", "nightly"} and len(spans) >= 4, timeout=30)
    finally:
        scheduler.shutdown(wait=True)
        thread.join(timeout=10)
    ordered = sorted(spans, key=lambda s: s[1])
    overlaps = [(a[0], b[0]) for a, b in zip(ordered, ordered[1:], strict=False) if b[1] < a[2]]
    assert overlaps == []


def test_a_schedule_shorter_than_a_second_is_refused(tmp_path):
    for every in ("0s", "0"):
        cfg = _config(tmp_path, every=every)
        result = run_cli("--config", str(cfg), "serve", timeout=60)
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


def test_sigterm_stops_a_long_sls_ingest_at_a_pull_and_loses_nothing(tmp_path):
    """SIGTERM while a slow logstore is being read: serve stops after the pull in flight, commits
    what it read with its cursor and exits 0; the next run reads the rest, nothing twice."""
    from tests.fakes.sls import FakeSLS

    with FakeSLS(SLS_PROJECT, SLS_LOGSTORE, shards=1) as fake:
        fake.add_events(0, _calls("e", 400), group_size=2)  # 200 pulls of one group
        slow = threading.Event()
        slow.set()
        fake.before("pull_logs", lambda _req: time.sleep(0.3) if slow.is_set() else None)
        cfg = _sls_config(tmp_path, fake.endpoint, batch_size=1, max_batches=1000)
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(cfg), "serve"], cwd=ROOT,
                                env=_env(**SLS_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: len(fake.of("pull_logs")) >= 10)  # a minute's ingest has begun
        finally:
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        assert time.monotonic() - stopped < 20, err
        pulled = len(fake.of("pull_logs"))
        assert pulled < 100  # it did not read on to the end
        db = tmp_path / "tw.duckdb"
        assert 0 < _count(db) <= 2 * pulled  # what was read is stored
        slow.clear()
        rest = run_cli("--config", str(cfg), "run", env=_env(**SLS_ENV), timeout=120)
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
        first = run_cli("--config", str(cfg), "run", env=env, timeout=120)
        assert first.returncode == 0, first.stderr
        assert _count(tmp_path / "tw.duckdb") == 51
        findings = json.loads(run_cli("--config", str(cfg), "findings", "--format", "json").stdout)
        assert [(f["detector"], f["agent"], f["event_ids"]) for f in findings] == [
            ("out_of_scope", "ci-deployer", ["planted-stop-instance"])]
        [message] = slack.top_level()  # the incident's message, and the finding's evidence in its thread
        assert len(slack.posts) == 2 and len(slack.replies(message.ts)) == 1
        assert "StopInstance" in json.dumps(slack.posts[0].body)
        again = run_cli("--config", str(cfg), "run", env=env, timeout=120)
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


def test_run_with_slack_and_no_token_fails_the_alert_step_and_keeps_the_alerts_pending(tmp_path):
    """It used to print the alerts to stdout, exit 0 and leave `status` at "alert ok, 0 pending"."""
    from tests.fakes.slack import FakeSlack

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
        status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
        assert status["service"]["pending_alerts"] == 0
    assert TOKEN not in fixed.stdout + fixed.stderr


def test_serve_reports_an_alert_step_without_its_token_after_three_cycles(tmp_path, monkeypatch, caplog):
    """The service's health report fires for a Slack it cannot reach, and says why it cannot post
    the report to Slack either."""
    from models.inventory import load_inventory
    from pipeline.core.config import load_config
    from pipeline.service.cycle import Service

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
