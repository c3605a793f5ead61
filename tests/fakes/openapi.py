"""What every fake Alibaba Cloud OpenAPI endpoint (RPC style, ACS3-HMAC-SHA256) shares: the
signature check the real SDKs' requests must pass, the error answer
(``{"RequestId", "HostId", "Code", "Message"}``), scripted failures and hangs, the call log, and
an HTTP handler with the ``/__fake__/...`` control paths for a fake in another process.

The clients (``Config(endpoint="127.0.0.1:PORT", protocol="http")``) send an empty-bodied ``POST
/?<parameters>`` with the action and version in the ``x-acs-action`` / ``x-acs-version`` headers
and an ``Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=...,Signature=...`` header.
The signature is checked against the credentials the fake was given (an unknown AccessKey ID is
``InvalidAccessKeyId.NotFound``, a wrong secret ``SignatureDoesNotMatch``). A subclass answers
action ``X`` with its method ``_X(query) -> dict``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit

from tests.fakes._server import LocalServer, QuietHandler

ACCESS_KEY_ID = "LTAI5tFakeTrailwarden"
ACCESS_KEY_SECRET = "fake-secret-0123456789abcdef"


@dataclass
class Call:
    action: str | None
    params: dict[str, str]
    status: int = 200
    code: str | None = None
    at: float = 0.0


class Failure(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class _Scripted:
    action: str | None
    status: int
    code: str
    times: int
    after: int
    retry_after_ms: int | None = None
    hang: float = 0.0  # > 0: apply the call, then hold the answer this long (a client killed meanwhile)


def check_signature(credentials: Mapping[str, str], method: str, path: str, query: Mapping[str, str],
                    headers: Mapping[str, str]) -> None:
    """ACS3-HMAC-SHA256, as the SDK signs (alibabacloud_tea_openapi.utils.get_authorization);
    ``headers`` lower-cased. Raises :class:`Failure` with the service's code when it does not hold."""
    auth = headers.get("authorization", "")
    if not auth.startswith("ACS3-HMAC-SHA256 "):
        raise Failure(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
    parts = dict(p.split("=", 1) for p in auth.split(" ", 1)[1].split(",") if "=" in p)
    key_id = parts.get("Credential", "")
    if key_id not in credentials:
        raise Failure(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    signed = parts.get("SignedHeaders", "").split(";")
    canonical_query = "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))
    canonical_headers = "".join(f"{h}:{headers.get(h, '').strip()}\n" for h in signed)
    request = "\n".join([method, path, canonical_query, canonical_headers, ";".join(signed),
                         headers.get("x-acs-content-sha256", "")])
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(request.encode()).hexdigest()
    expected = hmac.new(credentials[key_id].encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("Signature", "")):
        raise Failure(400, "SignatureDoesNotMatch", "The request signature we calculated does not match.")


class OpenApiFake(LocalServer):
    """An RPC-style OpenAPI endpoint on 127.0.0.1: signature, routing, scripting, the call log."""

    host_id: ClassVar[str] = "aliyuncs.com"

    def __init__(self, *, credentials: Mapping[str, str] | None = None):
        self.credentials = dict(credentials or {ACCESS_KEY_ID: ACCESS_KEY_SECRET})
        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self._script: list[_Scripted] = []

    # -- scripting -----------------------------------------------------------------------------
    def fail_next(self, code: str, *, status: int = 400, action: str | None = None, times: int = 1,
                  after: int = 0, retry_after_ms: int | None = None) -> None:
        """The next ``times`` calls (of ``action``, after ``after`` good ones) fail with ``code``."""
        with self.lock:
            self._script.append(_Scripted(action, status, code, times, after, retry_after_ms))

    def hang_next(self, action: str, *, seconds: float = 120.0, after: int = 0) -> None:
        """The next call of ``action`` (after ``after`` good ones) takes effect, then gets no answer
        for ``seconds``."""
        with self.lock:
            self._script.append(_Scripted(action, 200, "", 1, after, hang=seconds))

    def actions(self, *, ok_only: bool = False) -> list[str]:
        with self.lock:
            return [c.action or "" for c in self.calls if not ok_only or c.status == 200]

    def control(self, what: str, args: dict[str, Any]) -> tuple[int, Any]:
        """Scripting a fake in another process: ``fail``, ``hang`` (JSON keyword arguments), ``calls``."""
        if what == "fail":
            self.fail_next(**args)
        elif what == "hang":
            self.hang_next(**args)
        elif what == "calls":
            with self.lock:
                return 200, [asdict(c) for c in self.calls]
        else:
            return 404, {"error": f"unknown control {what}"}
        return 200, {}

    # -- serving -------------------------------------------------------------------------------
    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
        query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        lower = {k.lower(): v for k, v in headers.items()}
        action = lower.get("x-acs-action") or query.get("Action")
        call = Call(action, query, at=time.monotonic())
        request_id = str(uuid.uuid4()).upper()
        hang = 0.0
        try:
            check_signature(self.credentials, method, urlsplit(path).path or "/", query, lower)
            with self.lock:
                self.calls.append(call)
                scripted = self._scripted(action)
                if scripted is not None and not scripted.hang:
                    headers_out = ({"x-acs-retry-after": str(scripted.retry_after_ms)}
                                   if scripted.retry_after_ms else {})
                    raise Failure(scripted.status, scripted.code, f"fake {scripted.code}", headers_out)
                hang = scripted.hang if scripted is not None else 0.0
                handler = getattr(self, f"_{action}", None)
                if handler is None:
                    raise Failure(404, "InvalidAction.NotFound", f"Specified api {action} is not found")
                body = handler(query)
        except Failure as exc:
            call.status, call.code = exc.status, exc.code
            return exc.status, exc.headers, {"RequestId": request_id, "HostId": self.host_id,
                                             "Code": exc.code, "Message": exc.message}
        if hang:
            time.sleep(hang)
        return 200, {}, {"RequestId": request_id, **body}

    def _scripted(self, action: str | None) -> _Scripted | None:
        for item in self._script:
            if item.action is not None and item.action != action:
                continue
            if item.after > 0:
                item.after -= 1
                return None
            item.times -= 1
            if item.times <= 0:
                self._script.remove(item)
            return item
        return None


class OpenApiHandler(QuietHandler):
    server_fake: OpenApiFake

    def _serve(self) -> None:
        body = self.read_body()
        if self.path.startswith("/__fake__/"):
            status, payload = self.server_fake.control(self.path.removeprefix("/__fake__/"), json.loads(body or b"{}"))
            headers: dict[str, str] = {}
        else:
            status, headers, payload = self.server_fake.answer(self.command, self.path, dict(self.headers.items()))
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json;charset=utf-8", **headers,
                               "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (killed while we hung)
            pass

    do_POST = _serve
    do_GET = _serve


OpenApiFake.handler = OpenApiHandler
