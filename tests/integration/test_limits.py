# test-case-name: tests.integration.test_limits
"""
Overload limits on real sockets: maxConnections refuses at the handshake and recovers;
a client that stops reading is dropped once maxBufferedBytes are queued for it, while others
are served.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.nodes import ClockedReactor, eio_url, start_node
from tests.wsclient import EIOClient


class MaxConnectionsTests(TestCase):
    @defer.inlineCallbacks
    def test_refused_past_the_limit_then_recovers(self):
        node = start_node(self, maxConnections=2)
        a, b = EIOClient(eio_url(node)), EIOClient(eio_url(node))
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        yield defer.ensureDeferred(a.handshake())
        yield defer.ensureDeferred(b.handshake())
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        yield self.assertFailure(c.opened, ConnectionError)
        code, reason = yield c.closed
        self.assertIn("503", str(reason))
        seen: defer.Deferred[None] = defer.Deferred()
        original = node.node.connection_lost

        def connection_lost(conn):
            original(conn)
            if not seen.called:
                seen.callback(None)

        node.node.connection_lost = connection_lost
        yield a.close()
        yield seen  # the server has seen the close
        d = EIOClient(eio_url(node))
        self.addCleanup(d.close)
        yield defer.ensureDeferred(d.handshake())
        d.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        self.assertIn("token", (yield defer.ensureDeferred(d.message()))["message"])


class SlowReaderTests(TestCase):
    @defer.inlineCallbacks
    def test_client_that_stops_reading_is_dropped(self):
        node = start_node(self, maxBufferedBytes=1 << 20,
                          moduleMap={"flood": "tests.apps.flood"})
        lost: defer.Deferred[None] = defer.Deferred()
        original = node.node.connection_lost

        def connection_lost(conn):
            original(conn)
            if conn.id == slow_id and not lost.called:
                lost.callback(None)

        node.node.connection_lost = connection_lost
        slow = EIOClient(eio_url(node))
        self.addCleanup(slow.close)
        hs = yield defer.ensureDeferred(slow.handshake())
        slow_id = hs["sid"]
        slow.emit({"type": "ewd-register", "application": "flood", "jwt": True})
        token = (yield defer.ensureDeferred(slow.message()))["message"]["token"]
        slow.proto.transport.pauseProducing()  # stop reading from the socket
        slow.emit({"type": "flood", "token": token, "params": {"frames": 1500, "size": 16384}})
        yield lost  # dropped by the node, not buffered without bound
        self.assertNotIn(slow_id, node.node.connections)
        slow.proto.transport.resumeProducing()
        yield slow.closed
        # a client that reads gets the same flood in full: the limit is about stalled readers
        ok = EIOClient(eio_url(node))
        self.addCleanup(ok.close)
        yield defer.ensureDeferred(ok.handshake())
        ok.emit({"type": "ewd-register", "application": "flood", "jwt": True})
        token = (yield defer.ensureDeferred(ok.message()))["message"]["token"]
        ok.emit({"type": "flood", "token": token, "params": {"frames": 1500, "size": 16384}})
        frames = 0
        while True:
            f = yield defer.ensureDeferred(ok.message())
            if f["finished"]:
                break
            frames += 1
        self.assertEqual((frames, f["message"]["sent"]), (1500, 1500))


class StuckHandlerTests(TestCase):
    @defer.inlineCallbacks
    def test_blocked_thread_does_not_starve_other_requests(self):
        """poolSize 1: a handler blocked past handlerTimeout gets its 504, and the pool lends a
        spare thread, so the next request (another application) still runs. handlerTimeout is
        on the test's clock: only the blocked request ever reaches it."""
        from tests.apps import demo

        demo.release.hold(self)
        clocked = ClockedReactor()
        node = start_node(self, reactor=clocked, poolSize=1, handlerTimeout=5,
                          moduleMap={"demo": "tests.apps.demo", "other": "tests.apps.users"})
        a, b = EIOClient(eio_url(node)), EIOClient(eio_url(node))
        for c in (a, b):
            self.addCleanup(c.close)
            yield defer.ensureDeferred(c.handshake())
        a.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        b.emit({"type": "ewd-register", "application": "other", "jwt": True})
        ta = (yield defer.ensureDeferred(a.message()))["message"]["token"]
        tb = (yield defer.ensureDeferred(b.message()))["message"]["token"]
        a.emit({"type": "blocked", "token": ta})
        running = yield defer.ensureDeferred(a.message())
        self.assertEqual(running["message"], {"blocked": True})
        clocked.clock.advance(5)
        timed_out = yield defer.ensureDeferred(a.message())
        self.assertEqual(timed_out["message"]["status"], {"code": 504})
        # a's thread is still blocked; without a spare, b would wait behind it (and time out)
        b.emit({"type": "login", "token": tb, "params": {"username": "ab", "password": "ba"}})
        yield defer.ensureDeferred(b.message())  # "checking credentials"
        final = yield defer.ensureDeferred(b.message())
        self.assertEqual(final["message"]["username"], "ab")
        self.assertEqual(node.pool.spares, 1)
        demo.release.open()
        yield node.pool.when_idle()
        self.assertEqual(node.pool.spares, 0)
