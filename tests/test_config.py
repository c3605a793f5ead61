"""Config and inventory validation: every error names the file and the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.inventory import Attributor, Hours, load_inventory, parse_days
from pipeline.core.config import load_config
from pipeline.core.errors import UsageError
from pipeline.core.times import parse_duration
from tests.conftest import ROOT


def test_documented_examples_load():
    cfg = load_config(ROOT / "config" / "trailwarden.yaml")
    assert cfg.timezone == "Asia/Shanghai"
    assert cfg.schedule.ingest_every == timedelta(minutes=5)
    inv = load_inventory(ROOT / "config" / "agents.yaml")
    assert len(inv.agents) == 9
    assert [a.alias for a in cfg.accounts or []] == ["staging", "prod", "security"]
    assert all(a.purpose and a.owner and a.policies for a in inv.agents)
    ci = inv.agent("ci-deployer")
    assert ci is not None and ci.policies[0]["Version"] == "1"  # loaded from the policy file


@pytest.mark.parametrize(("text", "value"), [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), (90, 90)])
def test_durations(text, value):
    assert parse_duration(text) == timedelta(seconds=value)


def test_duplicate_source_names_are_rejected(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sources:\n  - {name: a, type: files, path: x}\n  - {name: a, type: files, path: y}\n")
    with pytest.raises(UsageError, match="unique"):
        load_config(cfg)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="file not found") as err:
        load_config(tmp_path / "nope.yaml")
    assert err.value.path == str(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("agent", "key", "message"), [
    ("{name: a, purpose: p, owner: o, environment: e, identities: [user:x]}", "agents[0].identities", "ram-user:NAME"),
    ("{name: a, purpose: p, owner: o, environment: e, identities: []}", "agents[0].identities", "at least 1"),
    ("{name: a, owner: o, environment: e, identities: [ram-user:x]}", "agents[0].purpose", "required"),
    ("{name: a, purpose: p, owner: o, environment: e, identities: [ram-user:x], source_ips: [nope]}",
     "agents[0].source_ips", "CIDR"),
    ("{name: a, purpose: p, owner: o, environment: e, identities: [ram-user:x], policies: [{file: no.json}]}",
     "agents[0].policies[0]", "policy file not found"),
    ("{name: a, purpose: p, owner: o, environment: e, identities: [ram-user:x], colour: red}",
     "agents[0].colour", "unknown key"),
])
def test_inventory_errors_name_the_agent_and_key(tmp_path, agent, key, message):
    inv = tmp_path / "agents.yaml"
    inv.write_text(f"agents:\n  - {agent}\n")
    with pytest.raises(UsageError) as err:
        load_inventory(inv)
    assert err.value.path == str(inv)
    assert err.value.key == key
    assert message in str(err.value)


def test_duplicate_agent_names_are_rejected(tmp_path):
    inv = tmp_path / "agents.yaml"
    one = "{name: a, purpose: p, owner: o, environment: e, identities: [ram-user:%s]}"
    inv.write_text(f"agents:\n  - {one % 'x'}\n  - {one % 'y'}\n")
    with pytest.raises(UsageError, match="declared twice"):
        load_inventory(inv)


def test_access_key_identity_wins_over_user():
    from models.inventory import Inventory

    inv = Inventory.model_validate({"agents": [
        {"name": "human", "purpose": "p", "owner": "o", "environment": "e", "identities": ["ram-user:bob"]},
        {"name": "bot", "purpose": "p", "owner": "o", "environment": "e", "identities": ["access-key:LTAIbot"]},
    ]})
    attribute = Attributor(inv)
    assert attribute("ram-user:bob", "LTAIbot") == "bot"
    assert attribute("ram-user:bob", "LTAIother") == "human"
    assert attribute("ram-user:eve", None) == "ram-user:eve"


def test_days_and_hours():
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days("sat,sun") == frozenset({5, 6})
    with pytest.raises(ValueError):
        parse_days("someday")
    night = Hours.model_validate({"days": "mon-fri", "from": "22:00", "to": "06:00"})
    tz = UTC
    assert night.contains(datetime(2026, 11, 2, 23, 0, tzinfo=tz))  # Monday night
    assert night.contains(datetime(2026, 11, 3, 5, 0, tzinfo=tz))  # ... into Tuesday morning
    assert not night.contains(datetime(2026, 11, 2, 12, 0, tzinfo=tz))
    assert not night.contains(datetime(2026, 11, 8, 23, 0, tzinfo=tz))  # Sunday night
    assert night.contains(datetime(2026, 11, 7, 5, 0, tzinfo=tz))  # Saturday morning = Friday's night


@pytest.mark.parametrize("url", ["ftp://x", "slack.com/api", "http://", "https://a b/"])
def test_a_slack_base_url_must_be_a_web_address(tmp_path, url):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"slack: {{channel: '#sec', base_url: '{url}'}}\n")
    with pytest.raises(UsageError, match="http:// or https://") as err:
        load_config(cfg)
    assert err.value.key == "slack.base_url" and err.value.path == str(cfg)


def test_a_slack_base_url_gets_the_slash_method_names_are_joined_onto(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("slack: {channel: '#sec', base_url: 'http://127.0.0.1:9/api'}\n")
    slack = load_config(cfg).slack
    assert slack is not None and slack.base_url == "http://127.0.0.1:9/api/"
