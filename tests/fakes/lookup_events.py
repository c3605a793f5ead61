"""A fake ActionTrail ``LookupEvents`` endpoint on 127.0.0.1, for the real
``alibabacloud-actiontrail20200706`` client (notes/actiontrail.md sections 3.2 and 3.3).

The client (``Config(endpoint="127.0.0.1:PORT", protocol="http")``) sends
``POST /?StartTime=..&EndTime=..&MaxResults=..&Direction=..[&NextToken=..][&LookupAttribute.N.Key=..]``
with the header ``x-acs-action: LookupEvents`` and no body. This fake routes on that header, reads
the query string, and answers JSON ``{"RequestId", "StartTime", "EndTime", "Events": [...],
"NextToken"?}``:

* the events whose ``eventTime`` lies in ``[StartTime, EndTime]`` (UTC ``YYYY-MM-DDThh:mm:ssZ``),
  and within :attr:`FakeLookupEvents.retention` of :attr:`FakeLookupEvents.now` (90 days, like
  ActionTrail), ascending for ``Direction=FORWARD`` and descending for ``BACKWARD`` (the default);
  ``LookupAttribute`` filters on ``EventName``, ``EventRW``, ``ServiceName``, ``EventId`` and ``User``;
* ``MaxResults`` per page (0-50; default 20); ``NextToken`` is omitted on the last page. A token
  is bound to the parameters it was issued for ("the request parameters must be the same as
  those of the last request"): another window, page size, order or filter gets
  ``400 InvalidParameter``, and so does a token this fake never issued.

Errors are ``{"RequestId", "Code", "Message"}`` with a 4xx/5xx status, which the SDK raises as
``ClientException`` / ``ServerException``, or ``ThrottlingException`` when the answer carries
``x-acs-retry-after`` (milliseconds). :meth:`FakeLookupEvents.fail_next` queues them, e.g.
``fail_next(400, "Throttling.User", retry_after_ms=1000)`` or
``fail_next(403, "InvalidAccessKeyId.NotFound")``; ``after_pages=n`` lets ``n`` requests through
first. :meth:`FakeLookupEvents.before` registers a hook run before each answer.

Every request is recorded (:attr:`FakeLookupEvents.requests`) with its parameters, the
``time.monotonic()`` it arrived at, its status and how many events it returned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes._server import LocalServer, QuietHandler, echoed

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MAX_RESULTS = 50
DEFAULT_RESULTS = 20
_ATTRIBUTES = {"EventName": "eventName", "EventRW": "eventRW", "ServiceName": "serviceName", "EventId": "eventId"}


@dataclass
class Request:
    action: str | None
    params: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic()
    status: int = 200
    events: int = 0
    next_token: str | None = None
    error_code: str | None = None


@dataclass
class _Failure:
    status: int
    code: str
    message: str
    retry_after_ms: int | None
    times: int
    after_pages: int
    echo: bool = False


class FakeLookupEvents(LocalServer):
    """ActionTrail's LookupEvents over a list of events, served on 127.0.0.1.

    :attr:`endpoint` (``http://127.0.0.1:PORT``) goes in a ``lookup_events`` source's config.
    """

    thread_name = "fake-lookup-events"

    def __init__(self, events: Iterable[Mapping[str, Any]] = (), *, now: datetime | None = None,
                 retention: timedelta = timedelta(days=90)):
        self.events: list[dict[str, Any]] = [dict(e) for e in events]
        self.now = now  # None: the wall clock
        self.retention = retention
        self.requests: list[Request] = []
        self._failures: list[_Failure] = []
        self._hooks: list[Callable[[Request], None]] = []
        self._lock = threading.RLock()

    # -- scripting ---------------------------------------------------------------------------
    def add_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self.events.extend(dict(e) for e in events)

    def fail_next(self, status: int, code: str, *, times: int = 1, message: str | None = None,
                  retry_after_ms: int | None = None, after_pages: int = 0, echo: bool = False) -> None:
        """The next ``times`` LookupEvents requests (after ``after_pages`` good ones) get this
        error; ``retry_after_ms`` adds ``x-acs-retry-after`` (the SDK's throttling signal);
        ``echo`` quotes the request (URL, headers with the credentials) in the message."""
        with self._lock:
            self._failures.append(_Failure(status, code, message or f"fake {code}", retry_after_ms, times,
                                           after_pages, echo))

    def before(self, hook: Callable[[Request], None]) -> None:
        self._hooks.append(hook)

    @property
    def lookups(self) -> list[Request]:
        """The LookupEvents requests, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.action == "LookupEvents"]

    # -- serving -----------------------------------------------------------------------------
    def _answer(self, req: Request) -> tuple[int, dict[str, str], dict[str, Any]]:
        for hook in list(self._hooks):
            hook(req)
        with self._lock:
            self.requests.append(req)
            request_id = str(uuid.uuid4()).upper()
            if req.action != "LookupEvents":
                return self._error(req, request_id, 400, "InvalidAction.NotFound",
                                   f"Specified api {req.action} is not found")
            failure = self._take_failure()
            if failure is not None:
                headers = {"x-acs-retry-after": str(failure.retry_after_ms)} if failure.retry_after_ms else {}
                message = failure.message + (echoed("POST", "/", req.params, req.headers) if failure.echo else "")
                return self._error(req, request_id, failure.status, failure.code, message, headers)
            return self._lookup(req, request_id)

    def _take_failure(self) -> _Failure | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        if failure.after_pages > 0:
            failure.after_pages -= 1
            return None
        failure.times -= 1
        if failure.times <= 0:
            self._failures.pop(0)
        return failure

    def _error(self, req: Request, request_id: str, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
        req.status, req.error_code = status, code
        return status, headers or {}, {"RequestId": request_id, "Code": code, "Message": message}

    def _lookup(self, req: Request, request_id: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        p = req.params
        try:
            start, end = _parse_time(p["StartTime"]), _parse_time(p["EndTime"])
        except KeyError:
            return self._error(req, request_id, 400, "InvalidParameter",
                               "StartTime and EndTime must both be given or both be omitted")
        except ValueError as exc:
            return self._error(req, request_id, 400, "InvalidParameter", f"bad time: {exc}")
        if start > end:
            return self._error(req, request_id, 400, "InvalidParameter", "StartTime is after EndTime")
        try:
            size = int(p.get("MaxResults") or DEFAULT_RESULTS)
        except ValueError:
            return self._error(req, request_id, 400, "InvalidParameter", "MaxResults is not a number")
        if not 0 <= size <= MAX_RESULTS:
            return self._error(req, request_id, 400, "InvalidParameter", f"MaxResults must be 0-{MAX_RESULTS}")
        size = size or DEFAULT_RESULTS
        direction = p.get("Direction") or "BACKWARD"
        if direction not in ("FORWARD", "BACKWARD"):
            return self._error(req, request_id, 400, "InvalidParameter", f"bad Direction {direction!r}")
        bound = _binding(p)
        offset = 0
        if p.get("NextToken"):
            token = _read_token(p["NextToken"])
            if token is None or token[0] != bound:
                return self._error(req, request_id, 400, "InvalidParameter",
                                   "NextToken does not match the request parameters")
            offset = token[1]
        now = self.now or datetime.now(UTC)
        oldest = now - self.retention
        matches = [e for e in self.events if _in_window(e, max(start, oldest), end) and _matches(e, p)]
        matches.sort(key=lambda e: (str(e.get("eventTime")), str(e.get("eventId"))),
                     reverse=direction == "BACKWARD")
        page = matches[offset:offset + size]
        body: dict[str, Any] = {"RequestId": request_id, "StartTime": p["StartTime"], "EndTime": p["EndTime"],
                                "Events": page}
        req.events = len(page)
        if offset + size < len(matches):
            body["NextToken"] = req.next_token = _make_token(bound, offset + size)
        return 200, {}, body


class _Handler(QuietHandler):
    server_fake: FakeLookupEvents

    def _serve(self) -> None:
        self.read_body()
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        req = Request(self.headers.get("x-acs-action"), params, dict(self.headers.items()), time.monotonic())
        status, headers, payload = self.server_fake._answer(req)
        body = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json;charset=utf-8", **headers,
                           "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    do_POST = _serve
    do_GET = _serve


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event.get("eventTime")).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _in_window(event: Mapping[str, Any], start: datetime, end: datetime) -> bool:
    when = _event_time(event)
    return when is not None and start <= when <= end


def _matches(event: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    for n in range(1, 3):
        key, value = params.get(f"LookupAttribute.{n}.Key"), params.get(f"LookupAttribute.{n}.Value")
        if key is None:
            continue
        if key == "User":
            if (event.get("userIdentity") or {}).get("userName") != value:
                return False
        elif key in _ATTRIBUTES and str(event.get(_ATTRIBUTES[key])) != value:
            return False
    return True


def _binding(params: Mapping[str, str]) -> str:
    """What a NextToken is bound to: every parameter but the token itself."""
    bound = sorted((k, v) for k, v in params.items()
                   if k in ("StartTime", "EndTime", "MaxResults", "Direction") or k.startswith("LookupAttribute."))
    return hashlib.sha256(json.dumps(bound).encode()).hexdigest()[:16]


def _make_token(bound: str, offset: int) -> str:
    return base64.b64encode(json.dumps({"b": bound, "o": offset}).encode()).decode()


def _read_token(token: str) -> tuple[str, int] | None:
    try:
        data = json.loads(base64.b64decode(token.encode(), validate=True))
        return str(data["b"]), int(data["o"])
    except (ValueError, binascii.Error, KeyError, TypeError):
        return None


FakeLookupEvents.handler = _Handler
