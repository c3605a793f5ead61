"""Shared fixtures: a fresh store, an event factory, and ways to run the CLI."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL_ATTACKS = FIXTURES / "real-attacks"

# A RAM user calling through an AccessKey (shape of notes E6, with current fields).
BASE_EVENT: dict[str, Any] = {
    "eventId": "00000000-0000-4000-8000-000000000000",
    "eventVersion": "1",
    "eventType": "ApiCall",
    "eventRW": "Read",
    "eventName": "DescribeInstances",
    "eventSource": "ecs.cn-hangzhou.aliyuncs.com",
    "serviceName": "Ecs",
    "eventTime": "2026-11-02T03:04:05Z",
    "acsRegion": "cn-hangzhou",
    "sourceIpAddress": "203.0.113.7",
    "userAgent": "aliyun-cli/3.0.204",
    "requestId": "0D690264-0D51-4B4F-8AEE-CDEB3ABD1929",
    "apiVersion": "2014-05-26",
    "userIdentity": {
        "type": "ram-user",
        "principalId": "274180646548292385",
        "accountId": "1384926508761234",
        "accessKeyId": "LTAI5tCiDeploy7Qx2mK",
        "userName": "ci-deploy",
    },
    "requestParameters": {"RegionId": "cn-hangzhou", "PageSize": "100"},
    "errorCode": "",
    "errorMessage": "",
}


def ram_user_event(event_id: str, user: str, when: datetime, name: str = "DescribeInstances", *,
                   error: str | None = None, **fields: Any) -> dict[str, Any]:
    """BASE_EVENT as RAM user ``user`` calling ``name`` at ``when`` (any time zone; stored in UTC);
    ``error`` makes it a refused call; other ActionTrail fields as keywords."""
    ev = copy.deepcopy(BASE_EVENT)
    ev.update(eventId=event_id, eventTime=when.astimezone(UTC).isoformat().replace("+00:00", "Z"), eventName=name,
              userIdentity={"type": "ram-user", "principalId": f"2000{zlib.crc32(user.encode())}",
                            "accountId": "1384926508761234", "userName": user}, **fields)
    if error:
        ev["errorCode"], ev["errorMessage"] = error, "refused"
    return ev


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    """``make_event(n, eventName=..., userIdentity={...})``: a valid event with a unique id."""

    def make(n: int = 0, **overrides: Any) -> dict[str, Any]:
        ev = copy.deepcopy(BASE_EVENT)
        ev["eventId"] = f"00000000-0000-4000-8000-{n:012d}"
        ev.update(overrides)
        return ev

    return make


@pytest.fixture(autouse=True)
def _no_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process rendering sees no COLUMNS either (see run_cli); a test that wants a width sets it."""
    monkeypatch.delenv("COLUMNS", raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as s:
        yield s


def write_ndjson(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``trailwarden`` as a user would, in a subprocess."""
    # no config from the environment, and no width: a table into a pipe is not cut (pytest-xdist's
    # workers export COLUMNS=80, which would lay tables out as blocks)
    full_env = {k: v for k, v in os.environ.items() if k not in ("TRAILWARDEN_CONFIG", "COLUMNS")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command failed with ``code`` and said so in one line on stderr, naming each needle."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# What a crash test's child runs before its ingest: the ``n``-th commit (``n`` in the environment
# variable TW_HANG_AFTER_COMMITS) prints "committed" and hangs, to be killed with SIGKILL.
HANG_AFTER_COMMITS = """
import os, time
from pipeline.ingest import run as ingest
_commit, _commits = ingest.Transaction.commit, []
def _commit_then_hang(self):
    out = _commit(self)
    _commits.append(1)
    if len(_commits) == int(os.environ["TW_HANG_AFTER_COMMITS"]):
        print("committed", flush=True)
        time.sleep(60)
    return out
ingest.Transaction.commit = _commit_then_hang
ingest.BatchWriter.group_rows = 1
"""


def kill_after_commits(script: str, args: list[str], commits: int,
                       ready: Callable[[], bool] | None = None) -> None:
    """Run ``script`` (after :data:`HANG_AFTER_COMMITS`) as ``python -c script *args``, and kill -9 it
    once it has committed ``commits`` transactions (and ``ready()`` holds)."""
    env = {**os.environ, "TW_HANG_AFTER_COMMITS": str(commits)}
    proc = subprocess.Popen([sys.executable, "-c", HANG_AFTER_COMMITS + script, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    try:
        while proc.stdout.readline().strip() != "committed":
            assert time.monotonic() < deadline and proc.poll() is None, "the ingest never got going"
        while ready is not None and not ready():
            assert time.monotonic() < deadline and proc.poll() is None, "the reader never got there"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def demo_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's working files (config, notebooks, the real-attack fixtures)
    where ``trailwarden demo`` has run once, as a newcomer would run it: from the root, no flags."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(ROOT / "config", root / "config")
    shutil.copytree(REAL_ATTACKS, root / "tests" / "fixtures" / "real-attacks")
    result = run_cli("demo", cwd=root)
    assert result.returncode == 0, result.stderr
    return root
