# -*- test-case-name: tests.test_polling -*-
"""
Engine.IO 3 sessions that start on HTTP long-polling and may upgrade to a WebSocket.

What lives here: ``EngineSession`` (one client: its packet queue, the GET waiting for packets,
the ping timer, the upgrade probe, close), ``SessionConnection`` (the ``Connection`` the node
sees: sending queues packets; the node does not know the transport) and ``EngineSessions``
(every session by sid, the limits they share). The HTTP side (``polling.py``) and the upgraded
WebSocket hand this module a poll (``IPoll``) or a socket (``IEngineSocket``); nothing here
touches twisted.web or Autobahn. May import: wire, payload, errors, core (requests,
envelope), config.limits.

Facts carried over from engine.io 3.6 (the QEWD.js peer's engine; docs/protocol.md §1.1):
the handshake payload is the open packet (``upgrades: ["websocket"]``) and socket.io's ``40``;
any packet from the client resets a timer of pingInterval + pingTimeout after which the
session closes ("ping timeout"); a second GET while one waits closes the session ("overlap
from client": the waiting GET gets the close packet ``1``, the second a bare 500); a payload
that does not parse closes it ("parse error"); the upgrade is ``2probe`` → ``3probe`` on the
new socket, noops to the waiting GET so the client can pause polling, then ``5``, after which
everything queued goes out on the WebSocket, in order.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from typing import Any, Callable, Iterable

from twisted.logger import Logger
from zope.interface import Interface

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits
from qewd_twisted.core import envelope
from qewd_twisted.core.requests import Connection
from qewd_twisted.transports import wire
from qewd_twisted.transports.namespaces import Namespaces
from qewd_twisted.transports.payload import BinaryPacket, Packet, PayloadError

log = Logger()

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
CLOSE_PACKET = b"1"
NOOP_PACKET = b"6"

#: engine.io 3's default upgradeTimeout: a probe socket that sends no ``5`` by then is closed.
UPGRADE_TIMEOUT = 10.0
#: engine.io's closeTimeout: how long a closing session waits for a GET to hand it ``1``.
CLOSE_TIMEOUT = 30.0


def new_sid() -> str:
    """A 20-character id like engine.io 3's (15 random bytes, URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(15)).decode("ascii")


class IPoll(Interface):
    """A GET waiting for packets (one HTTP request held open)."""

    def deliver(packets: list[bytes]) -> None:
        """Answer the GET with these packets (possibly none) and finish it."""

    def refuse() -> None:
        """Answer the GET with a bare 500 (engine.io's answer to an overlapping poll)."""


class IEngineSocket(Interface):
    """The WebSocket a session probes and upgrades to."""

    def send_text(data: bytes) -> None:
        """Send one Engine.IO packet as a text frame."""

    def close(code: int = 1000, reason: str = "") -> None:
        """Close the socket (a WebSocket close code and reason)."""


