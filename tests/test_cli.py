"""The command line as users and scripts meet it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import (
    REAL_ATTACKS,
    assert_one_line_error,
    run_cli,
    run_cli_process,
    write_ndjson,
)


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


def test_an_eoferror_escaping_a_command_is_an_internal_error_not_an_abort(tmp_path, monkeypatch):
    from pipeline.service import status
    from pipeline.store.store import open_store

    with open_store(tmp_path / "s.duckdb"):
        pass

    def eof(*_args):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(status, "collect_status", eof)
    result = run_cli("status", "--db", str(tmp_path / "s.duckdb"))
    line = assert_one_line_error(result, 1, "end-of-stream marker")  # not 130: that is for Ctrl-C
    assert line.startswith("trailwarden: internal error:"), line


@pytest.mark.slow  # processes: the installed console script and `python -m pipeline`
def test_the_real_entry_points_answer_exactly_as_run_cli_does(tmp_path):
    """Every other CLI test runs ``trailwarden`` in this process (run_cli): the console script a
    user types and ``python -m pipeline`` give the same exit code, output and one-line error."""
    import subprocess
    import sys

    from tests.conftest import ROOT, _cli_environment

    script = Path(sys.executable).parent / "trailwarden"
    if not script.exists():
        pytest.skip("the trailwarden console script is not installed beside this Python")
    db = tmp_path / "s.duckdb"
    assert run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(db)).returncode == 0
    count = ("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--format", "json")
    assert json.loads(run_cli(*count).stdout)[0]["n"] > 0
    for args in (count, ("query", "DELETE FROM events", "--db", str(db)),
                 ("query", "SELECT 1", "--db", str(tmp_path / "none.duckdb"))):
        expected = run_cli(*args)
        typed = subprocess.run([str(script), *args], cwd=ROOT, env=_cli_environment(None), capture_output=True,
                               text=True, timeout=300, check=False)
        for result in (typed, run_cli_process(*args)):
            assert (result.returncode, result.stdout, result.stderr) == (
                expected.returncode, expected.stdout, expected.stderr), args


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


def test_status_table_shows_lag_as_a_duration_and_reasons_that_say_something(tmp_path, make_event):
    import re

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        json.dumps(make_event(1)), "nope", "[1, nope]", "{oops", "[1]", "42",
        json.dumps(make_event(2, eventTime="yesterday")), json.dumps(make_event(3, eventTime="tomorrow")),
        json.dumps({"eventTime": "2026-11-02T03:04:05Z"}), json.dumps({"eventId": "e-1"})]) + "\n")
    db = str(tmp_path / "s.duckdb")
    assert run_cli("ingest", "--file", str(REAL_ATTACKS), "--file", str(bad), "--db", db).returncode == 0
    text = run_cli("status", "--db", db).stdout
    assert "e+0" not in text  # lag_seconds was printed as 1.9e+08
    assert re.search(r"^files .* \d+d \d+h ", text, re.M), text  # the events are from 2020: years of lag
    assert "2 malformed JSON: Expecting value\n" in text  # was "3 malformed JSON", whatever the error
    assert "2 eventTime: not an ISO-8601 time in range: …\n" in text  # was "2 eventTime"
    assert "… and 2 more kinds of reason" in text  # 7 kinds, 5 shown


def test_query_help_lists_every_table_in_the_store(tmp_path):
    import re

    import duckdb

    run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(tmp_path / "s.duckdb"))
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    shown = run_cli("query", "--help").stdout
    assert len(tables) >= 12 and tables - set(re.findall(r"[a-z_]+", shown)) == set()  # it listed 6


AGENT = ("{name: %s, purpose: p, owner: o, environment: e, identities: [ram-user:ci-deploy], "
         "policies: [{Version: '1', Statement: [{Effect: Allow, Action: 'ecs:Describe*', Resource: '*'}]}]}")


def test_agents_without_a_store_lists_the_inventory_never_seen(tmp_path):
    inv = tmp_path / "agents.yaml"
    inv.write_text(f"agents:\n  - {AGENT % 'ci'}\n")
    db = tmp_path / "none.duckdb"
    result = run_cli("--config", str(_config(tmp_path, f"inventory: {inv}\n")), "agents", "--db", str(db),
                     "--format", "json")
    assert result.returncode == 0, result.stderr  # was exit 2 "no store here yet"
    [row] = json.loads(result.stdout)
    assert (row["agent"], row["last_activity"], row["events_30d"], row["open_findings"]) == ("ci", None, 0, 0)
    assert "never seen" in row["flags"]
    assert not db.exists()  # listing writes nothing


def test_read_only_commands_say_when_the_inventory_changed_since_attribution(tmp_path, make_event):
    inv = tmp_path / "agents.yaml"
    cfg = _config(tmp_path, f"inventory: {inv}\n")
    db = str(tmp_path / "s.duckdb")
    inv.write_text(f"agents:\n  - {AGENT % 'ci'}\n")
    events = write_ndjson(tmp_path / "e.jsonl", [make_event(1)])
    assert run_cli("--config", str(cfg), "ingest", "--file", str(events), "--db", db).returncode == 0
    inv.write_text(f"agents:\n  - {AGENT % 'deployer'}\n")  # the identity changed hands
    note = ("note: the inventory changed since events were attributed; run `trailwarden detect` "
            "(or any ingest) to re-attribute them")
    commands = [["agents"], ["replay", "deployer"], ["least-privilege", "deployer"]]
    for command in commands:
        result = run_cli("--config", str(cfg), *command, "--db", db)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines() == [note], (command, result.stderr)
    assert run_cli("--config", str(cfg), "detect", "--db", db).returncode == 0  # re-attributes
    for command in commands:
        assert run_cli("--config", str(cfg), *command, "--db", db).stderr == "", command


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


@pytest.mark.slow  # a process on a pseudo-terminal
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


# -- attacker-controlled text in the terminal (issue 13, item 11) ----------------------------------
HOSTILE_USER = "ci-\u200bdeploy"  # a look-alike of the inventory's ci-deploy
HOSTILE_AGENT = "\x1b]8;;http://evil\x07click\x1b]8;;\x07 \x1b[2J *bold* \u202etxt.exe \x85\u2028x"
HOSTILE_ERROR = "\x1b[2J _it_ ~strike~ \u202e\u200b\x7f\x9b31m"


def _assert_terminal_safe(text: str) -> None:
    """Nothing that acts on a terminal or hides: no control (but the line breaks), no bidi or
    zero-width character."""
    from pipeline.core.inert import HIDDEN

    found = sorted({f"U+{ord(c):04X}" for c in HIDDEN.findall(text.replace("\n", ""))})
    assert not found, f"{found} reached the terminal"


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> tuple[Path, Path]:
    """A store with a look-alike identity's calls whose user agent and error message carry terminal
    escapes, bidi and zero-width characters and mrkdwn formatting, detected (no Slack configured)."""
    from tests.conftest import BASE_EVENT

    tmp = tmp_path_factory.mktemp("hostile")
    cfg = _config(tmp, f"database: {tmp / 's.duckdb'}\ninventory: {Path(__file__).parent.parent / 'config/agents.yaml'}\n")
    events = [{**BASE_EVENT, "eventId": f"hostile-{i}", "eventName": "StopInstance", "eventRW": "Write",
               "userIdentity": {"type": "ram-user", "principalId": "9", "accountId": "1384926508761234",
                                "userName": HOSTILE_USER},
               "userAgent": HOSTILE_AGENT, "errorCode": "Forbidden" if i else "", "errorMessage": HOSTILE_ERROR}
              for i in range(3)]
    write_ndjson(tmp / "hostile.jsonl", events)
    assert run_cli("--config", str(cfg), "ingest", "--file", str(tmp / "hostile.jsonl")).returncode == 0
    assert run_cli("--config", str(cfg), "detect", "--since", "2026-11-01").returncode == 0
    return cfg, tmp / "s.duckdb"


def test_query_tables_show_escapes_instead_of_acting_on_the_terminal(hostile_store):
    cfg, _ = hostile_store
    sql = "SELECT user_name, user_agent, error_message FROM events ORDER BY event_id LIMIT 1"
    table = run_cli("--config", str(cfg), "query", sql)
    assert table.returncode == 0, table.stderr
    _assert_terminal_safe(table.stdout)
    assert "ci-<U+200B>deploy" in table.stdout  # the look-alike looks different
    assert "\\x1b]8;;http://evil\\x07click" in table.stdout and "<U+202E>txt.exe" in table.stdout
    assert "\\x1b[2J _it_ ~strike~ <U+202E><U+200B>\\x7f\\x9b31m" in table.stdout

    as_json = run_cli("--config", str(cfg), "query", sql, "--format", "json")
    _assert_terminal_safe(as_json.stdout)  # JSON escapes them itself (\u001b, \u202e) ...
    assert json.loads(as_json.stdout) == [  # ... and keeps the data exact
        {"user_name": HOSTILE_USER, "user_agent": HOSTILE_AGENT, "error_message": HOSTILE_ERROR}]

    import csv
    import io

    as_csv = run_cli("--config", str(cfg), "query", sql, "--format", "csv")  # CSV is data: kept exact
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["user_name", "user_agent", "error_message"], [HOSTILE_USER, HOSTILE_AGENT, HOSTILE_ERROR]]


def test_findings_replay_and_console_alerts_are_inert(hostile_store):
    cfg, _ = hostile_store
    agent = f"ram-user:{HOSTILE_USER}"
    listing = run_cli("--config", str(cfg), "findings", "--format", "json")
    [found] = [f for f in json.loads(listing.stdout) if f["detector"] == "unregistered_identity"]
    assert found["agent"] == agent  # the data is exact
    _assert_terminal_safe(listing.stdout)
    outputs = {
        "findings": run_cli("--config", str(cfg), "findings"),
        "findings show": run_cli("--config", str(cfg), "findings", "show", found["id"]),
        "replay": run_cli("--config", str(cfg), "replay", agent, "--since", "2026-11-01"),
        "alert --dry-run": run_cli("--config", str(cfg), "alert", "--dry-run"),
        "alert --dry-run json": run_cli("--config", str(cfg), "alert", "--dry-run", "--format", "json"),
        "agents": run_cli("--config", str(cfg), "agents"),
        "alert": run_cli("--config", str(cfg), "alert"),  # no slack: configured: printed here
    }
    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        _assert_terminal_safe(result.stdout + result.stderr)
    assert "ram-user:ci-<U+200B>deploy" in outputs["findings show"].stdout
    assert "ram-user:ci-<U+200B>deploy" in outputs["replay"].stdout
    assert "== HIGH: ram-user:ci-<U+200B>deploy ==" in outputs["alert"].stdout
    assert "\\x1b]8;;http[:]//evil\\x07click" in outputs["alert"].stdout


def _on_a_terminal(*args: str) -> str:
    """What `trailwarden ARGS` writes to a terminal (a pseudo-terminal), as text."""
    import os
    import pty
    import sys

    pid, fd = pty.fork()
    if pid == 0:  # the child: trailwarden on a terminal
        os.chdir(Path(__file__).resolve().parent.parent)
        os.execv(sys.executable, [sys.executable, "-m", "pipeline", *args])
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
    assert os.waitstatus_to_exitcode(status) == 0, chunks
    return b"".join(chunks).decode()


@pytest.mark.slow  # a process on a pseudo-terminal
def test_csv_is_exact_data_in_a_pipe_and_inert_on_a_terminal(hostile_store):
    cfg, _ = hostile_store
    sql = "SELECT user_name, error_message FROM events ORDER BY event_id LIMIT 1"
    piped = run_cli("--config", str(cfg), "query", sql, "--format", "csv").stdout
    assert piped == f"user_name,error_message\n{HOSTILE_USER},{HOSTILE_ERROR}\n"  # nothing stripped either
    shown = _on_a_terminal("--config", str(cfg), "query", sql, "--format", "csv")
    _assert_terminal_safe(shown.replace("\r", ""))  # the terminal's own CR LF aside
    assert "ci-<U+200B>deploy,\\x1b[2J _it_ ~strike~ <U+202E><U+200B>\\x7f\\x9b31m" in shown
# -- one-line errors name their option once ----------------------------------------------------------
def _main(*argv: str) -> tuple[int, str, str]:
    """Run ``trailwarden`` (its own entry point: exit code and one-line errors)."""
    result = run_cli(*argv)
    return result.returncode, result.stdout, result.stderr


TIME_OPTIONS = [  # every option that takes a time, and the command it belongs to
    (["detect"], "--since"), (["detect"], "--until"),
    (["backtest", "--since", "7d"], "--until"), (["backtest"], "--since"),
    (["replay", "ci-deployer"], "--since"), (["replay", "ci-deployer"], "--until"),
    (["findings"], "--since"), (["findings", "stats"], "--since"),
    (["least-privilege", "ci-deployer"], "--since"), (["train"], "--until"),
    (["ingest", "--file", str(REAL_ATTACKS)], "--since"),
    (["suppress", "add", "--detector", "odd_hours", "--reason", "r", "--by", "me"], "--until"),
]


@pytest.mark.parametrize(("command", "key"), TIME_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_bad_time_names_its_option_once(tmp_path, command, key):
    code, _out, err = _main("--db", str(tmp_path / "s.duckdb"), *command, key, "yesterday-ish")
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.startswith(f"trailwarden: error: {key}: "), line
    assert line.count(key) == 1, line  # not "--until: --until: ..."
    assert "yesterday-ish" in line


@pytest.mark.parametrize("command", [["detect"], ["replay", "ci-deployer"], ["backtest"]])
def test_a_window_that_ends_before_it_starts_says_so_once(tmp_path, command):
    code, _out, err = _main("--db", str(tmp_path / "s.duckdb"), *command,
                            "--since", "2026-11-10", "--until", "2026-11-01")
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.count("--since") == 1 and "before --until" in line, line


def test_a_suppression_that_ends_before_it_starts_names_until_once(tmp_path):
    code, _out, err = _main("--db", str(tmp_path / "s.duckdb"), "suppress", "add", "--detector", "odd_hours",
                            "--agent", "ci-deployer", "--reason", "r", "--by", "me", "--until", "2020-01-01")
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.count("--until") == 1, line


# -- tables, formats, progress ---------------------------------------------------------------------
ROOT_ID = "root-account:1384926508761234"
SUMMARY = ("ci-deployer made 9 calls from 185.220.101.0/24, outside its declared source networks "
           "203.0.113.0/24, with a new client python-requests/2.31 and at 03:10 on a Sunday")


def _cells(text: str, column: int) -> list[str]:
    """The cells of one column of a rendered table, found by the header's dashes."""
    lines = text.splitlines()
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    start, end = spans[column]
    return [ln[start:end].rstrip() if column < len(spans) - 1 else ln[start:].rstrip() for ln in lines[2:]]


