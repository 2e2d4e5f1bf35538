# -*- test-case-name: tests.test_http_hardening -*-
"""
The HTTP surface under attack (issue 20), each attack first as it was tried, on loopback sockets
or, for deadlines, on a Clock: ghost WebSocket connections, slow clients, bodies, odd requests,
browser origins, the status page's password guessing. Static files: tests/test_static_files.py;
the property tests: tests/test_http_properties.py.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import struct
from io import BytesIO
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted import errors as E
from qewd_twisted.config import ConfigError, config_from_dict
from qewd_twisted.config.limits import Limits
from qewd_twisted.ops.status_page import AuthThrottle, StatusPageResource
from qewd_twisted.testing import NodeHarness
from qewd_twisted.transports.http import (
    LOGGED_CHARS,
    IRequestBodyLimit,
    NodeChannel,
    NodeSite,
    WebSocketEndpoint,
    clip,
)
from qewd_twisted.transports.site import EngineIOProtocol, PlainProtocol, make_factory
from tests.httpclient import (
    RawClient,
    connect,
    exchange,
    get,
    head_and_body,
    status_of,
    upgrade_request,
)
from tests.integration.nodes import port_of, start_node
from tests.test_framing import client_frame, server_frames
from tests.test_ops import sample_status

ADDR = IPv4Address("TCP", "127.0.0.1", 40000)


def until_no_connections(test: TestCase, service: Any, timeout: float = 5) -> defer.Deferred:
    """Fires once the site counts no open connection and the node no client (or fails after
    ``timeout`` seconds: a connection that never closes is the bug these tests look for)."""
    site, node = service.site, service.node
    d: defer.Deferred[None] = defer.Deferred()

    def check() -> None:
        if site.open_connections == 0 and not node.connections and not d.called:
            d.callback(None)

    release, lost = site.release, node.connection_lost

    def on_release(channel: Any) -> None:
        release(channel)
        check()

    def on_lost(conn: Any) -> None:
        lost(conn)
        check()

    site.release, node.connection_lost = on_release, on_lost
    test.addCleanup(lambda: (site.__dict__.pop("release", None),
                             node.__dict__.pop("connection_lost", None)))
    check()
    return d.addTimeout(timeout, reactor)


class _Collect:
    """Log events while a test runs."""

    def __init__(self, test: TestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self) -> list[str]:
        return [formatEvent(e) or "" for e in self.events]

    def critical(self) -> list[str]:
        return [formatEvent(e) for e in self.events
                if e.get("log_level") in (LogLevel.critical, LogLevel.error)]


# -- 1. ghost connections ------------------------------------------------------------------------


class GhostConnectionTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_bytes_behind_the_upgrade_are_frames(self):
        """An upgrade with 20 KiB of frames behind it in the same write: every frame is
        processed (before the fix the socket stayed paused and the bytes were never seen)."""
        node = start_node(self)
        frames = client_frame(json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode())
        frames += client_frame(b"\x00" * 20000, opcode=2)  # binary: answered with an error
        client = yield defer.ensureDeferred(connect(port_of(node)))
        self.addCleanup(client.close)
        client.send(upgrade_request(b"/ws") + frames)
        data = yield client.until(E.BINARY_FRAME.encode())
        self.assertEqual(status_of(data), 101)
        replies = [json.loads(p) for op, p in server_frames(data.split(b"\r\n\r\n", 1)[1])
                   if op == 1]
        self.assertIn("token", replies[0]["message"])
        self.assertEqual(replies[1]["message"]["error"], E.BINARY_FRAME)
        yield client.close()
        yield until_no_connections(self, node)

    @defer.inlineCallbacks
    def test_ghosts_free_their_slots(self):
        """Upgrade + more than 16 KiB + close, more times than maxConnections: every slot is
        freed at once and the next client is served."""
        node = start_node(self, maxConnections=3)
        for i in range(8):
            path = b"/ws" if i % 2 else b"/socket.io/?EIO=3&transport=websocket"
            client = yield defer.ensureDeferred(connect(port_of(node)))
            client.send(upgrade_request(path) + b"x" * 20000)
            yield client.close()
        yield until_no_connections(self, node)
        gc.collect()
        left = [o for o in gc.get_objects() if isinstance(o, (NodeChannel, EngineIOProtocol, PlainProtocol))]
        self.assertLessEqual(len(left), 2)  # the log's recent events may hold the last one
        response = yield defer.ensureDeferred(connect(port_of(node)))
        self.addCleanup(response.close)
        response.send(upgrade_request(b"/socket.io/?EIO=3&transport=websocket"))
        data = yield response.until(b"\r\n\r\n")
        self.assertEqual(status_of(data), 101)

    @defer.inlineCallbacks
    def test_over_tls(self):
        """The same hand-over when the socket is TLS (the transport is a protocol wrapper)."""
        import twisted.test
        from twisted.internet import ssl
        from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol

        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        node = start_node(self, listen=f"ssl:0:interface=127.0.0.1:privateKey={pem}")
        client = yield connectProtocol(
            SSL4ClientEndpoint(reactor, "127.0.0.1", port_of(node),
                               ssl.CertificateOptions(verify=False)), RawClient())
        self.addCleanup(client.close)
        register = client_frame(json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode())
        client.send(upgrade_request(b"/ws") + register + client_frame(b"\x00" * 20000, 2))
        data = yield client.until(E.BINARY_FRAME.encode())
        self.assertIn(b"token", data)
        yield client.close()
        yield until_no_connections(self, node)

    @defer.inlineCallbacks
    def test_closed_after_upgrade_frees_the_slot(self):
        node = start_node(self)
        client = yield defer.ensureDeferred(connect(port_of(node)))
        client.send(upgrade_request(b"/socket.io/?EIO=3&transport=websocket"))
        yield client.until(b"40")
        self.assertEqual(node.site.open_connections, 1)
        yield client.close()
        yield until_no_connections(self, node)


# -- 3. deadlines (on a Clock) -------------------------------------------------------------------


@implementer(IRequestBodyLimit)
class BodyEcho(Resource):
    """Accepts bodies up to ``limit`` bytes on POST and says how it got them."""

    isLeaf = True

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self.limit = limit
        self.contents: list[Any] = []

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return self.limit if method == b"POST" else 0

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        return b"hello"

    def render_POST(self, request: Any) -> bytes:  # noqa: N802
        self.contents.append(request.content)
        return b"got %d bytes" % len(request.content.getvalue())


class _Pending(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        request.write(b"part of a response")
        return NOT_DONE_YET


class _HalfClosing(StringTransport):
    write_closed = False

    def loseWriteConnection(self) -> None:  # noqa: N802
        self.write_closed = True


def memory_site(limits: Limits = Limits(), **kw: Any) -> tuple[NodeSite, Clock]:
    clock = Clock()
    root = Resource()
    root.putChild(b"echo", BodyEcho())
    return NodeSite(root, reactor=clock, limits=limits, **kw), clock


def memory_connection(site: NodeSite) -> tuple[Any, StringTransport]:
    channel = site.buildProtocol(ADDR)
    transport = StringTransport(peerAddress=ADDR)
    channel.makeConnection(transport)
    return channel, transport


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.site, self.clock = memory_site()
        self.channel, self.transport = memory_connection(self.site)

    def test_headers_one_line_at_a_time_past_the_deadline(self):
        self.channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
        for _ in range(2):
            self.clock.advance(14)  # each line well within Twisted's idle timeout
            self.channel.dataReceived(b"X-Slow: 1\r\n")
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2.5)  # 30.5 s since the connection opened
        self.assertEqual(status_of(self.transport.value()), 408)
        self.assertIn(E.REQUEST_TIMEOUT.encode(), self.transport.value())
        self.assertTrue(self.transport.disconnecting)

    def test_idle_connection_is_closed_without_an_answer(self):
        self.clock.advance(Limits.header_timeout)
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)

    def test_headers_within_the_deadline_are_served_and_the_next_one_starts(self):
        self.channel.dataReceived(b"GET /echo HTTP/1.1\r\n")
        self.clock.advance(29)
        self.channel.dataReceived(b"Host: x\r\n\r\n")
        self.assertEqual(status_of(self.transport.value()), 200)
        self.transport.clear()
        self.clock.advance(29)  # a new deadline for the next request on this connection
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_body_one_byte_at_a_time_past_the_deadline(self):
        self.channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n")
        for _ in range(59):
            self.clock.advance(1)
            self.channel.dataReceived(b"a")
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(1.5)
        self.assertEqual(status_of(self.transport.value()), 408)
        self.assertTrue(self.transport.disconnecting)

    def test_a_body_that_stops_gets_408_at_the_deadline(self):
        """Part of the body in the head's packet, then nothing: 408 at ``bodyTimeout`` (60 s,
        which was also Twisted's idle timeout: that one closed the connection silently)."""
        self.channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                                  b"\r\nabc")
        self.clock.advance(Limits.body_timeout - 0.5)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.5)
        self.assertEqual(status_of(self.transport.value()), 408)
        self.assertTrue(self.transport.disconnecting)

    def test_response_the_client_does_not_read(self):
        self.site.resource.putChild(b"slow", _Pending())
        self.channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        self.channel.pauseProducing()  # what the transport does when its buffer is full
        self.clock.advance(Limits.stall_timeout - 1)
        self.channel.resumeProducing()  # the client read some
        self.channel.pauseProducing()
        self.clock.advance(Limits.stall_timeout - 1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_refusals_are_answered_and_logged_once_per_period(self):
        site, clock = memory_site(max_connections=1)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        memory_connection(site)
        refused = [memory_connection(site) for _ in range(5)]
        for channel, transport in refused:
            channel.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status_of(transport.value()), 503)
        clock.advance(10)
        memory_connection(site)
        reports = [formatEvent(e) for e in events if "refused" in (e.get("log_format") or "")]
        self.assertEqual(len(reports), 2)
        self.assertIn("refused 1 connection(s)", reports[0])
        self.assertIn("refused 5 connection(s)", reports[1])  # 4 quiet ones + this one
        self.assertEqual(site.open_connections, 1)

    def test_what_follows_an_early_answer_is_discarded_within_bounds(self):
        for more, seconds in ((600000, 1.9), (10, 2.0)):
            channel = self.site.buildProtocol(ADDR)
            transport = _HalfClosing(peerAddress=ADDR)
            channel.makeConnection(transport)
            channel.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 5000\r\n\r\n")
            self.assertEqual(status_of(transport.value()), 413)
            self.assertTrue(transport.write_closed)
            channel.dataReceived(b"x" * 500000)
            self.clock.advance(seconds - 0.1)
            self.assertFalse(transport.disconnecting)  # still reading, discarding
            channel.dataReceived(b"x" * more)
            self.clock.advance(0.1)
            self.assertTrue(transport.disconnecting)  # past LINGER_BYTES, or past LINGER

    def test_configured_deadlines(self):
        config = config_from_dict({"headerTimeout": 5, "bodyTimeout": 7, "registerTimeout": 9,
                                   "wsPingInterval": 11, "wsPingTimeout": 3, "stallTimeout": 13,
                                   "maxRanges": 4, "statusAuthFailures": 3,
                                   "statusAuthWindow": 30, "maxConnectionsPerAddress": 8})
        limits = config.limits
        self.assertEqual((limits.header_timeout, limits.body_timeout, limits.register_timeout,
                          limits.ws_ping_interval, limits.ws_ping_timeout, limits.stall_timeout,
                          limits.max_ranges, limits.auth_failures, limits.auth_window,
                          limits.max_connections_per_address),
                         (5, 7, 9, 11, 3, 13, 4, 3, 30, 8))
        site, clock = memory_site(config.limits)
        _, transport = memory_connection(site)
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_bad_deadline_values(self):
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"headerTimeout": 0, "bodyTimeout": "1",
                              "maxConnectionsPerAddress": 0})
        text = str(e.exception)
        for key in ("headerTimeout", "bodyTimeout", "maxConnectionsPerAddress"):
            self.assertIn(f"config.{key}", text)


