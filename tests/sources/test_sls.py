"""The SLS reader with the real aliyun-log-python-sdk against a fake Log Service on 127.0.0.1.

Every test drives the SDK's own HTTP calls (list_shards, get_cursor, pull_logs with lz4) into
``tests.fakes.sls.FakeSLS``; nothing of the SDK is mocked. The fake runs in a thread of the test
process; the CLI and the kill -9 tests run trailwarden in a subprocess that talks to it.

The reader consults its state on its own DuckDB connection while the writer thread inserts
(``reader_for`` gives it one; DuckDB refuses a busy connection, see
``test_the_reader_and_the_writer_do_not_share_a_busy_connection``); :func:`pull` wires the reader
the same way.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from models.inventory import Attributor
from pipeline.core.config import SlsSource
from pipeline.core.errors import TerminalError, TransientError
from pipeline.ingest.run import ingest_batches, ingest_sources
from pipeline.ingest.sources import credentials
from pipeline.ingest.sources.sls import SlsReader, client_for
from pipeline.store.store import Store, open_store
from tests.conftest import BASE_EVENT, assert_one_line_error, kill_after_commits, run_cli
from tests.fakes.sls import Contents, FakeSLS
from tests.sources.conftest import SECRET, ids

NOBODY = Attributor(None)
NOW = datetime.now(UTC).replace(microsecond=0)
PROJECT, LOGSTORE = "audit-proj", "actiontrail_main"


# -- helpers --------------------------------------------------------------------------------------
def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def events(prefix: str, n: int, start: datetime | None = None, step: timedelta = timedelta(seconds=1)) -> list[dict[str, Any]]:
    start = start or NOW - timedelta(minutes=30)
    return [{**BASE_EVENT, "eventId": f"{prefix}-{i:05d}", "eventTime": iso(start + i * step)} for i in range(n)]


def received(group: list[dict[str, Any]]) -> int:
    """SLS receives an event about a minute after it happened (notes section 1.6)."""
    return max(int(datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")).timestamp()) for e in group) + 60


def spread(fake: FakeSLS, evs: list[dict[str, Any]], shards: list[int], group_size: int) -> None:
    """Log groups of ``group_size`` events, dealt round-robin over ``shards``."""
    for n, start in enumerate(range(0, len(evs), group_size)):
        group = evs[start:start + group_size]
        fake.add_events(shards[n % len(shards)], group, receive_time=received(group))


def source(fake: FakeSLS, **overrides: Any) -> SlsSource:
    fields: dict[str, Any] = {"name": "trail", "type": "sls", "endpoint": fake.endpoint, "project": PROJECT,
                              "logstore": LOGSTORE, "batch_size": 3, **overrides}
    return SlsSource.model_validate(fields)


def own_connection(store: Store) -> Store:
    """The store through a second connection, for the reader, as ``reader_for`` does."""
    return Store(store.con.cursor(), store.path, read_only=False)


def pull(store: Store, cfg: SlsSource, batch_size: int = 40, **reader_kw: Any):
    """One run of the reader into the store, as ``ingest_sources`` does it, with an injectable
    sleep and the reader on its own connection."""
    reader = SlsReader(cfg, client_for(cfg, credentials.from_env()), own_connection(store), **reader_kw)
    report = ingest_batches(store, reader.batches(NOBODY, batch_size))
    return report, reader


def partition(shard: int) -> str:
    return f"{PROJECT}/{LOGSTORE}/{shard}"


def config_file(tmp_path: Path, fake: FakeSLS, **overrides: Any) -> Path:
    src = {"name": "trail", "type": "sls", "endpoint": fake.endpoint, "project": PROJECT, "logstore": LOGSTORE,
           "batch_size": 3, **overrides}
    path = tmp_path / "trailwarden.yaml"
    path.write_text(json.dumps({"database": str(tmp_path / "s.duckdb"), "memory_limit": "256MB",
                                "sources": [src]}), encoding="utf-8")
    return path


@pytest.fixture
def fake():
    with FakeSLS(PROJECT, LOGSTORE, shards=4) as f:
        yield f


@pytest.fixture
def fake1():
    """One shard: for runs through ``ingest_sources`` and the CLI, where the reader would otherwise
    start the next shard while the writer stores the last batch (the shared-connection bug)."""
    with FakeSLS(PROJECT, LOGSTORE, shards=1) as f:
        yield f


# -- reading everything once ----------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False], ids=["lz4", "uncompressed"])
def test_four_shards_load_every_event_once(store, fake, compress):
    fake.compress = compress
    evs = events("a", 300)
    spread(fake, evs, [0, 1, 2, 3], group_size=10)  # 30 groups: shards 0,1 get 8, shards 2,3 get 7
    report, reader = pull(store, source(fake))
    assert (report.new, report.duplicates, report.quarantined) == (300, 0, 0)
    assert ids(store) == ({e["eventId"] for e in evs}, 300)
    assert {s: r.logs for s, r in reader.report.shards.items()} == {0: 80, 1: 80, 2: 70, 3: 70}
    pulls = fake.of("pull_logs")
    assert all(p.headers.get("Accept-Encoding") == "lz4" and p.query["count"] == "3" for p in pulls)
    assert len(fake.of("pull_logs", shard=0)) == 4  # 3 + 3 + 2 groups, then the empty pull
    for shard in range(4):
        cursor, watermark = store.get_state("trail", partition(shard))
        assert fake.position(cursor) == (shard, fake.size(shard))
        assert watermark is not None


def test_a_rerun_reads_nothing_again_and_each_shard_keeps_its_cursor(store, fake):
    spread(fake, events("a", 120), [0, 1, 2, 3], group_size=5)
    pull(store, source(fake))
    cursors = {s: store.get_state("trail", partition(s))[0] for s in range(4)}
    before = len(fake.requests)
    report, reader = pull(store, source(fake))
    assert (report.events, report.new) == (0, 0)
    again = fake.requests[before:]
    assert [r.route for r in again] == ["list_shards"] + ["pull_logs"] * 4  # no get_cursor: resumed
    assert {r.shard: r.query["cursor"] for r in again[1:]} == cursors
    assert all(r.groups == 0 for r in again[1:])
    assert {s: store.get_state("trail", partition(s))[0] for s in range(4)} == cursors
    assert ids(store)[1] == 120


def test_events_added_after_a_run_are_picked_up_by_the_next(store, fake):
    spread(fake, events("a", 40), [0, 1, 2, 3], group_size=5)
    pull(store, source(fake))
    later = events("b", 30, start=NOW - timedelta(minutes=5))
    spread(fake, later, [1, 3], group_size=5)
    report, reader = pull(store, source(fake))
    assert (report.events, report.new) == (30, 30)
    assert {s: r.logs for s, r in reader.report.shards.items()} == {0: 0, 1: 15, 2: 0, 3: 15}
    assert ids(store)[1] == 70


def test_a_new_shard_starts_at_the_configured_start_time_by_receive_time(store, fake):
    old, new = events("old", 5, start=NOW - timedelta(hours=5)), events("new", 5, start=NOW - timedelta(hours=1))
    fake.add_events(0, old, receive_time=received(old))
    fake.add_events(0, new, receive_time=received(new))
    pull(store, source(fake, start_time=(NOW - timedelta(hours=2)).isoformat()))
    assert ids(store) == ({e["eventId"] for e in new}, 5)
    asked = fake.of("get_cursor", shard=0)[0].query["from"]
    assert asked == str(int((NOW - timedelta(hours=2)).timestamp()))


def test_max_batches_bounds_a_run_and_the_next_run_continues(store, fake):
    evs = events("a", 50)
    fake.add_events(0, evs, group_size=5, receive_time=received(evs))  # 10 groups
    cfg = source(fake, batch_size=2, max_batches=2)
    seen = []
    for _ in range(3):
        before = len(fake.of("pull_logs", shard=0))
        report, reader = pull(store, cfg)
        seen.append((report.new, len(fake.of("pull_logs", shard=0)) - before, reader.report.shards[0].drained))
    assert seen == [(20, 2, False), (20, 2, False), (10, 2, True)]
    assert ids(store) == ({e["eventId"] for e in evs}, 50)


# -- shards split -----------------------------------------------------------------------------------
def test_a_split_in_the_middle_of_a_run_loses_nothing_and_the_parent_is_then_left_alone(store, fake):
    before = events("before", 40, start=NOW - timedelta(minutes=50))
    during = events("during", 20, start=NOW - timedelta(minutes=30))
    after = events("after", 20, start=NOW - timedelta(minutes=10))
    fake.add_events(1, before, group_size=5, receive_time=received(before))
    children: list[int] = []

    def split_on_second_pull(req) -> None:
        if req.shard == 1 and len(fake.of("pull_logs", shard=1)) == 1 and not children:
            children.extend(fake.split(1))  # SLS splits while the reader is half way through shard 1
            fake.add_events(children[0], during[:10], receive_time=received(during))
            fake.add_events(children[1], during[10:], receive_time=received(during))

    fake.before("pull_logs", split_on_second_pull)
    first, _ = pull(store, source(fake))
    assert children == [4, 5]
    assert first.new == 40  # the parent, listed as read-write, was read to its end
    fake.add_events(4, after[:10], receive_time=received(after))
    fake.add_events(5, after[10:], receive_time=received(after))

    second, reader = pull(store, source(fake))
    assert second.new == 40  # the children from their beginning: during + after
    assert reader.report.shards[1].drained and reader.report.shards[1].logs == 0
    parent_pulls = len(fake.of("pull_logs", shard=1))

    third, reader = pull(store, source(fake))
    assert third.new == 0
    assert len(fake.of("pull_logs", shard=1)) == parent_pulls  # drained read-only shard: skipped
    assert 1 not in reader.report.shards
    assert ids(store) == ({e["eventId"] for e in before + during + after}, 80)
    assert store.get_state("trail", partition(4))[0] is not None


def test_a_parent_split_before_the_first_run_is_read_whole_then_skipped(store, fake):
    old = events("old", 30, start=NOW - timedelta(hours=2))
    fake.add_events(2, old, group_size=4, receive_time=received(old))
    a, b = fake.split(2)
    new = events("new", 10)
    fake.add_events(a, new[:5], receive_time=received(new))
    fake.add_events(b, new[5:], receive_time=received(new))
    first, _ = pull(store, source(fake))
    assert first.new == 40
    pulls = len(fake.of("pull_logs", shard=2))
    second, _ = pull(store, source(fake))
    assert second.new == 0 and len(fake.of("pull_logs", shard=2)) == pulls


# -- expired cursors --------------------------------------------------------------------------------
def _ten_groups(fake: FakeSLS) -> list[list[dict[str, Any]]]:
    """Shard 0: ten groups of five events, ten minutes apart, received a minute after."""
    t0 = NOW - timedelta(hours=3)
    groups = [events(f"g{g}", 5, start=t0 + g * timedelta(minutes=10)) for g in range(10)]
    for group in groups:
        fake.add_events(0, group, receive_time=received(group))
    return groups


@pytest.mark.parametrize("variant", [("InvalidCursor", "cursor is invalid"), ("ParameterInvalid", "Invalid cursor")])
def test_an_expired_cursor_reseeks_by_receive_time_not_to_the_end_and_records_the_gap(store, fake1, variant):
    fake = fake1
    fake.invalid_cursor = variant
    groups = _ten_groups(fake)
    cfg = source(fake, batch_size=2, max_batches=2)
    pull(store, cfg)  # groups 0-3
    watermark = store.get_state("trail", partition(0))[1]
    assert watermark == datetime.fromisoformat(groups[3][-1]["eventTime"].replace("Z", "+00:00"))
    fake.expire_before(0, 6)  # the TTL passed the stored cursor (4): groups 4 and 5 are gone for good

    [outcome] = ingest_sources(store, [("trail", cfg)], NOBODY)
    assert outcome.error is None
    assert outcome.report is not None and outcome.report.new == 20  # groups 6-9, not nothing
    assert outcome.details["possible_gaps"] and outcome.details["possible_gaps"][0].startswith("shard 0:")
    reseek = fake.of("get_cursor", shard=0)[-1]
    # from the receive time of the last pull read (groups 2-3), as get_cursor counts time
    assert reseek.query["from"] == str(received(groups[2]))
    expected = {e["eventId"] for g in groups[:4] + groups[6:] for e in g}
    assert ids(store) == (expected, 40)
    # the next run goes on from the new cursor, with no gap
    fake.add_events(0, events("late", 5), receive_time=int(NOW.timestamp()))
    [outcome] = ingest_sources(store, [("trail", cfg)], NOBODY)
    assert outcome.report is not None and outcome.report.new == 5 and "possible_gaps" not in outcome.details


def test_the_gap_of_a_reseek_is_recorded_in_the_run_through_the_cli(tmp_path, fake1):
    fake = fake1
    _ten_groups(fake)
    cfg = config_file(tmp_path, fake, batch_size=2, max_batches=2)
    with open_store(tmp_path / "s.duckdb") as s:
        assert pull(s, source(fake, batch_size=2, max_batches=2))[0].new == 20
    fake.expire_before(0, 6)
    second = run_cli("--config", str(cfg), "ingest", "--source", "trail", "--format", "json")
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)["sources"]["trail"]
    assert out["new"] == 20 and len(out["possible_gaps"]) == 1
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    counts = json.loads(con.execute("SELECT counts FROM runs ORDER BY id DESC LIMIT 1").fetchall()[0][0])
    con.close()
    assert counts["trail"]["possible_gaps"] == out["possible_gaps"]


def test_a_reseek_is_not_misled_by_an_event_dated_in_the_future(store, fake):
    t0 = NOW - timedelta(hours=3)
    groups = [events(f"g{g}", 5, start=t0 + g * timedelta(minutes=10)) for g in range(10)]
    groups[3] = [{**BASE_EVENT, "eventId": "skewed", "eventTime": iso(NOW + timedelta(hours=3))}]
    for g, group in enumerate(groups):
        fake.add_events(0, group, receive_time=received(groups[g - 1] if g == 3 else group))
    pull(store, source(fake, batch_size=2, max_batches=2))  # groups 0-3, the skewed one among them
    fake.expire_before(0, 6)  # groups 6-9 are still retained, and unread
    pull(store, source(fake, batch_size=2, max_batches=2))
    assert {e["eventId"] for g in groups[6:] for e in g} <= ids(store)[0]


# -- faults -----------------------------------------------------------------------------------------
def test_a_stop_during_a_back_off_ends_the_run_without_waiting_and_loses_nothing(store, fake):
    """SIGTERM while shard 1 is over its read quota: no back-off sleep, no error; shard 0's events
    are in, and the next run reads shard 1 from its cursor."""
    spread(fake, events("a", 60), [0, 1], group_size=5)
    fake.fail_next("pull_logs", 403, "ReadQuotaExceed", times=1, message="Read quota is exceeded", shard=1)
    stopping = {"now": False}
    fake.before("pull_logs", lambda r: stopping.update(now=stopping["now"] or r.shard == 1))
    sleeps: list[float] = []
    report, reader = pull(store, source(fake), sleep=sleeps.append, backoff=5.0, stop=lambda: stopping["now"])
    assert sleeps == [] and reader.report.stopped
    assert report.new == 30 and ids(store)[1] == 30
    again, _ = pull(store, source(fake))
    assert again.new == 30 and ids(store) == ({e["eventId"] for e in events("a", 60)}, 60)


def test_read_quota_exceeded_backs_off_and_then_loads_everything(store, fake):
    spread(fake, events("a", 60), [0, 1], group_size=5)
    fake.fail_next("pull_logs", 403, "ReadQuotaExceed", times=2, message="Read quota is exceeded", shard=1)
    sleeps: list[float] = []
    report, _ = pull(store, source(fake), sleep=sleeps.append, backoff=0.01)
    assert report.new == 60
    assert sleeps == [0.01, 0.02]
    assert [r.status for r in fake.of("pull_logs", shard=1)][:3] == [403, 403, 200]


def test_quota_errors_that_do_not_stop_end_the_run_as_transient_and_keep_the_cursor(store, fake):
    spread(fake, events("a", 20), [0], group_size=5)
    cfg = source(fake, batch_size=2)
    fake.fail_next("pull_logs", 403, "ReadQuotaExceed", times=3, shard=0)  # every attempt of the first pull
    reader = SlsReader(cfg, client_for(cfg, credentials.from_env()), store, sleep=lambda s: None, retries=2)
    with pytest.raises(TransientError, match="ReadQuotaExceed"):
        ingest_batches(store, reader.batches(NOBODY, 40))
    assert store.get_state("trail", partition(0)) is None
    report, _ = pull(store, cfg, sleep=lambda s: None)
    assert report.new == 20


@pytest.mark.parametrize(("status", "code"), [(401, "Unauthorized"), (401, "InvalidAccessKeyId"),
                                              (403, "SignatureNotMatch")])
def test_rejected_credentials_stop_the_run_at_once(store, fake, status, code):
    spread(fake, events("a", 10), [0], group_size=5)
    fake.fail_next("list_shards", status, code)
    sleeps: list[float] = []
    with pytest.raises(TerminalError) as info:
        pull(store, source(fake), sleep=sleeps.append)
    message = str(info.value)
    assert credentials.ID_ENV in message and credentials.SECRET_ENV in message and SECRET not in message
    assert sleeps == [] and len(fake.requests) == 1


def test_bad_credentials_exit_1_with_one_line_naming_the_variables_never_the_secret(tmp_path, fake):
    spread(fake, events("a", 10), [0], group_size=5)
    cfg = config_file(tmp_path, fake)
    fake.fail_next("list_shards", 401, "InvalidAccessKeyId", message="The access key id does not exist")
    result = run_cli("--config", str(cfg), "ingest", "--source", "trail")
    line = assert_one_line_error(result, 1, credentials.ID_ENV, credentials.SECRET_ENV, "trail")
    assert SECRET not in result.stdout + result.stderr
    assert line.startswith("trailwarden: error:")
    missing = run_cli("--config", str(cfg), "ingest", "--source", "trail",
                      env={credentials.ID_ENV: "", credentials.SECRET_ENV: ""})
    assert_one_line_error(missing, 1, credentials.ID_ENV, credentials.SECRET_ENV)
    assert len(fake.of("list_shards")) == 1  # without credentials nothing was even asked


def test_a_wrong_logstore_is_a_terminal_error_naming_the_config_keys(store, fake):
    cfg = source(fake, logstore="actiontrail_typo")
    [outcome] = ingest_sources(store, [("trail", cfg)], NOBODY)
    assert outcome.error is not None and "LogStoreNotExist" in outcome.error and "`logstore`" in outcome.error


def test_an_unreachable_endpoint_is_transient(store, fake, monkeypatch):
    import aliyun.log.logclient as logclient

    class NoSleep:  # the SDK sleeps 1 s between its own 10 attempts
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(_seconds: float) -> None:
            return None

    monkeypatch.setattr(logclient, "time", NoSleep())
    cfg = source(fake)
    fake.stop()
    reader = SlsReader(cfg, client_for(cfg, credentials.from_env()), store, sleep=lambda s: None)
    with pytest.raises(TransientError):
        ingest_batches(store, reader.batches(NOBODY, 40))


def test_the_reader_and_the_writer_do_not_share_a_busy_connection(store, monkeypatch):
    from pipeline.store.store import Store

    real_insert = Store.store_events

    def big_insert(self, tables):  # an insert that takes a while, like a 10,000-event batch
        self.con.execute("SELECT sum(range) FROM range(150000000)").fetchall()
        return real_insert(self, tables)

    monkeypatch.setattr(Store, "store_events", big_insert)
    with FakeSLS(PROJECT, LOGSTORE, shards=2) as fake:
        fake.add_events(0, events("a", 10))
        fake.add_events(1, events("b", 10))
        [outcome] = ingest_sources(store, [("trail", source(fake))], NOBODY)
    assert outcome.error is None and outcome.report is not None and outcome.report.new == 20


def test_an_endpoint_without_a_scheme_is_read_over_https(fake):
    cfg = source(fake, endpoint="cn-hangzhou.log.aliyuncs.com")
    client = client_for(cfg, credentials.from_env())
    assert client.http_type == "https://"


# -- bad input, duplicates --------------------------------------------------------------------------
def test_logs_without_an_event_and_malformed_json_are_quarantined_and_the_rest_ingested(store, fake):
    good = events("good", 4)
    fake.add_events(0, [
        good[0],
        Contents(owner_id="1384926508761234", note="no event key here"),
        "{\"eventId\": \"broken\", ",
        good[1],
        Contents(event=json.dumps(good[2]), owner_id="1384926508761234"),  # Log Audit Service: extra keys
        {k: v for k, v in good[3].items() if k != "eventId"},
    ], receive_time=received(good))
    fake.add_events(1, [good[3]], receive_time=received(good), topic="actiontrail_event")  # the other topic
    fake.add_events(2, [{**good[3], "eventId": "good-notopic"}], receive_time=received(good), topic="")
    report, _ = pull(store, source(fake))
    assert (report.new, report.quarantined) == (5, 3)
    assert ids(store)[0] == {"good-00000", "good-00001", "good-00002", "good-00003", "good-notopic"}
    reasons = [r[0] for r in store.con.execute("SELECT reason FROM quarantine ORDER BY location").fetchall()]
    assert any(r.startswith("no `event` content") and "owner_id" in r for r in reasons)
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any("eventId" in r for r in reasons)
    locations = [r[0] for r in store.con.execute("SELECT location FROM quarantine").fetchall()]
    assert all(loc.startswith("shard 0 cursor ") for loc in locations)
    pull(store, source(fake))
    assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 3


def test_poison_logs_are_quarantined_one_by_one_and_the_shard_goes_on(store, fake):
    """Was: a log nested 100,000 deep (RecursionError) or with a lone surrogate ended the run."""
    good = events("good", 3)
    deep = '{"eventId": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    duplicate = json.dumps({**good[0], "eventId": "dup"}).replace('"ci-deploy"', '"ci-deploy", "userName": "root"')
    surrogate = json.dumps({**good[0], "eventId": "surrogate"}).replace('"ci-deploy"', '"\\ud800"')
    epoch = {**good[0], "eventId": "epoch", "eventTime": "1970-01-01T00:00:00Z"}
    fake.add_events(0, [good[0], deep, duplicate, good[1], surrogate, epoch, good[2]], receive_time=received(good))
    report, _ = pull(store, source(fake))
    assert (report.new, report.quarantined) == (3, 4)
    assert ids(store)[0] == {"good-00000", "good-00001", "good-00002"}
    reasons = sorted(r[0] for r in store.con.execute("SELECT reason FROM quarantine").fetchall())
    assert [r.split(":")[0] for r in reasons] == [
        "JSON nested too deeply to read (more levels than the parser's recursion limit)",
        'duplicate key "userName" in userIdentity', "eventTime 1970-01-01T00",
        "string is not valid Unicode"]
    assert reasons[3].endswith("lone surrogate in userIdentity.userName")
    pull(store, source(fake))  # the cursor moved past them: nothing is read twice
    assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 4


def test_a_log_whose_event_is_not_utf8_is_quarantined_and_the_shard_goes_on(store, fake):
    """Was: the SDK hands such a content over as bytes, and the parse's TypeError ended the run at
    that log, every run (the cursor never passed it)."""
    good = events("good", 3)
    latin1 = json.dumps({**good[0], "eventId": "latin1", "userAgent": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    fake.add_events(0, [good[0], latin1, good[1], json.dumps(good[2]).encode()], receive_time=received(good))
    report, _ = pull(store, source(fake))
    assert (report.new, report.quarantined) == (3, 1)
    assert ids(store)[0] == {"good-00000", "good-00001", "good-00002"}
    [(location, reason, raw)] = store.con.execute("SELECT location, reason, raw FROM quarantine").fetchall()
    assert location.endswith("log 1") and reason == "not valid UTF-8" and '"eventId": "latin1"' in raw
    pull(store, source(fake))
    assert store.con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


def test_an_event_delivered_twice_is_stored_once(store, fake):
    evs = events("a", 30)
    fake.add_events(0, evs[:20], receive_time=received(evs))
    fake.add_events(0, evs[10:20], receive_time=received(evs))  # the same events in a second group
    fake.add_events(2, evs[15:30], receive_time=received(evs))  # and in another shard
    report, _ = pull(store, source(fake))
    assert (report.events, report.new, report.duplicates) == (45, 30, 15)
    assert ids(store) == ({e["eventId"] for e in evs}, 30)


# -- crash safety -----------------------------------------------------------------------------------
KILLER = """
import sys
from pipeline.ingest import run as ingest
from pipeline.core.config import SlsSource
from pipeline.ingest.sources import credentials, sls
from pipeline.store.store import Store, open_store
from models.inventory import Attributor
cfg = SlsSource.model_validate_json(sys.argv[2])
with open_store(sys.argv[1]) as s:
    own = Store(s.con.cursor(), s.path, False)  # see own_connection()
    reader = sls.SlsReader(cfg, sls.client_for(cfg, credentials.from_env()), own)
    ingest.ingest_batches(s, reader.batches(Attributor(None), 50))
