# -*- test-case-name: tests.integration.test_websocket -*-
"""
The web layer: a twisted.web resource tree serving the WebSocket endpoints and static files.

- ``/socket.io/?EIO=3&transport=websocket``: Engine.IO 3 / socket.io v2 framing over WebSocket,
  exactly as the QEWD.js peer speaks it (PROTOCOL.md §1.1-§1.2): the server sends the OPEN packet
  and ``40``, answers the client's ping ``2`` with ``3``, drops a client silent for
  pingInterval + pingTimeout, and carries messages as ``42["ewdjs",{...}]``.
- ``/ws``: plain WebSocket, one JSON message per text frame, the same messages.
- everything else: static files from ``webServerRootPath`` (no directory listings).
"""

from __future__ import annotations

import base64
import os
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.web.resource import NoResource, Resource
from twisted.web.static import File

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits
from qewd_twisted.core import envelope
from qewd_twisted.transports import polling, wire
from qewd_twisted.transports.namespaces import Namespaces
from qewd_twisted.transports.framing import DirectTextSend, QuietFraming, SmallFrameUnmasking
from qewd_twisted.core.node import Connection, Node

log = Logger()

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def new_socket_id() -> str:
    """A 20-character id like socket.io 2's (15 random bytes, URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(15)).decode("ascii")


def peer_ip(peer: str) -> str:
    """``tcp:127.0.0.1:5000`` or ``tcp6:::1:5000`` -> the address part."""
    for prefix in ("tcp4:", "tcp6:", "tcp:", "unix:"):
        if peer.startswith(prefix):
            peer = peer[len(prefix):]
            break
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class _SlowReaderGuard:
    """Bounds what the node queues for a client that stops reading.

    Registered as the socket's streaming producer (taking over from the HTTP channel that did
    the upgrade): Twisted pauses it when the transport's write buffer passes its bufferSize
    (64 KiB) and resumes it once the buffer drains. While paused, every frame sent is counted;
    past ``limit`` bytes the connection is dropped, so one stalled client cannot make the node
    buffer without bound.
    """

    def __init__(self, proto: WebSocketServerProtocol, limit: int) -> None:
        self._proto = proto
        self.limit = limit
        self.paused = False
        self.pending = 0

    def attach(self) -> None:
        transport = self._proto.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pending = 0

    def stopProducing(self) -> None:
        self.paused = False

    def sent(self, nbytes: int) -> None:
        if not self.paused:
            return
        self.pending += nbytes
        if self.pending > self.limit:
            conn = self._proto.conn
            log.warn("dropping {conn}: it stopped reading and {n} bytes are queued for it",
                     conn=conn, n=self.pending)
            self.pending = 0
            if conn is not None:
                conn.open = False
            self._proto.dropConnection(abort=True)


class _ProtocolConnection(Connection):
    def __init__(self, proto: WebSocketServerProtocol, id: str, ip: str) -> None:
        super().__init__(id, ip)
        self._proto = proto
        self.guard: _SlowReaderGuard | None = None

    def _write(self, data: bytes) -> None:
        self._proto.sendMessage(data, isBinary=False)
        if self.guard is not None:
            self.guard.sent(len(data))

    def traffic(self) -> tuple[int, int]:
        # Autobahn counts every socket's wire bytes anyway: metrics read them, add nothing.
        s = self._proto.trafficStats
        return (s.preopenIncomingOctetsWireLevel + s.incomingOctetsWireLevel,
                s.preopenOutgoingOctetsWireLevel + s.outgoingOctetsWireLevel)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.open:
            return
        self.open = False  # nothing more can be sent once the closing handshake starts
        if code == 1000 or 3000 <= code <= 4999:
            self._proto.sendClose(code, reason or None)
        else:
            # sendClose accepts only application codes; 1001 "going away" (server shutting
            # down, RFC 6455 §7.4.1) is a protocol code, sent through the frame-level call.
            self._proto.sendCloseFrame(code, reason.encode("utf-8")[:120] or None)


class EngineIOConnection(_ProtocolConnection):
    framing = "engine.io"

    def encode(self, frame: Any) -> bytes:
        return wire.event_bytes(frame)  # may raise: the node answers then

    def send_encoded(self, data: bytes) -> None:
        self._write(data)


class PlainConnection(_ProtocolConnection):
    framing = "plain"

    def encode(self, frame: Any) -> bytes:
        return wire.plain_bytes(frame)

    def send_encoded(self, data: bytes) -> None:
        self._write(data)


class _NodeProtocol(DirectTextSend, SmallFrameUnmasking, QuietFraming, WebSocketServerProtocol):
    conn: _ProtocolConnection | None = None

    def _admit(self) -> None:
        """Refuse the handshake (HTTP 503) when the node is at maxConnections."""
        f = self.factory
        if len(f.node.connections) >= f.max_connections:
            log.warn("refusing a connection: {n} clients connected (maxConnections)",
                     n=len(f.node.connections))
            raise ConnectionDeny(503, E.TOO_MANY_CONNECTIONS)

    def _opened(self) -> None:
        guard = _SlowReaderGuard(self, self.factory.max_buffered_bytes)
        guard.attach()
        self.conn.guard = guard
        self.factory.node.connection_opened(self.conn)

    def _deliver(self, obj: Any) -> None:
        self.factory.node.receive(self.conn, obj)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.conn is not None:
            self.factory.node.connection_lost(self.conn)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        # Autobahn cancels these only when a close frame arrives; a dropped TCP connection
        # would leave them scheduled (a timer firing on a dead protocol).
        for name in ("closeHandshakeTimeoutCall", "openHandshakeTimeoutCall"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)


class EngineIOProtocol(_NodeProtocol):
    """One socket.io v2 client over the WebSocket transport."""

    _heartbeat: Any = None
    namespaces: Namespaces | None = None  # webSockets.io_paths (transports.namespaces)

    def onConnect(self, request: Any) -> None:
        eio = request.params.get("EIO", ["3"])[0]
        transport = request.params.get("transport", ["websocket"])[0]
        if eio != "3":
            raise ConnectionDeny(400, "Unsupported protocol version: this server speaks EIO=3")
        if transport != "websocket":
            raise ConnectionDeny(400, "Transport unknown: only websocket is served")
        self._admit()
        self.conn = EngineIOConnection(self, new_socket_id(), peer_ip(request.peer))

    def onOpen(self) -> None:
        f = self.factory
        self.sendMessage(wire.open_packet(self.conn.id, f.ping_interval, f.ping_timeout).encode())
        self.sendMessage(wire.SIO_CONNECT.encode())
        self._opened()
        if f.io_paths:
            self.namespaces = Namespaces(f.node, self.conn, f.io_paths)
        self._heartbeat = f.reactor.callLater(
            (f.ping_interval + f.ping_timeout) / 1000.0, self._silent)

    def _silent(self) -> None:
        self._heartbeat = None
        log.info("closing {conn}: no ping within pingInterval + pingTimeout", conn=self.conn)
        self.dropConnection(abort=True)

    def _alive(self) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            f = self.factory
            self._heartbeat.reset((f.ping_interval + f.ping_timeout) / 1000.0)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._alive()
        if isBinary:
            return self.conn.send(envelope.transport_error(E.BINARY_FRAME))
        try:
            packet = wire.decode(payload.decode("utf-8"))
        except (wire.WireError, UnicodeDecodeError) as e:
            return self.conn.send(envelope.transport_error(str(e)))
        kind = packet.kind
        if self.namespaces is not None and packet.namespace != "/":
            return self.namespaces.packet(packet)
        if kind == "ping":
            self.sendMessage((wire.EIO_PONG + packet.data).encode("utf-8"))
        elif kind == "event":
            if packet.namespace != "/":
                self.sendMessage(f'44{packet.namespace},"{E.BAD_NAMESPACE}"'.encode())
            elif packet.name != wire.EVENT_NAME:
                self.conn.send(envelope.transport_error(
                    E.UNKNOWN_EVENT.format(name=packet.name[:64])))
            else:
                self._deliver(packet.args[0] if packet.args else None)
        elif kind == "connect":
            if packet.namespace != "/":
                self.sendMessage(f'44{packet.namespace},"{E.BAD_NAMESPACE}"'.encode())
        elif kind == "close" or (kind == "disconnect" and packet.namespace == "/"):
            self.sendClose()  # a disconnect from another namespace concerns nothing here
        elif kind == "binary":
            self.conn.send(envelope.transport_error(E.BINARY_FRAME))
        # pong, noop, upgrade, ack, sio-error from a client: nothing to do

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None
        if self.namespaces is not None:
            self.namespaces.close_all()
        super().onClose(wasClean, code, reason)


class PlainProtocol(_NodeProtocol):
    """The ``/ws`` endpoint: one JSON message per text frame."""

    def onConnect(self, request: Any) -> None:
        self._admit()
        self.conn = PlainConnection(self, new_socket_id(), peer_ip(request.peer))

    def onOpen(self) -> None:
        self._opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return self.conn.send(envelope.transport_error(E.BINARY_FRAME))
        try:
            obj = wire.decode_plain(payload.decode("utf-8"))
        except (wire.WireError, UnicodeDecodeError) as e:
            return self.conn.send(envelope.transport_error(str(e)))
        self._deliver(obj)


class _ReactorTimer:
    """Autobahn's per-factory timer, unbatched and on the factory's own reactor.

    Autobahn batches handshake and close timeouts into 200 ms buckets whose bucket call stays
    scheduled after every timer in it is cancelled (a dirty reactor in trial); plain callLater
    cancels cleanly and follows a test's Clock.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def call_later(self, delay: float, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self._reactor.callLater(delay, func, *args, **kwargs)


