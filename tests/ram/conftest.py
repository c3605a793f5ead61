"""RAM tests: the real SDKs against the fake RAM/IMS endpoint (tests/fakes/ram.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.ram import Snapshot
from pipeline.core.config import Config, RamConfig
from pipeline.ingest.sources.credentials import Credentials
from pipeline.ram.client import RamApi, connect
from pipeline.ram.seed import seed_snapshot
from tests.conftest import ROOT
from tests.fakes.ram import ACCESS_KEY_ID, ACCESS_KEY_SECRET, FakeRam

DEMO_SEED = ROOT / "config" / "demo-ram-account.yaml"
CREDENTIALS = Credentials(ACCESS_KEY_ID, ACCESS_KEY_SECRET)


def demo_snapshot(now: datetime | None = None) -> Snapshot:
    data = yaml.safe_load(DEMO_SEED.read_text(encoding="utf-8"))
    return seed_snapshot(data, now or datetime.now(UTC), base=DEMO_SEED.parent)


@pytest.fixture
def fake_ram() -> Iterator[FakeRam]:
    """The demo account's RAM, in this process (scripting is direct)."""
    with FakeRam(demo_snapshot()) as fake:
        yield fake


@pytest.fixture
def api_for() -> Callable[..., RamApi]:
    """Clients for a fake, whose waits are recorded instead of slept."""

    def make(fake: FakeRam, **kwargs: Any) -> RamApi:
        api = connect(fake.endpoint, credentials=CREDENTIALS, sleep=lambda s: waits.append(s), **kwargs)
        api.waits = waits  # type: ignore[attr-defined]
        return api

    waits: list[float] = []
    return make


def ram_config(endpoint: str) -> Config:
    return Config(ram=RamConfig(endpoint=endpoint))


def write_config(tmp_path: Path, endpoint: str, **extra: Any) -> Path:
    """A config file naming the store, the demo inventory and the fake's endpoint."""
    data = {"database": str(tmp_path / "tw.duckdb"), "inventory": str(ROOT / "config" / "agents.yaml"),
            "ram": {"endpoint": endpoint}, **extra}
    path = tmp_path / "trailwarden.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)  # when the RAM calls of a test start
MakeEvent = Callable[..., dict[str, Any]]


def ram_call(make_event: MakeEvent, n: int, name: str, params: dict[str, Any], *, by: str = "alice",
             **extra: Any) -> dict[str, Any]:
    """RAM user ``by`` (alice is admin-alice) calling RAM API ``name``, ``n`` minutes after T0."""
    return make_event(n, eventName=name, serviceName="Ims", eventSource="ims.aliyuncs.com", eventRW="Write",
                      isGlobal=True, requestParameters=params, sourceIpAddress="198.18.7.21",
                      eventTime=(T0 + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      userIdentity={"type": "ram-user", "accountId": "1384926508761234", "userName": by,
                                    "principalId": "2001", "accessKeyId": f"LTAI5t{by}"}, **extra)
