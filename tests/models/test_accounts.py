"""Accounts in the config and agents bound to them (issue 19): validation errors name the file and
the key, and the inventory's per-account attribution follows DESIGN's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.accounts import Accounts
from models.inventory import Inventory, load_inventory
from pipeline.core.config import Account, load_config
from pipeline.core.errors import UsageError
from tests.conftest import ROOT, assert_one_line_error, run_cli

PROD, STAGING, SECURITY = "1234567890123456", "6543210987654321", "1111222233334444"
ACCOUNTS = [Account(id=PROD, alias="prod"), Account(id=STAGING, alias="staging"),
            Account(id=SECURITY, alias="security")]
BASE = {"purpose": "p", "owner": "o", "environment": "e"}


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trailwarden.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _inventory(tmp_path: Path, agents: list[dict[str, object]]) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({"agents": [{**BASE, **a} for a in agents]}), encoding="utf-8")
    return path


# -- the config ---------------------------------------------------------------------------------
def test_accounts_and_the_directory_endpoint_load(tmp_path: Path):
    cfg = load_config(_config(tmp_path, f"accounts:\n  - {{id: '{PROD}', alias: prod}}\n"
                                        f"  - {{id: {STAGING}, alias: staging}}\n"
                                        "resource_directory: {endpoint: 'http://127.0.0.1:9'}\n"))
    assert [(a.id, a.alias) for a in cfg.accounts or []] == [(PROD, "prod"), (STAGING, "staging")]
    assert cfg.resource_directory.endpoint == "http://127.0.0.1:9"


def test_a_config_without_accounts_is_one_account_as_before(tmp_path: Path):
    cfg = load_config(_config(tmp_path, "timezone: UTC\n"))
    assert cfg.accounts is None and cfg.resource_directory.endpoint is None
    assert not Accounts(cfg.accounts or []).several


@pytest.mark.parametrize(("text", "key", "message"), [
    ("accounts:\n  - {id: prod-account, alias: prod}\n", "accounts[0].id", "account id"),
    ("accounts:\n  - {id: '1234567890123456', alias: Prod}\n", "accounts[0].alias", "lowercase"),
    ("accounts:\n  - {id: '1234567890123456', alias: '2024'}\n", "accounts[0].alias", "not all digits"),
    ("accounts:\n  - {id: '1234567890123456'}\n", "accounts[0].alias", "required"),
    ("accounts:\n  - {id: '1234567890123456', alias: prod, name: x}\n", "accounts[0].name", "unknown key"),
    ("accounts:\n  - {id: '1234567890123456', alias: prod}\n  - {id: '1234567890123456', alias: p2}\n",
     "accounts", "account ids must be unique; repeated: 1234567890123456"),
    ("accounts:\n  - {id: '1234567890123456', alias: prod}\n  - {id: '6543210987654321', alias: prod}\n",
     "accounts", "account aliases must be unique; repeated: prod"),
    ("resource_directory: {endpoint: 'not an address'}\n", "resource_directory.endpoint", "host[:port]"),
    ("resource_directory: {region: cn-hangzhou}\n", "resource_directory.region", "unknown key"),
])
def test_bad_accounts_exit_2_naming_the_file_and_key(tmp_path: Path, text: str, key: str, message: str):
    path = _config(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert (err.value.path, err.value.key) == (str(path), key)
    assert message in str(err.value)
    result = run_cli("--config", str(path), "accounts")
    assert_one_line_error(result, 2, str(path), key)


def test_labels():
    accounts = Accounts(ACCOUNTS)
    assert accounts.resolve("prod") == PROD and accounts.resolve(STAGING) == STAGING
    assert accounts.resolve("9999888877776666") == "9999888877776666"  # an id the config does not list
    assert accounts.resolve("qa") is None
    assert accounts.label(PROD) == "prod" and accounts.label("9999888877776666") == "9999888877776666"
    assert accounts.identity("ram-user:ci-deploy", PROD) == "ram-user:ci-deploy@prod"
    assert accounts.identity("role:Tmp", "9999888877776666") == "role:Tmp@9999888877776666"
    one = Accounts(ACCOUNTS[:1])
    assert one.identity("ram-user:ci-deploy", PROD) == "ram-user:ci-deploy"  # one account: as before
    assert Accounts().identity("ram-user:ci-deploy", PROD) == "ram-user:ci-deploy"


# -- the inventory ------------------------------------------------------------------------------
def test_the_same_identity_in_accounts_that_do_not_overlap(tmp_path: Path):
    inv = load_inventory(_inventory(tmp_path, [
        {"name": "ci-staging", "identities": ["ram-user:ci-deploy"], "accounts": ["staging"]},
        {"name": "ci-prod", "identities": ["ram-user:ci-deploy"], "accounts": ["prod", SECURITY]},
    ]), ACCOUNTS)
    assert inv.agent("ci-staging").accounts == [STAGING]  # type: ignore[union-attr]
    assert inv.agent("ci-prod").accounts == [PROD, SECURITY]  # type: ignore[union-attr]
    assert inv.agent_for("ram-user:ci-deploy", None, STAGING) == "ci-staging"
    assert inv.agent_for("ram-user:ci-deploy", None, PROD) == "ci-prod"
    assert inv.agent_for("ram-user:ci-deploy", None, "9999888877776666") is None  # unregistered there


@pytest.mark.parametrize(("first", "second", "where"), [
    ({"accounts": ["prod", "staging"]}, {"accounts": [PROD]}, "account prod (1234567890123456)"),
    ({"accounts": ["9999888877776666"]}, {"accounts": ["9999888877776666"]}, "account 9999888877776666"),
    ({}, {}, "already belongs to agent 'ci-a' (agent 'ci-b' claims it too, and neither declares `accounts:`: "
             "both would take it in every account)"),  # neither bound: as before, now naming both
])
def test_two_agents_claiming_an_identity_in_one_account_exit_2(tmp_path: Path, first: dict[str, object],
                                                                second: dict[str, object], where: str):
    path = _inventory(tmp_path, [{"name": "ci-a", "identities": ["ram-user:ci-deploy"], **first},
                                 {"name": "ci-b", "identities": ["ram-user:ci-deploy"], **second}])
    with pytest.raises(UsageError) as err:
        load_inventory(path, ACCOUNTS)
    text = str(err.value)
    assert err.value.path == str(path) and "'ram-user:ci-deploy'" in text and where in text, text
    assert "'ci-a'" in text and "'ci-b'" in text, text


def test_an_alias_the_config_does_not_define_exits_2_naming_the_agent_and_alias(tmp_path: Path):
    path = _inventory(tmp_path, [{"name": "ci-qa", "identities": ["ram-user:ci"], "accounts": ["staging", "qa"]}])
    with pytest.raises(UsageError) as err:
        load_inventory(path, ACCOUNTS)
    assert err.value.key == "agents[0].accounts"
    assert "'qa'" in str(err.value) and "(agent 'ci-qa')" in str(err.value)
    assert "prod, staging, security" in str(err.value)
    with pytest.raises(UsageError, match="the config has no `accounts:`"):
        load_inventory(path)  # no accounts in the config: no alias is defined


def test_the_cli_refuses_an_undefined_alias(tmp_path: Path):
    inventory = _inventory(tmp_path, [{"name": "ci-qa", "identities": ["ram-user:ci"], "accounts": ["qa"]}])
    config = _config(tmp_path, f"inventory: {inventory}\ndatabase: {tmp_path / 'tw.duckdb'}\n"
                               f"accounts:\n  - {{id: '{PROD}', alias: prod}}\n")
    assert_one_line_error(run_cli("--config", str(config), "agents"), 2, str(inventory), "ci-qa", "'qa'")


@pytest.mark.parametrize(("agents", "key", "message"), [
    ([{"name": "deploy-role", "identities": ["role:DeployRole"], "assumable_by": ["ci-nobody"]}],
     None, "'ci-nobody' is not an agent of this inventory (agent 'deploy-role')"),
    ([{"name": "deploy-role", "identities": ["role:DeployRole"], "assumable_by": ["Service:ECS"]}],
     "agents[0].assumable_by", "neither an agent name nor service:<host>"),
    ([{"name": "ci", "identities": ["ram-user:ci"]},
      {"name": "ci-user", "identities": ["ram-user:other"], "assumable_by": ["ci"]}],
     "agents[1]", "assumable_by is for role agents"),
    ([{"name": "ci", "identities": ["ram-user:ci"], "accounts": []}], "agents[0].accounts", "at least 1"),
])
def test_bad_assumable_by_and_accounts_exit_2(tmp_path: Path, agents: list[dict[str, object]], key: str | None,
                                             message: str):
    path = _inventory(tmp_path, agents)
    with pytest.raises(UsageError) as err:
        load_inventory(path, ACCOUNTS)
    assert err.value.path == str(path) and message in str(err.value), str(err.value)
    if key:
        assert err.value.key == key


def test_assumable_by_agents_and_services(tmp_path: Path):
    inv = load_inventory(_inventory(tmp_path, [
        {"name": "ci", "identities": ["ram-user:ci"]},
        {"name": "deploy-role", "identities": ["role:DeployRole"], "accounts": ["prod"],
         "assumable_by": ["ci", "service:ecs.aliyuncs.com"]},
    ]), ACCOUNTS)
    assert inv.agent("deploy-role").assumable_by == ["ci", "service:ecs.aliyuncs.com"]  # type: ignore[union-attr]


def _precedence() -> Inventory:
    return Inventory.model_validate({"agents": [
        {**BASE, "name": "people", "identities": ["ram-user:ci-deploy"]},
        {**BASE, "name": "ci-staging", "identities": ["ram-user:ci-deploy", "access-key:LTAIstaging"],
         "accounts": ["staging"]},
        {**BASE, "name": "ci-prod", "identities": ["role:Deploy"], "accounts": ["prod"]},
        {**BASE, "name": "vendor", "identities": ["access-key:LTAIvendor"]},
    ]}, context={"accounts": Accounts(ACCOUNTS)})


@pytest.mark.parametrize(("identity", "key", "home", "agent"), [
    ("ram-user:ci-deploy", None, STAGING, "ci-staging"),      # the bound agent wins in its account
    ("ram-user:ci-deploy", None, PROD, "people"),             # elsewhere the unbound one takes it
    ("ram-user:ci-deploy", None, None, "people"),             # no home account: only unbound agents
    ("ram-user:ci-deploy", "LTAIvendor", STAGING, "vendor"),  # the AccessKey first, bound or not
    ("ram-user:ci-deploy", "LTAIstaging", STAGING, "ci-staging"),
    ("ram-user:ci-deploy", "LTAIstaging", PROD, "people"),    # the key is bound to staging: the user decides
    ("role:Deploy", None, PROD, "ci-prod"),
    ("role:Deploy", None, STAGING, None),                      # unregistered in staging
    ("role:Deploy", "LTAIunknown", PROD, "ci-prod"),
    ("ram-user:nobody", None, PROD, None),
])
def test_precedence(identity: str, key: str | None, home: str | None, agent: str | None):
    assert _precedence().agent_for(identity, key, home) == agent


def test_single_account_inventory_unchanged(tmp_path: Path):
    """The shipped inventory as it was before issue 19 (its seven agents, no `accounts:`): the same
    identity map and fingerprint as before, and agent_for agrees with the identity map in any
    account."""
    shipped = yaml.safe_load((ROOT / "config" / "agents.yaml").read_text(encoding="utf-8"))
    before = [{k: v for k, v in a.items() if k != "accounts"} for a in shipped["agents"]
              if a["name"] not in ("staging-ci", "prod-deploy-role")]
    (tmp_path / "agents.yaml").write_text(yaml.safe_dump({"agents": before}), encoding="utf-8")
    (tmp_path / "policies").symlink_to(ROOT / "config" / "policies")
    inv = load_inventory(tmp_path / "agents.yaml")
    with_accounts = load_inventory(tmp_path / "agents.yaml", ACCOUNTS)
    assert inv.fingerprint() == with_accounts.fingerprint() == "d31d2d42fe11fd6b"  # as on main before issue 19
    assert not inv.bound
    for ident, agent in inv.identity_map.items():
        assert inv.agent_for(ident, None, PROD) == inv.agent_for(ident, None, None) == agent


def test_the_fingerprint_changes_with_account_bindings():
    def fingerprint(accounts: list[str] | None) -> str:
        agent = {**BASE, "name": "ci", "identities": ["ram-user:ci"], **({"accounts": accounts} if accounts else {})}
        return Inventory.model_validate({"agents": [agent]}, context={"accounts": Accounts(ACCOUNTS)}).fingerprint()

    assert len({fingerprint(None), fingerprint(["prod"]), fingerprint(["staging"]), fingerprint(["prod", "staging"])}) == 4
    assert fingerprint(["prod"]) == fingerprint([PROD])  # an alias is its id
