"""Calling an Alibaba Cloud OpenAPI through its official SDK (RAM, IMS, the Resource Directory):
every call counted, throttling retried with back-off through :func:`pipeline.core.retry.call_with_retries`
(the SDKs retry nothing by default), and every failure classified one way.

Classification (notes/ram-api.md: classify by ``e.code``, not by exception class):

* unreachable endpoint, rejected credentials -> the caller's ``unavailable`` error (the whole
  read stops: nothing it would store is complete);
* ``Throttling*``, ``ServiceUnavailable*``, ``InternalError``, HTTP 5xx, or an answer carrying
  ``x-acs-retry-after`` -> transient, retried (honouring retry-after), then reported;
* ``EntityNotExist.*`` (and ``EntityNotExists.*``) -> :class:`Gone`;
* anything else (``NoPermission``, ``InvalidParameter``...) -> :class:`CallFailed`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from alibabacloud_tea_openapi import models as openapi
from Tea.exceptions import RetryError, TeaException, UnretryableException

from pipeline.core.errors import TerminalError, TrailwardenError, TransientError
from pipeline.core.retry import call_with_retries, not_now
from pipeline.ingest.sources.credentials import Credentials

T = TypeVar("T")
_AUTH = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature", "InvalidSecurityToken",
         "SecurityToken", "InvalidCredentials")
_TRANSIENT = ("Throttling", "ServiceUnavailable", "InternalError", "Internal", "SystemBusy", "RequestTimeout")


class Unavailable(TerminalError):
    """The service cannot be read at all (unreachable, credentials refused): stop, store nothing."""


class CallFailed(TerminalError):
    """One call failed for good (after retries)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class Gone(CallFailed):
    """What the call names no longer exists (``EntityNotExist.*``)."""


@dataclass
class OpenApiCalls:
    """Counting, retrying and classifying the calls to one service. ``service`` names it in
    messages (``RAM``), ``endpoint_key`` is the config key that sets its endpoint and ``command``
    the command to run again once it is reachable."""

    where: str = ""
    service: str = "RAM"
    endpoint_key: str = "ram.endpoint"
    command: str = "trailwarden ram sync"
    unavailable: type[Unavailable] = Unavailable
    sleep: Callable[[float], None] = time.sleep
    retries: int = 6
    base_wait: float = 0.5
    stop: Callable[[], bool] = lambda: False
    calls: int = 0
    throttled: int = 0
    by_action: dict[str, int] = field(default_factory=dict)

    def call(self, action: str, invoke: Callable[[], T]) -> T:
        """``invoke()`` (one SDK call), retried while throttled; classified when it fails."""
        def once() -> T:
            self.calls += 1
            self.by_action[action] = self.by_action.get(action, 0) + 1
            return invoke()

        return call_with_retries(once, classify=lambda exc: self._classify(action, exc), retries=self.retries,
                                 wait=self._wait, sleep=self.sleep, stop=self.stop)

    def _classify(self, action: str, exc: Exception) -> TrailwardenError:
        if isinstance(exc, RetryError | ConnectionError | OSError):
            return not_now(self.unavailable(
                f"{self.service} is unreachable at {self.where} ({type(exc).__name__}); check `{self.endpoint_key}` "
                f"and the network, then run `{self.command}` again"))
        if not isinstance(exc, TeaException):
            raise exc
        inner = getattr(exc, "inner_exception", None)
        if isinstance(exc, UnretryableException) and not isinstance(inner, TeaException):
            return not_now(self.unavailable(
                f"{self.service} is unreachable at {self.where} ({_first_line(inner) or type(exc).__name__}); "
                f"check `{self.endpoint_key}` and the network, then try again"))
        code = str(getattr(exc, "code", "") or "")
        status = int(getattr(exc, "status_code", 0) or getattr(exc, "statusCode", 0) or 0)
        message = _first_line(getattr(exc, "message", "")) or code
        if code.startswith(_AUTH):
            return self.unavailable(f"{self.service} rejected the credentials ({code}): check ALIBABA_CLOUD_ACCESS_KEY_ID, "
                                    "ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN)")
        retry_after = getattr(exc, "retry_after", None)
        if code.startswith(_TRANSIENT) or status >= 500 or retry_after is not None:
            self.throttled += 1
            error = TransientError(f"{self.service} kept refusing {action} ({code or status}): {message}")
            error.retry_after = retry_after  # type: ignore[attr-defined]
            error.code = code  # type: ignore[attr-defined]
            return error
        if code.startswith("EntityNotExist"):
            return Gone(f"{action}: {code}: {message}", code)
        return CallFailed(f"{action}: {code or status}: {message}", code or str(status))

    def _wait(self, error: TrailwardenError, attempt: int) -> float:
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            return max(float(retry_after) / 1000, self.base_wait)
        return min(30.0, self.base_wait * 2 ** attempt)


def _first_line(value: Any) -> str:
    """An SDK message without its wrapping (``code: 400, <message> request id: <id>``)."""
    text = str(value.get("message") if isinstance(value, dict) else value or "")
    text = text.splitlines()[0] if text else ""
    text = re.sub(r"^code: \d+, ", "", text)
    return re.sub(r" request id: [\w-]+$", "", text)[:300]


def sdk_config(endpoint: str, creds: Credentials) -> openapi.Config:
    """An SDK client config: ``endpoint`` is ``host[:port]`` (HTTPS) or ``http(s)://host[:port]``."""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    return openapi.Config(access_key_id=creds.access_key_id, access_key_secret=creds.access_key_secret,
                          security_token=creds.security_token, endpoint=parsed.netloc, protocol=parsed.scheme,
                          read_timeout=30_000, connect_timeout=10_000)
