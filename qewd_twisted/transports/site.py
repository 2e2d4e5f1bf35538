# -*- test-case-name: tests.integration.test_websocket -*-
"""
The web layer: a twisted.web resource tree serving the WebSocket endpoints and static files.

- ``/socket.io/?EIO=3&transport=websocket``: Engine.IO 3 / socket.io v2 framing over WebSocket,
  exactly as the QEWD.js peer speaks it (docs/protocol.md §1.1-§1.2): the server sends the OPEN
  packet and ``40``, answers the client's ping ``2`` with ``3``, drops a client silent for
  pingInterval + pingTimeout, and carries messages as ``42["ewdjs",{...}]``.
- ``/ws``: plain WebSocket, one JSON message per text frame, the same messages; the node pings
  it every ``wsPingInterval`` and drops it when a pong is ``wsPingTimeout`` late.
- on both: a client that has not registered within ``registerTimeout`` is closed; an upgrade
  from a browser origin not in ``allowedOrigins`` gets 403 (http.WebSocketEndpoint).
- everything else: static files from ``webServerRootPath`` (static.StaticFiles).

The HTTP rules every request meets first (deadlines, body limits, admission) are in http.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.web.resource import NoResource, Resource
from zope.interface import implementer

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits
from qewd_twisted.core import envelope
from qewd_twisted.transports import polling, wire
from qewd_twisted.transports.batch import TurnBatch
from qewd_twisted.transports.framing import (
    DirectTextSend,
    FrameOnce,
    QuietFraming,
    SmallFrameUnmasking,
    WholeFrameReading,
)
from qewd_twisted.transports.http import IRequestBodyLimit, WebSocketEndpoint, clip
from qewd_twisted.transports.namespaces import Namespaces
from qewd_twisted.transports.static import StaticFiles
from qewd_twisted.core.node import Connection, Node

log = Logger()
_DEFAULTS = Limits()

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


_frame_once = FrameOnce()  # the reactor thread's: every send of a WebSocket connection


class _ProtocolConnection(Connection):
    def __init__(self, proto: WebSocketServerProtocol, id: str, ip: str) -> None:
        super().__init__(id, ip)
        self._proto = proto
        self.guard: _SlowReaderGuard | None = None
        self._pending: list[bytes] | None = None  # broadcast frames for the end of the turn
        self._pending_size = 0  # their payload bytes

    def send(self, frame: Any) -> None:
        data = self.encode(frame)  # may raise: the node answers then
        if self._pending is not None:
            self._queue(data)  # behind the broadcast frames already waiting
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        proto = self._proto
        if proto.state != proto.STATE_OPEN:
            # Closing (its close frame is out) or closed, before onClose has told the node:
            # nothing more can be sent, and Autobahn would raise for it (one such socket must
            # not stop a broadcast to the others).
            return
        proto.sendText(data)
        guard = self.guard
        if guard is not None and guard.paused:
            guard.sent(len(data))

    def _queue(self, data: bytes) -> None:
        """A broadcast frame: written with this socket's others at the end of the reactor
        turn (transports/batch.py), or now where sendFramed would not write it directly."""
        pending = self._pending
        proto = self._proto
        if pending is None or 0 < proto.maxMessagePayloadSize < len(data):
            if not proto.canSendFramed(data):
                if pending:
                    self.flush()  # what waits goes first
                return self._write(data)
            if pending is None:
                pending = self._pending = []
                self._pending_size = 0
                proto.factory.batch.add(self)
        once = _frame_once
        pending.append(once._frame if data is once._payload else once(data))
        self._pending_size += len(data)
        guard = self.guard
        if guard is not None and guard.paused:
            guard.sent(len(data))

    def flush(self) -> None:
        """Write the pending broadcast frames (TurnBatch, or before a close frame), with the
        counters one ``sendMessage`` per frame would have kept."""
        pending, self._pending = self._pending, None
        if not pending:
            return
        proto = self._proto
        if proto.state != proto.STATE_OPEN:
            return  # closing or gone: as a write to a closing socket, dropped
        data = b"".join(pending)
        stats = proto.trafficStats
        stats.outgoingWebSocketMessages += len(pending)
        stats.outgoingOctetsAppLevel += self._pending_size
        stats.outgoingOctetsWebSocketLevel += self._pending_size
        stats.outgoingWebSocketFrames += len(pending)
        if proto.send_queue:  # Autobahn's own queue first (never used by the node)
            proto.sendData(data)  # counts the wire bytes when it sends them
        else:
            stats.outgoingOctetsWireLevel += len(data)
            proto.transport.write(data)

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

    send_encoded = _ProtocolConnection._queue


class PlainConnection(_ProtocolConnection):
    framing = "plain"

    def encode(self, frame: Any) -> bytes:
        return wire.plain_bytes(frame)

    send_encoded = _ProtocolConnection._queue


class _NodeProtocol(WholeFrameReading, DirectTextSend, SmallFrameUnmasking, QuietFraming,
                    WebSocketServerProtocol):
    conn: _ProtocolConnection | None = None

    def sendCloseFrame(self, code: int | None = None, reasonUtf8: bytes | None = None,
                       isReply: bool = False) -> None:
        # broadcast frames still waiting for the end of the turn go before the close frame
        if self.conn is not None and self.conn._pending:
            self.conn.flush()
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def failHandshake(self, reason: str, code: int = 400,  # noqa: N802
                      responseHeaders: Any = None) -> None:  # noqa: N803
        # Autobahn's reasons quote the client's header values; it logs them twice and puts
        # them in the status line: keep them short.
        super().failHandshake(clip(reason), code, responseHeaders)

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
        f = self.factory
        if f.register_timeout:
            self._register_call = f.reactor.callLater(f.register_timeout, self._unregistered)
        f.node.connection_opened(self.conn)

    _register_call: Any = None
    release_connection_slot: Any = None  # set by the HTTP channel that handed us the socket

    def _unregistered(self) -> None:
        """``registerTimeout`` passed: a client that has not registered by now is closed."""
        self._register_call = None
        conn = self.conn
        if conn is None or not conn.open or conn.application is not None:
            return
        namespaces = getattr(self, "namespaces", None)
        if namespaces is not None and namespaces.registered():
            return  # it registered on an extra namespace (webSockets.io_paths)
        seconds = self.factory.register_timeout
        log.info("closing {conn}: not registered within {seconds} s", conn=conn, seconds=seconds)
        conn.close(1008, E.NOT_REGISTERED.format(seconds=f"{seconds:g}"))

    def _deliver(self, obj: Any) -> None:
        self.factory.node.receive(self.conn, obj)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.conn is not None:
            self.factory.node.connection_lost(self.conn)

    def connectionLost(self, reason: Any) -> None:
        release, self.release_connection_slot = self.release_connection_slot, None
        if release is not None:
            release()  # before the node hears of it: the slot is free when it does
        super().connectionLost(reason)
        # Autobahn cancels these only when a close frame arrives; a dropped TCP connection
        # would leave them scheduled (a timer firing on a dead protocol).
        for name in ("closeHandshakeTimeoutCall", "openHandshakeTimeoutCall",
                     "_register_call"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)


class EngineIOProtocol(_NodeProtocol):
    """One socket.io v2 client over the WebSocket transport."""

    _heartbeat: Any = None
    _heard = 0.0  # when the client was last heard from (reactor seconds)
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
        self._heard = f.reactor.seconds()
        self._heartbeat = f.reactor.callLater(
            (f.ping_interval + f.ping_timeout) / 1000.0, self._silent)

    def _silent(self) -> None:
        # Every message moves the deadline (_heard); the timer is moved only when it fires,
        # not per message: the client is closed pingInterval + pingTimeout after it was
        # last heard.
        f = self.factory
        left = self._heard + (f.ping_interval + f.ping_timeout) / 1000.0 - f.reactor.seconds()
        if left > 0:
            self._heartbeat = f.reactor.callLater(left, self._silent)
            return
        self._heartbeat = None
        log.info("closing {conn}: no ping within pingInterval + pingTimeout", conn=self.conn)
        self.dropConnection(abort=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.conn.open:
            return  # the node is closing this socket: nothing more is answered
        self._heard = self.factory.reactor.seconds()
        if isBinary:
            return self.conn.send(envelope.transport_error(E.BINARY_FRAME))
        try:
            text = payload.decode("utf-8")
            args = wire.qewd_event(text)  # 42["ewdjs",{...}]: the usual case, without a Packet
            packet = wire.decode(text) if args is None else None
        except (wire.WireError, UnicodeDecodeError) as e:
            return self.conn.send(envelope.transport_error(str(e)))
        if packet is None:
            return self._deliver(args[0] if args else None)  # type: ignore[index]
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
        if not self.conn.open:
            return  # the node is closing this socket: nothing more is answered
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
                 limits: Limits = _DEFAULTS,
                 io_paths: Iterable[str] = ()) -> WebSocketServerFactory:
    """An Autobahn server factory bound to ``node``; oversize messages close with 1009.

    ``/ws`` (PlainProtocol) gets WebSocket pings every ``limits.ws_ping_interval`` seconds;
    both endpoints close a client not registered within ``limits.register_timeout``;
    ``io_paths``: the extra socket.io namespaces (``webSockets.io_paths``)."""
    factory = WebSocketServerFactory(reactor=reactor)
    factory.io_paths = frozenset(io_paths)
    factory.protocol = protocol
    factory.node = node
    factory.ping_interval = ping_interval
    factory.ping_timeout = ping_timeout
    factory.max_connections = max_connections
    factory.max_buffered_bytes = max_buffered_bytes
    factory.register_timeout = limits.register_timeout
    factory._batched_timer = _ReactorTimer(reactor)
    factory.batch = TurnBatch(reactor)  # broadcast frames, written once per reactor turn
    pings = issubclass(protocol, PlainProtocol)
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message_size,
        maxFramePayloadSize=max_message_size,
        # /ws: WebSocket pings (on our reactor: _ReactorTimer); socket.io has its own heartbeat
        autoPingInterval=limits.ws_ping_interval if pings else 0,
        autoPingTimeout=limits.ws_ping_timeout if pings else 0,
        openHandshakeTimeout=30,
        closeHandshakeTimeout=5,
        failByDrop=False,
        # our protocols unmask small client frames themselves (framing.SmallFrameUnmasking)
        applyMask=not issubclass(protocol, SmallFrameUnmasking),
    )
    return factory


@implementer(IRequestBodyLimit)
class _Upgrade(Resource):
    """``/socket.io/``: routes by Engine.IO transport (docs/protocol.md §1.1).

    ``transport=polling`` goes to the long-polling resource; a WebSocket upgrade with a
    ``sid`` upgrades that polling session; one without starts a WebSocket-only session.
    """

    isLeaf = False

    def __init__(self, ws: Resource, client_js: str | None, engine: Any = None) -> None:
        super().__init__()
        self._ws = ws
        self._client_js = client_js
        self.engine = engine  # polling.Engine

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return 0  # the long-polling resource below declares its own (polling.PollingResource)

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"socket.io.js" and self._client_js and os.path.exists(self._client_js):
            return StaticFiles(self._client_js, "application/javascript", root=STATIC_DIR)
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
                    limits: Limits = _DEFAULTS,
                    allowed_origins: frozenset[str] | None = None,
                    hidden: Iterable[str] = (),
                    io_paths: Iterable[str] = ()) -> Resource:
    """The resource tree for one node. ``hidden``: files never served (the node's own);
    ``io_paths``: extra socket.io namespaces (``webSockets.io_paths``)."""
    io_paths = tuple(io_paths)
    options = {"max_connections": max_connections, "max_buffered_bytes": max_buffered_bytes,
               "ping_interval": limits.ping_interval, "ping_timeout": limits.ping_timeout,
               "limits": limits}
    eio = WebSocketEndpoint(make_factory(EngineIOProtocol, node, reactor, max_message_size,
                                         io_paths=io_paths, **options), allowed_origins)
    engine = polling.build_engine(
        node, reactor,
        lambda p: WebSocketEndpoint(make_factory(p, node, reactor, max_message_size, **options),
                                    allowed_origins),
        allowed_origins=allowed_origins, max_http_buffer_size=max_message_size,
        max_connections=max_connections, max_buffered_bytes=max_buffered_bytes,
        ping_interval=limits.ping_interval, ping_timeout=limits.ping_timeout,
        max_pending=limits.max_pending_handshakes, register_timeout=limits.register_timeout,
        io_paths=io_paths)
    plain = WebSocketEndpoint(make_factory(PlainProtocol, node, reactor, max_message_size,
                                           **options), allowed_origins)
    hidden = tuple(hidden)
    root: Resource = (StaticFiles(web_root, hidden=hidden, max_ranges=limits.max_ranges)
                      if web_root else Resource())
    root.putChild(b"socket.io", _Upgrade(eio, os.path.join(STATIC_DIR, "socket.io.js"), engine))
    root.putChild(b"ws", plain)
    # The browser clients we ship (qewd_twisted/static/*) are served at the root, e.g.
    # /ewd-client.js; socket.io.js is served under /socket.io/ where QEWD pages load it.
    if os.path.isdir(STATIC_DIR):
        for name in sorted(os.listdir(STATIC_DIR)):
            path = os.path.join(STATIC_DIR, name)
            if os.path.isfile(path) and name != "socket.io.js" and not name.startswith("."):
                root.putChild(name.encode(), StaticFiles(
                    path, "application/javascript", root=STATIC_DIR,
                    max_ranges=limits.max_ranges))
    return root
