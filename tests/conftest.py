"""Shared fixtures: a fresh store, an event factory, and ways to run the CLI."""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
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


class Clock:
    """``utcnow()`` for the code under test: the wall clock plus however far the test moved it."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def advance(self, **delta: float) -> None:
        """Move time on (``seconds=``, ``days=`` ... as for ``timedelta``): what would pass in a sleep."""
        self.ahead += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Time that a test moves on instead of sleeping (every ``utcnow()``, in-process commands too)."""
    from pipeline.core import times

    moved = Clock()
    monkeypatch.setattr(times, "clock", moved)
    return moved


_FIXTURE_STORES: list[Store] = []  # the `store` fixtures of the running test (see run_cli)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.duckdb") as s:
        _FIXTURE_STORES.append(s)
        try:
            yield s
        finally:
            _FIXTURE_STORES.remove(s)


def write_ndjson(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def _cli_environment(env: dict[str, str] | None) -> dict[str, str]:
    """What a ``trailwarden`` run sees: this environment with no config from it and no width (a
    table into a pipe is not cut: pytest-xdist's workers export COLUMNS=80, which would lay tables
    out as blocks), then ``env``."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("TRAILWARDEN_CONFIG", "COLUMNS")}
    full_env.update(env or {})
    return full_env


# DuckDB's error when a process opens a file it already has open with other settings
_SHARED_INSTANCE = "different configuration than existing connections"


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``trailwarden ARGS`` as a user would: through its entry point (``pipeline.cli.main:main``:
    exit code, stdout, one-line errors on stderr), with the environment (:func:`_cli_environment`)
    and working directory (``cwd``, default the repository) set for the run, but in this process -
    a subprocess costs 1-2 s of imports. Use :func:`run_cli_process` where the process itself is
    what is tested (signals, kill -9, the console script, another process's lock).

    In one process DuckDB shares one database instance per file, so a store the test holds open
    would be the command's too (a writer's), or refuse it (a reader's "different configuration"):
    a test must close its ``store`` fixture first, and is told so when it has not."""
    from click.testing import CliRunner

    from pipeline.cli.main import main

    if threading.current_thread() is not threading.main_thread():
        pytest.fail("run_cli sets this process's environment, directory and streams: call it from the test's "
                    "own thread (run_cli_process runs commands side by side)", pytrace=False)
    if any(_is_open(s) for s in _FIXTURE_STORES):
        pytest.fail("close the `store` fixture (store.close()) before run_cli: in one process DuckDB would "
                    "share its connection with the command, which a real run never does", pytrace=False)
    with _process_state(_cli_environment(env), cwd or ROOT), CliRunner().isolation(input=input) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if isinstance(exc.code, str):  # as the interpreter does
                print(exc.code, file=sys.stderr)
        except Exception:  # escaped main (with --debug): a traceback and exit 1, as the interpreter does
            traceback.print_exc(file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    if _SHARED_INSTANCE in stderr:
        pytest.fail(f"a store this test holds open shares DuckDB's instance with `trailwarden {' '.join(args)}`: "
                    f"close it before run_cli (or use run_cli_process): {stderr.strip()}", pytrace=False)
    return subprocess.CompletedProcess(["trailwarden", *args], code, stdout, stderr)


def _is_open(store: Store) -> bool:
    try:
        store.con.execute("SELECT 1")
    except duckdb.ConnectionException:  # closed
        return False
    return True


@contextmanager
def _process_state(environ: dict[str, str], cwd: Path) -> Iterator[None]:
    """The environment and working directory of one in-process run, and the logging set-up the
    command makes (its handler writes to the captured stderr), put back afterwards."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    saved_levels = {lg.name: lg.level for lg in loggers if isinstance(lg, logging.Logger)}
    os.environ.clear()
    os.environ.update(environ)
    time.tzset()  # a TZ in the environment applies to this run's local times
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def run_cli_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                    timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``trailwarden`` as a user would, in a subprocess (``python -m pipeline``): for tests of
    the process itself; everything else uses :func:`run_cli`."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or ROOT, env=_cli_environment(env),
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
ingest.BatchWriter.group_rows = ingest.BatchWriter.native_group_rows = 1
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
    where ``trailwarden demo`` has run once, as a newcomer would run it: from the root, no flags.

    Built once per test run and shared by every xdist worker (the first to need it builds it, the
    others wait on a lock): the demo's month, seed 7, in ``data/trailwarden.duckdb`` - what
    ``run_demo(db)`` builds anywhere. Tests only read it (:func:`_shared_demo_untouched` checks);
    a test that writes works on a copy (:func:`demo_copy`)."""
    base = tmp_path_factory.getbasetemp()
    # an xdist worker's directory is in the run's, which its workers share
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "demo-checkout"
    with open(shared / "demo-checkout.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way: again
            shutil.copytree(ROOT / "config", root / "config")
            shutil.copytree(REAL_ATTACKS, root / "tests" / "fixtures" / "real-attacks")
            result = run_cli("demo", cwd=root)
            assert result.returncode == 0, result.stderr
            (root / ".built").touch()
    _SHARED_DEMO.append(root / "data" / "trailwarden.duckdb")
    return root


_SHARED_DEMO: list[Path] = []  # the shared demo store, once a test of this worker has used it


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@pytest.fixture(autouse=True)
def _shared_demo_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves the shared demo store as it found it (the next test of the run reads it)."""
    before = {p: (_stat(p), _stat(Path(f"{p}.wal"))) for p in _SHARED_DEMO}
    yield
    for path, stat in before.items():
        assert (_stat(path), _stat(Path(f"{path}.wal"))) == stat, (
            f"{request.node.nodeid} wrote to the shared demo store {path}: write to a copy (demo_copy)")


@pytest.fixture
def demo_copy(demo_checkout: Path, tmp_path: Path) -> Path:
    """A copy of the demo's store, for a test that writes to it."""
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_checkout / "data" / "trailwarden.duckdb", db)
    return db


def detected_organisation(root: Path, *, agents: int, weeks: int, seed: int, volume: float,
                          days_ago: int = 0) -> dict[str, str]:
    """The organisation scenario (``pipeline.demo.organisation``) ending at the UTC midnight
    ``days_ago`` days before today's, written to ``root``, ingested and detected over its scored
    week through the CLI; its meta."""
    from pipeline.demo.organisation import generate
    from pipeline.demo.score import load_labels

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_ago)
    generate(root, agents=agents, weeks=weeks, seed=seed, end=end, volume=volume)
    _, meta = load_labels(root / "labels.json")
    config = ("--config", "config/trailwarden.yaml")
    for args in (("ingest", "--file", "events/"), ("detect", "--since", meta["detect_since"], "--until", meta["end"])):
        done = run_cli(*config, *args, cwd=root)
        assert done.returncode == 0, done.stderr
    return meta
