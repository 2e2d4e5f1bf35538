# -*- test-case-name: tests.test_node -*-
"""
In-memory fakes for testing handler modules and nodes without sockets or threads.

>>> from qewd_twisted.testing import NodeHarness
>>> import my_app
>>> h = NodeHarness({"jwt": my_app}, jwt_secret="s3cret")
>>> client = h.connect()
>>> token = h.register(client, "jwt")
>>> frames = h.send(client, {"type": "login", "token": token, "params": {...}})

Everything runs synchronously: sync handlers are called in the test's thread, time is a
``Clock`` (``h.clock.advance(seconds)``), and frames go through a JSON round trip so a reply that
a real socket could not carry fails the same way here.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from qewd_twisted.transports import wire
from qewd_twisted.apps.modules import Applications
from qewd_twisted.core.interfaces import IRoutes, IWorkerPool
from qewd_twisted.core.node import Connection, Node
from qewd_twisted.core.push import IPushBus, check_push
from qewd_twisted.auth.sessions import MemorySessionStore
from qewd_twisted.config.limits import Limits

__all__ = ["MemoryConnection", "SyncPool", "FakeReactor", "NodeHarness", "MemoryPushHub"]


class MemoryConnection(Connection):
    """A connection that records what the node sends it."""

    framing = "memory"

    def __init__(self, id: str = "memorySocket00000001", ip: str = "127.0.0.1") -> None:
        super().__init__(id, ip)
        self.frames: list[Any] = []
        self.closed: tuple[int, str] | None = None

    def encode(self, frame: Any) -> bytes:
        return wire.plain_bytes(frame)

    def send_encoded(self, data: bytes) -> None:
        self.frames.append(json.loads(data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.open = False

    def take(self) -> list[Any]:
        """The frames received since the last call."""
        frames, self.frames = self.frames, []
        return frames


@implementer(IWorkerPool)
class SyncPool:
    """A worker pool that runs each call at once in the calling thread."""

    running = True
    busy = 0
    queued = 0

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(fn, *args, **kwargs)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)  # every "thread" is the test's

    def when_idle(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def lend_spare(self) -> bool:
        return False

    def return_spare(self) -> None:
        pass


class FakeReactor(Clock):
    """A Clock whose callFromThread runs the call at once (all "threads" are this one)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class NodeHarness:
    """A node wired to in-memory parts: register clients, send messages, read replies."""

    def __init__(
        self,
        apps: Mapping[str, Any],
        *,
        jwt_secret: str | None = "someSecret123",
        algorithms: tuple[str, ...] = ("HS256",),
        initial_session_timeout: int = Limits.initial_session_timeout,
        handler_timeout: float | None = Limits.handler_timeout,
        micro_services: IRoutes | None = None,
        micro_service_timeout: float | None = Limits.micro_service_timeout,
        max_in_flight: int = Limits.max_in_flight,
        max_in_flight_link: int = Limits.max_in_flight_link,
        start_time: float = 1_700_000_000.0,
        db: Any = None,
        **node_options: Any,
    ) -> None:
        """``node_options`` go to the `Node` as they are (``web_root``, ``lock_timeout``,
        ``switch``, ...)."""
        self.limits = Limits(initial_session_timeout=initial_session_timeout,
                             handler_timeout=handler_timeout,
                             micro_service_timeout=micro_service_timeout,
                             max_in_flight=max_in_flight, max_in_flight_link=max_in_flight_link)
        self.clock = FakeReactor()
        self.clock.advance(start_time)
        self.tokens = None
        if jwt_secret is not None:
            from qewd_twisted.auth.tokens import TokenCodec

            self.tokens = TokenCodec(jwt_secret, algorithms=algorithms, clock=self.clock,
                                     initial_timeout=initial_session_timeout)
        self.sessions = MemorySessionStore(self.clock)
        if db is None:  # like QEWDService: documents in memory unless told otherwise
            from qewd_twisted.documents import DocumentStore
            from qewd_twisted.documents.memory import MemoryStore

            db = DocumentStore(MemoryStore(), self.clock)
        self.db = db
        registry = Applications({})
        self.node = Node(
            self.clock,
            registry,
            SyncPool(),
            tokens=self.tokens,
            sessions=self.sessions,
            micro_services=micro_services,
            limits=self.limits,
            db=db,
            **node_options,
        )
        # modules are added once the node exists: init(application, q) gets its q
        registry.add_objects(apps, self.node.q)
        self._n = 0

    def connect(self, ip: str = "127.0.0.1") -> MemoryConnection:
        self._n += 1
        conn = MemoryConnection(f"memorySocket{self._n:08d}", ip)
        self.node.connection_opened(conn)
        return conn

    def disconnect(self, conn: MemoryConnection) -> None:
        self.node.connection_lost(conn)

    def send(self, conn: MemoryConnection, message: Any) -> list[Any]:
        """Deliver ``message`` and return the frames sent to ``conn`` as a result."""
        self.node.receive(conn, message)
        return conn.take()

    def register(self, conn: MemoryConnection, application: str, jwt: bool = True) -> str:
        """Register ``conn`` and return its token."""
        msg: dict[str, Any] = {"type": "ewd-register", "application": application}
        if jwt:
            msg["jwt"] = True
        frames = self.send(conn, msg)
        return frames[-1]["message"]["token"]


class MemoryPushHub:
    """Joins several nodes' server push in memory, as processes or nodes sharing a bus would be.

    ``hub.join(node)`` gives ``node`` a bus (``IPushBus``) that delivers each push, through a
    JSON round trip, to every other joined node, synchronously and in order. ``hub.pushes``
    records what was published.
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.pushes: list[dict[str, Any]] = []

    def join(self, node: Node) -> None:
        self.nodes.append(node)
        node.push_buses.append(_MemoryPushBus(self, node))


@implementer(IPushBus)
class _MemoryPushBus:
    def __init__(self, hub: MemoryPushHub, node: Node) -> None:
        self._hub, self._node = hub, node

    def publish(self, push: dict[str, Any]) -> None:
        try:
            record = check_push(json.loads(json.dumps(push)))
        except (TypeError, ValueError):
            return  # not JSON: a real bus logs and counts it as dropped
        self._hub.pushes.append(record)
        for node in self._hub.nodes:
            if node is not self._node:
                node.deliver_push(record)
