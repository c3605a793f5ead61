"""Alibaba Cloud credentials, from the environment only (never the config, logs or the store)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipeline.core.errors import TerminalError

ID_ENV = "ALIBABA_CLOUD_ACCESS_KEY_ID"
SECRET_ENV = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
TOKEN_ENV = "ALIBABA_CLOUD_SECURITY_TOKEN"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)


def from_env() -> Credentials:
    key, secret = os.environ.get(ID_ENV, "").strip(), os.environ.get(SECRET_ENV, "").strip()
    if not key or not secret:
        missing = " and ".join(n for n, v in ((ID_ENV, key), (SECRET_ENV, secret)) if not v)
        raise TerminalError(f"no Alibaba Cloud credentials: set {missing} in the environment")
    return Credentials(key, secret, os.environ.get(TOKEN_ENV, "").strip() or None)
