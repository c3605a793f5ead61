"""A fake Slack Web API on 127.0.0.1, for driving the real ``slack_sdk.WebClient`` in tests.

It speaks the Web API over HTTP the way ``slack_sdk`` does (notes/platform.md section 1.1):
every call is ``POST /api/<method>`` (the sync client ignores ``http_verb`` and always POSTs),
with a JSON body (``chat.postMessage``) or a form-encoded one (the ``conversations.*`` readers);
``GET`` with a query string is accepted too. Answers are JSON, like Slack's: HTTP 200 with
``{"ok": false, "error": ...}`` for API errors.

One channel exists: ``#sec-alerts`` (id ``C0TRAILW``); it may be named ``#sec-alerts``,
``sec-alerts`` or ``C0TRAILW``. Implemented methods:

* ``chat.postMessage``: stores the message (channel, strictly increasing ``ts``, text, blocks,
  thread_ts, metadata, unfurl flags) and answers ``{"ok": true, "channel", "ts", "message"}``.
  Like Slack it rejects payloads over the Block Kit limits (``invalid_blocks``) and messages
  with neither text nor blocks (``no_text``).
* ``conversations.history``: the channel's top-level messages, newest first, after ``oldest``
  (exclusive) and before ``latest``; ``metadata`` only with ``include_all_metadata``; paged by
  ``limit``/``cursor`` with ``response_metadata.next_cursor``.
* ``conversations.replies``: a thread (parent first, then replies), paged the same way.
* ``conversations.list``: the one channel.
* ``chat.update``: replaces a stored message's text and blocks (``message_not_found`` for an
  unknown ts), recorded in :attr:`FakeSlack.updates`.
* ``chat.postEphemeral``: recorded in :attr:`FakeSlack.ephemeral` (answers ``ok`` and a
  ``message_ts``, as Slack does).
* ``views.open``: recorded in :attr:`FakeSlack.views`; a ``trigger_id`` works once
  (``invalid_trigger_id`` after).
* ``usergroups.users.list`` and ``conversations.members``: the members of :attr:`FakeSlack.groups`
  (a user group or channel id -> user ids).
* ``users.info``: a user named after its id.
* ``auth.test``: the bot's identity (``invalid_auth`` for a wrong token, as every method).
* ``apps.connections.open``: with an app-level token (``xapp-``), the ``ws://127.0.0.1`` URL of
  the Socket Mode fake (:class:`tests.fakes.socket_mode.FakeSocketMode`) when one is attached.
* ``files.getUploadURLExternal``, the upload itself (``POST /upload/<id>``) and
  ``files.completeUploadExternal``: files land in :attr:`FakeSlack.files`.

As on Slack, ``chat.postMessage`` accepts the channel by name or ID, but the ``conversations.*``
readers take only the ID (a name gets ``channel_not_found``); ``bot_in_channel=False`` makes
posts and reads fail with ``not_in_channel``, and ``token=`` makes any other token
``invalid_auth``.

Scripting: ``fake.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})``
queues canned answers per method (``times=n`` repeats one). ``effect=True`` performs the call
first (the message is stored) and answers with the canned response anyway: "Slack accepted it
but the answer was lost". ``delay`` holds the answer back that many seconds (client timeouts).

Every request is recorded (:attr:`FakeSlack.requests`): the API method, HTTP verb, headers,
parsed body and arrival time. Message ``ts`` values follow the wall clock (strictly increasing)
because the code under test asks for history ``oldest`` a time it computed itself.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes._server import echoed

CHANNEL_ID = "C0TRAILW"
CHANNEL_NAME = "sec-alerts"
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_TEXT_OBJECT = 3000


@dataclass
class Request:
    method: str  # the API method, e.g. "chat.postMessage"
    verb: str  # HTTP verb
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class _Canned:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str]
    effect: bool
    delay: float
    echo: bool = False


@dataclass
class Message:
    ts: str
    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    thread_ts: str | None
    metadata: dict[str, Any] | None
    unfurl_links: Any
    unfurl_media: Any
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def key(self) -> str | None:
        return ((self.metadata or {}).get("event_payload") or {}).get("key")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(str(cursor)).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        return -1


class FakeSlack:
    """``with FakeSlack() as slack: WebClient(token=..., base_url=slack.base_url)``."""

    def __init__(self, *, token: str | None = None, clock: Callable[[], float] = time.time,
                 bot_in_channel: bool = True):
        self.token = token  # when set, any other bearer token gets invalid_auth
        self.bot_in_channel = bot_in_channel
        self._clock = clock
        self._lock = threading.Lock()
        self._script: dict[str, list[_Canned]] = {}
        self._last_ts = 0.0
        self.requests: list[Request] = []
        self.messages: list[Message] = []
        self.updates: list[dict[str, Any]] = []
        self.ephemeral: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.groups: dict[str, list[str]] = {}
        self.socket_url: str | None = None  # set by a Socket Mode fake
        self.app_token_error: str | None = None  # apps.connections.open refuses the app token with it
        self._uploads: dict[str, bytes] = {}
        self._used_triggers: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> FakeSlack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-slack", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not running"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- scripting -----------------------------------------------------------------------------
    def fail_next(self, method: str, *, status: int = 200, body: dict[str, Any] | str | None = None,
                  error: str | None = None, headers: dict[str, str] | None = None, times: int = 1,
                  effect: bool = False, delay: float = 0.0, echo: bool = False) -> None:
        """Answer the next ``times`` calls of ``method`` with this instead of the real thing.

        ``error="invalid_auth"`` is short for HTTP 200 ``{"ok": false, "error": "invalid_auth"}``;
        HTTP 429 defaults to ``ratelimited``, other statuses >= 500 to ``internal_error``.
        ``echo`` appends the request (URL, headers with the bearer token) to the error."""
        if body is None:
            code = error or ("ratelimited" if status == 429 else "internal_error" if status >= 500 else "unknown")
            body = {"ok": False, "error": code}
        canned = _Canned(status, body, dict(headers or {}), effect, delay, echo)
        with self._lock:
            self._script.setdefault(method, []).extend([canned] * times)

    def pending_script(self, method: str | None = None) -> int:
        with self._lock:
            return sum(len(v) for k, v in self._script.items() if method in (None, k))

    # -- inspection ------------------------------------------------------------------------------
    def calls(self, method: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    @property
    def posts(self) -> list[Request]:
        """Every chat.postMessage request that reached the fake (including refused ones)."""
        return self.calls("chat.postMessage")

    def top_level(self) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if not m.is_reply]

    def replies(self, ts: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.is_reply and (ts is None or m.thread_ts == ts)]

    def message(self, ts: str) -> Message:
        with self._lock:
            return next(m for m in self.messages if m.ts == ts)

    # -- the server ------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        method = url.path.rsplit("/", 1)[-1]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if url.path.startswith("/upload/"):  # the file's bytes, to the URL getUploadURLExternal gave
            with self._lock:
                self._uploads[method] = raw
            self._reply(handler, 200, "OK - 200", {})
            return
        headers = dict(handler.headers.items())
        ctype = headers.get("Content-Type", "")
        body: dict[str, Any] = dict(parse_qsl(url.query))
        if raw:
            if "json" in ctype:
                body.update(json.loads(raw))
            else:
                body.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        request = Request(method, handler.command, headers, body, raw, time.monotonic())
        with self._lock:
            self.requests.append(request)
            queue = self._script.get(method)
            canned = queue.pop(0) if queue else None
        if canned is None:
            self._reply(handler, 200, self._dispatch(request), {})
            return
        if canned.effect:  # Slack did it; what the client hears is the canned answer
            self._dispatch(request)
        if canned.delay:
            time.sleep(canned.delay)
        reply = canned.body
        if canned.echo and isinstance(reply, dict):
            reply = {**reply, "error": str(reply.get("error", "")) + echoed(
                handler.command, url.path, dict(parse_qsl(url.query)), headers)}
        self._reply(handler, canned.status, reply, canned.headers)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, reply: dict[str, Any] | str,
               headers: dict[str, str]) -> None:
        if isinstance(reply, str):
            data, ctype = reply.encode(), "text/html; charset=utf-8"
        else:
            data, ctype = json.dumps(reply).encode(), "application/json; charset=utf-8"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _dispatch(self, request: Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth.removeprefix("Bearer ").strip():
            return {"ok": False, "error": "not_authed"}
        if self.token is not None and auth.removeprefix("Bearer ") != self.token:
            return {"ok": False, "error": "invalid_auth"}
        if request.method == "apps.connections.open":
            if not auth.removeprefix("Bearer ").startswith("xapp-"):
                return {"ok": False, "error": "not_allowed_token_type"}
            if self.app_token_error:  # a revoked or invalid app-level token
                return {"ok": False, "error": self.app_token_error}
            return {"ok": True, "url": self.socket_url} if self.socket_url else {"ok": False, "error": "internal_error"}
        if request.method == "auth.test":  # who the bot token is (Bolt asks when it starts)
            return {"ok": True, "url": "https://trailwarden-test.slack.com/", "team": "test", "user": "trailwarden",
                    "team_id": "T0TRAILW", "user_id": "U0BOT", "bot_id": "B0BOT"}
        handler = {
            "chat.postMessage": self._post_message,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._views_open,
            "usergroups.users.list": self._group_members,
            "conversations.members": self._group_members,
            "users.info": self._user_info,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }.get(request.method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        with self._lock:
            return handler(request.body)

    def _channel(self, value: Any) -> str | None:
        if value in ("#" + CHANNEL_NAME, CHANNEL_NAME, CHANNEL_ID):
            return CHANNEL_ID
        return None

    def _next_ts(self) -> str:
        now = max(self._clock(), self._last_ts + 0.0001)
        self._last_ts = round(now, 6)
        return f"{self._last_ts:.6f}"

    def _post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not self.bot_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        blocks = body.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        metadata = body.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        text = body.get("text")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        problems = block_problems(blocks or [])
        if problems:
            return {"ok": False, "error": "invalid_blocks", "errors": problems}
        thread_ts = body.get("thread_ts") or None
        if thread_ts is not None:
            parent = next((m for m in self.messages if m.ts == thread_ts), None)
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            if parent.is_reply:  # Slack threads under the reply's parent
                thread_ts = parent.thread_ts
        msg = Message(ts=self._next_ts(), channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                      metadata=metadata, unfurl_links=body.get("unfurl_links"),
                      unfurl_media=body.get("unfurl_media"),
                      extra={k: v for k, v in body.items() if k in ("link_names", "parse", "reply_broadcast",
                                                                    "mrkdwn", "username", "icon_url")})
        self.messages.append(msg)
        return {"ok": True, "channel": channel, "ts": msg.ts, "message": self._render(msg, metadata=True)}

    def _render(self, msg: Message, *, metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "message", "subtype": "bot_message", "bot_id": "B0TRAILW",
                               "text": msg.text or "", "ts": msg.ts}
        if msg.blocks:
            out["blocks"] = msg.blocks
        if msg.thread_ts:
            out["thread_ts"] = msg.thread_ts
        replies = [m for m in self.messages if m.is_reply and m.thread_ts == msg.ts]
        if replies:
            out["thread_ts"] = msg.ts
            out["reply_count"] = len(replies)
        if metadata and msg.metadata:
            out["metadata"] = msg.metadata
        return out

    def _page(self, items: list[Message], body: dict[str, Any], *, metadata: bool) -> dict[str, Any]:
        start = _offset(body.get("cursor"))
        if start < 0:
            return {"ok": False, "error": "invalid_cursor"}
        limit = max(1, min(int(body.get("limit") or 100), 999))
        page = items[start:start + limit]
        more = start + limit < len(items)
        return {"ok": True, "messages": [self._render(m, metadata=metadata) for m in page], "has_more": more,
                "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""}}

    @staticmethod
    def _window(body: dict[str, Any]) -> Callable[[Message], bool]:
        inclusive = _truthy(body.get("inclusive"))
        oldest = float(body.get("oldest") or 0)
        latest = float(body["latest"]) if body.get("latest") else float("inf")

        def inside(m: Message) -> bool:
            ts = float(m.ts)
            if inclusive:
                return oldest <= ts <= latest
            return oldest < ts < latest

        return inside

    def _history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body.get("channel"))
        if channel is None or body.get("channel") != CHANNEL_ID:  # history takes an id, not a name
            return {"ok": False, "error": "channel_not_found"}
        if not self.bot_in_channel:
            return {"ok": False, "error": "not_in_channel"}
        inside = self._window(body)
        items = [m for m in reversed(self.messages) if not m.is_reply and inside(m)]  # newest first
        return self._page(items, body, metadata=_truthy(body.get("include_all_metadata")))

    def _replies(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("channel") != CHANNEL_ID:
            return {"ok": False, "error": "channel_not_found"}
        parent = next((m for m in self.messages if m.ts == body.get("ts")), None)
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        inside = self._window(body)
        thread = [parent] + [m for m in self.messages if m.is_reply and m.thread_ts == parent.ts and inside(m)]
        return self._page(thread, body, metadata=_truthy(body.get("include_all_metadata")))

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._channel(body.get("channel")) is None:
            return {"ok": False, "error": "channel_not_found"}
        msg = next((m for m in self.messages if m.ts == body.get("ts")), None)
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        blocks = body.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        problems = block_problems(blocks or [])
        if problems:
            return {"ok": False, "error": "invalid_blocks", "errors": problems}
        msg.text, msg.blocks = body.get("text"), blocks
        self.updates.append({"ts": msg.ts, "text": msg.text, "blocks": blocks})
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}

    def _post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._channel(body.get("channel")) is None and not str(body.get("channel", "")).startswith(("C", "D", "G")):
            return {"ok": False, "error": "channel_not_found"}
        blocks = body.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        self.ephemeral.append({"channel": body.get("channel"), "user": body.get("user"), "text": body.get("text"),
                               "blocks": blocks, "at": time.monotonic()})
        return {"ok": True, "message_ts": self._next_ts()}

    def _views_open(self, body: dict[str, Any]) -> dict[str, Any]:
        trigger = body.get("trigger_id")
        if not trigger or trigger in self._used_triggers:
            return {"ok": False, "error": "invalid_trigger_id"}
        self._used_triggers.add(trigger)
        view = body.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        self.views.append(view)
        return {"ok": True, "view": {**view, "id": f"V{len(self.views):07d}"}}

    def _group_members(self, body: dict[str, Any]) -> dict[str, Any]:
        key = body.get("usergroup") or body.get("channel")
        if key not in self.groups:
            return {"ok": False, "error": "no_such_subteam" if body.get("usergroup") else "channel_not_found"}
        return {"ok": True, "users": list(self.groups[key]), "members": list(self.groups[key]),
                "response_metadata": {"next_cursor": ""}}

    def _user_info(self, body: dict[str, Any]) -> dict[str, Any]:
        user = str(body.get("user") or "")
        return {"ok": True, "user": {"id": user, "name": user.lower(), "real_name": user}}

    def _upload_url(self, body: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self._uploads) + len(self.files) + 1:07d}"
        return {"ok": True, "upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, body: dict[str, Any]) -> dict[str, Any]:
        files = body.get("files")
        if isinstance(files, str):
            files = json.loads(files)
        out = []
        for f in files or []:
            data = self._uploads.pop(f["id"], None)
            if data is None:
                return {"ok": False, "error": "file_not_found"}
            self.files.append({"id": f["id"], "title": f.get("title"), "data": data,
                               "channel": body.get("channel_id"), "comment": body.get("initial_comment")})
            out.append({"id": f["id"], "title": f.get("title")})
        return {"ok": True, "files": out}

    def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channels": [{"id": CHANNEL_ID, "name": CHANNEL_NAME, "is_channel": True,
                                          "is_private": False, "is_archived": False,
                                          "is_member": self.bot_in_channel}],
                "response_metadata": {"next_cursor": ""}}


def block_problems(blocks: list[dict[str, Any]]) -> list[str]:
    """Slack's Block Kit limits, as ``invalid_blocks`` error strings with JSON pointers."""
    problems = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        kind = block.get("type")
        text = block.get("text") or {}
        if kind == "header" and (text.get("type") != "plain_text" or len(text.get("text", "")) > MAX_HEADER_TEXT):
            problems.append(f"must be plain_text of at most {MAX_HEADER_TEXT} characters "
                            f"[json-pointer:/blocks/{i}/text]")
        if kind == "section" and not 1 <= len(text.get("text", "")) <= MAX_SECTION_TEXT:
            problems.append(f"must be between 1 and {MAX_SECTION_TEXT} characters [json-pointer:/blocks/{i}/text]")
        if kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 10:
                problems.append(f"must have 1 to 10 elements [json-pointer:/blocks/{i}/elements]")
            for j, el in enumerate(elements):
                if not 1 <= len(el.get("text", "")) <= MAX_TEXT_OBJECT:
                    problems.append(f"must be between 1 and {MAX_TEXT_OBJECT} characters "
                                    f"[json-pointer:/blocks/{i}/elements/{j}/text]")
    return problems
