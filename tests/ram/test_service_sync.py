"""The service reads RAM on its own schedule (``schedule.ram_sync_every``), as its own job on the
scheduler's single worker, and ``status`` shows the last sync and its errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from models.inventory import load_inventory
from pipeline.core.config import load_config
from pipeline.ram.snapshots import sync_status
from pipeline.service.cycle import Service
from pipeline.store.store import open_store
from tests.fakes.ram import FakeRam, credentials_env
from tests.ram.conftest import write_config


def _service(tmp_path: Path, endpoint: str | None, **schedule: str) -> Service:
    extra = {"schedule": schedule} if schedule else {}
    path = write_config(tmp_path, endpoint or "http://127.0.0.1:9", **extra)
    config = load_config(path)
    if endpoint is None:
        config = config.model_copy(update={"ram": None})
    return Service(config, lambda: load_inventory(config.inventory), tmp_path / "tw.duckdb", echo=lambda _s: None)


def test_serve_syncs_ram_on_its_own_schedule(tmp_path: Path, fake_ram: FakeRam, monkeypatch: pytest.MonkeyPatch):
    for key, value in credentials_env().items():
        monkeypatch.setenv(key, value)
    service = _service(tmp_path, fake_ram.endpoint, ram_sync_every="2h")
    scheduler = service.build_scheduler()
    job = scheduler.get_job("ram_sync")
    assert job is not None and job.trigger.interval == timedelta(hours=2)
    assert job.executor == "default" and scheduler._lookup_executor("default")._pool._max_workers == 1
    service.ram_sync()
    with open_store(tmp_path / "tw.duckdb", read_only=True) as store:
        last = sync_status(store)
        assert last is not None and last["snapshot"] == 1 and last["errors"] == 0
    fake_ram.fail_next("NoPermission", action="ListAccessKeys")
    service.ram_sync()
    with open_store(tmp_path / "tw.duckdb", read_only=True) as store:
        last = sync_status(store)
        assert last is not None and last["snapshot"] == 2 and last["errors"] == 1
        runs = store.con.execute("SELECT status FROM runs WHERE command = 'ram sync' ORDER BY id").fetchall()
    assert runs == [("ok",), ("failed",)]
    assert service._failures == {"ram_sync": 1}


def test_without_ram_configured_there_is_no_sync_job(tmp_path: Path):
    assert _service(tmp_path, None).build_scheduler().get_job("ram_sync") is None
