# -*- test-case-name: tests.test_parity -*-
"""
Extra socket.io namespaces: QEWD's ``webSockets.io_paths`` (docs/protocol.md §1.1, §10 item 4).

QEWD.js attaches its socket handler to ``io.of(nsp)`` for every ``"/nsp"`` in
``config.webSockets.io_paths`` (robtweed/qewd#41: behind a reverse proxy a sub-path becomes a
namespace). A socket.io 2 client on such a namespace sends ``40/nsp,`` on its Engine.IO
connection, then ``42/nsp,["ewdjs",{...}]``; the server answers ``40/nsp,`` and frames
``42/nsp,[...]``, and the socket's id is ``/nsp#<engine.io id>``.

`Namespaces` is one Engine.IO client's set of extra namespaces: the transport (the WebSocket
protocol, or a long-polling session) hands it every socket.io packet that is not for ``/``;
each namespace the client connects to becomes a `NamespaceConnection`, a connection of its own
to the node (its own registration, token, application), served exactly like one on ``/``.
Packets for a namespace not configured get socket.io's ``Invalid namespace`` error.

May import: ``qewd_twisted.core``, ``qewd_twisted.errors``, ``qewd_twisted.transports.wire``.
"""

from __future__ import annotations

from typing import Any, Iterable

from qewd_twisted import errors as E
from qewd_twisted.core import envelope
from qewd_twisted.core.requests import Connection
from qewd_twisted.transports import wire

__all__ = ["NamespaceConnection", "Namespaces", "check_io_paths"]


def check_io_paths(value: Any) -> tuple[str, ...]:
    """The namespaces QEWD.js would attach from ``webSockets.io_paths``: the strings starting
    with ``/`` (QEWD.js skips anything else), without ``/`` itself, in order, once each."""
    if not isinstance(value, (list, tuple)):
        return ()
    seen: list[str] = []
    for nsp in value:
        if isinstance(nsp, str) and nsp.startswith("/") and nsp != "/" and nsp not in seen:
            seen.append(nsp)
    return tuple(seen)


class NamespaceConnection(Connection):
    """One client's socket on an extra namespace; writes through its Engine.IO connection."""

    def __init__(self, parent: Connection, namespace: str) -> None:
        super().__init__(f"{namespace}#{parent.id}", parent.ip)
        self.namespace = namespace
        self.parent = parent
        self._prefix = b"42" + namespace.encode("utf-8") + b","
        # one encoding per namespace for broadcasts (the node encodes once per framing)
        self.framing = parent.framing + namespace

    def encode(self, frame: Any) -> bytes:
        return self._prefix + wire.event_json(frame)

    def send_encoded(self, data: bytes) -> None:
        if self.open and self.parent.open:
            self.parent.send_encoded(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The server ends this namespace's socket (``41/nsp,``); the Engine.IO connection
        and its other namespaces stay."""
        if not self.open:
            return
        self.open = False
        if self.parent.open:
            self.parent.send_encoded(b"41" + self.namespace.encode("utf-8") + b",")

    def __repr__(self) -> str:
        return f"<NamespaceConnection {self.id} {self.ip}>"


class Namespaces:
    """The extra namespaces of one Engine.IO client (``parent``: its ``/`` connection)."""

    def __init__(self, node: Any, parent: Connection, allowed: Iterable[str]) -> None:
        self._node = node
        self._parent = parent
        self.allowed = frozenset(allowed)
        self.connections: dict[str, NamespaceConnection] = {}

    def _raw(self, data: bytes) -> None:
        if self._parent.open:
            self._parent.send_encoded(data)

    def _invalid(self, namespace: str) -> None:
        self._raw(b"44" + namespace.encode("utf-8") + b',"' + E.BAD_NAMESPACE.encode() + b'"')

    def packet(self, packet: wire.Packet) -> None:
        """Handle one socket.io packet whose namespace is not ``/``."""
        kind = packet.kind
        if kind == "connect":
            namespace = packet.namespace.split("?", 1)[0]  # a client may add ?query
            if namespace not in self.allowed:
                return self._invalid(namespace)
            if namespace not in self.connections:
                conn = NamespaceConnection(self._parent, namespace)
                self.connections[namespace] = conn
                self._node.connection_opened(conn)
            self._raw(b"40" + namespace.encode("utf-8") + b",")
        elif kind == "event":
            conn = self.connections.get(packet.namespace)
            if conn is None or not conn.open:
                return self._invalid(packet.namespace)
            if packet.name != wire.EVENT_NAME:
                return conn.send(envelope.transport_error(
                    E.UNKNOWN_EVENT.format(name=str(packet.name)[:64])))
            self._node.receive(conn, packet.args[0] if packet.args else None)
        elif kind == "disconnect":
            conn = self.connections.pop(packet.namespace, None)
            if conn is not None:
                conn.open = False
                self._node.connection_lost(conn)
        elif kind == "binary":
            conn = self.connections.get(packet.namespace)
            if conn is not None:
                conn.send(envelope.transport_error(E.BINARY_FRAME))
        # acks and errors from a client: nothing to do, as on "/"

    def registered(self) -> bool:
        """Whether the client registered on one of its namespaces (a socket.io client on
        ``/qewd`` never registers on ``/``: registerTimeout must not close it)."""
        return any(c.application is not None for c in self.connections.values())

    def close_all(self) -> None:
        """The Engine.IO connection has gone: every namespace socket on it is lost."""
        conns, self.connections = list(self.connections.values()), {}
        for conn in conns:
            conn.open = False
            self._node.connection_lost(conn)