def _handshake(proto: Any, path: str = "/ws") -> StringTransport:
    transport = StringTransport(peerAddress=ADDR)
    proto.makeConnection(transport)
    key = base64.b64encode(b"0123456789abcdef").decode()
    proto.dataReceived((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101 Switching Protocols" in transport.value()
    transport.clear()
    return transport


def echo(messageObj, session, send, finished):
    finished({"ok": True})


class WebSocketDeadlineTests(SynchronousTestCase):
    limits = Limits(ws_ping_interval=10, ws_ping_timeout=5, register_timeout=60)

    def setUp(self) -> None:
        self.h = NodeHarness({"demo": type("App", (), {"handlers": {"echo": echo}})})

    def connect(self, protocol: type = PlainProtocol) -> tuple[Any, StringTransport]:
        factory = make_factory(protocol, self.h.node, self.h.clock, 1 << 20, limits=self.limits)
        proto = factory.buildProtocol(ADDR)
        path = "/ws" if protocol is PlainProtocol else "/socket.io/?EIO=3&transport=websocket"
        return proto, _handshake(proto, path)

    def test_ws_client_that_answers_no_ping_is_dropped(self):
        proto, transport = self.connect()
        proto.dataReceived(client_frame(json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode()))
        transport.clear()
        self.h.clock.advance(10)
        [(opcode, payload)] = server_frames(transport.value())
        self.assertEqual(opcode, 9)  # a ping
        self.h.clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_ws_client_that_answers_pings_stays(self):
        proto, transport = self.connect()
        proto.dataReceived(client_frame(json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode()))
        for _ in range(5):
            transport.clear()
            self.h.clock.advance(10)
            [(opcode, payload)] = server_frames(transport.value())
            proto.dataReceived(client_frame(payload, opcode=10))  # the pong
            self.h.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.h.node.connections), 1)

    def _assert_closed_unregistered(self, transport: StringTransport) -> None:
        frames = server_frames(transport.value())
        close = [p for op, p in frames if op == 8]
        self.assertTrue(close, frames)
        code = struct.unpack("!H", close[0][:2])[0]
        self.assertEqual(code, 1008)
        self.assertEqual(close[0][2:].decode(), E.NOT_REGISTERED.format(seconds="60"))

    def test_unregistered_ws_client_is_closed(self):
        limits = self.limits
        self.limits = Limits(ws_ping_interval=1000, register_timeout=limits.register_timeout)
        proto, transport = self.connect()
        self.h.clock.advance(59)
        self.assertEqual(transport.value(), b"")
        self.h.clock.advance(1)
        self._assert_closed_unregistered(transport)

    def test_unregistered_socketio_client_is_closed(self):
        proto, transport = self.connect(EngineIOProtocol)
        for _ in range(4):  # pings keep Engine.IO's heartbeat happy, not the registration one
            self.h.clock.advance(12)
            proto.dataReceived(client_frame(b"2"))
        transport.clear()
        self.h.clock.advance(11)
        self.assertFalse([p for op, p in server_frames(transport.value()) if op == 8])
        self.h.clock.advance(1)
        self._assert_closed_unregistered(transport)
        transport.clear()
        proto.dataReceived(client_frame(b"2"))  # while closing: not answered, no error
        self.assertEqual(transport.value(), b"")

    def test_registered_client_is_not_closed(self):
        proto, transport = self.connect(EngineIOProtocol)
        proto.dataReceived(client_frame(b'42["ewdjs",' + json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode() + b"]"))
        for _ in range(10):
            self.h.clock.advance(10)
            proto.dataReceived(client_frame(b"2"))
        self.assertFalse([p for op, p in server_frames(transport.value()) if op == 8])
        self.assertEqual(len(self.h.node.connections), 1)


