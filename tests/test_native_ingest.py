"""DuckDB-native ingest (issue 18, item 4): DuckDB parses NDJSON, and what it stores is exactly
what today's Python parser stores. What a user would notice if this broke: a typed column that
differs from its raw event (a detector reading another user than the one who acted), a line
DuckDB's lenient parser took that the project refuses (a trailing comma, a duplicate key), a
quarantine reason or location that changed, events attributed to another agent.

Each test ingests the same file twice, once per parser (``TRAILWARDEN_INGEST_PARSER``), and
compares every stored column, the quarantine and the report.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.demo import synthetic
from pipeline.ingest import native
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store, open_store
from tests.conftest import BASE_EVENT, ROOT

NOW = datetime(2026, 12, 6, tzinfo=UTC)


class KeysFirst:
    """The inventory's rule (AccessKey first, then identity) over a fixed map."""

    def __init__(self) -> None:
        self.map = {"access-key:LTAI5tCiDeploy7Qx2mK": "deployer", "ram-user:alice": "alice-agent",
                    "role:BackupRole": "backup-agent"}

    def __call__(self, identity: str, access_key_id: str | None, home: str | None = None) -> str:
        if access_key_id and f"access-key:{access_key_id}" in self.map:
            return self.map[f"access-key:{access_key_id}"]
        return self.map.get(identity, identity)


def ev(n: int | str, **fields: Any) -> dict[str, Any]:
    event = copy.deepcopy(BASE_EVENT)
    event["eventId"] = f"ev-{n}"
    event.update(fields)
    return event