def test_a_findings_table_at_160_columns_cuts_the_other_columns_before_the_summary():
    from pipeline.core.output import table

    cols = ["id", "severity", "status", "detector", "agent", "last_seen", "event_count", "summary"]
    rows = [["658d22bd61105b5e94f9", "critical", "acknowledged", "unregistered_identity", ROOT_ID,
             "2026-12-05T03:07:00Z", 9, SUMMARY]]
    text = table(cols, rows, max_width=160)
    assert max(map(len, text.splitlines())) <= 160
    assert _cells(text, 0) == ["658d22bd61105b5e94f9"]  # the id whole
    assert len(_cells(text, 7)[0]) >= 58  # was cut at 31 here
    assert _cells(text, 6) == ["9"]  # a count is never cut


def test_a_table_at_100_columns_keeps_the_name_column_whole():
    from pipeline.core.output import table
    from pipeline.investigate.agents import COLUMNS

    rows = [["monitor-readonly", "sre-team", "production", "Poll instance and database metrics " * 3,
             "ram-user:cms-poller, access-key:LTAI5tMonitor", "2026-12-05T03:07:00Z", 13485, 3, None,
             "2027-03-01", "review overdue"], [ROOT_ID, None, None, None, ROOT_ID, "2026-12-05T03:07:00Z", 2, 1,
                                              None, None, "unregistered"]]
    text = table(COLUMNS, rows, max_width=100)  # the issue saw "monitor-rea…" here
    assert max(map(len, text.splitlines())) <= 100
    words = set(re.split(r"\s{2,}|\n", text))
    assert {"monitor-readonly", ROOT_ID, "13485", "agent", "events_30d"} <= words  # whole, if in blocks