# -- 3. admission (real sockets) -----------------------------------------------------------------


class AdmissionTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_http_connections_count_toward_max_connections(self):
        node = start_node(self, maxConnections=2)
        port = port_of(node)
        idle = []
        for _ in range(2):  # two clients that send nothing hold both slots
            client = yield defer.ensureDeferred(connect(port))
            self.addCleanup(client.close)
            idle.append(client)
        refused = yield defer.ensureDeferred(exchange(port, get(b"/health"), self))
        self.assertEqual(status_of(refused), 503)
        self.assertIn(E.TOO_MANY_CONNECTIONS.encode(), refused)
        yield idle[0].close()
        yield idle[1].close()
        yield until_no_connections(self, node)
        served = yield defer.ensureDeferred(exchange(port, get(b"/health"), self))
        self.assertEqual(status_of(served), 200)

    @defer.inlineCallbacks
    def test_per_address_cap(self):
        node = start_node(self, maxConnectionsPerAddress=1)
        port = port_of(node)
        holder = yield defer.ensureDeferred(connect(port))
        self.addCleanup(holder.close)
        refused = yield defer.ensureDeferred(exchange(port, get(b"/health"), self))
        self.assertEqual(status_of(refused), 503)
        self.assertIn(E.TOO_MANY_FROM_ADDRESS.encode(), refused)
        yield holder.close()
        yield until_no_connections(self, node)
        served = yield defer.ensureDeferred(exchange(port, get(b"/health"), self))
        self.assertEqual(status_of(served), 200)

    def test_fd_limit_warning(self):
        from qewd_twisted.service import FD_RESERVE, fd_limit_warning

        self.assertIsNone(fd_limit_warning(1000, 1000 + FD_RESERVE))
        self.assertIsNone(fd_limit_warning(20000, None))
        text = fd_limit_warning(20000, 1024)
        self.assertIn("config.maxConnections is 20000", text)
        self.assertIn(f"at most {1024 - FD_RESERVE}", text)

    def test_per_address_cap_is_off_by_default(self):
        self.assertIsNone(Limits.max_connections_per_address)
        self.assertIsNone(config_from_dict({}).limits.max_connections_per_address)