def ui(**fields: Any) -> dict[str, Any]:
    return {**BASE_EVENT["userIdentity"], **fields}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def hostile_lines() -> list[str]:
    """Lines where DuckDB's reading and Python's could part: each must come out as today."""
    base = dumps(ev("base"))
    return [
        base[:-1] + ',}',  # a trailing comma: DuckDB's parser accepts it, ours refuses
        dumps(ev("nested", requestParameters={"Tags": [{"Key": "a"}]})).replace(
            '{"Key": "a"}', '{"Key": "a", "Key": "b"}'),  # a duplicate where no typed column reads
        base[:-1] + ', "eventName": "Stop"}',  # top-level duplicate
        dumps(ev("dup-ui", userIdentity=ui()))[:-2] + ', "userName": "mallory"}}',  # duplicate in userIdentity
        dumps(ev("escaped-dup"))[:-1] + ', "event\\u0049d": "ev-other"}',  # the same key, escaped
        dumps(ev("brace", userAgent="curl {x} [y]")),  # brackets inside strings
        dumps(ev("floatver", eventVersion=1.0)), dumps(ev("intver", eventVersion=1)),
        dumps(ev("negacct", userIdentity=ui(accountId=-5))), dumps(ev("bigacct", recipientAccountId=10**25)),
        dumps(ev("code403", errorCode=403, errorMessage="denied")),
        dumps(ev("noz", eventTime="2026-11-02T03:04:05")), dumps(ev("offset", eventTime="2026-11-02T11:04:05+08:00")),
        dumps(ev("frac7", eventTime="2026-11-02T03:04:05.1234567Z")), dumps(ev("frac1", eventTime="2026-11-02T03:04:05.1Z")),
        dumps(ev("feb30", eventTime="2026-02-30T03:04:05Z")), dumps(ev("h24", eventTime="2026-11-02T24:00:00Z")),
        dumps(ev("dateonly", eventTime="2026-11-02")), dumps(ev("old", eventTime="2009-12-31T23:59:59Z")),
        dumps(ev("future", eventTime="2026-12-08T00:00:00Z")), dumps(ev("numtime", eventTime=1700000000)),
        dumps(ev("lone"))[:-1] + ', "userAgent": "\\ud800x"}'.replace('"userAgent": "aliyun-cli/3.0.204", ', ""),
        dumps(ev("pair", userAgent="\U0001F600 caf\u00e9 \u202e")),
        dumps(ev("escapes"))[:-1].replace('"aliyun-cli/3.0.204"', '"a\\"b\\\\c\\n\\u00e9\\/"') + "}",
        dumps(ev("glob1", isGlobal="TRUE")), dumps(ev("glob2", isGlobal="")), dumps(ev("glob3", isGlobal=1)),
        dumps(ev("glob4", isGlobal="yes")), dumps(ev("glob5", isGlobal=False)),
        dumps(ev("mfa1", userIdentity=ui(sessionContext={"attributes": {"mfaAuthenticated": "False",
                                                                          "creationDate": "2026-11-01T00:00:00Z"}}))),
        dumps(ev("mfa2", userIdentity=ui(sessionContext={"sessionAttributes": {"mfaAuthenticated": True}}))),
        dumps(ev("mfa3", userIdentity=ui(sessionContext={"attributes": "x", "sessionAttributes": {
            "mfaAuthenticated": "true", "creationDate": ""}}))),
        dumps(ev("mfa4", userIdentity=ui(sessionContext={"attributes": {"creationDate": 5}}))),
        dumps(ev("mfa5", userIdentity=ui(sessionContext={"attributes": {"creationDate": "yesterday"}}))),
        dumps(ev("mfa6", userIdentity=ui(sessionContext={"attributes": {"mfaAuthenticated": "maybe"}}))),
        dumps(ev("mfa7", userIdentity=ui(sessionContext="none"))),
        dumps(ev("signin", eventName="ConsoleSignin", additionalEventData={"mfaChecked": "true"})),
        dumps(ev("refs1", referencedResources={"ACS::ECS::Instance": ["i-1", "i-2"], "ACS::VPC::VPC": "vpc-1"})),
        dumps(ev("refs2", referencedResources=[{"resourceType": "ACS::RAM::User", "resourceName": "bob"}])),
        dumps(ev("refs3", referencedResources={"ACS::ECS::Instance": [1, None, "i-3"]})),
        dumps(ev("refs4", referencedResources={})), dumps(ev("refs5", referencedResources=[])),
        dumps(ev("refs6", referencedResources="i-1")), dumps(ev("refs7", referencedResources=["i-1"])),
        dumps(ev("ui1", userIdentity="root")), dumps(ev("ui2", userIdentity=None)), dumps(ev("ui3", userIdentity={})),
        dumps(ev("ui4", userIdentity={"type": "assumed-role", "userName": "Role", "principalId": "1:s"})),
        dumps(ev("ui5", userIdentity={"type": "assumed-role", "userName": "", "principalId": "9:x"})),
        dumps(ev("ui6", userIdentity={"type": "root-account", "principalId": "77"})),
        dumps(ev("ui7", userIdentity={"accessKeyId": "LTAI5tCiDeploy7Qx2mK"})),
        dumps(ev("ui8", userIdentity={"type": "system"})), dumps(ev("ui9", userIdentity={"type": "ram-user", "userName": 7})),
        dumps(ev("ui10", userIdentity={"type": "ram-user", "userName": "alice", "accessKeyId": ""})),
        dumps(ev("ip6", sourceIpAddress="2001:db8::1")), dumps(ev("ipint", sourceIpAddress="Internal")),
        dumps(ev("ip0", sourceIpAddress="01.2.3.4")), dumps(ev("ipmask", sourceIpAddress="10.*.*.*")),
        dumps(ev("scheme1", additionalEventData={"Scheme": "HTTPS"})), dumps(ev("scheme2", additionalEventData={"Scheme": 5})),
        dumps(ev("svc", requestParameters={"ServiceCode": "ecs"})), dumps(ev("svc2", requestParameters=["x"])),
        dumps(ev("nanval", responseElements={"x": float("nan")})),
        dumps({"Events": [ev("lookup-1"), ev("lookup-2")]}),
        "", "   ", "  " + dumps(ev("padded")) + "\t", "\ufeff" + dumps(ev("bom-mid")),
        dumps([ev("in-array")]), "42", "null", '{"eventId": "ev-broken", ', "{}", '{"eventId": ""}',
        "[" * 3000 + "]" * 3000, dumps(ev("deep", requestParameters={"a": [[[[[[[[1]]]]]]]]})),
        dumps(ev("dup-same")), dumps(ev("dup-same")),  # a re-delivery: kept once
        dumps(ev("dup-conflict")), dumps(ev("dup-conflict", eventTime="2026-11-09T03:04:05Z")),  # forged copy
        # the first copy read by the Python rules (a sign-in), the later one by SQL: the first is kept
        dumps(ev("dup-across", eventName="ConsoleSignin")), dumps(ev("dup-across", eventTime="2026-11-09T03:04:05Z")),
        dumps(ev("types", eventName=["x"])), dumps(ev("types2", acsRegion={"r": 1})),
        # duplicates the fast statement's joined key texts must still find, and near ones they must not
        dumps(ev("dup-empty", requestParameters={"": "a", "b": "c"})).replace('"b": "c"', '"": "c"'),
        dumps(ev("dup-attrs", userIdentity=ui(sessionContext={"attributes": {
            "mfaAuthenticated": "true", "creationDate": "2026-11-01T00:00:00Z"}}))).replace(
            '"creationDate"', '"mfaAuthenticated": "false", "creationDate"'),
        dumps(ev("near-keys", requestParameters={"a": "1", "a ": "2", " a": "3", "": "4"})),
        *reading_lines(),
    ]


