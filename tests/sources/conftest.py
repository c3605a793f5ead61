"""What the SLS and LookupEvents tests share: fake credentials (whose secret must never be
printed), no proxy between the SDKs and the fakes on 127.0.0.1, and what the store holds."""

from __future__ import annotations

import pytest

from pipeline.ingest.sources import credentials

SECRET = "s3cr3t-Value-Never-Printed-42"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv(credentials.ID_ENV, "LTAI5tFakeKeyId000")
    monkeypatch.setenv(credentials.SECRET_ENV, SECRET)
    monkeypatch.delenv(credentials.TOKEN_ENV, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def ids(store) -> tuple[set[str], int]:
    rows = store.con.execute("SELECT event_id FROM events").fetchall()
    return {r[0] for r in rows}, len(rows)
