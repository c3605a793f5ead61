"""The weekly permission review in Slack: one message, one thread reply per failing agent, posted
once a week whatever crashes in between (the real slack_sdk against the fake Slack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.inventory import load_inventory
from pipeline.core.config import load_config
from pipeline.investigate.review import review
from pipeline.ram.snapshots import save_snapshot
from pipeline.service.alerting.slack import TOKEN_ENV
from pipeline.service.cycle import Service
from pipeline.store.store import open_store
from tests.fakes.slack import FakeSlack
from tests.ram.conftest import demo_snapshot, write_config


def test_the_weekly_review_is_one_message_with_a_reply_per_failing_agent(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(TOKEN_ENV, "xoxb-test")
    with FakeSlack() as slack:
        config = load_config(write_config(tmp_path, "http://127.0.0.1:9",
                                          slack={"channel": "#sec-alerts", "base_url": slack.base_url}))
        inventory = load_inventory(config.inventory)
        service = Service(config, lambda: inventory, tmp_path / "tw.duckdb", echo=lambda _s: None)
        job = service.build_scheduler().get_job("weekly_review")
        assert job is not None and "day_of_week='mon'" in str(job.trigger) and "hour='9'" in str(job.trigger)
        with open_store(tmp_path / "tw.duckdb") as store:
            snapshot = demo_snapshot()
            save_snapshot(store, snapshot, source="demo")
            failing = sorted(a["agent"] for a in review(store, inventory, snapshot)["agents"] if a["verdict"] == "fail")
        assert failing  # the demo account plants failing agents
        service.weekly_review()
        [summary] = slack.top_level()
        assert "Permission review:" in summary.text and f"{len(failing)} fail" in summary.text
        replies = slack.replies(summary.ts)
        assert sorted(r.text.split(" (owner")[0] for r in replies) == failing
        service.weekly_review()  # the same week: nothing again
        with open_store(tmp_path / "tw.duckdb") as store:  # a crash lost the record: found in the channel
            store.con.execute("DELETE FROM pipeline_state WHERE name LIKE 'review.slack.%'")
        service.weekly_review()
        assert len(slack.top_level()) == 1 and len(slack.replies(summary.ts)) == len(failing)
        with open_store(tmp_path / "tw.duckdb", read_only=True) as store:
            runs = store.con.execute("SELECT status FROM runs WHERE command = 'review post'").fetchall()
        assert runs == [("ok",)] * 3
