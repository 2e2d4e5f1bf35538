# -*- test-case-name: tests.documents.test_handlers -*-
"""
Handlers and ``q`` (DESIGN.md "`q`"): a fifth parameter ``q`` with ``q.db``, ``init(application,
q)``, workerResponseHandlers' ``q.db``, handlers without it called as before; and the reactor
never waiting on the database: an ``async def`` handler using ``await q.db.run(...)`` answers
while a sync handler runs a 50,000-write loop in the worker pool (an ordering test).
"""

from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted.apps.modules import Applications
from qewd_twisted.apps.pool import WorkerPool
from qewd_twisted.auth.sessions import MemorySessionStore
from qewd_twisted.core.node import Node
from qewd_twisted.documents import DocumentStore
from qewd_twisted.documents.memory import MemoryStore
from qewd_twisted.documents.sqlite import SQLiteStore
from qewd_twisted.testing import MemoryConnection, NodeHarness


def app(**attrs: Any) -> SimpleNamespace:
    return SimpleNamespace(**attrs)


class QParameterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.db = DocumentStore(MemoryStore())

    def test_fifth_parameter(self) -> None:
        def save(messageObj, session, send, finished, q):
            node = q.db.use("people", messageObj["params"]["id"])
            node.set_document(messageObj["params"]["person"])
            finished({"count": q.db.use("people").count_children()})

        def load(messageObj, session, send, finished, q):
            finished(q.db.use("people", messageObj["params"]["id"]).get_document(True))

        def plain(messageObj, session, send, finished):
            finished({"plain": True})

        h = NodeHarness({"a": app(handlers={"save": save, "load": load, "plain": plain})},
                        db=self.db)
        c = h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "save", "token": token,
                         "params": {"id": 7, "person": {"name": "Rob", "tags": ["x", "y"]}}})
        self.assertEqual(f["message"]["count"], 1)
        [f] = h.send(c, {"type": "load", "token": token, "params": {"id": 7}})
        self.assertEqual(f["message"]["name"], "Rob")
        self.assertEqual(f["message"]["tags"], ["x", "y"])
        [f] = h.send(c, {"type": "plain", "token": token})
        self.assertTrue(f["message"]["plain"])
        self.assertIs(h.node.q.db, self.db)

    def test_bad_subscript_is_the_handlers_error(self) -> None:
        """A bad subscript raises in the handler: QEWD's crash reply carries its text."""
        def bad(messageObj, session, send, finished, q):
            q.db.use("x", None)

        h = NodeHarness({"a": app(handlers={"bad": bad})}, db=self.db)
        c = h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "bad", "token": token})
        self.assertEqual(f["type"], "error")
        self.assertIn("a subscript is an int or a non-empty str", f["message"])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_init_and_worker_response_handlers(self) -> None:
        calls = []

        def init(application, q):
            calls.append(application)
            q.db.use("boot").value = application

        def handler(messageObj, session, send, finished):
            finished({"ok": True})

        def wrh(message, send, q):
            message["boot"] = q.db.use("boot").value
            return message

        def old_init(application):
            calls.append("old " + application)

        h = NodeHarness({"a": app(handlers={"t": handler}, init=init,
                                  workerResponseHandlers={"t": wrh}),
                         "b": app(handlers={}, init=old_init)}, db=self.db)
        self.assertEqual(calls, ["a", "old b"])
        c = h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "t", "token": token})
        self.assertEqual(f["message"]["boot"], "a")


class EventConnection(MemoryConnection):
    """A MemoryConnection that fires Deferreds when a matching frame arrives."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.log: list[Any] = []
        self._waiting: list[tuple[Any, defer.Deferred]] = []

    def send_encoded(self, data: bytes) -> None:
        super().send_encoded(data)
        frame = self.frames[-1]
        self.log.append(frame)
        for pred, d in list(self._waiting):
            if pred(frame):
                self._waiting.remove((pred, d))
                d.callback(frame)

    def wait_for(self, pred: Any) -> defer.Deferred:
        for frame in self.log:
            if pred(frame):
                return defer.succeed(frame)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((pred, d))
        return d


class ReactorNeverWaitsTests(TestCase):
    """The async ping is answered while the write loop still runs (SQLite, the default
    embedded store)."""

    timeout = 120

    def setUp(self) -> None:
        fd, path = tempfile.mkstemp(suffix=".sqlite")
        os.close(fd)
        os.unlink(path)
        self.addCleanup(lambda: [os.unlink(path + s) for s in ("", "-wal", "-shm")
                                 if os.path.exists(path + s)])
        self.db = DocumentStore(SQLiteStore(path), reactor)
        self.addCleanup(self.db.close)
        self.pool = WorkerPool(reactor, 2)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    @defer.inlineCallbacks
    def test_async_ping_during_write_loop(self) -> None:
        WRITES = 50_000

        def loop(messageObj, session, send, finished, q):
            node = q.db.use("loop")
            node.use(0).value = 0
            send({"started": True})
            for i in range(1, WRITES):
                node.use(i % 100).value = i
            finished({"writes": WRITES})

        async def ping(messageObj, session, send, finished, q):
            value = await q.db.run(lambda: q.db.use("loop", 0).value)
            finished({"pong": True, "value": value})

        node = Node(reactor, Applications.from_objects({"a": app(handlers={
            "loop": loop, "ping": ping})}), self.pool, sessions=MemorySessionStore(reactor),
            db=self.db)
        conn = EventConnection("c1", "127.0.0.1")
        node.connection_opened(conn)
        node.message_received(conn, {"type": "ewd-register", "application": "a"})
        token = (yield conn.wait_for(lambda f: f["type"] == "ewd-register"))["message"]["token"]
        node.message_received(conn, {"type": "loop", "token": token})
        yield conn.wait_for(lambda f: f["type"] == "loop" and not f["finished"])
        sent = reactor.seconds()
        node.message_received(conn, {"type": "ping", "token": token})
        pong = yield conn.wait_for(lambda f: f["type"] == "ping")
        latency_ms = (reactor.seconds() - sent) * 1000
        loop_done = [f for f in conn.log if f["type"] == "loop" and f["finished"]]
        self.assertEqual(loop_done, [], f"the loop ended before the ping was answered "
                         f"({latency_ms:.1f} ms)")
        self.assertTrue(pong["message"]["pong"])
        if os.environ.get("QEWD_SHOW_LATENCY"):
            print(f"\nasync ping answered in {latency_ms:.1f} ms during the write loop")
        final = yield conn.wait_for(lambda f: f["type"] == "loop" and f["finished"])
        self.assertEqual(final["message"]["writes"], WRITES)
        self.assertEqual(conn.log.index(pong) < conn.log.index(final), True)
