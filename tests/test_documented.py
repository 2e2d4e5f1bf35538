# -*- test-case-name: tests.test_documented -*-
"""
Every client-visible text and limit that docs/errors.md, docs/reliability.md and
docs/configuration.md document, driven through a node, asserting the exact text or status the
client sees (issue 18 item 3). Each test also checks that the text it got is the one the docs
show, so the docs and the node cannot drift apart in either direction.

In memory (``NodeHarness``) where the socket does not matter; on loopback (``start_node``, a
real Autobahn client or a raw HTTP request) for what the web layer sends. Time is a ``Clock``
throughout (``ClockedReactor`` for the loopback node's heartbeat).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted import errors as E
from qewd_twisted.config import config_from_dict
from qewd_twisted.testing import MemoryConnection, NodeHarness
from tests.apps import demo
from tests.integration.nodes import ClockedReactor, eio_url, port_of, start_node
from tests.wsclient import EIOClient

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def doc(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def never(messageObj: Any, session: Any, send: Any, finished: Any) -> None:
    """A handler that never calls ``finished``: its request stays in flight."""


class Documented:
    """Asserts that a text the node sent is shown, in backticks, in a doc."""

    def assertDocumented(self, text: str, name: str = "errors.md") -> None:
        self.assertIn(f"`{text}`", doc(name),  # type: ignore[attr-defined]
                      f"docs/{name} does not show {text!r} in backticks")


# -- in memory --------------------------------------------------------------------------------

class MessageTextTests(SynchronousTestCase, Documented):

    def test_jwt_not_configured_rejection(self) -> None:
        """A message with ``jwt: true`` on a node without ``jwt``: QEWD's rejection shape (no
        ``finished``, no ``responseTime``), ``disconnect: true``."""
        h = NodeHarness({"a": SimpleNamespace(handlers={"echo": never})}, jwt_secret=None)
        c = h.connect()
        token = h.register(c, "a", jwt=False)
        frames = h.send(c, {"type": "echo", "token": token, "jwt": True})
        self.assertEqual(frames, [{"type": "echo", "message": {
            "error": "QEWD has not been configured to support JWTs", "disconnect": True}}])
        self.assertDocumented("QEWD has not been configured to support JWTs")

    def test_crash_with_an_empty_message_sends_the_class_name(self) -> None:
        """QEWD's crash frame; ``str(exception)`` empty: the class name instead."""

        def boom(m: Any, s: Any, send: Any, finished: Any) -> None:
            raise LookupError()

        h = NodeHarness({"a": SimpleNamespace(handlers={"boom": boom})})
        c = h.connect()
        [frame] = h.send(c, {"type": "boom", "token": h.register(c, "a")})
        self.assertEqual((frame["type"], frame["finished"], frame["message"]),
                         ("error", True, "LookupError"))
        self.assertRegex(frame["responseTime"], r"^\d+ms$")
        self.assertEqual(len(self.flushLoggedErrors(LookupError)), 1)
        self.assertIn("If that is empty, the exception class name is sent instead",
                      doc("errors.md"))

    def test_crash_texts_shown_in_the_docs(self) -> None:
        """errors.md's examples: ``kaboom`` for ValueError("kaboom"), ``'x'`` for KeyError('x')."""
        raised = {"value": ValueError("kaboom"), "key": KeyError("x")}

        def boom(m: Any, s: Any, send: Any, finished: Any) -> None:
            raise raised[m["params"]]

        h = NodeHarness({"a": SimpleNamespace(handlers={"boom": boom})})
        c = h.connect()
        token = h.register(c, "a")
        sent = {}
        for kind in raised:
            [frame] = h.send(c, {"type": "boom", "token": token, "params": kind})
            sent[kind] = frame["message"]
        self.flushLoggedErrors(ValueError, KeyError)
        self.assertEqual(sent, {"value": "kaboom", "key": "'x'"})
        self.assertIn("`kaboom` for `ValueError(\"kaboom\")` or `'x'` for `KeyError('x')`",
                      doc("errors.md"))

    def test_handler_timeout_text_as_the_docs_show_it(self) -> None:
        """The default ``handlerTimeout`` (60, from the config) reaches the client as
        ``within 60 seconds``, the text errors.md gives as its example."""
        timeout = config_from_dict({}).handler_timeout
        h = NodeHarness({"a": SimpleNamespace(handlers={"login": never})},
                        handler_timeout=timeout)
        c = h.connect()
        self.assertEqual(h.send(c, {"type": "login", "token": h.register(c, "a")}), [])
        h.clock.advance(timeout - 0.001)
        self.assertEqual(c.take(), [])
        h.clock.advance(0.001)
        [frame] = c.take()
        self.assertEqual(frame["message"], {
            "error": "Handler for login did not finish within 60 seconds",
            "status": {"code": 504}})
        self.assertDocumented(frame["message"]["error"])
        self.assertIn("`Handler for <type> did not finish within <n> seconds` (status 504)",
                      doc("configuration.md"))

    def test_unknown_application_reason(self) -> None:
        """``Unable to load handler module for: {application}`` with its ``reason``."""
        h = NodeHarness({"a": SimpleNamespace(handlers={})})
        c = h.connect()
        [frame] = h.send(c, {"type": "x", "token": h.register(c, "nope")})
        self.assertEqual(frame["message"], {
            "error": "Unable to load handler module for: nope",
            "reason": "no moduleMap entry for application 'nope'"})
        self.assertDocumented("no moduleMap entry for application '<name>'")

    def test_session_left_unusable(self) -> None:
        """``The {type} handler left the session unusable: {reason}``: a ``timeout`` that is
        not a positive number; the reply replaces the handler's, with no token."""

        def spoil(m: Any, session: Any, send: Any, finished: Any) -> None:
            session["timeout"] = "soon"
            finished({"ok": True})

        h = NodeHarness({"a": SimpleNamespace(handlers={"spoil": spoil})})
        c = h.connect()
        [frame] = h.send(c, {"type": "spoil", "token": h.register(c, "a")})
        self.assertEqual((frame["type"], frame["finished"]), ("spoil", True))
        self.assertEqual(list(frame["message"]), ["error"])
        prefix = "The spoil handler left the session unusable: "
        self.assertTrue(frame["message"]["error"].startswith(prefix), frame)
        self.assertGreater(len(frame["message"]["error"]), len(prefix))