# -- 4. bodies (real sockets) --------------------------------------------------------------------


class BodyTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.node = start_node(self, managementPassword="op-secret-1")
        self.echo = BodyEcho(limit=1000)
        self.node.site.resource.putChild(b"echo", self.echo)
        self.port = port_of(self.node)

    @defer.inlineCallbacks
    def test_too_large_content_length_is_refused_before_the_body(self):
        """300 MB announced, none of it sent: the answer comes anyway (413), on every path."""
        for method, path in ((b"POST", b"/"), (b"GET", b"/status"), (b"GET", b"/ewd-client.js"),
                             (b"POST", b"/ws"), (b"POST", b"/echo"), (b"PUT", b"/health")):
            response = yield defer.ensureDeferred(exchange(self.port, get(
                path, b"Content-Length: 300000000\r\n", method), self))
            self.assertEqual(status_of(response), 413, (method, path))
            headers, body = head_and_body(response)
            self.assertEqual(headers[b"x-content-type-options"], b"nosniff")

    @defer.inlineCallbacks
    def test_expect_continue_gets_413_not_100(self):
        response = yield defer.ensureDeferred(exchange(self.port, get(
            b"/echo", b"Content-Length: 5000\r\nExpect: 100-continue\r\n", b"POST"), self))
        self.assertEqual(status_of(response), 413)
        self.assertNotIn(b"100 Continue", response)

    @defer.inlineCallbacks
    def test_chunked_body_is_cut_at_the_limit(self):
        client = yield defer.ensureDeferred(connect(self.port))
        self.addCleanup(client.close)
        client.send(b"POST /socket.io/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            client.send(b"10000\r\n" + b"a" * 0x10000 + b"\r\n")
        response = yield client.closed
        self.assertEqual(status_of(response), 413)
        self.assertIn(E.BODY_TOO_LARGE.format(limit=0).encode(), response)
        client = yield defer.ensureDeferred(connect(self.port))
        self.addCleanup(client.close)
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"258\r\n" + b"a" * 600 + b"\r\n258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n")
        response = yield client.closed
        self.assertEqual(status_of(response), 413)
        self.assertEqual(self.echo.contents, [])  # never reached the resource

    @defer.inlineCallbacks
    def test_bodies_within_the_limit_arrive_in_memory(self):
        response = yield defer.ensureDeferred(exchange(self.port, get(
            b"/echo", b"Content-Length: 1000\r\n", b"POST") + b"x" * 1000, self))
        self.assertEqual(status_of(response), 200)
        self.assertTrue(response.endswith(b"got 1000 bytes"))
        response = yield defer.ensureDeferred(exchange(self.port, get(
            b"/echo", b"Transfer-Encoding: chunked\r\n", b"POST")
            + b"190\r\n" + b"a" * 400 + b"\r\n190\r\n" + b"b" * 400 + b"\r\n0\r\n\r\n", self))
        self.assertTrue(response.endswith(b"got 800 bytes"))
        self.assertEqual([type(c) for c in self.echo.contents], [BytesIO, BytesIO])

    def test_declared_limits(self):
        self.assertTrue(verifyObject(IRequestBodyLimit, self.echo))
        ws = self.node.site.resource.children[b"ws"]
        self.assertIsInstance(ws, WebSocketEndpoint)
        self.assertEqual(ws.maxBodyBytes(b"GET"), 0)
        self.assertEqual(ws.maxBodyBytes(b"POST"), 0)