def reading_lines() -> list[str]:
    """Lines where reading a value's JSON text could part from Python's reading: a value that
    is not a string but whose text, quotes cut, looks like one (a time in a list, a number that
    cuts to ""), strings with escapes (the statement that decodes them), duplicates beside them,
    and objects json_keys cannot tell from strings."""
    attrs = {"mfaAuthenticated": "true", "creationDate": "2026-11-01T00:00:00Z"}
    return [
        dumps(ev("ctime-list", userIdentity=ui(sessionContext={"attributes": {"creationDate": ["2026-11-01T00:00:00Z"]}}))),
        dumps(ev("ctime-num", userIdentity=ui(sessionContext={"attributes": {"creationDate": 555}}))),
        dumps(ev("mfa-num", userIdentity=ui(sessionContext={"attributes": {"mfaAuthenticated": 55}}))),
        dumps(ev("mfa-list", userIdentity=ui(sessionContext={"attributes": {"mfaAuthenticated": ["true"]}}))),
        dumps(ev("glob-list", isGlobal=["false"])), dumps(ev("glob-str", isGlobal="True")),
        dumps(ev("id-list", eventId=["ev-x"])), dumps(ev("time-list", eventTime=["2026-11-02T03:04:05Z"])),
        dumps(ev("scheme-list", additionalEventData={"Scheme": ["https"]})),
        dumps(ev("svc-num", requestParameters={"ServiceCode": 5})), dumps(ev("svc-list", requestParameters={"ServiceCode": ["ecs"]})),
        dumps(ev("name-num", eventName=123)), dumps(ev("acct-num", recipientAccountId=1234567890123, eventVersion=1)),
        dumps(ev("acct-neg0", recipientAccountId=-0)), dumps(ev("acct-float", recipientAccountId=1.5)),
        dumps(ev("esc-ui", userIdentity=ui(userName='a"b\\c\n\u00e9', accessKeyId="LTAI5tCiDeploy7Qx2mK"),
                 userAgent="tab\there", sourceIpAddress="10.0.0.1",
                 additionalEventData={"Scheme": "HTTP"})),
        dumps(ev("esc-role", userIdentity={"type": "assumed-role", "userName": 'Backup"Role:s\\1', "principalId": "9:x",
                                           "sessionContext": {"attributes": attrs}})),
        dumps(ev("esc-signin", eventName="ConsoleSignin", userAgent='x"y')),
        dumps(ev("esc-time", eventTime="2026-11-02T03:04:05Z", errorMessage='denied: "x"', errorCode="Forbidden")),
        dumps(ev("esc-dup", userAgent='q"q'))[:-1] + ', "eventName": "Stop"}',
        dumps(ev("esc-refs", referencedResources={"ACS::ECS::Instance": ['i-"1']})),
        dumps(ev("ui-empty", userIdentity={})), dumps(ev("ui-list", userIdentity=[{"type": "ram-user"}])),
        dumps(ev("attrs-empty", userIdentity=ui(sessionContext={"attributes": {}, "sessionAttributes": attrs}))),
        dumps(ev("attrs-null", userIdentity=ui(sessionContext={"attributes": None, "sessionAttributes": attrs}))),
        dumps(ev("obj-empty", requestParameters={})), dumps(ev("events-str", Events="x")),
        dumps(ev("null-values", eventName=None, userAgent=None, userIdentity=ui(userName=None))),
    ]


def demo_lines(n: int) -> list[str]:
    return [dumps(e) for e in synthetic.stream(n, seed=3)]