class SessionLimitTests(SynchronousTestCase, Documented):
    def test_too_many_sessions_through_a_node(self) -> None:
        """Session-token mode at the store's real bound (100000 live sessions, the default of
        the store a node is given): the next ``ewd-register`` gets ``Too many sessions``,
        status 503; once sessions expire, registering works again."""
        h = NodeHarness({"a": SimpleNamespace(handlers={})}, jwt_secret=None)
        bound = h.sessions.max_sessions
        self.assertEqual(bound, 100000)
        c = h.connect()
        register = {"type": "ewd-register", "application": "a"}
        for _ in range(bound):
            h.node.receive(c, register)
        self.assertEqual(len(c.take()), bound)
        [frame] = h.send(c, register)
        self.assertEqual((frame["type"], frame["finished"]), ("ewd-register", True))
        self.assertEqual(frame["message"], {"error": "Too many sessions", "status": {"code": 503}})
        self.assertDocumented("Too many sessions")
        h.clock.advance(300 + 1)  # initialSessionTimeout: every one of them has expired
        [frame] = h.send(c, register)
        self.assertIn("token", frame["message"])


class InFlightLimitTests(SynchronousTestCase, Documented):
    """``maxInFlight`` and ``maxInFlightPerLink`` at their real sizes (the config defaults)."""

    def fill(self, link: bool, reregister: bool = False) -> tuple[int, list[Any]]:
        defaults = config_from_dict({})
        h = NodeHarness({"a": SimpleNamespace(handlers={"never": never})},
                        max_in_flight=defaults.max_in_flight,
                        max_in_flight_link=defaults.max_in_flight_link, handler_timeout=None)
        c = h.connect()
        register = {"type": "ewd-register", "application": "a", "jwt": True}
        if link:
            register["qewd_twisted"] = 1
        reply = h.send(c, register)[0]["message"]
        token = reply["token"]
        if reregister:  # a link back after a reconnect: a new socket, ewd-reregister
            c = h.connect()
            reply = h.send(c, {"type": "ewd-reregister", "token": token, "jwt": True,
                               **({"qewd_twisted": 1} if link else {})})[0]["message"]
            self.assertIs(reply["ok"], True)
            token = reply["token"]
        if link:  # told that every frame will echo ms_requestId (docs/microservices.md)
            self.assertEqual(reply["qewd_twisted"], 1)
        n = 0
        while True:
            frames = h.send(c, {"type": "never", "token": token})
            if frames:
                return n, frames
            n += 1
            self.assertLess(n, 100000)

    def test_max_in_flight_64(self) -> None:
        n, frames = self.fill(link=False)
        self.assertEqual(n, 64)
        self.assertEqual(frames, [{"type": "never", "finished": True, "message": {
            "error": "Too many requests in flight on this connection", "status": {"code": 429}},
            "responseTime": frames[0]["responseTime"]}])
        self.assertDocumented(E.TOO_MANY_IN_FLIGHT)

    def test_the_limit_counts_requests_in_flight_not_requests_made(self) -> None:
        """200 requests one after the other on one connection: each is answered, and the
        connection can still have 64 in flight afterwards."""

        def echo(m: Any, s: Any, send: Any, finished: Any) -> None:
            finished({"n": m["params"]})

        h = NodeHarness({"a": SimpleNamespace(handlers={"echo": echo, "never": never})},
                        handler_timeout=None)
        c = h.connect()
        token = h.register(c, "a")
        for n in range(200):
            [frame] = h.send(c, {"type": "echo", "token": token, "params": n})
            self.assertEqual(frame["message"]["n"], n)
        for _ in range(64):
            self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        [frame] = h.send(c, {"type": "never", "token": token})
        self.assertEqual(frame["message"]["status"], {"code": 429})

    def test_a_link_that_reregisters_keeps_1024(self) -> None:
        n, _frames = self.fill(link=True, reregister=True)
        self.assertEqual(n, 1024)
        n, _frames = self.fill(link=False, reregister=True)
        self.assertEqual(n, 64)

    def test_max_in_flight_per_link_1024(self) -> None:
        n, frames = self.fill(link=True)
        self.assertEqual(n, 1024)
        self.assertEqual(frames[0]["message"], {
            "error": "Too many requests in flight on this connection", "status": {"code": 429}})
        self.assertIn("`maxInFlightPerLink` | int ≥ 1 | `1024`", doc("configuration.md"))