"""


def _kill_after_commits(db: Path, cfg: SlsSource, commits: int, ready=None) -> None:
    kill_after_commits(KILLER, [str(db), cfg.model_dump_json()], commits, ready)


@pytest.mark.slow  # kill -9 of a process
def test_kill_9_in_the_middle_of_a_multi_batch_pull_then_a_rerun_stores_each_event_once(tmp_path, fake):
    evs = events("a", 240)
    spread(fake, evs, [0, 1], group_size=40)  # 3 groups per shard
    cfg = source(fake, batch_size=3)  # one pull = a whole shard = 120 events = batches of 50, 50, 20
    db = tmp_path / "s.duckdb"
    _kill_after_commits(db, cfg, commits=2)
    con = duckdb.connect(str(db), read_only=True)
    partial = con.execute("SELECT count(*) FROM events").fetchone()[0]
    state = con.execute("SELECT cursor FROM ingest_state WHERE partition = ?", [partition(0)]).fetchall()
    con.close()
    assert partial == 100  # two batches of the pull committed ...
    assert state == [(None,)]  # ... without the pull's cursor, which rides with its last batch
    with open_store(db) as s:
        report, _ = pull(s, cfg)
        assert (report.new, report.duplicates) == (140, 100)
        assert ids(s) == ({e["eventId"] for e in evs}, 240)
        assert fake.position(s.get_state("trail", partition(0))[0]) == (0, 3)


@pytest.mark.slow  # kill -9 of a process
def test_kill_9_before_a_drained_parent_is_committed_loses_nothing(tmp_path):
    with FakeSLS(PROJECT, LOGSTORE, shards=1) as fake:
        evs = events("a", 60)
        fake.add_events(0, evs, group_size=20, receive_time=received(evs))
        fake.split(0)
        cfg = source(fake, batch_size=1)  # one group, one batch, one cursor per pull
        db = tmp_path / "s.duckdb"
        # killed once the reader has moved on to the children: the parent's empty pull is behind it
        # killed once the reader has seen the parent run dry (its fourth, empty pull), while the
        # writer is still on the first group
        _kill_after_commits(db, cfg, commits=1, ready=lambda: len(fake.of("pull_logs", shard=0)) >= 4)
        with open_store(db) as s:
            pull(s, cfg)
            assert ids(s) == ({e["eventId"] for e in evs}, 60)


# -- status -----------------------------------------------------------------------------------------
def test_status_shows_each_shard_partition_and_the_last_error(tmp_path, fake):
    spread(fake, events("a", 80), [0, 1, 2, 3], group_size=5)
    spread(fake, events("b", 30), [1], group_size=5)
    cfg = config_file(tmp_path, fake)
    with open_store(tmp_path / "s.duckdb") as s:  # the CLI would hit the shared-connection race
        assert pull(s, source(fake))[0].new == 110
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    rows = {s["partition"]: s for s in status["sources"] if s["source"] == "trail"}
    assert set(rows) == {partition(s) for s in range(4)}
    for shard, row in enumerate(rows[partition(s)] for s in range(4)):
        expected = 50 if shard == 1 else 20
        assert row["events"] == expected and row["watermark"] is not None and row["cursor"]
        assert 0 < row["lag_seconds"] < 3600 and row["last_error"] is None
        assert row["events_last_hour"] == expected  # per shard, not the source's total
        assert row["cursor_time"] is not None  # the receive time of the last pull read
    text = run_cli("--config", str(cfg), "status").stdout
    assert "cursor_time" in text and partition(3) in text

    fake.fail_next("list_shards", 401, "Unauthorized")
    assert run_cli("--config", str(cfg), "ingest", "--source", "trail").returncode == 1
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    errors = [s for s in status["sources"] if s["source"] == "trail" and s["last_error"]]
    assert len(errors) == 1 and credentials.ID_ENV in errors[0]["last_error"] and errors[0]["last_error_at"]
    assert SECRET not in json.dumps(status)
    assert {s["partition"] for s in status["sources"] if s["source"] == "trail"} >= set(rows)

    # a shard that fails is named: the error is on its row
    fake.fail_next("pull_logs", 403, "Unauthorized", shard=2)
    assert run_cli("--config", str(cfg), "ingest", "--source", "trail").returncode == 1
    status = json.loads(run_cli("--config", str(cfg), "status", "--format", "json").stdout)
    errors = {s["partition"]: s["last_error"] for s in status["sources"] if s["source"] == "trail" and s["last_error"]}
    assert list(errors) == [partition(2)], errors


def test_a_run_whose_source_failed_is_recorded_as_failed(tmp_path, fake):
    cfg = config_file(tmp_path, fake)
    fake.fail_next("list_shards", 401, "Unauthorized")
    assert run_cli("--config", str(cfg), "ingest", "--source", "trail").returncode == 1
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    status, error = con.execute("SELECT status, error FROM runs ORDER BY id DESC LIMIT 1").fetchall()[0]
    con.close()
    assert status == "failed" and error and credentials.ID_ENV in error


def test_a_later_successful_run_clears_the_last_error(store, fake1):
    fake = fake1
    spread(fake, events("a", 20), [0], group_size=5)
    cfg = source(fake)
    fake.fail_next("list_shards", 401, "Unauthorized")
    [failed] = ingest_sources(store, [("trail", cfg)], NOBODY)
    assert failed.error is not None
    [ok] = ingest_sources(store, [("trail", cfg)], NOBODY)
    assert ok.error is None and ok.report is not None and ok.report.new == 20
    errors = store.con.execute("SELECT partition, last_error FROM ingest_state WHERE last_error IS NOT NULL")
    assert errors.fetchall() == []
