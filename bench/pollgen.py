"""
Long-polling clients for the load generator (``python -m bench.loadgen --transport ...``).

``--transport polling``: each client is an Engine.IO 3 long-polling client as socket.io-client
2 runs it with ``transports: ['polling']``: two keep-alive HTTP/1.1 connections, one always
holding a GET (every packet the server queued comes back in one payload), one carrying POSTs
(what is sent while a POST is in flight goes in the next one, several packets per payload).
``--transport upgrade``: a polling handshake, then a WebSocket opened with that sid, ``2probe``
/ ``3probe`` / ``5``, and from then on the plain WebSocket client of loadgen.py: the throughput
of an upgraded connection.

Everything above the transport (registration, requests, misdelivery checks) is loadgen.py's
``Client``; only how packets travel differs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from qewd_twisted.transports.payload import encode_payload, iter_payload

from .loadgen import Client, Generator


def _packets(body: bytes) -> list[bytes]:
    """A text payload's packets (lengths in UTF-16 units, as engine.io counts them)."""
    if body.isascii():
        out, i, n = [], 0, len(body)
        while i < n:
            colon = body.index(b":", i)
            size = int(body[i:colon])
            out.append(body[colon + 1:colon + 1 + size])
            i = colon + 1 + size
        return [p for p in out if p]
    return [p.encode("utf-8") if isinstance(p, str) else b"" for p in
            iter_payload(body.decode("utf-8"))]


class _Http:
    """One keep-alive HTTP/1.1 connection: request, then the whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                + (f"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {len(body)}\r\n"
                   if method == "POST" else "") + "\r\n")
        self.writer.write(head.encode() + body)
        head_bytes = await self.reader.readuntil(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class PollingClient(Client):
    """loadgen's Client, carried by Engine.IO long-polling."""

    def __init__(self, gen: "PollingGenerator", idx: int) -> None:
        super().__init__(gen, idx)
        self.handshaking = False
        self.outbox: list[bytes] = []
        self.posting = False
        self.base = gen.polling_path
        self._get = _Http(gen.host, gen.port)
        self._post = _Http(gen.host, gen.port)
        self._loop_task: asyncio.Future[Any] | None = None
        self._t = 0

    def _url(self) -> str:
        self._t += 1
        return f"{self.base}&sid={self.sid}&t={self._t}" if self.sid else self.base

    async def start(self) -> None:
        status, body = await self._get.request("GET", self._url())
        if status != 200:
            raise ConnectionError(f"handshake {status}: {body[:80]!r}")
        self._deliver(body)
        self._loop_task = asyncio.ensure_future(self._poll())

    def _deliver(self, body: bytes) -> None:
        for packet in _packets(body):
            if self.closed:
                return
            if packet[:1] == b"0":
                self.sid = json.loads(packet[1:])["sid"]
            elif packet == b"1":
                self._lost("server closed the session")
                return
            else:
                self.on_text(packet)

    async def _poll(self) -> None:
        try:
            while not self.closed:
                status, body = await self._get.request("GET", self._url())
                if status != 200:
                    return self._lost(f"poll {status}")
                self._deliver(body)
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            if not self.closed:
                self._lost(f"poll: {type(e).__name__}")

    def send_text(self, text: bytes) -> None:
        if self.closed:
            return
        self.outbox.append(text)
        if not self.posting:
            self.posting = True
            asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self.outbox and not self.closed:
                batch, self.outbox = self.outbox, []
                status, body = await self._post.request("POST", self._url(),
                                                        encode_payload(batch))
                if (status, body) != (200, b"ok"):
                    return self._lost(f"post {status}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            if not self.closed:
                self._lost(f"post: {type(e).__name__}")
        finally:
            self.posting = False

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.phase not in ("closing", "done"):
            self.gen.stats.connections_lost += 1
            self.gen.client_failed(self, why)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(why))
        self._get.close()
        self._post.close()

    def close(self) -> None:
        if self.closed:
            return
        self.phase = "closing"
        self.closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._get.close()
        self._post.close()


class UpgradedClient(Client):
    """A polling handshake, then loadgen's WebSocket Client on the upgraded socket."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        g = self.gen
        transport.write(  # type: ignore[attr-defined]
            _handshake(g.host, g.port, f"{g.path}&sid={self.sid}"))

    def data_received(self, data: bytes) -> None:
        was = self.handshaking
        super().data_received(data)
        if was and not self.handshaking and not self.closed:
            self.send_text(b"2probe")

    def on_text(self, payload: bytes) -> None:
        if payload == b"3probe":
            self.send_text(b"5")
            return super().on_text(b"40")  # connected since the handshake: register now
        super().on_text(payload)


def _handshake(host: str, port: int, path: str) -> bytes:
    from .loadgen import handshake_request

    return handshake_request(host, port, path)


class PollingGenerator(Generator):
    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.polling_path = self.path.replace("transport=websocket", "transport=polling")
        if "transport=polling" not in self.polling_path:
            self.polling_path += ("&" if "?" in self.polling_path else "?") + "transport=polling"
        self.client_class = PollingClient if args.transport == "polling" else UpgradedClient

    async def open_client(self, client: Client) -> None:
        if isinstance(client, PollingClient):
            await client.start()
            return
        http = _Http(self.host, self.port)
        try:
            status, body = await http.request("GET", self.polling_path)
        finally:
            http.close()
        if status != 200:
            raise ConnectionError(f"handshake {status}")
        packets = _packets(body)
        client.sid = json.loads(packets[0][1:])["sid"]
        await asyncio.get_running_loop().create_connection(lambda: client, self.host, self.port)
