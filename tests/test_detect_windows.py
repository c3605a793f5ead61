"""The window a plain ``detect`` scores, with implausible or scattered event times (issue 13 item 5).

One event from long ago in a file beside today's incident must not drag the window (and the
baselines it is scored against) back to its day; an event at year 1 or 9999 in a store written
before ingest refused such times must not make every later detect fail.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from models.inventory import Attributor, Inventory
from pipeline.core.config import Config
from pipeline.detection.detect import MAX_SPANS, run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.events import EVENT_COLUMNS
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store
from tests.conftest import ram_user_event, run_cli, write_ndjson

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
INVENTORY = Inventory.model_validate({"agents": [
    {"name": "office", "purpose": "reports", "owner": "finance", "environment": "production",
     "identities": ["ram-user:office-user"]}]})  # no declared hours: only its learned ones tell


def _ingest(store: Store, path: Path, events: list[dict]) -> None:
    write_ndjson(path, events)
    report = ingest_files(store, [path], Attributor(INVENTORY))
    assert report.new == len(events), report


def _office_history(first: date, days: int) -> list[dict]:
    """Weekdays at 10:00 and 15:00 local, the office's only hours."""
    out = []
    for d in range(days):
        day = first + timedelta(days=d)
        if day.weekday() < 5:
            for hour in (10, 15):
                when = datetime(day.year, day.month, day.day, hour, tzinfo=TZ)
                out.append(ram_user_event(f"00000000-0000-4000-8000-{len(out):012d}", "office-user", when))
    return out


def test_an_old_event_beside_an_odd_hours_incident_does_not_hide_it(tmp_path: Path, store: Store) -> None:
    _ingest(store, tmp_path / "history.ndjson", _office_history(date(2026, 10, 26), 28))
    run_detect(store, Config(timezone=TZ_NAME), INVENTORY)  # the history is scored: nothing odd
    assert list_findings(store, detector="odd_hours") == []
    incident = ram_user_event("00000000-0000-4000-9000-000000000001", "office-user",
                              datetime(2026, 11, 24, 3, 10, tzinfo=TZ))  # Tuesday 03:10 local
    stray = ram_user_event("00000000-0000-4000-9000-000000000002", "office-user",
                           datetime(2020, 1, 1, 12, 0, tzinfo=UTC))  # an old event in the same file
    _ingest(store, tmp_path / "incident.ndjson", [stray, incident])
    report = run_detect(store, Config(timezone=TZ_NAME), INVENTORY)
    found = list_findings(store, detector="odd_hours")
    assert [f["event_ids"] for f in found] == [[incident["eventId"]]], [f["summary"] for f in found]
    assert found[0]["evidence"]["baseline"]["learned"] is True  # judged against the weeks before it
    assert len(report.spans) == 2 and report.spans[0][0].year == 2020  # the stray day, scored alone


def _insert_raw_time(store: Store, event_id: str, when: str) -> None:
    """What a store written before ingest refused implausible times may hold."""
    columns = [c for c in EVENT_COLUMNS if c not in ("event_id", "event_time")] + ["agent", "source", "ingested_at"]
    store.con.execute(
        f"INSERT INTO events_hot (event_id, event_time, {', '.join(columns)}) "
        f"SELECT ?, CAST(? AS TIMESTAMPTZ), {', '.join(columns[:-1])}, now() FROM events LIMIT 1", [event_id, when])


def test_year_1_and_9999_in_the_store_never_break_detect(tmp_path: Path, store: Store) -> None:
    history = _office_history(date(2026, 11, 2), 7)
    _ingest(store, tmp_path / "history.ndjson", history)
    _insert_raw_time(store, "far-future", "9999-12-31 23:59:59.999999+00")
    _insert_raw_time(store, "year-one", "0001-01-01 00:00:00+00")
    report = run_detect(store, Config(timezone=TZ_NAME), INVENTORY)
    assert report.events == len(history)  # the real events were scored, the others ignored
    assert run_detect(store, Config(timezone=TZ_NAME), INVENTORY).since is None  # and not again
    whole = run_detect(store, Config(timezone=TZ_NAME), INVENTORY, since=datetime(1, 1, 1, tzinfo=UTC),
                       until=datetime.max.replace(tzinfo=UTC))
    assert whole.events == len(history)
    assert run_detect(store, Config(timezone=TZ_NAME), INVENTORY, until=datetime(2026, 11, 5, tzinfo=UTC)).events > 0


def test_detect_from_the_cli_with_extreme_times_in_the_store(tmp_path: Path, store: Store) -> None:
    _ingest(store, tmp_path / "history.ndjson", _office_history(date(2026, 11, 2), 3))
    _insert_raw_time(store, "far-future", "9999-12-31 23:59:59.999999+00")
    store.close()
    (tmp_path / "agents.yaml").write_text(json.dumps(INVENTORY.model_dump(mode="json", exclude_none=True)),
                                          encoding="utf-8")
    (tmp_path / "tw.yaml").write_text(f"timezone: {TZ_NAME}\ninventory: agents.yaml\n", encoding="utf-8")
    for args in ([], ["--since", "0001-01-01", "--until", "9999-12-31T23:59:59Z"]):
        result = run_cli("--config", "tw.yaml", "--db", "store.duckdb", "detect", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr


def test_scattered_late_events_are_scored_in_a_bounded_number_of_stretches(tmp_path: Path, store: Store) -> None:
    events = [ram_user_event(f"00000000-0000-4000-8000-{i:012d}", "office-user",
                             datetime(2025, 1, 6, 2, tzinfo=UTC) + timedelta(days=7 * i)) for i in range(45)]
    _ingest(store, tmp_path / "weekly.ndjson", events)
    report = run_detect(store, Config(timezone=TZ_NAME), INVENTORY)
    assert report.events == 45 and len(report.spans) == MAX_SPANS
