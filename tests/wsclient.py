"""
A small WebSocket test client on the real reactor: connect, send text, await frames.

Frames arrive in a DeferredQueue, so a test awaits exactly the frame it expects; nothing sleeps.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor


class _Proto(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client.frames.put(payload if isBinary else payload.decode("utf-8"))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._closed(code, reason)


class Closed(ConnectionError):
    """What ``next()`` gives once the connection has closed (``message()`` raises it)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason


class _Factory(WebSocketClientFactory):
    def clientConnectionFailed(self, connector, reason) -> None:
        self.client._closed(None, reason.getErrorMessage())


class WSClient:
    """One client connection; ``await client.next()`` gives the next text frame."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: defer.DeferredQueue[Any] = defer.DeferredQueue()
        self.proto: _Proto | None = None
        self.opened: defer.Deferred[WSClient] = defer.Deferred()
        self.closed: defer.Deferred[tuple[int | None, str | None]] = defer.Deferred()
        factory = _Factory(url, reactor=reactor)
        factory.protocol = _Proto
        factory.client = self
        factory.setProtocolOptions(autoPingInterval=0)
        self._connector = connectWS(factory)

    def _opened(self, proto: _Proto) -> None:
        self.proto = proto
        self.opened.callback(self)

    def _closed(self, code: int | None, reason: str | None) -> None:
        # anyone awaiting a frame learns of the close instead of waiting forever
        self.frames.put(Closed(code, reason))
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket not opened: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def send_text(self, text: str) -> None:
        assert self.proto is not None
        self.proto.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_binary(self, data: bytes) -> None:
        assert self.proto is not None
        self.proto.sendMessage(data, isBinary=True)

    def next(self) -> defer.Deferred[Any]:
        return self.frames.get()

    def close(self) -> defer.Deferred[tuple[int | None, str | None]]:
        if self.proto is not None and not self.closed.called:
            self.proto.sendClose()
        elif not self.closed.called:
            self._connector.disconnect()
        return self.closed


class EIOClient(WSClient):
    """Engine.IO 3 framing on top: ``emit`` a message, ``message()`` the next ewdjs payload."""

    def emit(self, obj: Any) -> None:
        self.send_text("42" + json.dumps(["ewdjs", obj], separators=(",", ":")))

    async def message(self) -> Any:
        while True:
            frame = await self.next()
            if isinstance(frame, Closed):
                raise frame
            if isinstance(frame, str) and frame.startswith("42"):
                name, payload = json.loads(frame[2:])
                assert name == "ewdjs", frame
                return payload

    async def handshake(self) -> dict:
        await self.opened
        first = await self.next()
        if isinstance(first, Closed):
            raise first
        assert first.startswith("0"), first
        second = await self.next()
        assert second == "40", second
        return json.loads(first[1:])


class PlainClient(WSClient):
    def emit(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    async def message(self) -> Any:
        frame = await self.next()
        if isinstance(frame, Closed):
            raise frame
        return json.loads(frame)


class EIOClients:
    """Mix into a TestCase: ``self.client(url)`` is an `EIOClient` closed at cleanup."""

    def client(self, url: str) -> EIOClient:
        c = EIOClient(url)
        self.addCleanup(c.close)  # type: ignore[attr-defined]
        return c
