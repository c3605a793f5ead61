"""Calling RAM and IMS through the official SDKs (``alibabacloud-ram20150501``,
``alibabacloud-ims20190815``): clients from the environment's credentials and the config's
endpoint; counting, retries and the classification of failures are :mod:`pipeline.ram.openapi`'s
(shared with the Resource Directory):

* unreachable endpoint, rejected credentials -> :class:`RamUnavailable` (the whole read or
  containment stops: nothing it would store is complete);
* ``Throttling*``, ``ServiceUnavailable*``, ``InternalError``, HTTP 5xx, or an answer carrying
  ``x-acs-retry-after`` -> transient, retried (honouring retry-after), then reported;
* ``EntityNotExist.*`` -> :class:`Gone` (the principal vanished meanwhile);
* anything else (``NoPermission``, ``InvalidParameter``...) -> :class:`CallFailed`, which the
  reader records against the principal while it reads the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alibabacloud_ims20190815.client import Client as ImsClient
from alibabacloud_ram20150501.client import Client as RamClient

from pipeline.ingest.sources.credentials import Credentials, from_env
from pipeline.ram.openapi import CallFailed as CallFailed
from pipeline.ram.openapi import Gone as Gone
from pipeline.ram.openapi import OpenApiCalls, Unavailable, sdk_config

RAM_ENDPOINT, IMS_ENDPOINT = "ram.aliyuncs.com", "ims.aliyuncs.com"


class RamUnavailable(Unavailable):
    """RAM cannot be read at all (unreachable, credentials refused): stop, store nothing."""


@dataclass
class RamApi(OpenApiCalls):
    """Both clients, and what was called: ``calls`` (every HTTP request, retries included)."""

    ram: Any = None
    ims: Any = None
    unavailable: type[Unavailable] = RamUnavailable


def connect(endpoint: str | None, ims_endpoint: str | None = None, *, credentials: Credentials | None = None,
            sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] = lambda: False) -> RamApi:
    """Clients for RAM and IMS: ``endpoint`` for both (``http://127.0.0.1:PORT`` for the tests'
    fake, a proxy...), else the public ``ram.aliyuncs.com`` / ``ims.aliyuncs.com``."""
    creds = credentials or from_env()
    ram = RamClient(sdk_config(endpoint or RAM_ENDPOINT, creds))
    ims = ImsClient(sdk_config(ims_endpoint or endpoint or IMS_ENDPOINT, creds))
    return RamApi(ram=ram, ims=ims, where=endpoint or RAM_ENDPOINT, sleep=sleep, stop=stop)