def make_factory(protocol: type, node: Node, reactor: Any, max_message_size: int,
                 ping_interval: int = wire.PING_INTERVAL_MS,
                 ping_timeout: int = wire.PING_TIMEOUT_MS,
                 max_connections: int = Limits.max_connections,
                 max_buffered_bytes: int = Limits.max_buffered_bytes,
                 io_paths: tuple[str, ...] = ()) -> WebSocketServerFactory:
    """An Autobahn server factory bound to ``node``; oversize messages close with 1009."""
    factory = WebSocketServerFactory(reactor=reactor)
    factory.io_paths = frozenset(io_paths)
    factory.protocol = protocol
    factory.node = node
    factory.ping_interval = ping_interval
    factory.ping_timeout = ping_timeout
    factory.max_connections = max_connections
    factory.max_buffered_bytes = max_buffered_bytes
    factory._batched_timer = _ReactorTimer(reactor)
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message_size,
        maxFramePayloadSize=max_message_size,
        autoPingInterval=0,
        openHandshakeTimeout=30,
        closeHandshakeTimeout=5,
        failByDrop=False,
        # our protocols unmask small client frames themselves (framing.SmallFrameUnmasking)
        applyMask=not issubclass(protocol, SmallFrameUnmasking),
    )
    return factory


class StaticFiles(File):
    """Static files without directory listings or script processors."""

    indexNames = ["index.html"]

    def directoryListing(self) -> Resource:
        return NoResource("No such file")


