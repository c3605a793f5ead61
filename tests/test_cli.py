"""The command line as users and scripts meet it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REAL_ATTACKS, assert_one_line_error, run_cli, write_ndjson


def test_ingest_reports_new_then_nothing_new(tmp_path):
    db = str(tmp_path / "s.duckdb")
    first = run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", db)
    assert first.returncode == 0, first.stderr
    assert "502 new events, 0 duplicates, 0 quarantined from 3 files" in first.stdout
    again = run_cli("--db", db, "ingest", "--file", str(REAL_ATTACKS), "--format", "json")
    report = json.loads(again.stdout)["sources"]["files"]
    assert (report["new"], report["skipped_files"]) == (0, 3)


def test_ingest_of_a_missing_path_exits_2_naming_it(tmp_path):
    result = run_cli("ingest", "--file", str(tmp_path / "nope"), "--db", str(tmp_path / "s.duckdb"))
    assert_one_line_error(result, 2, str(tmp_path / "nope"), "no such file")
    assert not (tmp_path / "s.duckdb").exists()


def test_ingest_with_nothing_to_do_exits_2(tmp_path):
    result = run_cli("--config", str(_config(tmp_path, "memory_limit: 256MB\n")), "ingest",
                     "--db", str(tmp_path / "s.duckdb"))
    assert_one_line_error(result, 2, "nothing to ingest")


def test_garbage_input_exits_0_and_counts_quarantine(tmp_path, make_event):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(make_event(1)) + "\n{oops\n")
    result = run_cli("ingest", "--file", str(path), "--db", str(tmp_path / "s.duckdb"))
    assert result.returncode == 0, result.stderr
    assert "1 new events, 0 duplicates, 1 quarantined" in result.stdout


@pytest.mark.parametrize(("text", "needles"), [
    ("sources:\n  - {name: a, type: files}\n", ["sources[0].path", "Field required"]),
    ("databse: x.duckdb\n", ["databse", "unknown key"]),
    ("timezone: Mars/Olympus\n", ["timezone", "unknown time zone"]),
    ("schedule: {ingest_every: soon}\n", ["schedule.ingest_every", "not a duration"]),
    ("sources: [\n", ["invalid YAML"]),
    ("- just\n- a list\n", ["mapping"]),
])
def test_invalid_config_exits_2_naming_file_and_key(tmp_path, text, needles):
    cfg = _config(tmp_path, text)
    result = run_cli("--config", str(cfg), "status", "--db", str(tmp_path / "s.duckdb"))
    assert_one_line_error(result, 2, str(cfg), *needles)


def test_invalid_inventory_exits_2_naming_file_agent_and_key(tmp_path):
    inv = tmp_path / "agents.yaml"
    inv.write_text(
        "agents:\n"
        "  - {name: a, purpose: p, owner: o, environment: e, identities: [ram-user:x]}\n"
        "  - {name: b, purpose: p, owner: o, environment: e, identities: [ram-user:x]}\n")
    cfg = _config(tmp_path, f"inventory: {inv}\n")
    data = tmp_path / "e.jsonl"
    write_ndjson(data, [])
    result = run_cli("--config", str(cfg), "ingest", "--file", str(data), "--db", str(tmp_path / "s.db"))
    assert_one_line_error(result, 2, str(inv), "ram-user:x", "already belongs to agent 'a'")

    inv.write_text("agents:\n  - {name: Bad_Name, purpose: p, owner: o, environment: e, "
                   "identities: [ram-user:x], hours: {days: someday}}\n")
    result = run_cli("--config", str(cfg), "ingest", "--file", str(data), "--db", str(tmp_path / "s.db"))
    assert_one_line_error(result, 2, str(inv), "agents[0]", "Bad_Name")


def test_db_and_config_work_before_and_after_the_command(tmp_path):
    db = tmp_path / "s.duckdb"
    assert run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(db)).returncode == 0
    before = run_cli("--db", str(db), "query", "SELECT count(*) AS n FROM events", "--format", "json")
    after = run_cli("query", "SELECT count(*) AS n FROM events", "--format", "json", "--db", str(db))
    assert json.loads(before.stdout) == json.loads(after.stdout) == [{"n": 502}]


def test_query_binds_parameters_and_renders_formats(tmp_path):
    db = str(tmp_path / "s.duckdb")
    run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", db)
    sql = "SELECT event_name, count(*) AS n FROM events WHERE agent = ? GROUP BY 1 ORDER BY n DESC, 1 LIMIT 2"
    as_json = json.loads(run_cli("query", sql, "-p", "ram-user:christophe", "--db", db, "--format", "json").stdout)
    assert as_json and set(as_json[0]) == {"event_name", "n"}
    as_csv = run_cli("query", sql, "-p", "ram-user:christophe", "--db", db, "--format", "csv").stdout
    assert as_csv.splitlines()[0] == "event_name,n"
    assert len(as_csv.splitlines()) == 3
    # attacker-shaped text is a value, not SQL
    injected = run_cli("query", "SELECT count(*) AS n FROM events WHERE agent = ?", "-p",
                       "x' OR '1'='1", "--db", db, "--format", "json")
    assert json.loads(injected.stdout) == [{"n": 0}]


def test_query_times_are_utc_iso8601(tmp_path):
    db = str(tmp_path / "s.duckdb")
    run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", db)
    out = run_cli("query", "SELECT min(event_time) AS t FROM events", "--db", db, "--format", "json",
                  env={"TZ": "Asia/Shanghai"})
    assert json.loads(out.stdout) == [{"t": "2020-09-14T00:44:20Z"}]


def test_query_errors_exit_2_in_one_line(tmp_path):
    db = str(tmp_path / "s.duckdb")
    run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", db)
    assert_one_line_error(run_cli("query", "SELEC nonsense", "--db", db), 2, "SQL error")
    assert_one_line_error(run_cli("query", "DELETE FROM events", "--db", db), 2, "read-only")
    assert_one_line_error(run_cli("query", "SELECT 1", "--db", str(tmp_path / "none.duckdb")), 2,
                          "no store here yet")


def test_status_reports_events_sources_and_runs(tmp_path):
    db = str(tmp_path / "s.duckdb")
    run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", db)
    info = json.loads(run_cli("status", "--db", db, "--format", "json").stdout)
    assert info["events"] == 502
    assert info["first_event"] == "2020-09-14T00:44:20Z"
    assert info["sources"][0]["source"] == "files"
    assert info["sources"][0]["watermark"] == info["last_event"]
    assert info["recent_runs"][0]["command"] == "ingest"
    assert info["recent_runs"][0]["status"] == "ok"
    text = run_cli("status", "--db", db).stdout
    assert "502 from" in text and "ingest" in text


def test_every_command_has_help_with_an_example_and_no_secrets(tmp_path):
    secrets = {"SLACK_BOT_TOKEN": "xoxb-not-for-eyes", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cr3t-v4lue"}
    top = run_cli("--help", env=secrets)
    assert top.returncode == 0
    commands = ["ingest", "query", "status", "demo"]
    for name in commands:
        assert name in top.stdout
        out = run_cli(name, "--help", env=secrets)
        assert out.returncode == 0
        assert "Example" in out.stdout, name
        assert "--config" in out.stdout and "--db" in out.stdout
        for value in secrets.values():
            assert value not in out.stdout + out.stderr


def test_unknown_command_and_bad_flag_exit_2():
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("query").returncode == 2  # missing SQL
    assert run_cli("status", "--format", "xml").returncode == 2


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trailwarden.yaml"
    path.write_text(text)
    return path


def test_progress_bar_on_a_terminal_and_quiet_otherwise(tmp_path):
    import os
    import pty
    import sys

    quiet = run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(tmp_path / "a.duckdb"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    pid, fd = pty.fork()
    if pid == 0:  # the child: trailwarden on a terminal
        os.chdir(Path(__file__).resolve().parent.parent)
        os.execv(sys.executable, [sys.executable, "-m", "pipeline", "ingest", "--file", str(REAL_ATTACKS),
                                  "--db", str(tmp_path / "b.duckdb")])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    shown = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "ingesting" in shown and "100%" in shown
    assert "502 new events" in shown
