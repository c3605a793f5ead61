"""A local fake of Slack's Socket Mode WebSocket, for the real ``slack_bolt`` app.

``FakeSocketMode(slack)`` listens on 127.0.0.1 and tells the Web API fake (``FakeSlack``) its
``ws://`` URL, which ``apps.connections.open`` then returns for an app-level token. It speaks
RFC 6455 as Slack does: the upgrade handshake, ``hello`` first, then envelopes
``{"envelope_id", "type", "payload", "retry_attempt", "retry_reason", "accepts_response_payload"}``
that the test sends with :meth:`send`; it answers pings with pongs and records each
acknowledgement (``{"envelope_id": ..., "payload"?}``) with its monotonic arrival time in
:attr:`acks` (and its payload, such as a modal's errors, in :attr:`ack_payloads`).
:meth:`send` with the same ``envelope_id`` and a higher ``retry_attempt`` is Slack's retry.
Only text frames up to 64 KiB and unfragmented; enough for interaction envelopes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from typing import Any

from tests.fakes.slack import FakeSlack

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeSocketMode:
    def __init__(self, slack: FakeSlack):
        self.slack = slack
        self.acks: dict[str, float] = {}  # envelope id -> when its acknowledgement arrived
        self.ack_payloads: dict[str, Any] = {}  # envelope id -> the payload its acknowledgement carried
        self.sent: dict[str, float] = {}  # envelope id -> when it was (last) sent
        self.connections = 0
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False

    def __enter__(self) -> FakeSocketMode:
        self.slack.socket_url = f"ws://127.0.0.1:{self.port}/link/?ticket=fake"
        threading.Thread(target=self._accept, name="fake-socket-mode", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.slack.socket_url = None
        for sock in (self._conn, self._server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    # -- the test's side ----------------------------------------------------------------------------
    def wait_connected(self, timeout: float = 10) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._conn is not None, timeout):
                raise AssertionError("the app never connected to the Socket Mode fake")

    def send(self, kind: str, payload: dict[str, Any], *, envelope_id: str | None = None,
             retry_attempt: int = 0) -> str:
        """Deliver one envelope (``interactive``, ``slash_commands``); returns its id."""
        self.wait_connected()
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload, "retry_attempt": retry_attempt,
                    "retry_reason": "timeout" if retry_attempt else "", "accepts_response_payload": kind != "events_api"}
        with self._lock:
            self.sent[envelope_id] = time.monotonic()
            conn = self._conn
        assert conn is not None
        _send_frame(conn, 0x1, json.dumps(envelope).encode())
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10) -> float:
        """Seconds from the envelope's sending to its acknowledgement (raises when none came)."""
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self.acks, timeout):
                raise AssertionError(f"envelope {envelope_id} was never acknowledged")
            return self.acks[envelope_id] - self.sent[envelope_id]

    # -- the server ---------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            headers = dict(line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line)
            key = headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()  # RFC 6455
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            _send_frame(conn, 0x1, json.dumps({"type": "hello", "num_connections": 1,
                                                "connection_info": {"app_id": "A0TRAILW"}}).encode())
            with self._changed:
                self._conn = conn
                self.connections += 1
                self._changed.notify_all()
            while not self._stop:
                opcode, data = _read_frame(conn)
                if opcode == 0x8:  # close
                    return
                if opcode == 0x9:  # ping
                    _send_frame(conn, 0xA, data)
                elif opcode == 0x1:
                    message = json.loads(data)
                    if "envelope_id" in message:
                        with self._changed:
                            self.acks.setdefault(message["envelope_id"], time.monotonic())
                            self.ack_payloads.setdefault(message["envelope_id"], message.get("payload"))
                            self._changed.notify_all()
        except (OSError, ConnectionError, ValueError):
            return


def _send_frame(conn: socket.socket, opcode: int, data: bytes) -> None:
    head = bytes([0x80 | opcode])
    if len(data) < 126:
        head += bytes([len(data)])
    else:
        head += bytes([126]) + struct.pack("!H", len(data))
    conn.sendall(head + data)


def _recv(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    first, second = _recv(conn, 2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _recv(conn, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _recv(conn, 8))[0]
    mask = _recv(conn, 4) if second & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv(conn, length)))
    return first & 0x0F, data


__all__ = ["FakeSocketMode"]
