# -*- test-case-name: tests.documents.test_faults -*-
"""
Faults (docs/documents.md "Faults"): Redis stopped mid-run (document requests get a clear 503
reply, everything else keeps working, the node reconnects by itself when Redis is back); an
unusable SQLite file stops the node at start-up with a clear error; concurrent readers never
see a half-written ``set_document`` on any back-end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted.apps.modules import Applications
from qewd_twisted.apps.pool import WorkerPool
from qewd_twisted.auth.tokens import TokenCodec
from qewd_twisted.config import ConfigError, config_from_dict
from qewd_twisted.core.node import Node
from qewd_twisted.documents import DatabaseUnavailable, DocumentStore
from qewd_twisted.documents.sessions import DocumentSessionStore
from qewd_twisted.documents.sqlite import SQLiteStore
from qewd_twisted.service import QEWDService
from tests.documents.backends import MemoryBackend, RedisBackend, SQLiteBackend
from tests.documents.redisserver import RedisServer
from tests.documents.test_handlers import EventConnection


class RedisOutageTests(RedisBackend, TestCase):
    timeout = 120

    def setUp(self) -> None:
        from qewd_twisted.documents.redis import RedisStore

        self.server = RedisServer()  # our own: this test stops it
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.db = DocumentStore(RedisStore(port=self.server.port, timeout=2), reactor)
        self.addCleanup(self.db.close)
        self.pool = WorkerPool(reactor, 2)
        self.pool.startService()
        self.addCleanup(self.pool.stopService)

    @defer.inlineCallbacks
    def test_redis_stopped_and_back(self) -> None:
        def count(messageObj, session, send, finished, q):
            finished({"n": q.db.use("hits").increment()})

        def hello(messageObj, session, send, finished):
            finished({"hello": True})

        tokens = TokenCodec("someSecret123", clock=reactor)
        node = Node(reactor, Applications.from_objects({"a": SimpleNamespace(handlers={
            "count": count, "hello": hello})}), self.pool, tokens=tokens,
            sessions=DocumentSessionStore(self.db, reactor), db=self.db)
        conn = EventConnection("c1", "127.0.0.1")
        node.connection_opened(conn)

        def ask(message: dict) -> defer.Deferred:
            n = len(conn.log)
            node.message_received(conn, message)
            return conn.wait_for(lambda f: conn.log.index(f) >= n and f.get("type") ==
                                 message["type"] and f.get("finished", True))

        jwt = (yield ask({"type": "ewd-register", "application": "a", "jwt": True}))
        jwt = jwt["message"]["token"]
        plain = (yield ask({"type": "ewd-register", "application": "a"}))["message"]["token"]
        self.assertEqual((yield ask({"type": "count", "token": jwt}))["message"]["n"], 1)
        self.assertEqual((yield ask({"type": "count", "token": plain}))["message"]["n"], 2)

        self.server.stop()
        down = yield ask({"type": "count", "token": jwt})
        self.assertEqual(down["message"]["status"], {"code": 503})
        self.assertTrue(down["message"]["error"].startswith(
            f"Database unavailable: Redis at 127.0.0.1:{self.server.port} is unavailable"),
            down["message"]["error"])
        # sessions held in Redis cannot be checked: a clear 503, not a hang
        down = yield ask({"type": "hello", "token": plain})
        self.assertEqual(down["message"], {"error": "Session store unavailable",
                                           "status": {"code": 503}})
        # everything that does not touch the database goes on
        ok = yield ask({"type": "hello", "token": jwt})
        self.assertTrue(ok["message"]["hello"])

        self.server.start(self.server.port)  # back (empty: it keeps no data on disk)
        self.assertEqual((yield ask({"type": "count", "token": jwt}))["message"]["n"], 1)
        plain = (yield ask({"type": "ewd-register", "application": "a"}))["message"]["token"]
        self.assertTrue((yield ask({"type": "hello", "token": plain}))["message"]["hello"])

    def test_direct_calls_fail_fast(self) -> None:
        """A document call with Redis down raises DatabaseUnavailable (no hang)."""
        self.server.stop()
        self.assertRaises(DatabaseUnavailable, lambda: self.db.use("x").value)
        self.assertRaises(DatabaseUnavailable, self.db.use("x").increment)


class SQLiteStartupTests(SynchronousTestCase):
    def config(self, path: str) -> Any:
        return config_from_dict({"port": 0, "database": {"type": "sqlite",
                                                         "params": {"path": path}}})

    def test_directory_missing(self) -> None:
        with tempfile.NamedTemporaryFile() as f:
            e = self.assertRaises(ConfigError, QEWDService,
                                  self.config(os.path.join(f.name, "qewd.sqlite")), reactor)
        self.assertEqual(len(e.problems), 1)
        self.assertIn("config.database: SQLite database", e.problems[0])
        self.assertIn("cannot be opened for writing", e.problems[0])

    def test_not_a_database(self) -> None:
        with tempfile.NamedTemporaryFile(suffix=".sqlite") as f:
            f.write(b"this is not a database file, just some text" * 100)
            f.flush()
            e = self.assertRaises(ConfigError, QEWDService, self.config(f.name), reactor)
        self.assertIn("file is not a database", e.problems[0])

    def test_read_only_file(self) -> None:
        """A database opened read-only (SQLite's own mode=ro) cannot be written."""
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "x.sqlite")
        SQLiteStore(path).close()
        e = self.assertRaises(DatabaseUnavailable, SQLiteStore, f"file:{path}?mode=ro")
        self.assertIn("readonly", str(e))


class NoHalfWrittenDocumentMixin:
    """A reader never sees part of a set_document (every back-end promises this)."""

    def test_readers_see_whole_documents(self) -> None:
        self.assertTrue(self.backend.promises["atomic_set_document"])
        doc = self.db.use("atomic")
        doc.set_document({str(i): "A" for i in range(200)})
        seen: list[set] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                seen.append(set(doc.get_document().values()))

        t = threading.Thread(target=reader)
        t.start()
        try:
            for n in range(40):
                doc.set_document({str(i): "B" if n % 2 == 0 else "A" for i in range(200)})
        finally:
            stop.set()
            t.join(30)
        self.assertTrue(seen)
        mixed = [s for s in seen if len(s) != 1]
        self.assertEqual(mixed, [], "a reader saw a half-written document")

    def test_refused_document_writes_nothing(self) -> None:
        """A handler's set_document that fails on a bad key or value deep inside leaves the
        store as it was."""
        doc = self.db.use("refused")
        doc.set_document({"keep": 1})
        for bad in ({"a": 1, "b": {"c": {None: 2}}}, {"a": 1, "b": [1, {"x": object()}]}):
            self.assertRaises((TypeError, ValueError), doc.set_document, bad)
        self.assertEqual(doc.get_document(), {"keep": 1})


class MemoryAtomicTests(NoHalfWrittenDocumentMixin, MemoryBackend, SynchronousTestCase):
    pass


class SQLiteAtomicTests(NoHalfWrittenDocumentMixin, SQLiteBackend, SynchronousTestCase):
    pass


class RedisAtomicTests(NoHalfWrittenDocumentMixin, RedisBackend, SynchronousTestCase):
    pass
