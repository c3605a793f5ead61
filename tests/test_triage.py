"""Triage: the finding lifecycle, suppressions, Slack following both, stats, and the YAML form.

Slack is ``tests.fakes.slack.FakeSlack`` driven by the real ``slack_sdk`` client, as in
tests/alerting; the store is real DuckDB; the commands run as a user runs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.base import Finding
from models.inventory import Attributor, Inventory
from pipeline.core.times import utcnow
from pipeline.detection.findings import list_findings, save_findings
from pipeline.ingest.run import ingest_files
from pipeline.service.alerting.messages import replay_hint
from pipeline.service.alerting.outbox import deliver, enqueue
from pipeline.service.alerting.slack import TOKEN_ENV, SlackSender
from pipeline.store.store import Store, open_store
from pipeline.triage.lifecycle import (
    Suppression,
    add_suppression,
    finding_stats,
    new_suppression_id,
    set_status,
)
from tests.conftest import BASE_EVENT, assert_one_line_error, run_cli, write_ndjson
from tests.fakes.slack import FakeSlack

TOKEN = "xoxb-test-secret-token"
CHANNEL = "#sec-alerts"
AGENTS: list[dict[str, Any]] = [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"],
     "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:Describe*", "Resource": "*"}]}]},
    {"name": "backup-job", "purpose": "Nightly backups", "owner": "sre", "environment": "production",
     "identities": ["ram-user:backup"]},
]
INVENTORY = Inventory.model_validate({"agents": AGENTS})
NOW = utcnow().replace(microsecond=0)
T0 = NOW - timedelta(days=2)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", TOKEN_ENV, "TRAILWARDEN_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def config(tmp_path: Path) -> Path:
    inventory = tmp_path / "agents.yaml"
    inventory.write_text(yaml.safe_dump({"agents": AGENTS}), encoding="utf-8")
    path = tmp_path / "trailwarden.yaml"
    path.write_text(yaml.safe_dump({"database": str(tmp_path / "store.duckdb"), "inventory": str(inventory)}),
                    encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as store:
        yield store


def finding(key: str = "ecs:stopinstance", *, agent: str = "ci-deployer", detector: str = "out_of_scope",
            events: list[str] | None = None, start: datetime = T0, severity: str = "critical") -> Finding:
    ids = events if events is not None else [f"ev-{agent}-{key}-{i}" for i in range(2)]
    return Finding(detector=detector, agent=agent, severity=severity, score=0.9, first_seen=start,
                   last_seen=start + timedelta(minutes=max(len(ids) - 1, 0)),
                   summary=f"{agent} called {key} outside its declared scope", event_ids=ids,
                   evidence={"action": key, "count": len(ids)}, dedup_key=key)


def save(store: Store, *findings: Finding) -> None:
    save_findings(store, list(findings), {})


def suppression(detector: str = "out_of_scope", **kw: Any) -> Suppression:
    kw.setdefault("reason", "expected")
    kw.setdefault("created_by", "alice")
    kw.setdefault("created_at", NOW - timedelta(hours=1))
    kw.setdefault("expires_at", NOW + timedelta(days=1))
    return Suppression(id=new_suppression_id(), detector=detector, **kw)


def ingest(store: Store, tmp_path: Path, events: list[dict[str, Any]]) -> None:
    ingest_files(store, [write_ndjson(tmp_path / f"batch-{events[0]['eventId']}.ndjson", events)],
                 Attributor(INVENTORY))


def event(n: int, name: str, ip: str = "203.0.113.7", **kw: Any) -> dict[str, Any]:
    return {**BASE_EVENT, "eventId": f"00000000-0000-4000-8000-{n:012d}", "eventName": name, "eventRW": "Write",
            "sourceIpAddress": ip, "eventTime": (T0 + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"), **kw}


def sender(fake: FakeSlack) -> SlackSender:
    return SlackSender(TOKEN, CHANNEL, fake.base_url, sleep=lambda _s: None)


def alert_run(store: Store, fake: FakeSlack) -> Any:
    s = sender(fake)
    enqueue(store, s.destination, "medium")
    return deliver(store, s, INVENTORY, replay_hint, sleep=lambda _s: None)


def text_of(message: Any) -> str:
    return json.dumps(message.blocks) + (message.text or "")


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("--config", str(config), *args, env=env)



def usage_error(result: Any, *needles: str) -> str:
    return assert_one_line_error(result, 2, *needles)


# -- the lifecycle ---------------------------------------------------------------------------------
def test_ack_then_resolve_records_who_when_why_and_keeps_the_whole_history(config, db):
    a, b = finding("ecs:stopinstance"), finding("ecs:deleteinstance")
    save(db, a, b)
    db.close()
    acked = cli(config, "findings", "ack", a.id[:8], "--by", "alice", "--reason", "looking into it")
    assert acked.returncode == 0, acked.stderr
    assert f"{a.id}: open -> acknowledged" in acked.stdout
    resolved = cli(config, "findings", "resolve", a.id, "--by", "bob", "--reason", "key rotated")
    assert f"{a.id}: acknowledged -> resolved" in resolved.stdout

    shown = json.loads(cli(config, "findings", "show", a.id[:10], "--format", "json").stdout)
    assert shown["status"] == "resolved"
    assert [(h["old_status"], h["new_status"], h["changed_by"], h["reason"]) for h in shown["history"]] == [
        ("open", "acknowledged", "alice", "looking into it"), ("acknowledged", "resolved", "bob", "key rotated")]
    assert all(h["changed_at"].endswith("Z") for h in shown["history"])

    default = json.loads(cli(config, "findings", "--format", "json").stdout)
    assert [f["id"] for f in default] == [b.id]  # the default listing: what is still open
    done = json.loads(cli(config, "findings", "--status", "resolved", "--format", "json").stdout)
    assert [f["id"] for f in done] == [a.id]
    everything = json.loads(cli(config, "findings", "--status", "all", "--format", "json").stdout)
    assert {f["id"] for f in everything} == {a.id, b.id}


def test_the_same_status_twice_changes_nothing(db):
    f = finding()
    save(db, f)
    first = set_status(db, [f.id], "acknowledged", by="alice", reason="on it")
    again = set_status(db, [f.id], "acknowledged", by="bob", reason="me too")
    assert first[0].change_id is not None and again[0].change_id is None
    assert db.con.execute("SELECT count(*) FROM finding_status_changes").fetchall()[0][0] == 1


def test_unknown_ambiguous_or_too_short_ids_exit_2_naming_them_and_change_nothing(config, db):
    f = finding()
    save(db, f)
    db.close()
    result = cli(config, "findings", "false-positive", f.id, "deadbeef99", "--by", "a", "--reason", "r")
    usage_error(result, "deadbeef99", "no such finding")
    short = cli(config, "findings", "ack", f.id[:3], "--reason", "r")
    usage_error(short, repr(f.id[:3]), "at least 6")
    listed = json.loads(cli(config, "findings", "--status", "all", "--format", "json").stdout)
    assert [x["status"] for x in listed] == ["open"]  # all or nothing: the valid id was not changed
    empty = cli(config, "findings", "resolve", f.id, "--reason", "  ")
    usage_error(empty, "--reason")


# -- Slack follows the lifecycle -------------------------------------------------------------------
def test_a_false_positive_mark_is_a_reply_in_the_alert_thread_once(db, slack):
    f = finding()
    save(db, f)
    alert_run(db, slack)
    [alert] = slack.top_level()
    set_status(db, [f.id], "false_positive", by="alice", reason="scheduled DR drill")
    report = alert_run(db, slack)
    assert report.status_sent == 1
    [reply] = slack.replies(alert.ts)
    body = text_of(reply)
    assert "false positive" in body and "alice" in body and "scheduled DR drill" in body and f.id in body
    alert_run(db, slack)
    assert len(slack.replies()) == 1 and len(slack.top_level()) == 1  # said once
    # a false positive that grows is not news: no thread update
    save(db, finding(events=[f"ev-ci-deployer-ecs:stopinstance-{i}" for i in range(5)]))
    alert_run(db, slack)
    assert len(slack.replies()) == 1
    assert [x["status"] for x in list_findings(db)] == ["false_positive"]


def test_an_acknowledged_finding_still_reports_growth_and_the_ack_comes_first(db, slack):
    f = finding()
    save(db, f)
    alert_run(db, slack)
    set_status(db, [f.id], "acknowledged", by="alice", reason="on it")
    save(db, finding(events=[f"ev-ci-deployer-ecs:stopinstance-{i}" for i in range(4)]))
    alert_run(db, slack)
    replies = [text_of(m) for m in slack.replies(slack.top_level()[0].ts)]
    assert len(replies) == 2
    assert any("Acknowledged" in r and "alice" in r for r in replies)
    assert any("2 more events" in r for r in replies)


def test_a_reason_with_slack_markup_is_inert(db, slack):
    f = finding()
    save(db, f)
    alert_run(db, slack)
    set_status(db, [f.id], "resolved", by="<!channel>", reason="see <http://evil.example|here> & <@U123>")
    alert_run(db, slack)
    body = text_of(slack.replies()[0])
    assert "<!channel>" not in body and "<http://evil" not in body and "<@U123>" not in body
    assert "&lt;!channel&gt;" in body


def test_a_finding_firing_again_after_it_was_resolved_is_a_new_alert_naming_the_earlier_one(db, slack):
    first = finding(events=["e1", "e2"])
    save(db, first)
    alert_run(db, slack)
    set_status(db, [first.id], "resolved", by="bob", reason="access removed")
    save(db, finding(events=["e1", "e2"]))  # the same events scored again: settled, nothing new
    assert len(list_findings(db)) == 1
    save(db, finding(events=["e1", "e2", "e3"]))  # a new event inside the dedup window: it is back
    rows = {f["id"]: f for f in list_findings(db)}
    assert len(rows) == 2 and rows[first.id]["status"] == "resolved"
    [again] = [f for f in rows.values() if f["id"] != first.id]
    assert again["status"] == "open" and again["event_ids"] == ["e3"]
    assert again["evidence"]["fires_again_after"]["finding"] == first.id
    assert again["evidence"]["fires_again_after"]["resolved_by"] == "bob"
    previous = db.con.execute("SELECT previous_id FROM findings WHERE id = ?", [again["id"]]).fetchall()[0][0]
    assert previous == first.id
    alert_run(db, slack)
    top = slack.top_level()
    assert len(top) == 2 and first.id[:12] in text_of(top[1]) and again["id"] in text_of(top[1])
    save(db, finding(events=["e1", "e2", "e3", "e4"]))  # grows the re-fire, no third finding
    assert len(list_findings(db)) == 2
    assert sorted(next(f for f in list_findings(db) if f["id"] == again["id"])["event_ids"]) == ["e3", "e4"]


# -- suppressions ----------------------------------------------------------------------------------
def test_a_suppressed_match_is_stored_with_the_suppression_but_never_posted(db, slack, tmp_path):
    ingest(db, tmp_path, [event(1, "StopInstance"), event(2, "StopInstance"), event(3, "DeleteInstance")])
    rule = suppression(agent="ci-deployer", action="ecs:Stop*")
    add_suppression(db, rule)
    stop = finding("ecs:stopinstance", events=["00000000-0000-4000-8000-000000000001",
                                               "00000000-0000-4000-8000-000000000002"])
    delete = finding("ecs:deleteinstance", events=["00000000-0000-4000-8000-000000000003"])
    save(db, stop, delete)
    rows = {f["id"]: f for f in list_findings(db)}
    assert rows[stop.id]["status"] == "suppressed" and rows[delete.id]["status"] == "open"
    assert db.con.execute("SELECT suppression_id FROM findings WHERE id = ?", [stop.id]).fetchall()[0][0] == rule.id
    alert_run(db, slack)
    posted = " ".join(text_of(m) for m in slack.top_level())
    assert delete.id in posted and stop.id not in posted


def test_a_narrowed_suppression_covers_a_finding_only_when_every_event_matches(db, tmp_path):
    ingest(db, tmp_path, [event(1, "StopInstance", ip="10.1.2.3"), event(2, "StopInstance", ip="198.51.100.9"),
                          event(3, "StopInstance", ip="10.9.9.9", errorCode="Forbidden.RAM")])
    add_suppression(db, suppression(source_cidr="10.0.0.0/8"))
    add_suppression(db, suppression(error_code="Throttling"))
    mixed = finding("a", events=["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"])
    inside = finding("b", events=["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000003"])
    wrong_code = finding("c", events=["00000000-0000-4000-8000-000000000003"], detector="failure_storm")
    save(db, mixed, inside, wrong_code)
    status = {f["id"]: f["status"] for f in list_findings(db)}
    assert status == {mixed.id: "open", inside.id: "suppressed", wrong_code.id: "open"}


def test_expiry_re_enables_alerting(db, slack):
    rule = suppression(agent="ci-deployer")
    add_suppression(db, rule)
    save(db, finding("ecs:stopinstance"))
    alert_run(db, slack)
    assert slack.top_level() == []
    # time passes: the suppression's 90 days (here, a day) are over
    db.con.execute("UPDATE suppressions SET expires_at = ? WHERE id = ?", [utcnow() - timedelta(seconds=1), rule.id])
    later = finding("ecs:deleteinstance", start=T0 + timedelta(hours=3))
    save(db, later)
    alert_run(db, slack)
    [message] = slack.top_level()
    assert later.id in text_of(message)


def test_a_suppression_for_a_whole_detector_needs_force_and_says_what_it_would_hide(config, db):
    save(db, *(finding(f"k{i}", detector="odd_hours", start=NOW - timedelta(days=i + 1)) for i in range(3)),
         finding("old", detector="odd_hours", start=NOW - timedelta(days=45)))
    db.close()
    refused = cli(config, "suppress", "add", "--detector", "odd_hours", "--reason", "noisy", "--by", "bob")
    usage_error(refused, "--force", "every odd_hours finding", "3 in the last 30 days")
    assert "sup-" not in cli(config, "suppress", "list").stdout
    forced = cli(config, "suppress", "add", "--detector", "odd_hours", "--reason", "noisy", "--by", "bob", "--force",
                 "--format", "json")
    assert forced.returncode == 0, forced.stderr
    added = json.loads(forced.stdout)
    assert added["would_have_hidden_30d"] == 3 and added["state"] == "active"
    expires = datetime.fromisoformat(added["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)  # never silently forever


@pytest.mark.parametrize(("flag", "value", "hidden"), [
    ("--source-ip", "0.0.0.0/0", 3), ("--source-ip", "::/0", 0), ("--action", "*", 3), ("--action", "*:*", 3)])
def test_a_filter_that_matches_everything_narrows_nothing(config, db, tmp_path, flag, value, hidden):
    ingest(db, tmp_path, [event(i, "StopInstance") for i in range(3)])
    save(db, *(finding(f"k{i}", detector="odd_hours", events=[f"00000000-0000-4000-8000-{i:012d}"])
               for i in range(3)))
    db.close()
    args = ("suppress", "add", "--detector", "odd_hours", flag, value, "--reason", "noisy", "--by", "bob")
    usage_error(cli(config, *args), "--force", "every odd_hours finding", f"{hidden} in the last 30 days",
                f"{value} matches everything")
    assert "sup-" not in cli(config, "suppress", "list").stdout
    forced = cli(config, *args, "--force", "--format", "json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["would_have_hidden_30d"] == hidden


def test_bad_suppressions_exit_2_naming_the_flag(config, db):
    save(db, finding())
    db.close()
    usage_error(cli(config, "suppress", "add", "--detector", "nosuch", "--agent", "ci-deployer", "--reason", "r"),
                   "--detector", "nosuch")
    usage_error(cli(config, "suppress", "add", "--detector", "odd_hours", "--agent", "ghost", "--reason", "r"),
                   "--agent", "ghost")
    usage_error(cli(config, "suppress", "add", "--detector", "odd_hours", "--source-ip", "10.0.0.999/8",
                       "--reason", "r"), "--source-ip")
    usage_error(cli(config, "suppress", "add", "--detector", "odd_hours", "--agent", "ci-deployer", "--until",
                       "someday", "--reason", "r"), "--until")
    usage_error(cli(config, "suppress", "remove", "sup-00000000", "--reason", "r"), "sup-00000000")


def test_suppress_list_all_is_the_audit_trail(config, db, clock):
    save(db, finding())
    db.close()
    added = cli(config, "suppress", "add", "--detector", "odd_hours", "--agent", "backup-job", "--reason",
                "DR week", "--by", "alice", "--until", "7d")
    sid = added.stdout.split(":")[0]
    expired = cli(config, "suppress", "add", "--detector", "out_of_scope", "--agent", "ci-deployer", "--reason",
                  "migration", "--by", "carol", "--until", "1s")
    assert expired.returncode == 0 and added.returncode == 0, (added.stderr, expired.stderr)
    removed = cli(config, "suppress", "remove", sid, "--by", "bob", "--reason", "drill over")
    assert removed.returncode == 0, removed.stderr
    usage_error(cli(config, "suppress", "remove", sid, "--reason", "again"), "already removed", "bob")
    clock.advance(seconds=2)  # the 1s suppression has ended
    active = json.loads(cli(config, "suppress", "list", "--format", "json").stdout)
    assert active == []
    trail = {s["id"]: s for s in json.loads(cli(config, "suppress", "list", "--all", "--format", "json").stdout)}
    assert trail[sid]["state"] == "removed" and trail[sid]["removed_by"] == "bob"
    assert trail[sid]["removed_reason"] == "drill over" and trail[sid]["removed_at"]
    assert [s["state"] for s in trail.values() if s["id"] != sid] == ["expired"]
    assert {s["created_by"] for s in trail.values()} == {"alice", "carol"}


def test_suppressions_round_trip_through_yaml(config, tmp_path):
    for args in (["--detector", "odd_hours", "--agent", "backup-job", "--until", "2030-01-31"],
                 ["--detector", "failure_storm", "--action", "ecs:Describe*", "--source-ip", "10.0.0.0/8",
                  "--error-code", "Throttling"]):
        result = cli(config, "suppress", "add", *args, "--reason", "expected: see ticket SEC-12", "--by", "alice")
        assert result.returncode == 0, result.stderr
    exported = tmp_path / "suppressions.yaml"
    assert cli(config, "suppress", "export", "-o", str(exported)).returncode == 0
    items = yaml.safe_load(exported.read_text())["suppressions"]
    assert {i["detector"] for i in items} == {"odd_hours", "failure_storm"}
    other = tmp_path / "other.duckdb"
    imported = run_cli("--config", str(config), "--db", str(other), "suppress", "import", str(exported))
    assert imported.returncode == 0, imported.stderr
    assert "2 added" in imported.stdout
    again = run_cli("--config", str(config), "--db", str(other), "suppress", "import", str(exported))
    assert "0 added, 0 updated, 2 unchanged" in again.stdout
    second = run_cli("--config", str(config), "--db", str(other), "suppress", "export").stdout
    assert second == exported.read_text()
    # reviewed like code: a change in the file updates the store
    items[0]["reason"] = "changed in review"
    exported.write_text(yaml.safe_dump({"suppressions": items}))
    changed = run_cli("--config", str(config), "--db", str(other), "suppress", "import", str(exported))
    assert "1 updated" in changed.stdout


def test_an_entry_without_an_id_is_matched_by_its_filters_on_the_next_import(config, tmp_path):
    path = tmp_path / "suppressions.yaml"
    entry = {"detector": "odd_hours", "agent": "backup-job", "reason": "DR week", "created_by": "alice"}
    path.write_text(yaml.safe_dump({"suppressions": [entry]}))
    assert "1 added" in cli(config, "suppress", "import", str(path), "--by", "bob").stdout
    again = cli(config, "suppress", "import", str(path), "--by", "bob")
    assert "0 added, 0 updated, 1 unchanged" in again.stdout, again.stdout
    path.write_text(yaml.safe_dump({"suppressions": [{**entry, "reason": "DR week, extended"}]}))
    assert "0 added, 1 updated" in cli(config, "suppress", "import", str(path), "--by", "bob").stdout
    active = json.loads(cli(config, "suppress", "list", "--format", "json").stdout)
    assert [(s["agent"], s["reason"]) for s in active] == [("backup-job", "DR week, extended")]


def test_import_refuses_a_broad_entry_naming_the_file_and_entry_unless_forced(config, tmp_path):
    path = tmp_path / "suppressions.yaml"
    path.write_text(yaml.safe_dump({"suppressions": [
        {"detector": "odd_hours", "agent": "backup-job", "reason": "DR week", "created_by": "alice"},
        {"id": "sup-0000b0ad", "detector": "out_of_scope", "source_cidr": "0.0.0.0/0", "action": "*",
         "reason": "quiet please", "created_by": "mallory"}]}))
    usage_error(cli(config, "suppress", "import", str(path), "--by", "bob"), str(path), "suppressions[1]",
                "sup-0000b0ad", "every out_of_scope finding", "--force")
    assert json.loads(cli(config, "suppress", "list", "--all", "--format", "json").stdout) == []  # nothing
    forced = cli(config, "suppress", "import", str(path), "--by", "bob", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "2 added" in forced.stdout


def test_an_import_that_changes_a_suppression_ends_it_and_adds_the_new_version(config, tmp_path):
    added = cli(config, "suppress", "add", "--detector", "odd_hours", "--agent", "backup-job", "--reason",
                "DR week", "--by", "alice", "--until", "2030-01-31")
    first = added.stdout.split(":")[0]
    path = tmp_path / "suppressions.yaml"
    assert cli(config, "suppress", "export", "-o", str(path)).returncode == 0
    items = yaml.safe_load(path.read_text())["suppressions"]
    items[0]["agent"] = "ci-deployer"
    items.append({"id": "sup-0000feed", "detector": "failure_storm", "agent": "ci-deployer",
                  "reason": "load test"})  # no author
    path.write_text(yaml.safe_dump({"suppressions": items}))
    imported = cli(config, "suppress", "import", str(path), env={"TRAILWARDEN_USER": "bob"})
    assert imported.returncode == 0, imported.stderr
    assert "1 added, 1 updated, 0 unchanged" in imported.stdout
    assert f"replaces {first}" in imported.stdout and "imported by bob" in imported.stdout
    trail = json.loads(cli(config, "suppress", "list", "--all", "--format", "json").stdout)
    old = next(s for s in trail if s["id"] == first)
    assert (old["state"], old["agent"], old["removed_by"], old["removed_reason"]) == \
        ("removed", "backup-job", "bob", "replaced by import")
    [new] = [s for s in trail if s["replaces"] == first]
    assert (new["state"], new["agent"], new["created_by"], new["imported_by"]) == \
        ("active", "ci-deployer", "alice", "bob")
    assert new["id"] != first and new["imported_at"] and new["removed_at"] is None
    [authorless] = [s for s in trail if s["detector"] == "failure_storm"]
    assert (authorless["created_by"], authorless["imported_by"]) == ("bob", "bob")
    # the same file again: the entry is the current version's, so nothing changes
    again = cli(config, "suppress", "import", str(path), "--by", "carol")
    assert "0 added, 0 updated, 2 unchanged" in again.stdout
    assert len(json.loads(cli(config, "suppress", "list", "--all", "--format", "json").stdout)) == 3


@pytest.mark.parametrize(("content", "needle"), [
    ("suppressions: [{detector: odd_hours, reason: r, created_by: a, colour: red}]", "suppressions[0].colour"),
    ("suppressions: [{detector: odd_hours, created_by: a}]", "suppressions[0].reason"),
    ("suppressions: [{detector: odd_hours, reason: r, created_by: a, source_cidr: nope}]", "source_cidr"),
    ("suppressions: [{detector: nosuch, reason: r, created_by: a}]", "nosuch"),
    ("suppressions: {detector: odd_hours}", "expected a list"),
    ("suppressions: [", "not valid YAML"),
])
def test_a_bad_suppressions_file_exits_2_naming_the_file_and_key(config, tmp_path, content, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    usage_error(cli(config, "suppress", "import", str(bad)), str(bad), needle)


# -- stats -----------------------------------------------------------------------------------------
def test_stats_add_up_to_the_findings_listed(config, db):
    fs = [finding(f"k{i}", detector=d, agent=a, start=NOW - timedelta(days=i % 20 + 1))
          for i, (d, a) in enumerate([("odd_hours", "backup-job")] * 5 + [("out_of_scope", "ci-deployer")] * 4
                                     + [("failure_storm", "ci-deployer")] * 2)]
    fs.append(finding("ancient", detector="odd_hours", agent="backup-job", start=NOW - timedelta(days=60)))
    save(db, *fs)
    set_status(db, [fs[0].id, fs[1].id], "false_positive", by="a", reason="r")
    set_status(db, [fs[2].id], "resolved", by="a", reason="r")
    set_status(db, [fs[5].id], "acknowledged", by="a", reason="r")
    db.close()
    stats = json.loads(cli(config, "findings", "stats", "--since", "30d", "--format", "json").stdout)
    listed = json.loads(cli(config, "findings", "--status", "all", "--since", "30d", "--format", "json").stdout)
    assert stats["total"] == len(listed) == 11
    assert sum(r["total"] for r in stats["by_detector"]) == sum(r["total"] for r in stats["by_agent"]) == 11
    odd = next(r for r in stats["by_detector"] if r["detector"] == "odd_hours")
    assert (odd["total"], odd["false_positive"], odd["resolved"], odd["open"]) == (5, 2, 1, 2)
    assert odd["false_positive_rate"] == round(2 / 3, 3)
    assert next(r for r in stats["by_detector"] if r["detector"] == "failure_storm")["false_positive_rate"] is None
    for row in stats["by_detector"]:
        assert row["total"] == sum(1 for f in listed if f["detector"] == row["detector"])
    assert sum(k["findings"] for k in stats["noisiest_keys"]) <= 11
    table = cli(config, "findings", "stats").stdout
    assert "false_positive_rate" in table and "noisiest keys" in table


def test_stats_library_counts_by_status(db):
    save(db, finding("x"), finding("y"))
    set_status(db, [finding("x").id], "false_positive", by="a", reason="r")
    stats = finding_stats(db, NOW - timedelta(days=30))
    [row] = stats["by_agent"]
    assert (row["total"], row["open"], row["false_positive"], row["false_positive_rate"]) == (2, 1, 1, 1.0)