def test_a_status_table_at_80_columns_keeps_source_and_partition_whole():
    from pipeline.core.output import table

    cols = ["source", "partition", "cursor_time", "watermark", "lag", "events", "last_hour", "updated_at",
            "last_error"]
    rows = [["trail", f"audit-proj/actiontrail_main/{n}", "2026-12-06T02:27:00Z", "2026-12-06T02:27:00Z",
             "27m 43s", 20, 20, "2026-12-06T02:28:00Z", None] for n in range(4)]
    text = table(cols, rows, max_width=80, keys=2)
    assert max(map(len, text.splitlines())) <= 80
    words = set(re.split(r"\s{2,}|\n", text))  # too narrow for every header: a block per row
    assert {f"audit-proj/actiontrail_main/{n}" for n in range(4)} | {"cursor_time", "2026-12-06T02:27:00Z"} <= words


def test_tables_use_columns_and_are_not_cut_into_a_pipe(monkeypatch):
    from pipeline.core.output import table

    rows = [["x", SUMMARY]]
    monkeypatch.setenv("COLUMNS", "60")
    assert max(map(len, table(["id", "summary"], rows).splitlines())) <= 60
    monkeypatch.delenv("COLUMNS")
    assert SUMMARY in table(["id", "summary"], rows)  # stdout is captured here: not a terminal


