"""
A small Engine.IO 3 long-polling client for the tests, on twisted.web's Agent (loopback only).

``PollClient(base)``: ``handshake()``, ``get()``, ``post([...])``, ``raw(...)``, and a
background poll loop (``start()``) feeding ``message()`` with each ewdjs payload, as a
socket.io 2 client keeps a GET waiting at all times.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from qewd_twisted.transports.payload import encode_payload, iter_payload


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes, chunked: bool = False) -> None:
        self.data = data
        self.length = UNKNOWN_LENGTH if chunked else len(data)  # unknown: sent chunked

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _agent() -> Agent:
    return Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))


class PollClient:
    def __init__(self, base: str, query: str = "EIO=3&transport=polling") -> None:
        self.base = base.rstrip("/") + "/socket.io/"
        self.query = query
        self.sid: str | None = None
        self.agent = _agent()
        self.frames: defer.DeferredQueue[str] = defer.DeferredQueue()
        self._loop: defer.Deferred[Any] | None = None
        self._running = False
        self._requests: set[defer.Deferred[Any]] = set()

    def url(self, extra: str = "") -> bytes:
        q = self.query + (f"&sid={self.sid}" if self.sid else "") + (f"&{extra}" if extra else "")
        return f"{self.base}?{q}".encode()

    async def raw(self, method: bytes, url: bytes, body: bytes | None = None,
                  headers: dict[bytes, bytes] | None = None,
                  chunked: bool = False) -> tuple[int, Headers, bytes]:
        h = Headers({k: [v] for k, v in (headers or {}).items()})
        producer = _Body(body, chunked) if body is not None else None
        d = self.agent.request(method, url, h, producer)
        self._requests.add(d)
        try:
            resp = await d
            rd = readBody(resp)
            self._requests.add(rd)
            try:
                data = await rd
            finally:
                self._requests.discard(rd)
        finally:
            self._requests.discard(d)
        return resp.code, resp.headers, data

    async def handshake(self, headers: dict[bytes, bytes] | None = None) -> dict:
        code, _, body = await self.raw(b"GET", self.url(), headers=headers)
        assert code == 200, (code, body)
        packets = list(iter_payload(body.decode()))
        assert packets[0][0] == "0" and packets[1] == "40", packets
        hs = json.loads(packets[0][1:])
        self.sid = hs["sid"]
        return hs

    async def get(self) -> list[str]:
        code, _, body = await self.raw(b"GET", self.url())
        assert code == 200, (code, body)
        return list(iter_payload(body.decode()))

    async def post(self, packets: list[str]) -> tuple[int, bytes]:
        data = encode_payload([p.encode() for p in packets])
        code, _, body = await self.raw(b"POST", self.url(), data,
                                       {b"content-type": b"text/plain;charset=UTF-8"})
        return code, body

    async def emit(self, *objs: Any) -> None:
        code, body = await self.post(
            ["42" + json.dumps(["ewdjs", o], separators=(",", ":")) for o in objs])
        assert (code, body) == (200, b"ok"), (code, body)

    def start(self) -> None:
        """Keep a GET waiting, as a socket.io client does; packets go to ``frames``."""
        self._running = True
        self._loop = defer.ensureDeferred(self._poll_loop())

    async def _poll_loop(self) -> None:
        while self._running:
            try:
                packets = await self.get()
            except Exception as e:  # the node went away, refused, or stop() cut it off
                if self._running:
                    self.frames.put(f"error:{e!r}")
                return
            for p in packets:
                self.frames.put(p)
                if p == "1":
                    self._running = False

    def stop(self) -> defer.Deferred[Any]:
        """Stop polling: the waiting GET is cut off (the node sees its connection close)."""
        self._running = False
        for d in list(self._requests):
            d.cancel()
        loop = self._loop
        if loop is None or loop.called:
            return defer.succeed(None)
        done: defer.Deferred[Any] = defer.Deferred()
        loop.addBoth(lambda r: done.callback(None))
        return done

    def finish(self) -> defer.Deferred[Any]:
        """Stop the loop once its waiting GET returns (nothing cut off)."""
        self._running = False
        return self._loop if self._loop is not None else defer.succeed(None)

    async def message(self) -> Any:
        while True:
            frame = await self.frames.get()
            if frame.startswith("42"):
                name, payload = json.loads(frame[2:])
                assert name == "ewdjs", frame
                return payload
            if frame == "1" or frame.startswith("error:"):
                raise ConnectionError(frame)
