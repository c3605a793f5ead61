"""Inventory errors name the file, the agent and the key; a ``file:`` policy's also name its file."""

from __future__ import annotations

import json

import pytest

from models.inventory import load_inventory
from pipeline.core.errors import UsageError

AGENT = "{name: ci-bot, purpose: p, owner: o, environment: e, identities: [ram-user:x], policies: [%s]}"
BAD_CONDITION = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "ecs:*", "Resource": "*",
                                                "Condition": {"StringEqualz": {"acs:SourceIp": "x"}}}]}


@pytest.mark.parametrize(("policy", "policy_file", "key", "message"), [
    ("{system: Nope}", None, "agents[0].policies[0]", "unknown system policy 'Nope'"),
    ("{file: nope.json}", None, "agents[0].policies[0]", "policy file not found"),
    ("{file: broken.json}", '{"Version": "1", "Statement": [', "agents[0].policies[0]",
     "cannot read policy file"),
    ("{file: cond.json}", json.dumps(BAD_CONDITION), "agents[0].policies[0].Statement[0].Condition",
     "StringEqualz"),
    ("{nonsense: 1}", None, "agents[0].policies[0]", "expected a RAM policy document"),
])
def test_policy_errors_name_the_inventory_the_agent_the_key_and_the_policy_file(
        tmp_path, policy, policy_file, key, message):
    inv = tmp_path / "agents.yaml"
    inv.write_text(f"agents:\n  - {AGENT % policy}\n")
    named = policy.removeprefix("{file: ").removesuffix("}")
    if policy_file is not None:
        (tmp_path / named).write_text(policy_file)
    with pytest.raises(UsageError) as err:
        load_inventory(inv)
    text = str(err.value)
    assert err.value.path == str(inv) and text.startswith(f"{inv}: {key}"), text
    assert message in text and "(agent 'ci-bot')" in text, text
    if policy.startswith("{file:"):
        assert str(tmp_path / named) in text, text
