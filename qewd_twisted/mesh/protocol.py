# -*- test-case-name: tests.test_links -*-
"""
The transport half of a micro-service link: an Engine.IO 3 / socket.io 2 WebSocket client.

``links.Link`` owns the state (registration, correlation, deadlines); this module only knows
how to talk to one remote QEWD node over one WebSocket, the way QEWD's own server-to-server
client does (PROTOCOL.md §1.1: WebSocket transport only, no polling, URL
``ws://host:port/socket.io/?EIO=3&transport=websocket``).

It also holds the plumbing a
``ClientService`` needs: the reconnect policy, an endpoint built from a ``http(s)://`` /
``ws(s)://`` URL, and a guard that keeps ``ClientService`` from seeing a connection that is
lost before ``prepareConnection`` has finished (see ``HandshakeGuardEndpoint``).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qewd_twisted.transports import wire
from qewd_twisted.transports.framing import QuietFraming

log = Logger()

SOCKET_IO_PATH = "/socket.io/?EIO=3&transport=websocket"


def endpoint_for_url(
    url: str, reactor: Any, tls_options: Any = None
) -> tuple[IStreamClientEndpoint, str]:
    """The client endpoint and the Engine.IO WebSocket URL for a remote node's base URL.

    ``http://`` and ``ws://`` are plain TCP; ``https://`` and ``wss://`` are TLS, verified
    against the URL's host name (``optionsForClientTLS``, service-identity) unless
    ``tls_options`` (an ``IOpenSSLClientConnectionCreator``) is given. IP literals get a TCP
    endpoint of their family, names a ``HostnameEndpoint``. The URL's path is ignored: QEWD
    always serves socket.io at ``/socket.io/`` (a path would be a namespace to socket.io).
    Raises ValueError for anything else.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "ws"):
        secure = False
    elif scheme in ("https", "wss"):
        secure = True
    else:
        raise ValueError("micro-service URL must be http://, https://, ws:// or wss://: " + url)
    host = parts.hostname
    if not host:
        raise ValueError("micro-service URL has no host: " + url)
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ValueError("micro-service URL has a bad port: " + url) from None

    endpoint: IStreamClientEndpoint
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        endpoint = HostnameEndpoint(reactor, host, port)
    else:
        cls = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        endpoint = cls(reactor, host, port)
    if secure:
        endpoint = wrapClientTLS(tls_options or optionsForClientTLS(host), endpoint)

    netloc = "[" + host + "]" if address is not None and address.version == 6 else host
    ws_url = "{}://{}:{}{}".format("wss" if secure else "ws", netloc, port, SOCKET_IO_PATH)
    return endpoint, ws_url


OnFrame = Callable[[dict[str, Any]], None]  # a link user's per-request frame callback


# -- ClientService plumbing


def link_retry_policy(
    rng: Callable[[], float] = random.random,
    initial: float = 0.5,
    maximum: float = 30.0,
    jitter: float = 1.0,
) -> Callable[[int], float]:
    """Reconnect delays for ``ClientService``: 0.5 s doubling to 30 s, plus up to ``jitter``
    seconds of noise so many masters do not reconnect to a restarted remote in step.

    ``backoffPolicy`` adds its jitter after capping, so the cap is set ``jitter`` below
    ``maximum``; every delay lies in ``[initial, maximum]``. ClientService counts attempts
    from 1, so the first retry waits ``initial`` (+ noise).
    """
    policy = backoffPolicy(
        initialDelay=initial, maxDelay=maximum - jitter, factor=2, jitter=lambda: rng() * jitter
    )
    return lambda attempt: min(max(policy(max(attempt - 1, 0)), initial), maximum)


class LinkReceiver(TypingProtocol):
    """What an ``EngineIOClientProtocol`` reports to (``links.Link`` implements it)."""

    url: str

    def frame_received(self, proto: EngineIOClientProtocol, frame: Any) -> None: ...

    def protocol_lost(self, proto: EngineIOClientProtocol, reason: Failure) -> None: ...


class EngineIOClientProtocol(QuietFraming, WebSocketClientProtocol):
    """One WebSocket to a remote QEWD node, framed as Engine.IO 3 / socket.io 2.

    ``when_ready()`` fires once the server's OPEN packet (``0{...}``) and socket.io CONNECT
    (``40``) have both arrived (PROTOCOL.md §1.1, qewd-peer README "Wire protocol"). From
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
            log.warn("link {url}: binary frame ignored", url=self.factory.receiver.url)
            return
        try:
            packet = wire.decode(payload.decode("utf-8"))
        except (UnicodeDecodeError, wire.WireError) as e:
            log.warn("link {url}: undecodable frame ignored: {why}",
                     url=self.factory.receiver.url, why=str(e))
            return
        handler = getattr(self, "_on_" + packet.kind.replace("-", "_"), None)
        if handler is not None:
            handler(packet)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._gone(reason)

    # -- Engine.IO / socket.io packets (PROTOCOL.md §1.1)

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
        log.info("link {url}: remote ended the session ({why})",
                 url=self.factory.receiver.url, why=why)
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
        log.warn("link {url}: no pong within {timeout}s, dropping the connection",
                 url=self.factory.receiver.url, timeout=self._ping_timeout)
        self.abort()

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

    def __init__(self, ws_url: str, reactor: Any, clock: IReactorTime, receiver: LinkReceiver):
        super().__init__(url=ws_url, reactor=reactor)
        self.clock = clock
        self.receiver = receiver
        self.setProtocolOptions(
            autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0
        )


class _GuardProtocol(Protocol):
    """Sits between the transport and ClientService's protocol proxy (see below)."""

    def __init__(self, inner: IProtocol) -> None:
        self.inner = inner

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.connected = True
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        real = getattr(self.inner, "link_protocol", None)
        if real is not None and not real.established:
            # Lost before prepareConnection succeeded: tell only our protocol, whose
            # failing handshake already counts as a failed attempt for ClientService.
            real.connectionLost(reason)
        else:
            self.inner.connectionLost(reason)


class _GuardFactory(Factory):
    noisy = False  # one "Starting factory" line per reconnect attempt is noise

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> Protocol | None:
        inner = self.wrapped.buildProtocol(addr)
        return None if inner is None else _GuardProtocol(inner)


@implementer(IStreamClientEndpoint)
class HandshakeGuardEndpoint:
    """Wraps the link's endpoint so ClientService never hears of a half-prepared connection.

    ClientService (Twisted 26) cannot take a disconnect while ``prepareConnection`` is still
    running, or after it failed: its state machine raises ``NoTransition`` from
    ``connectionLost``. A link loses connections in exactly those states (remote closes
    mid-handshake, registration refused, handshake timeout). Until the link marks its
    protocol ``established``, the guard delivers ``connectionLost`` to the link's protocol
    only; the failed handshake already told ClientService to back off and retry.
    It also logs each attempt and each connect failure for the link.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        on_attempt: Callable[[], None],
        on_failure: Callable[[Failure], None],
        label: str = "",
    ) -> None:
        self._endpoint = endpoint
        self._on_attempt = on_attempt
        self._on_failure = on_failure
        self._label = label

    def __repr__(self) -> str:
        return f"<link endpoint {self._label}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self._on_attempt()
        d = self._endpoint.connect(_GuardFactory(protocolFactory))

        def unwrap(guard: _GuardProtocol) -> IProtocol:
            return guard.inner

        def failed(f: Failure) -> Failure:
            self._on_failure(f)
            return f

        return d.addCallbacks(unwrap, failed)