class SessionConnection(Connection):
    """What the node holds for a session: sending queues a packet, whatever the transport."""

    framing = "engine.io"  # same bytes as the WebSocket EngineIOConnection: broadcasts share

    def __init__(self, session: "EngineSession", id: str, ip: str) -> None:
        super().__init__(id, ip)
        self.session = session
        self.received = 0
        self.sent = 0

    def encode(self, frame: Any) -> bytes:
        return wire.event_bytes(frame)

    def send_encoded(self, data: bytes) -> None:
        self.session.push(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.session.close("forced close", code, reason)

    def traffic(self) -> tuple[int, int]:
        return self.received, self.sent

    @property
    def transport_name(self) -> str:
        return "websocket" if self.session.ws is not None else "polling"


class EngineSession:
    """One Engine.IO 3 client across its transports (polling, then maybe a WebSocket)."""

    def __init__(self, sessions: "EngineSessions", sid: str, ip: str) -> None:
        self.sessions = sessions
        self.sid = sid
        self.conn = SessionConnection(self, sid, ip)
        self.state = "open"  # open, closing (waits to hand out the close packet), closed
        self.reason: str | None = None
        self.queue: list[bytes] = []
        self.queued_bytes = 0
        self.poll: IPoll | None = None
        self.ws: IEngineSocket | None = None  # once upgraded
        self.probe: IEngineSocket | None = None  # during an upgrade
        self.probed = False  # the probe answered 3probe: noops make the client pause polling
        self.confirmed = False  # a request after the handshake
        # the JSONP callback index when the handshake asked for JSONP (``j=``): engine.io
        # picks the polling variant once, at the handshake (polling.py reads it)
        self.jsonp: str | None = None
        self._timer: Any = None
        self._upgrade_timer: Any = None
        self._flush_call: Any = None
        self._register_call: Any = None
        # webSockets.io_paths: the client's extra socket.io namespaces (transports.namespaces)
        self.namespaces = (Namespaces(sessions.node, self.conn, sessions.io_paths)
                           if sessions.io_paths else None)

    # -- timers ----------------------------------------------------------------------------

    def arm(self) -> None:
        """(Re)start the liveness timer: pingInterval + pingTimeout from now."""
        delay = (self.sessions.ping_interval + self.sessions.ping_timeout) / 1000.0
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.sessions.clock.callLater(delay, self.close, "ping timeout")

    def expect_registration(self, seconds: float) -> None:
        """Close the session if its client has not registered within ``seconds`` (the
        WebSocket endpoints' registerTimeout, for sessions that never say who they are)."""
        self._register_call = self.sessions.clock.callLater(seconds, self._unregistered)

    def _unregistered(self) -> None:
        self._register_call = None
        if self.namespaces is not None and self.namespaces.registered():
            return  # it registered on an extra namespace (webSockets.io_paths)
        if self.state == "open" and self.conn.application is None:
            log.info("closing {conn}: not registered within {seconds} s", conn=self.conn,
                     seconds=self.sessions.register_timeout)
            self.close("not registered")

    def _cancel_timers(self) -> None:
        for name in ("_timer", "_upgrade_timer", "_flush_call", "_register_call"):
            t = getattr(self, name)
            if t is not None and t.active():
                t.cancel()
            setattr(self, name, None)

    # -- sending ---------------------------------------------------------------------------

    def push(self, packet: bytes) -> None:
        """Queue one text packet (type digit first) and send it as soon as a transport can."""
        if self.state != "open":
            return
        self.conn.sent += len(packet)
        if self.ws is not None:
            self.ws.send_text(packet)
            return
        self.queue.append(packet)
        self.queued_bytes += len(packet)
        if self.queued_bytes > self.sessions.max_buffered_bytes:
            log.warn("closing {conn}: it stopped polling and {n} bytes are queued for it",
                     conn=self.conn, n=self.queued_bytes)
            self.close("buffer full")
            return
        if self.poll is not None and self._flush_call is None:
            # at the end of this reactor turn: a reply and the broadcasts it caused leave in
            # one payload, not one round trip each
            self._flush_call = self.sessions.clock.callLater(0, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_call = None
        if self.poll is not None and self.queue:
            self._flush()

    def _take(self) -> list[bytes]:
        packets, self.queue, self.queued_bytes = self.queue, [], 0
        return packets

    def _flush(self, *extra: bytes) -> None:
        poll, self.poll = self.poll, None
        if poll is not None:
            poll.deliver(self._take() + list(extra))

    # -- polling ---------------------------------------------------------------------------

    def attach_poll(self, poll: IPoll) -> None:
        """A GET arrived: answer it now if anything is queued, else hold it."""
        self.confirmed = True
        self.sessions.confirmed(self)
        if self.state == "closing":
            poll.deliver(self._take() + [CLOSE_PACKET])
            self._finish()
            return
        if self.poll is not None:
            # engine.io: "overlap from client" is a transport error; the waiting GET gets
            # the close packet, the new one a bare 500
            poll.refuse()
            self.close("transport error")
            return
        self.poll = poll
        if self.queue:
            self._flush()
        elif self.probed:
            self._flush(NOOP_PACKET)

    def poll_lost(self, poll: IPoll) -> None:
        """The waiting GET's connection closed before it was answered."""
        if self.poll is poll:
            self.poll = None
            if self.state == "open":
                self.close("transport error")

    def receive_payload(self, packets: Iterable[Packet], nbytes: int = 0) -> None:
        """A POST's packets, in order; a parse error closes the session (engine.io)."""
        self.confirmed = True
        self.sessions.confirmed(self)
        self.conn.received += nbytes
        try:
            for packet in packets:
                if self.state != "open":
                    return
                self.receive(packet)
        except PayloadError:
            self.close("parse error")

    # -- packets from the client (any transport) --------------------------------------------

    def receive(self, packet: Packet) -> None:
        if self.state != "open":
            return
        self.arm()
        if isinstance(packet, BinaryPacket):
            if packet.type == MESSAGE:
                self.conn.send(envelope.transport_error(E.BINARY_FRAME))
            return
        kind = packet[0]
        if kind == MESSAGE:
            self._socketio(packet)
        elif kind == PING:
            self.push((PONG + packet[1:]).encode("utf-8", "surrogatepass"))
        elif kind == CLOSE:
            self.close("transport close")
        # open, pong, upgrade, noop from a client: nothing to do

    def _socketio(self, text: str) -> None:
        # The socket.io layer, as EngineIOProtocol.onMessage does it on the WebSocket transport.
        try:
            packet = wire.decode(text)
        except wire.WireError as e:
            return self.conn.send(envelope.transport_error(str(e)))
        if self.namespaces is not None and packet.namespace != "/":
            return self.namespaces.packet(packet)
        kind = packet.kind
        if kind == "event":
            if packet.namespace != "/":
                self.push(f'44{packet.namespace},"{E.BAD_NAMESPACE}"'.encode())
            elif packet.name != wire.EVENT_NAME:
                self.conn.send(envelope.transport_error(E.UNKNOWN_EVENT.format(name=packet.name[:64])))
            else:
                self.sessions.node.receive(self.conn, packet.args[0] if packet.args else None)
        elif kind == "connect":
            if packet.namespace != "/":
                self.push(f'44{packet.namespace},"{E.BAD_NAMESPACE}"'.encode())
        elif kind == "disconnect" and packet.namespace == "/":
            self.close("transport close")
        elif kind == "binary":
            self.conn.send(envelope.transport_error(E.BINARY_FRAME))

    # -- upgrade -----------------------------------------------------------------------------

    def can_upgrade(self) -> bool:
        return self.state == "open" and self.ws is None and self.probe is None

    def start_upgrade(self, socket: IEngineSocket) -> None:
        """A WebSocket opened with this sid: it may become the transport."""
        self.probe = socket
        self._upgrade_timer = self.sessions.clock.callLater(
            self.sessions.upgrade_timeout, self._upgrade_timed_out)

    def _upgrade_timed_out(self) -> None:
        self._upgrade_timer = None
        probe = self.probe
        self._abandon_upgrade()
        if probe is not None:
            probe.close()

    def _abandon_upgrade(self) -> None:
        self.probe = None
        self.probed = False
        if self._upgrade_timer is not None and self._upgrade_timer.active():
            self._upgrade_timer.cancel()
        self._upgrade_timer = None

    def socket_message(self, socket: IEngineSocket, text: str) -> None:
        """A text frame on the probe or the upgraded socket."""
        if socket is self.ws:
            self.conn.received += len(text)
            if not text:
                return self.conn.send(envelope.transport_error("Empty Engine.IO packet"))
            return self.receive(text)
        if socket is not self.probe or self.state != "open":
            return socket.close()
        if text == PING + "probe":
            socket.send_text(b"3probe")
            self.probed = True
            if self.poll is not None:
                self._flush(NOOP_PACKET)  # the client pauses polling once this GET returns
        elif text == UPGRADE and self.probed:
            self._abandon_upgrade()
            self.ws = socket
            self.sessions.confirmed(self)
            if self.poll is not None:
                poll, self.poll = self.poll, None
                poll.deliver([NOOP_PACKET])
            for packet in self._take():
                socket.send_text(packet)
        else:
            self._abandon_upgrade()
            socket.close()

    def socket_closed(self, socket: IEngineSocket) -> None:
        if socket is self.probe:
            self._abandon_upgrade()
        elif socket is self.ws:
            self.ws = None
            self.close("transport close")

    # -- closing -----------------------------------------------------------------------------

    def close(self, reason: str, code: int = 1000, text: str = "") -> None:
        """Close the session; the node forgets its connection at once.

        A GET waiting gets what is queued and the close packet. A server-initiated close with
        no GET waiting keeps the session (not its connection) until the next GET, which gets
        them, or for CLOSE_TIMEOUT (engine.io's closeTimeout)."""
        if self.state != "open":
            return
        self.reason = reason
        log.debug("closing engine.io session {sid}: {reason}", sid=self.sid, reason=reason)
        self.state = "closing"
        self.conn.open = False
        self._cancel_timers()
        probe, self.probe = self.probe, None
        if probe is not None:
            probe.close()
        self.sessions.node.connection_lost(self.conn)
        if self.namespaces is not None:
            self.namespaces.close_all()
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close(code, text)
            self._finish()
        elif self.poll is not None:
            self._flush(CLOSE_PACKET)
            self._finish()
        elif reason == "forced close":
            self._timer = self.sessions.clock.callLater(CLOSE_TIMEOUT, self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        self._cancel_timers()
        self.state = "closed"
        self.queue = []
        self.queued_bytes = 0
        self.sessions.remove(self)


class EngineSessions:
    """Every Engine.IO session of one node by sid, and the settings and limits they share.

    ``max_pending`` bounds sessions that did a handshake and nothing since: past it the oldest
    such session is closed (a flood of handshakes cannot fill maxConnections; a real client
    polls again within a round trip)."""

    def __init__(self, node: Any, clock: Any, *,
                 ping_interval: int = Limits.ping_interval,
                 ping_timeout: int = Limits.ping_timeout,
                 max_http_buffer_size: int = Limits.max_message_size,
                 max_connections: int = Limits.max_connections,
                 max_buffered_bytes: int = Limits.max_buffered_bytes,
                 max_pending: int = Limits.max_pending_handshakes,
                 upgrade_timeout: float = UPGRADE_TIMEOUT,
                 register_timeout: float | None = None,
                 new_id: Callable[[], str] = new_sid,
                 io_paths: tuple[str, ...] = ()) -> None:
        self.node = node
        self.io_paths = frozenset(io_paths)
        self.clock = clock
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_http_buffer_size = max_http_buffer_size
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self.max_pending = max_pending
        self.upgrade_timeout = upgrade_timeout
        self.register_timeout = register_timeout
        self.new_id = new_id
        self.sessions: dict[str, EngineSession] = {}
        self._pending: OrderedDict[str, EngineSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, sid: str) -> EngineSession | None:
        return self.sessions.get(sid)

    def full(self) -> bool:
        return len(self.node.connections) >= self.max_connections

    def open(self, ip: str) -> tuple[EngineSession, list[bytes]]:
        """A new session and the packets its handshake GET answers with."""
        while len(self._pending) >= self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            log.info("closing {sid}: too many handshakes without a poll", sid=oldest.sid)
            oldest.close("handshake limit")
        session = EngineSession(self, self.new_id(), ip)
        self.sessions[session.sid] = session
        self._pending[session.sid] = session
        opening = wire.dumps({"sid": session.sid, "upgrades": ["websocket"],
                              "pingInterval": self.ping_interval,
                              "pingTimeout": self.ping_timeout})
        session.arm()
        if self.register_timeout:
            session.expect_registration(self.register_timeout)
        self.node.connection_opened(session.conn)
        return session, [(OPEN + opening).encode("utf-8"), wire.SIO_CONNECT.encode()]

    def confirmed(self, session: EngineSession) -> None:
        self._pending.pop(session.sid, None)

    def remove(self, session: EngineSession) -> None:
        self._pending.pop(session.sid, None)
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def shutdown(self) -> None:
        """Close every session and forget those still waiting to hand out a close packet."""
        for session in list(self.sessions.values()):
            session.close("server close")
            if session.state == "closing":
                session._finish()


__all__ = ["EngineSession", "EngineSessions", "SessionConnection", "IPoll", "IEngineSocket",
           "new_sid"]