# -- 5. odd requests -----------------------------------------------------------------------------


class OddRequestTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.node = start_node(self, managementPassword="op-secret-1")
        self.port = port_of(self.node)
        self.log = _Collect(self)

    @defer.inlineCallbacks
    def test_unknown_methods_never_reach_a_render_method(self):
        for method in (b"status", b"page", b"FOO", b"TRACE", b"CONNECT", b"PROPFIND"):
            response = yield defer.ensureDeferred(exchange(self.port, get(b"/status", b"", method),
                                                           self))
            self.assertEqual(status_of(response), 501, method)
            self.assertIn(E.METHOD_NOT_IMPLEMENTED.encode(), response)
        self.assertFalse(hasattr(StatusPageResource, "render_status"))
        self.assertEqual(self.log.critical(), [])

    @defer.inlineCallbacks
    def test_invalid_bytes_in_paths_get_400(self):
        for path in (b"/%00", b"/a%00b", b"/%01", b"/x%7f", b"/%ff", b"/%c3%28", b"/ws%00",
                     b"/socket.io/%00", b"/status%0a"):
            response = yield defer.ensureDeferred(exchange(self.port, get(path), self))
            self.assertEqual(status_of(response), 400, path)
            self.assertIn(E.BAD_REQUEST_PATH.encode(), response)
        response = yield defer.ensureDeferred(exchange(self.port, get(b"/health"), self))
        self.assertEqual(status_of(response), 200)
        self.assertEqual(self.log.critical(), [])

    @defer.inlineCallbacks
    def test_logged_values_are_truncated(self):
        long = b"Z" * 20000
        node = start_node(self, allowedOrigins=["https://app.example"])
        port = port_of(node)
        for request in (get(b"/ewd-client.js", b"Range: bytes=" + long + b"\r\n"),
                        get(b"/" + long),
                        get(b"/%00" + long),
                        get(b"/", b"", b"X" + long[:8000]),
                        upgrade_request(b"/ws", b"Origin: https://" + long[:8000] + b"\r\n"),
                        get(b"/ws", b"X-Long: " + long + b"\r\n"),
                        get(b"/ws", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Version: " + long[:9000] + b"\r\n"
                            b"Sec-WebSocket-Key: " + long[:5000] + b"\r\n"),
                        get(b"/ws", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Version: 13\r\nHost: x:" + long[:9000] + b"\r\n"
                            b"Sec-WebSocket-Key: " + long[:5000] + b"\r\n")):
            yield defer.ensureDeferred(exchange(port, request, self))
        for text in self.log.texts():
            self.assertNotIn("Z" * (LOGGED_CHARS + 1), text)
        self.assertEqual(self.log.critical(), [])

    def test_clip(self):
        self.assertEqual(clip(b"abc"), "abc")
        self.assertEqual(clip(b"a\x00\n"), "a\\x00\\n")
        self.assertEqual(clip("x" * 500), "x" * LOGGED_CHARS + "...")