def fixture_lines() -> list[str]:
    out = []
    for path in sorted((ROOT / "tests" / "fixtures" / "real-attacks").glob("*.jsonl")):
        out += path.read_text(encoding="utf-8").splitlines()
    for path in sorted((ROOT / "tests" / "fixtures" / "actiontrail_examples").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        try:
            out.append(dumps(json.loads(text)))
        except ValueError:  # an example as the docs print it (not JSON): one bad line
            out.append(" ".join(text.split()))
    return out


def ingest_with(parser: str, path: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, dict[str, Any]]:
    monkeypatch.setenv(native.PARSER_ENV, parser)
    store = open_store(db)
    report = ingest_files(store, [path], KeysFirst(), now=NOW)  # type: ignore[arg-type]
    counts = report.as_dict()
    return store, counts


def contents(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    columns = [r[0] for r in store.con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events' AND NOT column_name IN "
        "('ingested_at') ORDER BY column_index").fetchall()]
    events = store.con.execute(
        f"SELECT {', '.join(columns)} FROM events ORDER BY event_id, event_time").fetchall()
    quarantined = store.con.execute(
        "SELECT source, location, reason, raw FROM quarantine ORDER BY location, reason").fetchall()
    return events, quarantined


def both(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         left_to_python: list[int] | None = None) -> tuple[Any, Any]:
    """Ingest ``path`` with each parser; ``left_to_python`` collects how many lines DuckDB left
    to Python, group by group (so a test can tell DuckDB did the work)."""
    original = native.NativeReader._python

    def counting(self: Any, path: Path, undecided: list[Any], *args: Any) -> Any:
        if left_to_python is not None:
            left_to_python.append(len(undecided))
        return original(self, path, undecided, *args)

    monkeypatch.setattr(native.NativeReader, "_python", counting)
    stores = []
    for parser in ("python", "duckdb"):
        store, counts = ingest_with(parser, path, tmp_path / f"{parser}.duckdb", monkeypatch)
        try:
            stores.append((contents(store), counts))
        finally:
            store.close()
    return stores[0], stores[1]


def assert_same(python: Any, duckdb_: Any) -> None:
    (py_events, py_quarantine), py_counts = python
    (db_events, db_quarantine), db_counts = duckdb_
    assert len(db_events) == len(py_events)
    for mine, theirs in zip(db_events, py_events, strict=True):
        assert mine == theirs
    assert db_quarantine == py_quarantine
    assert db_counts == py_counts


def test_hostile_lines_are_stored_and_quarantined_exactly_as_by_the_python_parser(tmp_path, monkeypatch):
    path = tmp_path / "hostile.ndjson"
    lines = [dumps(ev("first"))] + hostile_lines()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    left: list[int] = []
    python, duckdb_ = both(path, tmp_path, monkeypatch, left)
    assert_same(python, duckdb_)
    assert 0 < sum(left) < len(lines) - 10  # both readers had their share
    (events, quarantined), counts = duckdb_
    reasons = {loc.rsplit(":", 1)[1]: reason for _, loc, reason, _ in quarantined}
    assert "trailing" in reasons["2"] or "malformed JSON" in reasons["2"]  # refused, as by Python
    assert reasons["3"].startswith('duplicate key "Key" in requestParameters.Tags[0]')
    assert counts["new"] > 50 and counts["quarantined"] > 20


def test_demo_and_real_events_are_the_same_rows_with_the_same_values(tmp_path, monkeypatch):
    path = tmp_path / "events.ndjson"
    lines = demo_lines(3000) + fixture_lines()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    left: list[int] = []
    python, duckdb_ = both(path, tmp_path, monkeypatch, left)
    assert_same(python, duckdb_)
    (events, _), counts = duckdb_
    assert counts["new"] == len(events) > 3000
    assert sum(left) < 0.1 * len(lines)  # DuckDB decided the rest


def lookalike_lines() -> list[str]:
    """Values where a string's text and another type's text are the same once read as VARCHAR
    (the fast statement's reading): non-strings Python refuses or writes its own way, and strings
    that merely look like them."""
    nan, inf = float("nan"), float("inf")
    non_strings: list[tuple[str, Any]] = [
        ("eventName", True), ("eventType", False), ("eventId", {"a": 1}), ("serviceName", [1]),
        ("acsRegion", nan), ("userAgent", inf), ("requestId", -inf), ("vpcId", 0), ("resourceName", -3),
        ("errorMessage", 2.5), ("apiVersion", 10**20), ("errorCode", 1e5), ("errorCode", -1),
        ("eventVersion", -0.0), ("recipientAccountId", nan), ("recipientAccountId", True),
        ("recipientAccountId", 10**19), ("requestParameters", {"ServiceCode": True}),
        ("userIdentity", ui(type=True)), ("userIdentity", ui(userName=0)), ("userIdentity", ui(accessKeyId=[])),
        ("userIdentity", ui(accountId=-inf)), ("userIdentity", ui(principalId=1.0)),
        ("userIdentity", ui(principalId=123456789012345678)),  # an integer as Python writes it: stored
    ]
    strings: list[tuple[str, Any]] = [
        ("eventName", "true"), ("eventType", "false"), ("eventId", "{not json"), ("serviceName", "[x"),
        ("acsRegion", "NaN"), ("userAgent", "Infinity"), ("requestId", "-Infinity"), ("vpcId", "0"),
        ("resourceName", "-3"), ("errorMessage", "2.5"), ("apiVersion", "1e5"), ("errorCode", "1.0"),
        ("recipientAccountId", "-1"), ("recipientAccountId", "00123"), ("eventVersion", "1"),
        ("userIdentity", ui(userName="12", accountId="1e3", principalId="-0")),
        ("requestParameters", {"ServiceCode": "5"}), ("sourceIpAddress", "10.0.0.1"),
    ]
    return [dumps(ev(f"non-string-{i}", **{key: value})) for i, (key, value) in enumerate(non_strings)] + [
        dumps(ev(f"lookalike-{i}", **{key: value})) for i, (key, value) in enumerate(strings)]


def test_values_read_as_text_keep_their_type_non_strings_as_python_reads_them(tmp_path, monkeypatch):
    """The fast statement reads string fields as VARCHAR, where ``true`` and ``"true"`` read the
    same: each row must still be Python's (stored with the same text, or quarantined with the same
    reason), and strings that look like numbers are still decided in SQL, not by Python."""
    path = tmp_path / "lookalikes.ndjson"
    lines = lookalike_lines()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    left: list[int] = []
    python, duckdb_ = both(path, tmp_path, monkeypatch, left)
    assert_same(python, duckdb_)
    (events, quarantined), _ = duckdb_
    stored = {row[0] for row in events}
    assert {f"ev-lookalike-{i}" for i in range(18) if i != 2} | {"{not json"} <= stored
    assert "ev-non-string-0" not in stored and len(quarantined) >= 15
    assert sum(left) <= len(lines) - 18 - 1  # the look-alike strings (and the integer) never needed Python

def test_chunks_duckdb_cannot_take_whole_are_read_by_python_in_file_order(tmp_path, monkeypatch):
    """Invalid UTF-8 and CR line ends: those chunks go to today's reader; the others stay in
    DuckDB, and line numbers and the first-copy-wins order hold across them."""
    monkeypatch.setattr(native.files, "scan_file",
                        lambda p, _orig=native.files.scan_file: _orig(p, chunk_bytes=4096))
    good = [dumps(ev(i)) for i in range(60)]
    data = ("\n".join(good[:20]) + "\n").encode()
    data += b'{"eventId": "bad-\xff"}\n' + ("\n".join(good[20:40]) + "\n").encode()
    data += ("\r\n".join(good[40:]) + "\r\n").encode() + (dumps(ev(5, userAgent="later copy")) + "\n").encode()
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(data)
    python, duckdb_ = both(path, tmp_path, monkeypatch)
    assert_same(python, duckdb_)
    (_, quarantined), counts = duckdb_
    assert [(loc.rsplit(":", 1)[1], reason) for _, loc, reason, _ in quarantined] == [("21", "not valid UTF-8")]
    assert counts["new"] == 60


# A child that ingests with DuckDB parsing, its transactions two row groups long, and once its first
# transaction has gone past a full DuckDB row group (DuckDB wrote that one, compressed, into the store
# file when the next rows came; nothing is committed), says so and hangs.
HANG_IN_A_ROW_GROUP = """
import os, sys, time
from pipeline.ingest import run
from pipeline.store.store import open_store
from models.inventory import Attributor
run.BatchWriter.native_group_rows = 2 * run.ROW_GROUP_ROWS
run.BatchWriter.idle_commit = 3600  # a slow machine must not commit the transaction early
_add = run.Transaction.add
def _add_then_hang(self, batch):
    _add(self, batch)
    if self.rows > run.ROW_GROUP_ROWS:
        print("inserted", flush=True)
        time.sleep(60)
run.Transaction.add = _add_then_hang
os.environ["TRAILWARDEN_INGEST_PARSER"] = "duckdb"
with open_store(sys.argv[1]) as s:
    run.ingest_files(s, [sys.argv[2]], Attributor(None))
"""


@pytest.mark.slow  # kill -9 of a process, ~130k events
def test_kill_9_while_a_row_group_is_written_but_not_committed_stores_each_event_once(tmp_path, monkeypatch):
    """DuckDB parsing commits a row group (122,880 rows) at a time, which DuckDB writes into the
    store file before COMMIT: a kill -9 then must leave none of it visible, and the retry must
    store every event once."""
    import signal
    import subprocess
    import sys
    import time

    from pipeline.ingest.run import ROW_GROUP_ROWS

    n = ROW_GROUP_ROWS + 40_000
    path = tmp_path / "e.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({**BASE_EVENT, "eventId": f"00000000-0000-4000-8000-{i:012d}"}) + "\n")
    db = tmp_path / "s.duckdb"
    open_store(db).close()
    empty = db.stat().st_size
    proc = subprocess.Popen([sys.executable, "-c", HANG_IN_A_ROW_GROUP, str(db), str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    try:
        while proc.stdout.readline().strip() != "inserted":
            assert time.monotonic() < deadline and proc.poll() is None, "the ingest never got there"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert db.stat().st_size > empty + 2**20  # the row group was in the file, uncommitted
    monkeypatch.setenv(native.PARSER_ENV, "duckdb")
    with open_store(db) as store:
        assert store.con.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert store.con.execute("SELECT count(*) FROM ingested_files").fetchone() == (0,)
        report = ingest_files(store, [path], KeysFirst(), now=NOW)  # type: ignore[arg-type]
        assert (report.new, report.duplicates, report.files) == (n, 0, 1)
        assert store.con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (n, n)


def test_lines_are_copies_so_the_reader_can_reuse_its_buffer():
    """Every chunk of a file is read into one buffer: the lines of the last chunk, still waiting
    for their group, must not change when the next chunk is read into it."""
    buffer = bytearray('{"a": "é"}\n{"b": 2}\n'.encode())
    lines = native._lines(native.files.Chunk(0, len(buffer), 7), memoryview(buffer))
    buffer[:] = b"x" * len(buffer)
    assert lines["line"].to_pylist() == ['{"a": "é"}', '{"b": 2}']
    assert lines["line_no"].to_pylist() == [7, 8]


@pytest.mark.parametrize(("chosen", "files", "sls"), [(None, True, False), ("python", False, False),
                                                      ("duckdb", True, True), (" DuckDB ", True, True)])
def test_duckdb_parses_files_by_default_and_sls_when_asked(chosen, files, sls, monkeypatch):
    """DuckDB parsing is the default for files (it costs under half the Python parser's CPU there)
    and not for SLS batches (about as much); the variable chooses for both."""
    if chosen is None:
        monkeypatch.delenv(native.PARSER_ENV, raising=False)
    else:
        monkeypatch.setenv(native.PARSER_ENV, chosen)
    assert (native.native_enabled(), native.native_enabled("sls")) == (files, sls)


def test_a_file_is_parsed_by_duckdb_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(native.PARSER_ENV, raising=False)
    parsed: list[int] = []
    rows = native.NativeReader.rows

    def counted(self, lines, *args, **kwargs):
        parsed.append(lines.num_rows)
        return rows(self, lines, *args, **kwargs)

    monkeypatch.setattr(native.NativeReader, "rows", counted)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(dumps(ev(i)) + "\n" for i in range(20)), encoding="utf-8")
    with open_store(tmp_path / "tw.duckdb") as store:
        report = ingest_files(store, [path], KeysFirst(), now=NOW)
    assert report.events == report.new == 20 and sum(parsed) == 20
