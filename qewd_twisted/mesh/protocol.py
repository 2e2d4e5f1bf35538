# -*- test-case-name: tests.test_links -*-
"""
The wire half of a micro-service link: an Engine.IO 3 / socket.io 2 WebSocket client protocol
and its factory.

``links.Link`` owns the state (registration, correlation through ``correlation.Correlator``);
this module only knows how to talk to one remote QEWD node over one WebSocket, the way QEWD's
own server-to-server client does (docs/protocol.md §1.1: WebSocket transport only, no polling,
URL ``ws://host:port/socket.io/?EIO=3&transport=websocket``). It reports to an
`ILinkTransportReceiver` (the link). Endpoints, retries and the handshake guard are in
``policy``.

May import: ``qewd_twisted.transports`` (wire codecs, framing), Twisted and Autobahn.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from qewd_twisted.transports import wire
from qewd_twisted.transports.framing import QuietFraming

__all__ = ["EngineIOClientProtocol", "ILinkTransportReceiver", "LinkClientFactory"]

log = Logger()


class ILinkTransportReceiver(Interface):
    """What an `EngineIOClientProtocol` reports to (``links.Link`` provides it)."""

    url = Attribute("str: the remote's URL, for log events")

    def frame_received(proto, frame):
        """One ``ewdjs`` event's payload from the remote."""

    def protocol_lost(proto, reason):
        """The connection is gone (a Failure)."""

    def problem(proto, text):
        """Something an operator should see (no pong, undecodable frames, kicked out)."""