def _commands_with_format():
    from pipeline.cli.main import cli

    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])
            for param in command.params:
                if param.name == "fmt":
                    yield " ".join([*path, name]), param
    return list(walk(cli, []))


def test_every_format_option_speaks_one_vocabulary():
    found = _commands_with_format()
    assert len(found) >= 18
    for name, param in found:
        choices = set(param.type.choices)
        # markdown: `review`'s document for a ticket (issue 17)
        assert {"table", "json"} <= choices <= {"table", "json", "csv", "html", "markdown"}, name
        assert param.type.convert("text", param, None) == "table", name  # the old name, for scripts
    with_csv = {name for name, param in found if "csv" in param.type.choices}
    for name in ("ingest", "detect", "prune", "status", "least-privilege", "findings stats", "agents", "backtest",
                 "train", "query", "findings", "suppress list", "review", "ram sync"):
        assert name in with_csv, name


@pytest.mark.parametrize("command", [["status"], ["findings", "stats"], ["least-privilege", "ci-deployer"],
                                     ["agents"], ["detect", "--since", "2d"]])
def test_csv_output_parses_with_a_header(demo_checkout, demo_copy, command):
    import csv
    import io

    result = run_cli("--db", str(demo_copy), *command, "--format", "csv", cwd=demo_checkout)  # detect writes
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)