# -- 6. origins ----------------------------------------------------------------------------------


class OriginTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.node = start_node(self, allowedOrigins=["https://app.example", "http://localhost:8080"])
        self.port = port_of(self.node)

    @defer.inlineCallbacks
    def upgrade(self, path: bytes, origin: bytes | None) -> Any:
        extra = b"Origin: " + origin + b"\r\n" if origin is not None else b""
        client = yield defer.ensureDeferred(connect(self.port))
        self.addCleanup(client.close)
        client.send(upgrade_request(path, extra))
        data = yield client.until(b"\r\n\r\n")
        return status_of(data), data

    @defer.inlineCallbacks
    def test_other_browser_origins_get_403(self):
        for path in (b"/ws", b"/socket.io/?EIO=3&transport=websocket"):
            for origin in (b"https://evil.example", b"null", b"https://app.example.evil",
                           b"http://app.example"):
                code, data = yield self.upgrade(path, origin)
                self.assertEqual(code, 403, (path, origin))

    @defer.inlineCallbacks
    def test_listed_origins_and_clients_without_origin_are_served(self):
        for path in (b"/ws", b"/socket.io/?EIO=3&transport=websocket"):
            for origin in (b"https://app.example", b"HTTPS://App.Example/",
                           b"http://localhost:8080", None):
                code, _ = yield self.upgrade(path, origin)
                self.assertEqual(code, 101, (path, origin))

    def test_unset_means_any(self):
        self.assertIsNone(config_from_dict({}).allowed_origins)

    def test_bad_origins_in_config(self):
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"allowedOrigins": ["https://ok.example", "ok.example",
                                                 "https://x.example/path", 5]})
        text = str(e.exception)
        for i in (1, 2, 3):
            self.assertIn(f"config.allowedOrigins[{i}]", text)
        self.assertNotIn("config.allowedOrigins[0]", text)