class _Upgrade(Resource):
    """``/socket.io/``: routes by Engine.IO transport (docs/protocol.md §1.1).

    ``transport=polling`` goes to the long-polling resource; a WebSocket upgrade with a
    ``sid`` upgrades that polling session; one without starts a WebSocket-only session.
    """

    isLeaf = False

    def __init__(self, ws: WebSocketResource, client_js: str | None, engine: Any = None) -> None:
        super().__init__()
        self._ws = ws
        self._client_js = client_js
        self.engine = engine  # polling.Engine

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"socket.io.js" and self._client_js and os.path.exists(self._client_js):
            return File(self._client_js, defaultType="application/javascript")
        if path == b"":
            # args from the query string (also when the resource is looked up before the
            # request is complete, with request.args not parsed yet)
            args = request.args or polling.query_args(request.uri)
            transport = (args.get(b"transport") or [b""])[0]
            upgrade = (request.getHeader(b"upgrade") or b"").lower()
            if upgrade == b"websocket":
                if self.engine is not None and args.get(b"sid"):
                    return self.engine.upgrade
                return self._ws
            if transport == b"polling" and self.engine is not None:
                return self.engine.polling
            return _EngineError(3 if transport == b"websocket" else 0)
        return NoResource()


class _EngineError(Resource):
    isLeaf = True

    def __init__(self, code: int = 0) -> None:
        super().__init__()
        self._code = code

    def render(self, request: Any) -> bytes:
        return polling.engine_error(request, self._code)


def build_site_root(node: Node, reactor: Any, *, web_root: str | None,
                    max_message_size: int, max_connections: int = Limits.max_connections,
                    max_buffered_bytes: int = Limits.max_buffered_bytes,
                    ping_interval: int = Limits.ping_interval,
                    ping_timeout: int = Limits.ping_timeout,
                    max_pending_handshakes: int = Limits.max_pending_handshakes,
                    io_paths: tuple[str, ...] = ()) -> Resource:
    """The resource tree for one node (``io_paths``: extra socket.io namespaces)."""
    limits = {"max_connections": max_connections, "max_buffered_bytes": max_buffered_bytes,
              "ping_interval": ping_interval, "ping_timeout": ping_timeout}
    eio = WebSocketResource(make_factory(EngineIOProtocol, node, reactor, max_message_size,
                                         io_paths=io_paths, **limits))
    engine = polling.build_engine(
        node, reactor, lambda p: make_factory(p, node, reactor, max_message_size, **limits),
        max_http_buffer_size=max_message_size, max_pending=max_pending_handshakes,
        io_paths=io_paths, **limits)
    plain = WebSocketResource(make_factory(PlainProtocol, node, reactor, max_message_size,
                                           **limits))
    root: Resource = StaticFiles(web_root) if web_root else Resource()
    root.putChild(b"socket.io", _Upgrade(eio, os.path.join(STATIC_DIR, "socket.io.js"), engine))
    root.putChild(b"ws", plain)
    # The browser clients we ship (qewd_twisted/static/*) are served at the root, e.g.
    # /ewd-client.js; socket.io.js is served under /socket.io/ where QEWD pages load it.
    if os.path.isdir(STATIC_DIR):
        for name in sorted(os.listdir(STATIC_DIR)):
            path = os.path.join(STATIC_DIR, name)
            if os.path.isfile(path) and name != "socket.io.js" and not name.startswith("."):
                root.putChild(name.encode(), File(path, defaultType="application/javascript"))
    return root
