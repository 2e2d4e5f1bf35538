# -*- test-case-name: tests.documents.test_sessions -*-
"""
Session-token sessions in a document store (documents/sessions.py): ewd-session's layout,
sliding expiry, initialSessionTimeout, the sweep, a session shared by two nodes on one
database, ``session.data`` as a DocumentNode. Deterministic: a Clock, and the store's calls run
synchronously (``run=defer.maybeDeferred``) except where the node's own path is tested.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qewd_twisted.apps.modules import Applications
from qewd_twisted.auth.sessions import SessionError
from qewd_twisted.core.node import Node
from qewd_twisted.documents import DatabaseUnavailable, DocumentNode
from qewd_twisted.documents.sessions import (
    DEFAULT_SESSION_DOCUMENT,
    DocumentSession,
    DocumentSessionStore,
    IDeferredSessionStore,
)
from qewd_twisted.testing import FakeReactor, MemoryConnection, SyncPool
from tests.documents.backends import MemoryBackend, RedisBackend, SQLiteBackend

START = 1_700_000_000.0


def result_of(d: defer.Deferred):
    """The result of a Deferred that has already fired (its failure is raised)."""
    out: list = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class SessionStoreMixin:
    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.clock.advance(START)
        self.sessions = DocumentSessionStore(self.db, self.clock, run=defer.maybeDeferred)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IDeferredSessionStore, self.sessions))
        self.assertEqual(self.sessions.document_name, "CacheTempEWDSession")
        self.assertEqual(DEFAULT_SESSION_DOCUMENT, "CacheTempEWDSession")

    def test_layout(self) -> None:
        """ewd-session's: sessionNo, session/<id>/ewd-session/..., sessionsByToken/<token>."""
        s = result_of(self.sessions.create("app", 300, "sock1", "127.0.0.1"))
        self.assertIsInstance(s, DocumentSession)
        doc = self.db.use("CacheTempEWDSession")
        self.assertEqual(doc.use("sessionNo").value, s.id)
        self.assertEqual(doc.use("sessionsByToken", s.token).value, s.id)
        self.assertEqual(doc.use("session", s.id, "ewd-session").get_document(), {
            "token": s.token, "id": s.id, "timeout": 300, "expiry": int(START) + 300,
            "application": "app", "authenticated": False, "socketId": "sock1",
            "ipAddress": "127.0.0.1"})
        self.assertEqual(dict(s), {"socketId": "sock1", "ipAddress": "127.0.0.1",
                                   "authenticated": False})
        self.assertIsInstance(s.data, DocumentNode)
        self.assertEqual(s.data, doc.use("session", s.id))

    def test_data_written_through(self) -> None:
        s = result_of(self.sessions.create("app", 300))
        s["username"] = "rob"
        s["authenticated"] = True
        s["prefs"] = {"colour": "blue", "sizes": [1, 2]}
        self.assertEqual(s.data.use("username").value, "rob")
        self.assertIs(s.data.use("ewd-session", "authenticated").value, True)
        again = result_of(self.sessions.authenticate(s.token))
        self.assertEqual(again["username"], "rob")
        self.assertEqual(again["prefs"], {"colour": "blue", "sizes": [1, 2]})
        self.assertIs(again["authenticated"], True)
        del again["username"]
        self.assertFalse(s.data.use("username").exists)
        s.data.use("direct").value = 5  # QEWD's way: session.data.$('direct').value = 5
        self.assertEqual(result_of(self.sessions.get(s.token))["direct"], 5)
        self.assertRaises(ValueError, s.__setitem__, "", 1)

    def test_sliding_expiry(self) -> None:
        s = result_of(self.sessions.create("app", 300))
        self.clock.advance(200)
        result_of(self.sessions.authenticate(s.token))
        self.clock.advance(200)  # 400 s after creation, 200 after the last use
        t = result_of(self.sessions.authenticate(s.token))
        self.assertEqual(t.expiry, int(START) + 400 + 300)
        self.clock.advance(301)
        f = self.failureResultOf(self.sessions.authenticate(s.token), SessionError)
        # what the running QEWD.js answers for an expired session (docs/protocol.md §2.4)
        self.assertEqual(f.getErrorMessage(), "Invalid token or session expired")
        f = self.failureResultOf(self.sessions.authenticate(s.token), SessionError)
        self.assertEqual(f.getErrorMessage(), "Invalid token or session expired")

    def test_get_does_not_slide(self) -> None:
        s = result_of(self.sessions.create("app", 100))
        self.clock.advance(90)
        self.assertEqual(result_of(self.sessions.get(s.token)).token, s.token)
        self.clock.advance(20)
        self.assertIsNone(result_of(self.sessions.get(s.token)))

    def test_errors(self) -> None:
        for token, text in [(None, "Missing authorization header"),
                            ("", "Missing authorization header"),
                            ("nope", "Invalid token or session expired"),
                            (5, "Invalid token or session expired"),
                            ("a\x01b", "Invalid token or session expired")]:
            f = self.failureResultOf(self.sessions.authenticate(token), SessionError)
            self.assertEqual(f.getErrorMessage(), text)
        self.assertRaises(ValueError, self.sessions.create, "app", 0)

    def test_timeout_setter(self) -> None:
        s = result_of(self.sessions.create("app", 300))
        s.timeout = 60
        t = result_of(self.sessions.authenticate(s.token))
        self.assertEqual((t.timeout, t.expiry), (60, int(START) + 60))

    def test_delete(self) -> None:
        s = result_of(self.sessions.create("app", 300))
        self.assertTrue(result_of(self.sessions.delete(s.token)))
        self.assertFalse(result_of(self.sessions.delete(s.token)))
        self.assertFalse(self.db.use("CacheTempEWDSession", "session", s.id).exists)

    def test_sweep(self) -> None:
        short = result_of(self.sessions.create("app", 10))
        long = result_of(self.sessions.create("app", 1000))
        self.db.use("CacheTempEWDSession", "sessionsByToken", "orphan").value = 999
        self.clock.advance(11)
        self.assertEqual(result_of(self.sessions.collect_garbage()), 1)
        doc = self.db.use("CacheTempEWDSession")
        self.assertEqual([n.name for n in doc.use("session").children()], [long.id])
        self.assertEqual([n.name for n in doc.use("sessionsByToken").children()], [long.token])
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(short.id + 1, long.id)

    def test_periodic_sweep(self) -> None:
        """The service's TimerService(60, store.sweep), driven by a Clock: expired sessions go
        at the next tick, and a sweep that fails (database down) does not stop the timer."""
        down = [False]

        def run(fn: Any, *args: Any) -> defer.Deferred:
            if down[0]:
                return defer.fail(DatabaseUnavailable("Redis at 127.0.0.1:1 is unavailable"))
            return defer.maybeDeferred(fn, *args)

        sessions = DocumentSessionStore(self.db, self.clock, run=run)
        timer = TimerService(60, sessions.sweep)
        timer.clock = self.clock
        timer.startService()
        self.addCleanup(timer.stopService)
        s = result_of(sessions.create("app", 30))
        keep = result_of(sessions.create("app", 300))
        self.clock.advance(60)
        doc = self.db.use("CacheTempEWDSession", "session")
        self.assertEqual([n.name for n in doc.children()], [keep.id])
        self.assertFalse(s.data.exists)
        down[0] = True
        self.clock.advance(60)  # logged, not raised
        down[0] = False
        self.clock.advance(300)
        self.assertEqual(doc.children(), [])
        self.assertTrue(timer.running)

    def test_max_sessions(self) -> None:
        sessions = DocumentSessionStore(self.db, self.clock, "small", max_sessions=2,
                                        run=defer.maybeDeferred)
        first = result_of(sessions.create("app", 10))
        result_of(sessions.create("app", 100))
        f = self.failureResultOf(sessions.create("app", 100), SessionError)
        self.assertEqual(f.getErrorMessage(), "Too many sessions")
        self.clock.advance(11)  # the first expired: a sweep makes room
        result_of(sessions.create("app", 100))
        self.assertIsNone(result_of(sessions.get(first.token)))

    def test_shared_between_nodes(self) -> None:
        """A session created through one node is used through another on the same database;
        both nodes run the real node code (register, then a handler reading and writing)."""
        seen = []

        def whoami(messageObj, session, send, finished):
            seen.append(session.id)
            session["count"] = (session.get("count") or 0) + 1
            finished({"count": session["count"], "data": session.data.get_document()})

        app = type("App", (), {"handlers": {"whoami": whoami}})
        reactor = FakeReactor()
        reactor.advance(START)

        def node():
            store = DocumentSessionStore(self.db, reactor, run=defer.maybeDeferred)
            return Node(reactor, Applications.from_objects({"app": app}), SyncPool(),
                        sessions=store, db=self.db)

        a, b = node(), node()
        ca, cb = MemoryConnection("sa", "127.0.0.1"), MemoryConnection("sb", "127.0.0.1")
        a.connection_opened(ca)
        b.connection_opened(cb)
        a.message_received(ca, {"type": "ewd-register", "application": "app"})
        token = ca.take()[-1]["message"]["token"]
        a.message_received(ca, {"type": "whoami", "token": token})
        self.assertEqual(ca.take()[-1]["message"]["count"], 1)
        b.message_received(cb, {"type": "whoami", "token": token})
        [frame] = cb.take()
        self.assertEqual(frame["message"]["count"], 2)
        self.assertEqual(frame["message"]["data"]["count"], 2)
        self.assertEqual(seen[0], seen[1])
        b.message_received(cb, {"type": "ewd-reregister", "token": token})
        self.assertEqual(cb.take()[-1]["message"], {"ok": True})
        self.assertEqual(self.db.use("CacheTempEWDSession", "session", seen[0], "ewd-session",
                                     "socketId").value, "sb")
        b.message_received(cb, {"type": "whoami", "token": "bad"})
        self.assertEqual(cb.take()[-1]["message"]["error"], "Invalid token or session expired")


class MemorySessionTests(SessionStoreMixin, MemoryBackend, SynchronousTestCase):
    pass


class SQLiteSessionTests(SessionStoreMixin, SQLiteBackend, SynchronousTestCase):
    pass


class RedisSessionTests(SessionStoreMixin, RedisBackend, SynchronousTestCase):
    pass