# -- 7. the status page's Basic auth -------------------------------------------------------------


class AuthRequest(DummyRequest):
    """DummyRequest plus twisted.web's Basic-auth accessors."""

    def _credentials(self) -> tuple[bytes, bytes]:
        header = self.getHeader(b"authorization") or b""
        if not header.startswith(b"Basic "):
            return b"", b""
        user, _, password = base64.b64decode(header[6:]).partition(b":")
        return user, password

    def getUser(self) -> bytes:  # noqa: N802
        return self._credentials()[0]

    def getPassword(self) -> bytes:  # noqa: N802
        return self._credentials()[1]


def auth_request(password: bytes | None, ip: str = "10.0.0.7") -> DummyRequest:
    request = AuthRequest([b""])
    request.client = IPv4Address("TCP", ip, 5000)
    if password is not None:
        credentials = base64.b64encode(b"admin:" + password)
        request.requestHeaders.setRawHeaders(b"authorization", [b"Basic " + credentials])
    return request


class StatusAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limits = Limits(auth_failures=5, auth_window=60)
        ops = type("Ops", (), {"status": staticmethod(sample_status)})()
        self.page = StatusPageResource(ops, b"right-one", AuthThrottle(self.clock, self.limits))
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def get(self, password: bytes | None, ip: str = "10.0.0.7") -> tuple[int, Any]:
        request = auth_request(password, ip)
        body = self.page.render_GET(request)
        return request.responseCode or 200, request, body

    def test_failures_are_logged_then_429_then_the_window_passes(self):
        for i in range(4):
            code, _, _ = self.get(b"wrong-%d" % i)
            self.assertEqual(code, 401)
        code, request, body = self.get(b"wrong-4")  # the 5th: answered 401, then blocked
        self.assertEqual(code, 401)
        code, request, body = self.get(b"right-one")
        self.assertEqual(code, 429)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"60"])
        self.assertEqual(body.decode().strip(), E.AUTH_BACKOFF.format(seconds=60))
        self.assertEqual(self.get(b"right-one", ip="10.0.0.8")[0], 200)  # other addresses
        self.clock.advance(59)
        self.assertEqual(self.get(b"right-one")[0], 429)
        self.clock.advance(1)
        self.assertEqual(self.get(b"right-one")[0], 200)
        texts = [formatEvent(e) for e in self.events]
        warned = [t for t in texts if "10.0.0.7" in t]
        self.assertEqual(len(warned), 5)
        self.assertTrue(all("admin" in t for t in warned))
        self.assertFalse([t for t in texts if "wrong-" in t or "right-one" in t])

    def test_a_browser_first_request_without_credentials_is_not_a_failure(self):
        for _ in range(20):
            self.assertEqual(self.get(None)[0], 401)
        self.assertEqual(self.get(b"right-one")[0], 200)
        self.assertEqual(self.events, [])

    def test_failures_spread_beyond_the_window_do_not_block(self):
        for _ in range(12):
            self.assertEqual(self.get(b"nope")[0], 401)
            self.clock.advance(15)  # at most 4 within any 60 s
        self.assertEqual(self.get(b"right-one")[0], 200)

    def test_tracked_addresses_are_bounded(self):
        throttle = AuthThrottle(self.clock, Limits(auth_failures=3))
        throttle.tracked = 100
        for i in range(1000):
            throttle.failed(f"10.1.{i // 256}.{i % 256}")
        self.assertLessEqual(len(throttle._failures), 100)


class StatusAuthOnTheWireTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_password_guessing_gets_429(self):
        node = start_node(self, managementPassword="op-secret-1")
        port = port_of(node)
        codes = []
        for i in range(Limits.auth_failures + 3):
            credentials = base64.b64encode(b"x:guess-%d" % i)
            response = yield defer.ensureDeferred(exchange(port, get(
                b"/status.json", b"Authorization: Basic " + credentials + b"\r\n"), self))
            codes.append(status_of(response))
        self.assertEqual(codes, [401] * Limits.auth_failures + [429] * 3)
