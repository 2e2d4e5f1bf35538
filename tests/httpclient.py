# -*- test-case-name: tests.test_http_hardening -*-
"""
A raw TCP client for HTTP tests on loopback: send exactly the bytes a test wants (hostile ones
included), collect what comes back, learn when the server closed. Deferreds, no sleeps.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol


class RawClient(Protocol):
    """Collects everything received; ``closed`` fires with it when the connection ends."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()
        self._waiting: list[tuple[bytes, defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        still = []
        for marker, d in self._waiting:
            if marker in self.data:
                d.callback(self.data)
            else:
                still.append((marker, d))
        self._waiting = still

    def connectionLost(self, reason: Any) -> None:
        for _, d in self._waiting:
            d.callback(self.data)
        self._waiting = []
        self.closed.callback(self.data)

    def until(self, marker: bytes) -> defer.Deferred[bytes]:
        """Fires with all data once ``marker`` arrived, or once the connection closed."""
        if marker in self.data or self.closed.called:
            return defer.succeed(self.data)
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((marker, d))
        return d

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> defer.Deferred[bytes]:
        if not self.closed.called:
            self.transport.loseConnection()
        return self.closed


async def connect(port: int) -> RawClient:
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), RawClient())
    return proto


async def exchange(port: int, data: bytes, test: Any = None) -> bytes:
    """Send ``data`` on a new connection and return everything until the server closes."""
    client = await connect(port)
    if test is not None:
        test.addCleanup(client.close)
    client.send(data)
    return await client.closed


def status_of(response: bytes) -> int:
    """The status code of the first response in ``response`` (0 if there is none)."""
    line = response.split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else 0


def head_and_body(response: bytes) -> tuple[dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def upgrade_request(path: bytes = b"/ws", extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
            b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def get(path: bytes, headers: bytes = b"", method: bytes = b"GET") -> bytes:
    return (method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + headers + b"\r\n")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
