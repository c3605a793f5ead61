"""The lifecycle every fake cloud endpoint shares: a threaded HTTP server on 127.0.0.1 at an
ephemeral port, started and stopped, usable as a context manager."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import urlencode


def echoed(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """A request as a careless endpoint quotes it in its error message: the method, the URL with
    its query string, and every header (Authorization, x-acs-security-token... included)."""
    return f" (request: {method} {path}{'?' + urlencode(query) if query else ''} headers={dict(headers)!r})"


class QuietHandler(BaseHTTPRequestHandler):
    """A fake's request handler: keep-alive HTTP/1.1 as the SDKs expect, no 40 ms delayed-ACK
    stall, no access log on stderr."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        """The request body (read whole, so the connection can serve the next request)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class LocalServer:
    """Subclasses set ``handler`` (a request handler class with a ``server_fake`` attribute, which
    is pointed at the fake) and ``thread_name``."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "fake-server"
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Self:
        handler: Any = type(f"{type(self).__name__}Handler", (self.handler,), {"server_fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.thread_name, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"