class RegistrationLimitTests(SynchronousTestCase, Documented):
    def test_application_name_of_128_characters_and_not_129(self) -> None:
        """``at most 128 characters``: 128 registers, 129 is refused with the exact text."""
        h = NodeHarness({})
        c = h.connect()
        for length, accepted in ((E.MAX_APPLICATION_LENGTH, True),
                                 (E.MAX_APPLICATION_LENGTH + 1, False)):
            [frame] = h.send(c, {"type": "ewd-register", "application": "a" * length,
                                 "jwt": True})
            self.assertEqual("token" in frame["message"], accepted, length)
        self.assertEqual(frame["message"], {"error": "Invalid ewd-register: application must "
                                            "be a non-empty string of at most 128 characters"})
        self.assertEqual(E.MAX_APPLICATION_LENGTH, 128)
        self.assertDocumented(frame["message"]["error"])

    def test_reregister_without_a_string_token(self) -> None:
        """``ewd-reregister`` without a token, or with one that is not a string: QEWD's
        ``Missing authorization header`` with ``disconnect``."""
        h = NodeHarness({})
        c = h.connect()
        for token in (None, "", 42, ["a.b.c"]):
            message = {"type": "ewd-reregister", "jwt": True}
            if token is not None:
                message["token"] = token
            [frame] = h.send(c, message)
            self.assertEqual((frame["type"], frame["finished"], frame["message"]),
                             ("ewd-reregister", True,
                              {"error": "Missing authorization header", "disconnect": True}),
                             token)


