"""The service posts exactly what `trailwarden alert` posts (issue 14): the same messages, the same
replay hint, for the same findings — through the real slack_sdk against the fake Slack, once from
the CLI's alert step and once from a `run`/`serve` cycle, compared with each other and with a
golden payload (``golden/service_alert.json``, regenerated with TRAILWARDEN_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detectors.base import Finding
from models.inventory import Inventory
from pipeline.core.config import Config
from pipeline.detection.findings import save_findings
from pipeline.service.alerting.step import alert_once
from pipeline.service.cycle import run_cycle
from pipeline.store.store import open_store
from tests.fakes.slack import FakeSlack

GOLDEN = Path(__file__).parent / "golden" / "service_alert.json"
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
INVENTORY = Inventory.model_validate({"agents": [
    {"name": "ci-deployer", "purpose": "Deploys the storefront from CI", "owner": "platform-team",
     "environment": "production", "identities": ["ram-user:ci-deploy"]}]})


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _store_with_findings(path: Path) -> Path:
    findings = [
        Finding(detector="out_of_scope", agent="ci-deployer", severity="critical", score=0.93, first_seen=T0,
                last_seen=T0 + timedelta(minutes=2), summary="ci-deployer called ecs:StopInstance (3 calls), "
                "outside its declared scope: no statement allows it",
                event_ids=[f"ev-{i}" for i in range(3)],
                evidence={"kind": "out_of_scope", "action": "ecs:StopInstance", "count": 3},
                dedup_key="out_of_scope:ecs:stopinstance"),
        Finding(detector="odd_hours", agent="ci-deployer", severity="medium", score=0.6,
                first_seen=T0 + timedelta(minutes=5), last_seen=T0 + timedelta(minutes=6),
                summary="ci-deployer made 2 calls at 11:05 local, when it never works",
                event_ids=["ev-10", "ev-11"], evidence={"kind": "odd_hours", "count": 2}, dedup_key="odd"),
    ]
    with open_store(path) as store:
        save_findings(store, findings, {})
    return path


def _payloads(fake: FakeSlack) -> list[dict[str, Any]]:
    """Every message posted, in order: the incident's message, then its thread replies."""
    return [{"text": m.text, "blocks": m.blocks, "reply": m.is_reply} for m in fake.messages]


def test_serve_posts_what_alert_posts_and_the_golden_payload(tmp_path: Path, slack: FakeSlack) -> None:
    config = Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": slack.base_url}})
    cli_store = _store_with_findings(tmp_path / "cli.duckdb")
    with open_store(cli_store) as store:  # the `alert` command's step
        report = alert_once(store, config, INVENTORY, print, sleep=lambda _s: None)
    assert report.error is None and report.messages_sent == 1
    from_alert = _payloads(slack)

    with FakeSlack() as other:  # a `run` cycle (serve runs the same) on an identical store
        config = Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": other.base_url}})
        result = run_cycle(config, INVENTORY, _store_with_findings(tmp_path / "service.duckdb"), snapshot=False)
        assert [s.name for s in result.steps if not s.ok] == []
        from_service = _payloads(other)

    assert from_service == from_alert
    assert [m["reply"] for m in from_service] == [False, True, True]  # one evidence reply per finding
    next_step = next(json.dumps(b) for b in from_service[0]["blocks"] if "*Next:*" in json.dumps(b))
    assert "trailwarden replay ci-deployer --since 2026-11-02T02:00Z" in next_step  # the replay, an hour before
    if os.environ.get("TRAILWARDEN_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(from_service, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert json.loads(GOLDEN.read_text(encoding="utf-8")) == from_service, (
        f"{GOLDEN.name} differs from what the service posts; if intended, regenerate with "
        "TRAILWARDEN_UPDATE_GOLDEN=1 and review the diff")