def test_agents_json_gives_lists_as_arrays(demo_checkout):
    result = run_cli("agents", "--format", "json", cwd=demo_checkout)
    agents = {a["agent"]: a for a in json.loads(result.stdout)}
    assert agents["ci-deployer"]["identities"] == ["ram-user:ci-deploy", "access-key:LTAI5tCiDeploy7Qx2mK"]
    assert agents["vendor-acme"]["flags"] == ["expired"] or "expired" in agents["vendor-acme"]["flags"]
    # the demo's config has three accounts: a raw identity is shown with its home account (issue 19)
    assert agents["ram-user:ops-debug@prod"]["flags"] == ["unregistered"]
    csv_out = run_cli("agents", "--format", "csv", cwd=demo_checkout).stdout
    assert "ram-user:ci-deploy; access-key:LTAI5tCiDeploy7Qx2mK" in csv_out


def test_the_old_text_format_still_works(tmp_path):
    result = run_cli("ingest", "--file", str(REAL_ATTACKS), "--db", str(tmp_path / "s.duckdb"), "--format", "text")
    assert result.returncode == 0 and "502 new events" in result.stdout


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_estimate_is_the_runs_average_rate():
    from pipeline.core.output import Progress

    clock, shown = _Clock(), []
    bar = Progress(37_000_000, shown.append, clock=clock, every=0)
    clock.now += 1.2
    bar.update(100)  # the first report comes late and small: click said "0% 10:20:12" here
    assert "ETA --:--" in shown[-1]
    clock.now += 9.8
    bar.update(18_500_000 - 100)  # half done after 11 s
    assert "50%" in shown[-1] and "ETA 00:11" in shown[-1]
    clock.now += 11
    bar.update(18_500_000)
    bar.finish()
    assert "100%" in shown[-1] and "done in 00:22" in shown[-1] and shown[-1].endswith("\n")
