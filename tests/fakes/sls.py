"""A fake Alibaba Cloud Log Service (SLS) on 127.0.0.1, for driving the real ``aliyun-log-python-sdk``.

It speaks the read path the SDK (0.9.52) sends, as captured in notes/actiontrail.md section 4.2:

* ``GET /logstores/{ls}/shards``: the shard list, ``[{"shardID", "status" (readwrite|readonly),
  "inclusiveBeginKey", "exclusiveEndKey", "createTime"}]``.
* ``GET /logstores/{ls}/shards/{id}?type=cursor&from=begin|end|<unix seconds>``: ``{"cursor"}``.
  A time positions by *receive* time: the first LogGroup received at or after it (GetCursor doc).
* ``GET /logstores/{ls}/shards/{id}?type=cursor_time&cursor=...``: ``{"cursor_time"}``.
* ``GET /logstores/{ls}/shards/{id}?type=log&cursor=..&count=..[&end_cursor=..]``: a protobuf
  ``LogGroupList`` built with the SDK's own ``aliyun.log.proto`` classes, lz4-block-compressed
  (``store_size=False``) when the request's ``Accept-Encoding`` names lz4 (unless
  :attr:`FakeSLS.compress` is off), with ``x-log-cursor`` (next cursor), ``x-log-count`` (log
  groups), ``x-log-bodyrawsize`` (uncompressed length) and ``x-log-compresstype``. At the end of
  a shard it answers the request's own cursor with ``x-log-count: 0``.

The project is read from the ``Host`` header (``<project>.<host>``): the SDK only sends it there
when it talks to an IP (``client._isRowIp``). An unknown project or logstore answers 404
``ProjectNotExist`` / ``LogStoreNotExist``. Errors are JSON ``{"errorCode", "errorMessage"}``
with an ``x-log-requestid`` header, as the SDK expects.

Cursors are opaque to the client: base64 of a decimal integer (``shard * 10**15 + position``),
like real SLS cursors. A cursor of another shard, or one that does not decode, is refused like an
expired one.

Scripting:

* :meth:`FakeSLS.add_events` appends events to a shard as LogGroups (``group_size`` logs each),
  each event's JSON text in the log content ``event``; a ``str`` entry is put in ``event`` as is
  (malformed JSON), a ``bytes`` entry likewise (content that need not be UTF-8, which the SDK
  then hands over as bytes), a :class:`Contents` entry is a log with exactly those contents
  (extra keys, no ``event`` key). Every LogGroup has a receive time you choose.
* :meth:`FakeSLS.split` turns a shard read-only and creates two children that take new events.
* :meth:`FakeSLS.expire_before` drops a shard's LogGroups before a position from retention: a
  cursor before it is answered with HTTP 400 and :attr:`FakeSLS.invalid_cursor` -
  ``("InvalidCursor", "cursor is invalid")`` by default, or the other variant the notes record,
  ``("ParameterInvalid", "Invalid cursor")`` (notes section 5, pitfall 1).
* :meth:`FakeSLS.fail_next` queues canned errors per route (``list_shards``, ``get_cursor``,
  ``pull_logs``), e.g. ``403 ReadQuotaExceed``, ``401 Unauthorized``; ``echo=True`` quotes the
  request (URL, headers with the credentials) in the error message, as careless endpoints do. Mind that the SDK itself
  retries any 5xx ten times with a one-second sleep (notes section 4.1): script 5xx sparingly.
* :meth:`FakeSLS.before` registers a hook run (in the server thread, before answering) on every
  request of a route: to change the logstore in the middle of a reader's run.
* :attr:`FakeSLS.empty_pull_delay` answers a pull that finds nothing (the end of a shard) that
  many seconds late, like a remote service would: a reader then moves to the next shard after
  its writer has had time to store the previous one.

Every request is recorded (:attr:`FakeSLS.requests`): route, shard, query, headers, status,
and the log groups / logs a pull returned.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import lz4.block
from aliyun.log.proto import LogGroup

from tests.fakes._server import LocalServer, QuietHandler, echoed

CURSOR_BASE = 10**15
KEY_SPACE = 2**128
DEFAULT_TOPIC = "actiontrail_audit_event"
MAX_COUNT = 1000
ROUTES = ("list_shards", "get_cursor", "cursor_time", "pull_logs")


class Contents(dict[str, str]):
    """A log with exactly these contents (no ``event`` key added): ``Contents(owner_id="1")``."""


@dataclass
class Shard:
    id: int
    begin_key: int
    end_key: int
    create_time: int
    status: str = "readwrite"
    groups: list[bytes] = field(default_factory=list)  # framed LogGroupList entries
    receive_times: list[int] = field(default_factory=list)
    log_counts: list[int] = field(default_factory=list)
    expired: int = 0  # groups before this position are past retention

    def info(self) -> dict[str, Any]:
        return {"shardID": self.id, "status": self.status, "inclusiveBeginKey": f"{self.begin_key:032x}",
                "exclusiveEndKey": f"{self.end_key:032x}" if self.end_key < KEY_SPACE else "f" * 32,
                "createTime": self.create_time}


@dataclass
class Request:
    route: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    project: str | None
    logstore: str | None
    shard: int | None
    at: float  # time.monotonic()
    status: int = 200
    groups: int = 0  # log groups a pull returned
    logs: int = 0  # logs a pull returned
    error_code: str | None = None


@dataclass
class _Failure:
    status: int
    code: str
    message: str
    shard: int | None
    times: int
    echo: bool = False


class FakeSLS(LocalServer):
    """One project with one logstore of ``shards`` read-write shards, served on 127.0.0.1.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. :attr:`endpoint` is the
    ``http://127.0.0.1:PORT`` to put in an ``sls`` source's config.
    """

    thread_name = "fake-sls"

    def __init__(self, project: str = "audit-proj", logstore: str = "actiontrail_main", shards: int = 4,
                 *, compress: bool = True, max_response_bytes: int | None = None, empty_pull_delay: float = 0.0):
        self.project = project
        self.logstore = logstore
        self.compress = compress  # False: answer uncompressed even to Accept-Encoding: lz4
        self.max_response_bytes = max_response_bytes  # None: only ``count`` bounds a pull
        self.empty_pull_delay = empty_pull_delay  # seconds before answering a pull that found nothing
        self.invalid_cursor: tuple[str, str] = ("InvalidCursor", "cursor is invalid")
        self.requests: list[Request] = []
        self.shards: dict[int, Shard] = {}
        self._lock = threading.RLock()
        self._failures: dict[str, list[_Failure]] = {r: [] for r in ROUTES}
        self._hooks: dict[str, list[Callable[[Request], None]]] = {r: [] for r in ROUTES}
        now = int(time.time())
        step = KEY_SPACE // shards
        for i in range(shards):
            self.shards[i] = Shard(i, i * step, KEY_SPACE if i == shards - 1 else (i + 1) * step, now)

    # -- the logstore ------------------------------------------------------------------------
    def add_events(self, shard: int, events: Iterable[Mapping[str, Any] | str | bytes], *,
                   receive_time: int | None = None, topic: str = DEFAULT_TOPIC, group_size: int | None = None,
                   source: str = "10.0.0.1", tags: Mapping[str, str] | None = None) -> list[int]:
        """Append ``events`` to ``shard`` as LogGroups of ``group_size`` logs (default: one group);
        return the positions of the new groups. ``receive_time`` (unix seconds, default now) is
        when SLS "received" them, which ``get_cursor(from=<time>)`` positions by."""
        entries = list(events)
        if not entries:
            return []
        size = group_size or len(entries)
        received = int(time.time()) if receive_time is None else int(receive_time)
        positions = []
        for start in range(0, len(entries), size):
            chunk = entries[start:start + size]
            positions.append(self.add_group(shard, _log_group(chunk, received, topic, source, tags), received,
                                            len(chunk)))
        return positions

    def add_group(self, shard: int, group: bytes, receive_time: int, logs: int) -> int:
        """Append one serialized ``LogGroup``; return its position."""
        framed = b"\n" + _varint(len(group)) + group  # field 1 of LogGroupList, length-delimited
        with self._lock:
            target = self.shards[shard]
            if target.status != "readwrite":
                raise ValueError(f"shard {shard} is {target.status}: write to its children")
            target.groups.append(framed)
            target.receive_times.append(receive_time)
            target.log_counts.append(logs)
            return len(target.groups) - 1

    def split(self, shard: int) -> tuple[int, int]:
        """Split ``shard`` like SLS does: it turns read-only (its data stays readable), and two new
        shards cover its key range; return their ids."""
        with self._lock:
            parent = self.shards[shard]
            if parent.status != "readwrite":
                raise ValueError(f"shard {shard} is already {parent.status}")
            parent.status = "readonly"
            mid = (parent.begin_key + parent.end_key) // 2
            first = max(self.shards) + 1
            now = int(time.time())
            self.shards[first] = Shard(first, parent.begin_key, mid, now)
            self.shards[first + 1] = Shard(first + 1, mid, parent.end_key, now)
            return first, first + 1

    def expire_before(self, shard: int, position: int) -> None:
        """The logstore's TTL passed ``position``: earlier groups are gone, and a cursor before it
        is refused with HTTP 400 :attr:`invalid_cursor`."""
        with self._lock:
            self.shards[shard].expired = max(self.shards[shard].expired, position)

    def size(self, shard: int) -> int:
        with self._lock:
            return len(self.shards[shard].groups)

    def cursor(self, shard: int, position: int) -> str:
        return _encode_cursor(shard, position)

    def position(self, cursor: str) -> tuple[int, int]:
        """``(shard, position)`` of a cursor this fake issued."""
        decoded = _decode_cursor(cursor)
        if decoded is None:
            raise ValueError(f"not a cursor of this fake: {cursor!r}")
        return decoded

    # -- scripting ---------------------------------------------------------------------------
    def fail_next(self, route: str, status: int, error_code: str, *, times: int = 1, message: str | None = None,
                  shard: int | None = None, echo: bool = False) -> None:
        """The next ``times`` requests of ``route`` (on ``shard``, if given) get this error;
        ``echo`` quotes the request (URL and headers, credentials included) in its message."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {ROUTES}")
        with self._lock:
            self._failures[route].append(_Failure(status, error_code, message or f"fake {error_code}", shard, times,
                                                  echo))

    def before(self, route: str, hook: Callable[[Request], None]) -> None:
        """Run ``hook(request)`` before answering each request of ``route``."""
        self._hooks[route].append(hook)

    def of(self, route: str, shard: int | None = None) -> list[Request]:
        """The recorded requests of a route (on a shard)."""
        with self._lock:
            return [r for r in self.requests if r.route == route and (shard is None or r.shard == shard)]

    # -- serving (called by the handler) -----------------------------------------------------
    def _answer(self, req: Request, accept_encoding: str) -> tuple[int, dict[str, str], bytes]:
        for hook in list(self._hooks.get(req.route, ())):
            hook(req)
        with self._lock:
            self.requests.append(req)
            if req.project != self.project:
                return self._error(req, 404, "ProjectNotExist", f"Project {req.project} does not exist")
            if req.logstore != self.logstore:
                return self._error(req, 404, "LogStoreNotExist", f"logstore {req.logstore} does not exist")
            failure = self._take_failure(req)
            if failure is not None:
                message = failure.message + (echoed(req.method, req.path, req.query, req.headers) if failure.echo else "")
                return self._error(req, failure.status, failure.code, message)
            if req.route == "list_shards":
                return _json(200, [s.info() for s in sorted(self.shards.values(), key=lambda s: s.id)])
            if req.shard is None or req.shard not in self.shards:
                return self._error(req, 400, "ShardNotExist", f"shard {req.shard} does not exist")
            shard = self.shards[req.shard]
            if req.route == "get_cursor":
                return self._get_cursor(req, shard)
            if req.route == "cursor_time":
                return self._cursor_time(req, shard)
            return self._pull(req, shard, accept_encoding)

    def _take_failure(self, req: Request) -> _Failure | None:
        queue = self._failures.get(req.route, [])
        for failure in queue:
            if failure.shard is None or failure.shard == req.shard:
                failure.times -= 1
                if failure.times <= 0:
                    queue.remove(failure)
                return failure
        return None

    def _error(self, req: Request, status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        req.status, req.error_code = status, code
        return _json(status, {"errorCode": code, "errorMessage": message})

    def _get_cursor(self, req: Request, shard: Shard) -> tuple[int, dict[str, str], bytes]:
        where = req.query.get("from", "")
        if where == "begin":
            position = shard.expired
        elif where == "end":
            position = len(shard.groups)
        elif re.fullmatch(r"\d+", where):
            when = int(where)
            position = next((i for i in range(shard.expired, len(shard.groups)) if shard.receive_times[i] >= when),
                            len(shard.groups))
        else:
            return self._error(req, 400, "ParameterInvalid", f"invalid from: {where!r}")
        return _json(200, {"cursor": _encode_cursor(shard.id, position)})

    def _cursor_time(self, req: Request, shard: Shard) -> tuple[int, dict[str, str], bytes]:
        position = self._position(req, shard, req.query.get("cursor", ""))
        if position is None:
            return self._error(req, 400, *self.invalid_cursor)
        at = shard.receive_times[min(position, len(shard.groups) - 1)] if shard.groups else int(time.time())
        return _json(200, {"cursor_time": at})

    def _position(self, req: Request, shard: Shard, cursor: str) -> int | None:
        decoded = _decode_cursor(cursor)
        if decoded is None or decoded[0] != shard.id:
            return None
        position = decoded[1]
        if position < shard.expired or position > len(shard.groups):
            return None
        return position

    def _pull(self, req: Request, shard: Shard, accept_encoding: str) -> tuple[int, dict[str, str], bytes]:
        try:
            count = int(req.query.get("count", ""))
        except ValueError:
            return self._error(req, 400, "ParameterInvalid", "count must be an integer")
        if not 1 <= count <= MAX_COUNT:
            return self._error(req, 400, "ParameterInvalid", f"count must be in [1, {MAX_COUNT}]")
        cursor = req.query.get("cursor", "")
        start = self._position(req, shard, cursor)
        if start is None:
            return self._error(req, 400, *self.invalid_cursor)
        end = len(shard.groups)
        if req.query.get("end_cursor"):
            stop = self._position(req, shard, req.query["end_cursor"])
            if stop is None:
                return self._error(req, 400, *self.invalid_cursor)
            end = min(end, stop)
        taken: list[bytes] = []
        size, stop_at = 0, start
        for i in range(start, min(end, start + count)):
            if taken and self.max_response_bytes and size + len(shard.groups[i]) > self.max_response_bytes:
                break
            taken.append(shard.groups[i])
            size += len(shard.groups[i])
            stop_at = i + 1
        req.groups = len(taken)
        req.logs = sum(shard.log_counts[start:stop_at])
        raw = b"".join(taken)
        headers = {"Content-Type": "application/x-protobuf", "x-log-cursor": _encode_cursor(shard.id, stop_at),
                   "x-log-count": str(len(taken)), "x-log-bodyrawsize": str(len(raw))}
        body = raw
        if raw and self.compress and "lz4" in accept_encoding.lower():
            body = lz4.block.compress(raw, store_size=False)
            headers["x-log-compresstype"] = "lz4"
        return 200, headers, body


class _Handler(QuietHandler):
    server_fake: FakeSLS

    def do_GET(self) -> None:
        self.read_body()
        url = urlsplit(self.path)  # absolute-form too, when the SDK comes through HTTP_PROXY
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        host = (self.headers.get("Host") or "").split(":")[0]
        project = host.split(".", 1)[0] if "." in host and not _is_ipv4(host) else None
        route, logstore, shard = _route(unquote(url.path), query)
        req = Request(route or "unknown", "GET", url.path, query, dict(self.headers.items()), project, logstore,
                      shard, time.monotonic())
        if route is None:
            req.status = 404
            with self.server_fake._lock:
                self.server_fake.requests.append(req)
            status, headers, body = _json(404, {"errorCode": "InvalidRequest", "errorMessage": f"no route {url.path}"})
        else:
            status, headers, body = self.server_fake._answer(req, self.headers.get("Accept-Encoding") or "")
            if req.route == "pull_logs" and status == 200 and not req.groups and self.server_fake.empty_pull_delay:
                time.sleep(self.server_fake.empty_pull_delay)
        self.send_response(status)
        headers = {"x-log-requestid": uuid.uuid4().hex.upper()[:24], **headers, "Content-Length": str(len(body))}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _route(path: str, query: dict[str, str]) -> tuple[str | None, str | None, int | None]:
    match = re.fullmatch(r"/logstores/([^/]+)/shards(?:/(\d+))?/?", path)
    if not match:
        return None, None, None
    logstore, shard = match[1], match[2]
    if shard is None:
        return "list_shards", logstore, None
    kind = query.get("type")
    route = {"cursor": "get_cursor", "cursor_time": "cursor_time", "log": "pull_logs"}.get(kind or "")
    return route, logstore, int(shard)


def _log_group(entries: list[Mapping[str, Any] | str | bytes], received: int, topic: str, source: str,
               tags: Mapping[str, str] | None) -> bytes:
    group = LogGroup()
    group.Topic = topic
    group.Source = source
    for key, value in {"__receive_time__": str(received), **(tags or {})}.items():
        tag = group.LogTags.add()
        tag.Key, tag.Value = key, value
    framed: list[bytes] = []  # each log as a LogGroup's field 1, in order
    for entry in entries:
        if isinstance(entry, bytes):  # protobuf refuses a string that is not UTF-8: written by hand
            content = _field(1, b"event") + _field(2, entry)
            framed.append(_field(1, b"\x08" + _varint(received) + _field(2, content)))  # Log: Time, Contents
            continue
        log = group.Logs.add()
        if isinstance(entry, Contents):
            contents = {str(k): str(v) for k, v in entry.items()}
            log.Time = received
        elif isinstance(entry, str):
            contents = {"event": entry}
            log.Time = received
        else:
            contents = {"event": json.dumps(entry, ensure_ascii=False, separators=(",", ":"))}
            log.Time = _log_time(entry.get("eventTime"), received)
        for key, value in contents.items():
            content = log.Contents.add()
            content.Key, content.Value = key, value
        framed.append(_field(1, log.SerializeToString()))
    if len(framed) == len(group.Logs):
        return group.SerializeToString()
    del group.Logs[:]
    return group.SerializeToString() + b"".join(framed)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


def _log_time(event_time: Any, default: int) -> int:
    try:
        return int(datetime.fromisoformat(str(event_time).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return default


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_cursor(shard: int, position: int) -> str:
    return base64.b64encode(str(shard * CURSOR_BASE + position).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, int] | None:
    try:
        value = int(base64.b64decode(cursor.encode(), validate=True).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if value < 0:
        return None
    return divmod(value, CURSOR_BASE)


def _is_ipv4(host: str) -> bool:
    return bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host))


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


FakeSLS.handler = _Handler
