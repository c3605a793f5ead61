"""backtest: what each detector would have raised, day by day, without touching the store.

Most tests replay the demo month (the shared ``demo_checkout``'s store, built once): every planted incident
shows on its day under its detector and agent; the counts add up in every format; the day-by-day
findings are the ones ``detect`` run on each day would have stored; a tuned copy of the config
lowers a detector's counts; the store file is byte-for-byte the same afterwards. A small store
checks the day boundary: a burst across midnight counts once, on the day it was first raised.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.base import Finding
from detectors.odd_hours import OddHours
from models.inventory import Attributor, Inventory
from pipeline.core.config import Config, load_config
from pipeline.demo import synthetic
from pipeline.demo.build import demo_inventory
from pipeline.detection.backtest import Dedup, run_backtest
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.run import ingest_files
from pipeline.store.store import Store, open_store
from tests.conftest import ROOT, run_cli, write_ndjson

CONFIG_PATH = ROOT / "config" / "trailwarden.yaml"
CONFIG = load_config(CONFIG_PATH)
MAX_STRAY = 2  # as tests/test_realistic_month.py allows over its 8 days
TABLES = ("events", "findings", "baselines", "runs", "pipeline_state", "alerts")

# where each planted incident must show up: its agent, under at least these detectors
EXPECTED = {"stolen-ci-key": {"odd_hours", "out_of_scope"}, "secret-enumeration": {"failure_storm", "out_of_scope"},
            "stop-logging": {"audit_tampering", "odd_hours"}, "expired-vendor": {"expired_agent"},
            "unregistered-user": {"unregistered_identity"}, "root-signin": {"unregistered_identity"},
            "etl-at-night": {"odd_hours"}, "cross-account-role": {"cross_account"},
            "undeclared-account": {"cross_account"}}
# agents an incident acts through besides its own: the production role the staging key assumed
# (a backtest keeps findings in memory, so they carry no origin_agent to tie them to it)
THROUGH = {"cross-account-role": ("prod-deploy-role",)}


class Demo:
    def __init__(self, db: Path):
        self.db = db
        with open_store(db, read_only=True) as store:
            row = store.con.execute("SELECT max(event_time) FROM events").fetchall()[0]
        self.end = row[0].astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        self.since = self.end - timedelta(days=30)
        self._json: dict[str, Any] | None = None

    def cli(self, *args: str, config: Path = CONFIG_PATH) -> Any:
        return run_cli("--config", str(config), "--db", str(self.db), "backtest", *args)

    def window(self, days: int = 30) -> list[str]:
        return ["--since", f"{self.end - timedelta(days=days):%Y-%m-%d}", "--until", f"{self.end:%Y-%m-%d}"]

    @property
    def month(self) -> dict[str, Any]:
        """The whole month, as ``--format json`` (run once)."""
        if self._json is None:
            result = self.cli(*self.window(), "--format", "json")
            assert result.returncode == 0, result.stderr
            self._json = json.loads(result.stdout)
        return self._json


@pytest.fixture(scope="module")
def demo(demo_checkout: Path) -> Demo:
    return Demo(demo_checkout / "data" / "trailwarden.duckdb")  # 30 days, seed 7; the last 8 days detected


def fingerprint(db: Path) -> tuple[Any, ...]:
    """The store file's bytes, the files beside it, and every table's row count."""
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    beside = sorted(p.name for p in db.parent.iterdir() if p.is_file())
    with open_store(db, read_only=True) as store:
        counts = tuple(store.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES)
        state = store.con.execute("SELECT name, value FROM pipeline_state ORDER BY name").fetchall()
    return digest, beside, counts, state


# -- planted incidents ---------------------------------------------------------------------------------
@pytest.mark.slow  # backtest over the demo's month, end to end
@pytest.mark.parametrize("incident", synthetic.INCIDENTS, ids=[i.key for i in synthetic.INCIDENTS])
def test_each_planted_incident_shows_on_its_day(demo: Demo, incident: synthetic.Incident) -> None:
    start, stop = synthetic.incident_window(incident, demo.end)
    found = [f for f in demo.month["findings"] if f["agent"] == incident.agent
             and start <= datetime.fromisoformat(f["first_seen"]) < stop]
    assert EXPECTED[incident.key] <= {f["detector"] for f in found}, (incident.key, found)
    days = {d["day"]: d for d in demo.month["days"]}
    for f in found:
        assert f["day"] == f["first_seen"][:10]  # raised on the UTC day it happened
        assert days[f["day"]]["counts"][f["detector"]] >= 1
        assert days[f["day"]]["by_agent"][incident.agent][f["detector"]] >= 1


@pytest.mark.slow  # backtest over the demo's month, end to end
def test_benign_days_raise_next_to_nothing(demo: Demo) -> None:
    """Per-day baselines do not flood the month: at most a couple of findings are not a planted
    incident's (a late evening of the admin's, depending on how the weekdays fall)."""
    windows = [(agent, *synthetic.incident_window(i, demo.end)) for i in synthetic.INCIDENTS
               for agent in (i.agent, *THROUGH.get(i.key, ()))]
    stray = [f for f in demo.month["findings"]
             if not any(f["agent"] == agent and start <= datetime.fromisoformat(f["first_seen"]) < stop
                        for agent, start, stop in windows)]
    assert len(stray) <= MAX_STRAY, stray


# -- writes nothing ------------------------------------------------------------------------------------
@pytest.mark.slow  # backtest over the demo's month, end to end
def test_the_store_is_unchanged(demo: Demo) -> None:
    """The default table over the month: read-only, nothing written, not even a WAL file."""
    before = fingerprint(demo.db)
    assert before[2][1] > 0 and before[2][2] > 0 and before[2][3] > 0  # the demo detected, fitted, ran
    result = demo.cli(*demo.window())
    assert result.returncode == 0, result.stderr
    assert fingerprint(demo.db) == before
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("day "))
    assert header.split() == ["day", "events", *demo.month["detectors"], "total"]
    assert sum(line[:10].count("-") == 2 and line[:4].isdigit() for line in lines) >= 30  # a row a day
    assert next(line for line in lines if line.startswith("total ")).split()[-1] == str(len(demo.month["findings"]))
    assert "By agent" in result.stdout and "Notes:" in result.stdout


# -- the numbers ---------------------------------------------------------------------------------------
@pytest.mark.slow  # backtest over the demo's month, end to end
def test_counts_add_up_in_every_format(demo: Demo) -> None:
    month = demo.month
    assert month["detectors"] == sorted(month["totals"])
    assert month["step"] == "1d" and len(month["days"]) == 30
    per_day = Counter[str]()
    for day in month["days"]:
        per_day.update(day["counts"])
        from_agents = Counter[str]()
        for counts in day["by_agent"].values():
            from_agents.update(counts)
        assert +from_agents == +Counter(day["counts"]), day["day"]
    assert dict(per_day) == month["totals"]
    assert sum(month["totals"].values()) == len(month["findings"]) > 0
    assert Counter(f["detector"] for f in month["findings"]) == +Counter(month["totals"])

    result = demo.cli(*demo.window(8), "--format", "csv")  # the last 8 days: the same as in the month
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and list(rows[0]) == ["day", "detector", "agent", "count"]
    week = Counter((f["day"], f["detector"], f["agent"]) for f in month["findings"]
                   if f["day"] >= f"{demo.end - timedelta(days=8):%Y-%m-%d}")
    assert {(r["day"], r["detector"], r["agent"]): int(r["count"]) for r in rows} == week


@pytest.mark.slow  # backtest over the demo's month, end to end
def test_each_week_reports_what_each_detector_raises_and_the_rate_at_medium_or_above(demo: Demo) -> None:
    """Issue 15's quality gate: per week, per detector, what was raised and what at medium or above,
    and the findings at medium or above per 100 agents per week; the text shows the same table."""
    month = demo.month
    weeks = month["weeks"]
    assert sum(w["days"] for w in weeks) == 30 and all(w["week"] <= d["day"] for w, d in
                                                       zip(weeks, month["days"][::7], strict=False))
    loud = [f for f in month["findings"] if f["severity"] in ("medium", "high", "critical")]
    assert sum(sum(w["medium_or_above"].values()) for w in weeks) == len(loud) > 0
    assert sum(sum(w["raised"].values()) for w in weeks) == len(month["findings"])
    for w in weeks:
        assert w["agents"] > 0 and set(w["raised"]) == set(month["detectors"])
        expected = sum(w["medium_or_above"].values()) * 100 / w["agents"] * 7 / w["days"]
        assert w["medium_or_above_per_100_agents_per_week"] == round(expected, 2)
    text = demo.cli(*demo.window()).stdout
    assert "By week (raised / at medium or above; the rate is medium or above per 100 agents per week):" in text
    assert f"{weeks[-1]['medium_or_above_per_100_agents_per_week']:g}" in text.split("By week", 1)[1]


@pytest.mark.slow  # backtest over the demo's month, end to end
def test_days_are_what_detect_on_each_day_would_have_stored(demo: Demo, tmp_path: Path) -> None:
    """On a copy without findings, ``detect --since D --until D+1`` for each of the last 8 days
    stores exactly the findings the backtest counts (ids, agents and detectors)."""
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(demo.db, copy)
    since = demo.end - timedelta(days=8)
    with open_store(copy) as store:
        store.con.execute("DELETE FROM findings")
        day = since
        while day < demo.end:
            run_detect(store, CONFIG, demo_inventory(), since=day, until=day + timedelta(days=1))
            day += timedelta(days=1)
        stored = {f["id"]: (f["detector"], f["agent"]) for f in list_findings(store)}
        report = run_backtest(store, CONFIG, demo_inventory(), since=since, until=demo.end)
    assert {r.id: (r.detector, r.agent) for r in report.raised} == stored


@pytest.mark.slow  # backtest over the demo's month, end to end
def test_a_tuned_config_lowers_the_counts(demo: Demo, tmp_path: Path) -> None:
    tuned = tmp_path / "tuned.yaml"
    data = yaml.safe_load(CONFIG_PATH.read_text(encoding="utf-8"))
    data["inventory"] = str(ROOT / "config" / "agents.yaml")
    data["detectors"] = {"failure_storm": {"threshold": 1000}}
    tuned.write_text(yaml.safe_dump(data), encoding="utf-8")
    default = demo.month["totals"]["failure_storm"]
    assert default >= 1
    only = demo.cli(*demo.window(), "--detector", "failure_storm", "--format", "json")
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["totals"] == {"failure_storm": default}  # --detector only filters
    result = demo.cli(*demo.window(), "--detector", "failure_storm", "--format", "json", config=tuned)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"] == {"failure_storm": 0}


@pytest.mark.slow  # backtest over the demo's month, end to end
def test_active_suppressions_are_marked_not_hidden(demo: Demo, tmp_path: Path) -> None:
    """A suppression for the ETL role's night reads: the backtest still counts its finding (the
    detector raised it) but marks it, says how many in the header, and names the suppression."""
    db = tmp_path / "copy.duckdb"
    shutil.copy(demo.db, db)
    added = run_cli("--config", str(CONFIG_PATH), "--db", str(db), "suppress", "add", "--detector", "odd_hours",
                    "--agent", "etl-pipeline", "--reason", "monthly lake compaction", "--format", "json")
    assert added.returncode == 0, added.stderr
    sid = json.loads(added.stdout)["id"]
    result = run_cli("--config", str(CONFIG_PATH), "--db", str(db), "backtest", *demo.window(), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    marked = [f for f in report["findings"] if f["suppressed_by"]]
    assert marked and {(f["detector"], f["agent"], f["suppressed_by"]) for f in marked} == {
        ("odd_hours", "etl-pipeline", sid)}
    assert report["totals"] == demo.month["totals"] and report["suppressed"] == len(marked)
    assert any(sid in n and "monthly lake compaction" in n for n in report["notes"])
    assert demo.month["suppressed"] == 0 and not any(f["suppressed_by"] for f in demo.month["findings"])
    table = run_cli("--config", str(CONFIG_PATH), "--db", str(db), "backtest", *demo.window())
    assert f"{len(marked)} of them covered by active suppressions" in table.stdout.splitlines()[0]


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "flag"), [
    (["--since", "2026-11-20", "--until", "2026-11-10"], "--since"),
    (["--since", "2026-11-20T10:00:00Z", "--until", "2026-11-20T09:00:00Z"], "--since"),
    (["--since", "2020-01-01", "--until", "2020-02-01"], "--since"),
    (["--since", "30d", "--detector", "no_such_detector"], "--detector"),
    (["--since", "30d", "--step", "fortnight"], "--step"),
    (["--since", "30d", "--step", "10m"], "--step"),
    (["--since", "yesterday-ish"], "--since"),
], ids=["since-after-until", "same-day-reversed", "no-events", "unknown-detector", "bad-step", "short-step",
        "bad-time"])
def test_bad_input_exits_2_with_one_line(demo: Demo, args: list[str], flag: str) -> None:
    result = demo.cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0], result.stderr
    assert not result.stdout


def test_help_has_examples() -> None:
    result = run_cli("backtest", "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "--config tuned.yaml backtest" in result.stdout


# -- the day boundary, on a small store -----------------------------------------------------------------
AGENT = {"name": "ci", "purpose": "deploys", "owner": "platform", "environment": "prod",
         "identities": ["ram-user:ci-deploy"], "hours": {"days": "mon-fri", "from": "09:00", "to": "17:00"},
         "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}]}
MIDNIGHT = datetime(2026, 11, 3, tzinfo=UTC)  # Monday night into Tuesday


def _at(make_event: Any, n: int, when: datetime, **extra: Any) -> dict[str, Any]:
    return make_event(n, eventTime=when.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra)


@pytest.fixture
def night(store: Store, tmp_path: Path, make_event: Any) -> tuple[Store, Inventory]:
    """An agent working 09-17 on weekdays: a normal Monday, then 23:30-00:30 (odd on both days)
    with 6 refused calls either side of midnight (a storm only when seen whole)."""
    inventory = Inventory.model_validate({"agents": [AGENT]})
    events = [_at(make_event, i, MIDNIGHT - timedelta(hours=12, minutes=-i)) for i in range(10)]
    events += [_at(make_event, 100 + i, MIDNIGHT + timedelta(minutes=5 * i - 30)) for i in range(13)]
    events += [_at(make_event, 200 + i, MIDNIGHT + timedelta(seconds=20 * i - 120), errorCode="NoPermission",
                   errorMessage="denied") for i in range(12)]
    write_ndjson(tmp_path / "night.jsonl", events)
    ingest_files(store, [tmp_path / "night.jsonl"], Attributor(inventory))
    return store, inventory


def test_a_burst_across_midnight_counts_once_on_its_first_day(night: tuple[Store, Inventory]) -> None:
    store, inventory = night
    before = [store.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES]
    report = run_backtest(store, Config(), inventory, since=MIDNIGHT - timedelta(days=2), until=MIDNIGHT + timedelta(days=1))
    counts = {p: dict(+c) for p, c in report.counts().items()}
    # the odd hour and the refused calls were raised on Monday and go on into Tuesday: counted once,
    # on Monday; the storm is one only when both halves are seen together, so Tuesday raises it
    assert counts == {MIDNIGHT - timedelta(days=2): {}, MIDNIGHT - timedelta(days=1): {"odd_hours": 1, "out_of_scope": 1},
                      MIDNIGHT: {"failure_storm": 1}}
    odd = next(r for r in report.raised if r.detector == "odd_hours")
    assert odd.first_seen == MIDNIGHT - timedelta(minutes=30) and odd.last_seen == MIDNIGHT + timedelta(minutes=30)
    refused = next(r for r in report.raised if r.detector == "out_of_scope")
    assert refused.period == MIDNIGHT - timedelta(days=1) and len(refused.event_ids) == 12
    storm = next(r for r in report.raised if r.detector == "failure_storm")
    assert storm.first_seen < MIDNIGHT <= storm.last_seen and len(storm.event_ids) == 12  # seen whole, on day 2
    assert [store.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES] == before


def test_a_failing_detector_is_reported_for_its_day(night: tuple[Store, Inventory], monkeypatch: Any) -> None:
    store, inventory = night
    real = OddHours.score

    def flaky(self: OddHours, events: Any, models: Any, now: datetime) -> list[Finding]:
        if now == MIDNIGHT:
            raise RuntimeError("boom")
        return real(self, events, models, now)

    monkeypatch.setattr(OddHours, "score", flaky)
    report = run_backtest(store, Config(), inventory, since=MIDNIGHT - timedelta(days=1), until=MIDNIGHT + timedelta(days=1))
    first, second = report.periods
    assert first.errors == {"odd_hours": "RuntimeError: boom"} and not second.errors
    assert report.totals()["failure_storm"] == 1  # the others still ran
    assert any("odd_hours failed" in note and "RuntimeError: boom" in note for note in report.notes)


def test_dedup_merges_as_save_findings_does() -> None:
    def finding(first: datetime, minutes: int, key: str = "k") -> Finding:
        return Finding("odd_hours", "ci", "medium", 0.5, first, first + timedelta(minutes=minutes), "s",
                       [f"{first}-{minutes}"], {}, key)

    dedup = Dedup({"odd_hours": timedelta(hours=1)})
    assert dedup.add(finding(MIDNIGHT, 10), MIDNIGHT) is not None
    assert dedup.add(finding(MIDNIGHT + timedelta(minutes=50), 5), MIDNIGHT + timedelta(days=1)) is None  # within 1h
    assert dedup.add(finding(MIDNIGHT + timedelta(minutes=50), 5, key="other"), MIDNIGHT) is not None
    assert dedup.add(finding(MIDNIGHT + timedelta(hours=3), 5), MIDNIGHT) is not None  # beyond the window
    merged = dedup.raised[0]
    assert merged.period == MIDNIGHT and merged.last_seen == MIDNIGHT + timedelta(minutes=55)
    assert len(merged.event_ids) == 2 and len(dedup.raised) == 3