class BroadcastTests(SynchronousTestCase):
    """``q.to_all`` / ``q.to_application`` from a workerResponseHandler (docs/handlers.md)."""

    def harness(self, push: Any) -> NodeHarness:
        def echo(m: Any, s: Any, send: Any, finished: Any) -> None:
            finished({"ok": True})

        def wrh(message: Any, send: Any, q: Any) -> None:
            push(q)

        return NodeHarness({"news-app": SimpleNamespace(handlers={"go": echo},
                                                 workerResponseHandlers={"go": wrh}),
                            "b": SimpleNamespace(handlers={})})

    def test_to_application_reaches_only_that_applications_clients(self) -> None:
        h = self.harness(lambda q: q.to_application({"news": 1}, "news-app"))
        sender, same, other, unregistered = h.connect(), h.connect(), h.connect(), h.connect()
        token = h.register(sender, "news-app")
        h.register(same, "-".join(["news", "app"]))  # equal, not the same object: as off a socket
        h.register(other, "b")
        frames = h.send(sender, {"type": "go", "token": token})
        self.assertEqual(frames[0], {"news": 1})
        self.assertEqual(frames[1]["type"], "go")
        self.assertEqual(same.take(), [{"news": 1}])
        self.assertEqual(other.take(), [])
        self.assertEqual(unregistered.take(), [])

    def test_a_broadcast_that_is_not_json_is_dropped(self) -> None:
        """Logged, sent to no one; the request is still answered."""
        h = self.harness(lambda q: q.to_all({"not json": {1, 2}}))
        sender, other = h.connect(), h.connect()
        frames = h.send(sender, {"type": "go", "token": h.register(sender, "news-app")})
        self.assertEqual([f["type"] for f in frames], ["go"])
        self.assertIs(frames[0]["message"]["ok"], True)
        self.assertEqual(other.take(), [])


class SendToSocketTests(SynchronousTestCase):
    def test_true_when_connected_false_when_not(self) -> None:
        """``send_to_socket(socket_id, obj)`` (docs/embedding.md, docs/handlers.md)."""
        h = NodeHarness({})
        c = h.connect()
        self.assertIs(h.node.send_to_socket(c.id, {"hello": 1}), True)
        self.assertEqual(c.take(), [{"hello": 1}])
        h.disconnect(c)
        self.assertIs(h.node.send_to_socket(c.id, {"hello": 2}), False)
        self.assertEqual(c.take(), [])