class EngineIOClientProtocol(QuietFraming, WebSocketClientProtocol):
    """One WebSocket to a remote QEWD node, framed as Engine.IO 3 / socket.io 2.

    ``when_ready()`` fires once the server's OPEN packet (``0{...}``) and socket.io CONNECT
    (``40``) have both arrived (docs/protocol.md §1.1, qewd-peer README "Wire protocol"). From
    then on every ``42["ewdjs",{...}]`` event goes to the receiver. The client pings (``2``) every
    ``pingInterval`` and drops the connection when no pong (``3``) comes within
    ``pingTimeout``, as socket.io-client 2 does; a dead TCP peer is noticed that way.
    All timers run on the factory's ``clock``.
    """

    factory: LinkClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.is_ready = False
        self._ready_waiters: list[Deferred[None]] = []
        # Set by the link once registration succeeded; read by HandshakeGuardEndpoint.
        self.established = False
        self.sid: str | None = None
        self.lost = False
        self._opened = False
        self._ping_call: IDelayedCall | None = None
        self._pong_deadline: IDelayedCall | None = None
        self._ping_interval = wire.PING_INTERVAL_MS / 1000.0
        self._ping_timeout = wire.PING_TIMEOUT_MS / 1000.0
        self._lost_waiters: list[Deferred[None]] = []

    @property
    def link_protocol(self) -> EngineIOClientProtocol:
        """This object, even when reached through ClientService's protocol proxy."""
        return self

    # -- sending

    def send_event(self, message: dict[str, Any]) -> None:
        """Send one QEWD message as ``42["ewdjs",{...}]``."""
        self.sendMessage(wire.event_bytes(message), isBinary=False)  # lone surrogates escaped

    def send_disconnect(self) -> None:
        """Tell the remote socket.io we are leaving (``41``), as socket.io-client does."""
        if self._opened and not self.lost:
            self._send_text(wire.SIO_DISCONNECT)

    def abort(self) -> None:
        """Drop the connection now (no closing handshake); connectionLost follows."""
        if self.transport is not None and not self.lost:
            self.transport.abortConnection()

    def when_ready(self) -> Deferred[None]:
        """Fires when the Engine.IO and socket.io handshakes are done; fails if lost first."""
        if self.is_ready:
            return succeed(None)
        if self.lost:
            return fail(ConnectionLost("connection lost before the Engine.IO handshake"))
        self._ready_waiters.append(Deferred())
        return self._ready_waiters[-1]

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires once this connection is gone."""
        if self.lost:
            return succeed(None)
        self._lost_waiters.append(Deferred())
        return self._lost_waiters[-1]

    def _send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    # -- Autobahn callbacks

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self._problem("link {url}: binary frame ignored")
            return
        try:
            packet = wire.decode(payload.decode("utf-8"))
        except (UnicodeDecodeError, wire.WireError) as e:
            self._problem("link {url}: undecodable frame ignored: {why}", why=str(e))
            return
        handler = getattr(self, "_on_" + packet.kind.replace("-", "_"), None)
        if handler is not None:
            handler(packet)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._gone(reason)

    # -- Engine.IO / socket.io packets (docs/protocol.md §1.1)

    def _on_open(self, packet: wire.Packet) -> None:
        data = packet.data if isinstance(packet.data, dict) else {}
        self.sid = data.get("sid") if isinstance(data.get("sid"), str) else None
        self._ping_interval = _millis(data.get("pingInterval"), wire.PING_INTERVAL_MS)
        self._ping_timeout = _millis(data.get("pingTimeout"), wire.PING_TIMEOUT_MS)
        self._opened = True
        self._schedule_ping()

    def _on_connect(self, packet: wire.Packet) -> None:
        if packet.namespace == "/" and self._opened and not self.is_ready:
            self.is_ready = True
            _fire(self._ready_waiters, None)

    def _on_event(self, packet: wire.Packet) -> None:
        if packet.name == wire.EVENT_NAME and packet.args and packet.namespace == "/":
            try:
                self.factory.receiver.frame_received(self, packet.args[0])
            except Exception:  # noqa: BLE001 - one bad frame must not break the link
                log.failure("link {url}: frame handling failed", url=self.factory.receiver.url)

    def _on_ping(self, packet: wire.Packet) -> None:
        # Servers do not ping in EIO3, but answering is harmless.
        self._send_text(wire.EIO_PONG + (packet.data or ""))

    def _on_pong(self, packet: wire.Packet) -> None:
        if self._pong_deadline is not None:
            if self._pong_deadline.active():
                self._pong_deadline.cancel()
            self._pong_deadline = None
            self._schedule_ping()

    def _on_close(self, packet: wire.Packet) -> None:
        self._kicked("Engine.IO close")

    def _on_disconnect(self, packet: wire.Packet) -> None:
        if packet.namespace == "/":
            self._kicked("socket.io disconnect")

    def _on_sio_error(self, packet: wire.Packet) -> None:
        self._kicked("socket.io error " + wire.dumps(packet.data))

    def _kicked(self, why: str) -> None:
        self._problem("link {url}: remote ended the session ({why})", warn=False, why=why)
        self.abort()

    # -- pings

    def _schedule_ping(self) -> None:
        self._cancel_timers()
        self._ping_call = self.factory.clock.callLater(self._ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_call = None
        self._send_text(wire.EIO_PING)
        self._pong_deadline = self.factory.clock.callLater(self._ping_timeout, self._no_pong)

    def _no_pong(self) -> None:
        self._pong_deadline = None
        self._problem("link {url}: no pong within {timeout}s, dropping the connection",
                      timeout=self._ping_timeout)
        self.abort()

    def _problem(self, format: str, warn: bool = True, **fields: Any) -> None:
        """Log one event and report it to the receiver (the status page's link events)."""
        receiver = self.factory.receiver
        (log.warn if warn else log.info)(format, url=receiver.url, **fields)
        try:
            receiver.problem(self, formatEvent({"log_format": format, "url": receiver.url,
                                                **fields}))
        except Exception:  # noqa: BLE001 - reporting must not break the link
            log.failure("link {url}: problem report failed", url=receiver.url)

    def _cancel_timers(self) -> None:
        for call in (self._ping_call, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._pong_deadline = None

    def _gone(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        self._cancel_timers()
        _fire(self._ready_waiters, reason)
        try:
            self.factory.receiver.protocol_lost(self, reason)
        finally:
            _fire(self._lost_waiters, None)


def _fire(waiters: list[Deferred[None]], result: None | Failure) -> None:
    """Fire and empty a waiter list, skipping Deferreds a caller has cancelled already."""
    pending = list(waiters)
    del waiters[:]
    for d in pending:
        if not d.called:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


def _millis(value: Any, default_ms: int) -> float:
    """A positive millisecond count from the OPEN packet, as seconds (else the default)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value / 1000.0
    return default_ms / 1000.0


class LinkClientFactory(WebSocketClientFactory):
    """Builds ``EngineIOClientProtocol``s for one link.

    Autobahn's own timers run on txaio's global reactor whatever ``reactor`` it is given, so
    its auto-ping and handshake timeouts are switched off: Engine.IO pings and the link's
    handshake deadline do that job on ``clock`` (STYLE.md: no global reactor, no leftovers).
    """

    protocol = EngineIOClientProtocol

    def __init__(self, ws_url: str, reactor: Any, clock: IReactorTime,
                 receiver: ILinkTransportReceiver):
        super().__init__(url=ws_url, reactor=reactor)
        self.clock = clock
        self.receiver = receiver
        self.setProtocolOptions(
            autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0
        )