class ShutdownTests(SynchronousTestCase, Documented):
    """Graceful shutdown as docs/reliability.md lists it, on the node."""

    def test_new_and_unfinished_requests_get_503_server_is_shutting_down(self) -> None:
        h = NodeHarness({"a": SimpleNamespace(handlers={"never": never})}, handler_timeout=None)
        c = h.connect()
        token = h.register(c, "a")
        self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        drained = h.node.drain(20)
        [refused] = h.send(c, {"type": "never", "token": token})
        expected = {"error": "Server is shutting down", "status": {"code": 503}}
        self.assertEqual((refused["type"], refused["finished"], refused["message"]),
                         ("never", True, expected))
        self.assertNoResult(drained)
        h.clock.advance(20)  # shutdownGracePeriod: the one still running gets the same 503
        [ended] = c.take()
        self.assertEqual((ended["type"], ended["message"]), ("never", expected))
        self.successResultOf(drained)
        self.assertDocumented("Server is shutting down")

    def test_close_all_waits_for_every_socket(self) -> None:
        """Every socket is told 1001 "server shutting down"; the Deferred fires when the last
        has gone, even when closing one of them raised (logged)."""

        class Broken(MemoryConnection):
            def close(self, code: int = 1000, reason: str = "") -> None:
                raise RuntimeError("close failed")

        h = NodeHarness({})
        a, b = h.connect(), h.connect()
        broken = Broken("brokenSocket00000001")
        h.node.connection_opened(broken)
        done = h.node.close_all()
        self.assertEqual((a.closed, b.closed), ((1001, "server shutting down"),) * 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNoResult(done)
        for conn in (a, b, broken):
            h.disconnect(conn)
        self.successResultOf(done)


class InitialSessionTimeoutTests(SynchronousTestCase):
    def test_register_token_lifetime(self) -> None:
        """``initialSessionTimeout`` (default 300) is the lifetime of a new JWT."""
        default = config_from_dict({}).initial_session_timeout
        self.assertEqual(default, 300)
        for timeout in (default, 42):
            h = NodeHarness({"a": SimpleNamespace(handlers={})},
                            initial_session_timeout=timeout)
            payload = h.tokens.decode(h.register(h.connect(), "a"))
            self.assertEqual((payload["exp"] - payload["iat"], payload["timeout"]),
                             (timeout, timeout))


# -- on loopback ------------------------------------------------------------------------------

class _HTTPResponse(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and not self.done.called:
            self.done.callback(self.data)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(self.data)


async def upgrade(port: int, query: str) -> bytes:
    """A raw WebSocket upgrade request to ``/socket.io/?<query>``: the response head."""
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _HTTPResponse())
    proto.transport.write(
        f"GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    return await proto.done


class WebSocketEndpointTests(TestCase, Documented):
    """What the web layer itself answers (docs/errors.md, Connection errors)."""

    async def status_line(self, query: str) -> str:
        node = start_node(self)
        head = await upgrade(port_of(node), query)
        return head.split(b"\r\n", 1)[0].decode()

    async def test_eio_4_refused_400(self) -> None:
        line = await self.status_line("EIO=4&transport=websocket")
        self.assertEqual(line,
                         "HTTP/1.1 400 Unsupported protocol version: this server speaks EIO=3")
        self.assertDocumented(line.split(" ", 1)[1])

    async def test_polling_upgrade_refused_400(self) -> None:
        line = await self.status_line("EIO=3&transport=polling")
        self.assertEqual(line, "HTTP/1.1 400 Transport unknown: only websocket is served")
        self.assertDocumented(line.split(" ", 1)[1])

    async def test_max_connections_text(self) -> None:
        """Past ``maxConnections`` the upgrade gets HTTP 503 with the documented reason."""
        node = start_node(self, maxConnections=1)
        first = EIOClient(eio_url(node))
        self.addCleanup(first.close)
        await first.handshake()
        head = await upgrade(port_of(node), "EIO=3&transport=websocket")
        line = head.split(b"\r\n", 1)[0].decode()
        self.assertEqual(line, "HTTP/1.1 503 Server busy: too many connections")
        self.assertIn("HTTP 503 `Server busy: too many connections`", doc("configuration.md"))
        self.assertDocumented("Server busy: too many connections")

    async def test_silent_client_dropped_after_ping_interval_plus_timeout(self) -> None:
        """A socket.io client that sends nothing for pingInterval + pingTimeout (25 s + 20 s,
        from its handshake) is dropped without a close frame; any frame (a ping) restarts
        the count. The node's clock is the test's."""
        clocked = ClockedReactor()
        node = start_node(self, reactor=clocked)
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        handshake = await c.handshake()
        self.assertEqual((handshake["pingInterval"], handshake["pingTimeout"]), (25000, 20000))
        self.assertIn("pingInterval + pingTimeout (25 s + 20 s)", doc("errors.md"))
        sid = handshake["sid"]
        clocked.clock.advance(44.9)
        self.assertIn(sid, node.node.connections)
        c.send_text("2probe")  # a ping, answered with a pong: the count starts again
        self.assertEqual(await c.next(), "3probe")
        clocked.clock.advance(44.9)
        self.assertIn(sid, node.node.connections)
        clocked.clock.advance(0.2)
        code, _reason = await c.closed
        self.assertEqual(code, 1006)  # no close frame: the TCP connection was dropped
        self.assertNotIn(sid, node.node.connections)


class PoolQueueTests(TestCase, Documented):
    async def test_server_busy_when_the_queue_is_full(self) -> None:
        """poolSize 1, ``max_queue_length`` 1: one handler running, one queued, the next is
        refused with ``Server busy: too many requests queued``, status 503; when the thread
        is free again requests are served."""
        demo.release.hold(self)
        node = start_node(self, poolSize=1, max_queue_length=1)
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        await c.handshake()
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        token = (await c.message())["message"]["token"]
        c.emit({"type": "blocked", "token": token})
        self.assertEqual((await c.message())["message"], {"blocked": True})  # running
        c.emit({"type": "echo", "token": token, "params": "queued"})
        c.emit({"type": "echo", "token": token, "params": "refused"})
        refused = await c.message()
        self.assertEqual((refused["type"], refused["finished"], refused["message"]),
                         ("echo", True, {"error": "Server busy: too many requests queued",
                                         "status": {"code": 503}}))
        self.assertDocumented(refused["message"]["error"])
        demo.release.open()
        replies = {}
        for _ in range(2):
            reply = await c.message()
            reply["message"].pop("token")
            replies[reply["type"]] = reply["message"]
        self.assertEqual(replies, {"blocked": {"released": True},
                                   "echo": {"you sent": "queued", "user": None}})
        c.emit({"type": "echo", "token": token, "params": "after"})
        after = (await c.message())["message"]
        self.assertEqual((after["you sent"], after["user"]), ("after", None))
