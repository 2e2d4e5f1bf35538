"""
Tests for qewd_twisted.links: the micro-service link (docs/protocol.md §4.2, §4.4, §4.9).

Three layers:
- pure units (URL -> endpoint, retry policy, final-frame rule, MicroServices routing);
- memory tests: the real Link, ClientService, Autobahn client and a fake Autobahn remote
  connected by twisted.test.iosim, every timer on a Clock (fully deterministic);
- loopback tests: the same fake remote on 127.0.0.1 port 0 over real TCP (and TLS), with the
  link's timers (retries, pings) on a Clock so nothing sleeps.
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted.transports import wire
from qewd_twisted.core.envelope import is_final as is_final_frame
from qewd_twisted.core.interfaces import ILink, ILinkObserver, IReplyReceiver, IRoutes
from qewd_twisted.errors import MS_DOWN as DOWN_ERROR
from qewd_twisted.mesh.links import (
    Link,
    LinkOutcome,
    LinkState,
    MicroServices,
    link_retry_policy,
)
from qewd_twisted.mesh.policy import endpoint_for_url

DOWN = LinkOutcome.DOWN
TIMEOUT = LinkOutcome.TIMEOUT

# --------------------------------------------------------------------------------------
# A scriptable fake remote QEWD node: Engine.IO 3 / socket.io 2 over an Autobahn server.


class RemoteProtocol(WebSocketServerProtocol):
    def onOpen(self) -> None:
        remote = self.factory.remote
        remote.connections.append(self)
        sid = "".join(random.choice(string.ascii_letters) for _ in range(20))
        self.sendMessage(
            wire.open_packet(sid, remote.ping_interval_ms, remote.ping_timeout_ms).encode()
        )
        if remote.send_connect:
            self.sendMessage(wire.SIO_CONNECT.encode())
        remote.changed()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        remote = self.factory.remote
        text = payload.decode("utf-8")
        remote.raw.append(text)
        if text.startswith(wire.EIO_PING):
            remote.pings += 1
            if remote.answer_pings:
                self.sendMessage((wire.EIO_PONG + text[1:]).encode())
        elif text.startswith("42"):
            frame = wire.decode(text).args[0]
            remote.frames.append(frame)
            remote.on_frame(self, frame)
        remote.changed()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        remote = self.factory.remote
        if self in remote.connections:
            remote.connections.remove(self)
        remote.closed += 1
        remote.changed()

    def emit(self, frame: Any) -> None:
        self.sendMessage(wire.encode_event(frame).encode("utf-8"))


class FakeRemote:
    """Records what the link sends; answers registration; requests are answered by tests.

    ``capable``: answers ``qewd_twisted: 1`` like our nodes (else behaves like QEWD.js).
    ``register_replies`` / ``reregister_replies``: optional lists of ``message`` dicts used
    in turn (then the defaults).
    """

    def __init__(self, reactor: Any, capable: bool = True) -> None:
        self.factory = WebSocketServerFactory(reactor=reactor)
        self.factory.setProtocolOptions(
            autoPingInterval=0, openHandshakeTimeout=0, closeHandshakeTimeout=0
        )
        self.factory.protocol = RemoteProtocol
        self.factory.remote = self
        self.capable = capable
        self.ping_interval_ms = 25000
        self.ping_timeout_ms = 20000
        self.send_connect = True
        self.answer_pings = True
        self.answer_registration = True
        self.connections: list[RemoteProtocol] = []
        self.frames: list[dict[str, Any]] = []
        self.requests: list[tuple[RemoteProtocol, dict[str, Any]]] = []
        self.raw: list[str] = []
        self.pings = 0
        self.closed = 0
        self.registrations = 0
        self.register_replies: list[dict[str, Any]] = []
        self.reregister_replies: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def on_frame(self, conn: RemoteProtocol, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("ewd-register", "ewd-reregister"):
            if not self.answer_registration:
                return
            self.registrations += 1
            replies = self.register_replies if kind == "ewd-register" else self.reregister_replies
            if replies:
                message = replies.pop(0)
            elif kind == "ewd-register":
                message = {"token": f"reg-token-{self.registrations}"}
            else:
                message = {"ok": True, "token": f"rereg-token-{self.registrations}"}
            if self.capable and frame.get("qewd_twisted") == 1 and "error" not in message:
                message = dict(message, qewd_twisted=1)
            conn.emit({"type": kind, "finished": True, "message": message,
                       "responseTime": "1ms"})
        else:
            self.requests.append((conn, frame))

    def registration_frames(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") in ("ewd-register", "ewd-reregister")]

    def emit(self, frame: Any) -> None:
        self.connections[-1].emit(frame)

    def reply(self, request: dict[str, Any], message: dict[str, Any], finished: bool = True,
              echo: bool | None = None, **extra: Any) -> None:
        """Answer a request like a QEWD node: ids on every frame (capable) or on finals."""
        if echo is None:
            echo = self.capable or finished
        frame: dict[str, Any] = {"type": request["type"], "finished": finished,
                                 "message": dict(message), "responseTime": "3ms"}
        frame.update(extra)
        if echo:
            frame["ms_requestId"] = request["ms_requestId"]
            frame["message"]["ms_requestId"] = request["ms_requestId"]
        self.emit(frame)

    def drop_all(self) -> None:
        for conn in list(self.connections):
            conn.transport.abortConnection()

    def changed(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate():
                self._waiters.remove(waiter)
                d.callback(None)

    def wait_for(self, predicate: Callable[[], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiters.append((predicate, d))
        return d


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects each attempt to a new fake-remote protocol through iosim, in memory."""

    def __init__(self, remote: FakeRemote, clock: Clock) -> None:
        self.remote = remote
        self.clock = clock
        self.pumps: list[iosim.IOPump] = []
        self.refuse = False
        self.attempts = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError())
        client = factory.buildProtocol(None)
        server = self.remote.factory.buildProtocol(None)
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, isServer=True),
            client, iosim.FakeTransport(client, isServer=False), greet=False,
            clock=self.clock))
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


def refreshed(token: str) -> str:
    return "refreshed:" + token


@implementer(IReplyReceiver)
class Recorder:
    """A reply receiver that keeps every frame it is given, and the outcome of a failure
    (a ``LinkOutcome``) in the same list."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    def frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def failed(self, outcome: LinkOutcome) -> None:
        self.frames.append(outcome)

    @property
    def finals(self) -> list[Any]:
        return [f for f in self.frames
                if isinstance(f, LinkOutcome) or is_final_frame(f)]


@implementer(IReplyReceiver)
class OnFrame:
    """A reply receiver around one callable, given each frame and each outcome."""

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.frame = self.failed = callback


# --------------------------------------------------------------------------------------
# Pure units


class EndpointForURLTests(unittest.TestCase):
    def setUp(self) -> None:
        self.reactor = Clock()

    def test_plain_ipv4(self) -> None:
        endpoint, ws_url = endpoint_for_url("http://127.0.0.1:3000", self.reactor)
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        self.assertEqual(ws_url, "ws://127.0.0.1:3000/socket.io/?EIO=3&transport=websocket")

    def test_ipv6_literal(self) -> None:
        endpoint, ws_url = endpoint_for_url("ws://[::1]:8080/ignored", self.reactor)
        self.assertIsInstance(endpoint, TCP6ClientEndpoint)
        self.assertEqual(ws_url, "ws://[::1]:8080/socket.io/?EIO=3&transport=websocket")

    def test_hostname_default_port(self) -> None:
        endpoint, ws_url = endpoint_for_url("http://ms.example", global_reactor)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(ws_url, "ws://ms.example:80/socket.io/?EIO=3&transport=websocket")

    def test_https_is_tls(self) -> None:
        endpoint, ws_url = endpoint_for_url("https://ms.example", global_reactor)
        self.assertNotIsInstance(endpoint, HostnameEndpoint)  # wrapped by wrapClientTLS
        self.assertEqual(ws_url, "wss://ms.example:443/socket.io/?EIO=3&transport=websocket")

    def test_bad_urls(self) -> None:
        for url in ("ftp://x:1", "http://:3000", "nonsense", "http://h:99999"):
            self.assertRaises(ValueError, endpoint_for_url, url, self.reactor)


class RetryPolicyTests(unittest.TestCase):
    def test_bounds_and_growth(self) -> None:
        for noise in (0.0, 0.5, 0.999999):
            policy = link_retry_policy(rng=lambda noise=noise: noise)
            delays = [policy(n) for n in range(1, 40)]
            self.assertTrue(all(0.5 <= d <= 30.0 for d in delays), delays)
            self.assertEqual(delays, sorted(delays))
        policy = link_retry_policy(rng=lambda: 0.0)
        self.assertEqual([policy(n) for n in (1, 2, 3)], [0.5, 1.0, 2.0])
        self.assertEqual(policy(1000), 29.0)

    def test_jitter_spreads(self) -> None:
        policy = link_retry_policy(rng=random.Random(7).random)
        self.assertGreater(len({round(policy(1), 6) for _ in range(20)}), 10)


class FinalFrameTests(unittest.TestCase):
    def test_rule(self) -> None:
        self.assertTrue(is_final_frame({"type": "a", "finished": True}))
        self.assertFalse(is_final_frame({"type": "a", "finished": False}))
        self.assertTrue(is_final_frame({"type": "login", "message": {"error": "x"}}))


class Route:
    def __init__(self, application: str, type: str, url: str, remote_application: str):
        self.application = application
        self.type = type
        self.url = url
        self.remote_application = remote_application


class MicroServicesTests(unittest.TestCase):
    def test_one_link_per_url(self) -> None:
        clock = Clock()
        routes = [
            Route("jwt", "login", "http://127.0.0.1:3000", "test-app"),
            Route("jwt", "logout", "http://127.0.0.1:3000", "other-app"),
            Route("jwt", "stock", "http://127.0.0.1:3001", "stock-list"),
        ]
        ms = MicroServices(routes, clock, refresh_token=refreshed, clock=clock,
                           handshake_timeout=7.0)
        self.assertEqual(sorted(ms.links), ["http://127.0.0.1:3000", "http://127.0.0.1:3001"])
        login_link, app = ms.route("jwt", "login")
        self.assertEqual(app, "test-app")
        logout_link, app = ms.route("jwt", "logout")
        self.assertIs(logout_link, login_link)
        self.assertEqual(app, "other-app")
        self.assertEqual(login_link.application, "test-app")  # first route's remote app
        self.assertEqual(ms.route("jwt", "stock")[0].application, "stock-list")
        self.assertIsNone(ms.route("jwt", "nothing"))
        self.assertEqual(sorted(s.name for s in ms), sorted(ms.links))
        self.assertIs(login_link._refresh_token, refreshed)
        self.assertEqual(login_link._handshake_timeout, 7.0)

    def test_mapping_of_routes(self) -> None:
        route = Route("jwt", "login", "http://127.0.0.1:3000", "test-app")
        ms = MicroServices({("jwt", "login"): route}, Clock())
        self.assertEqual(ms.route("jwt", "login")[1], "test-app")

    def test_start_stop(self) -> None:
        clock = Clock()
        endpoint = MemoryEndpoint(FakeRemote(clock), clock)
        ms = MicroServices([Route("jwt", "login", "http://127.0.0.1:3000", "test-app")],
                           clock, clock=clock, endpoint=endpoint)
        ms.startService()
        endpoint.flush()
        link = ms.route("jwt", "login")[0]
        self.assertTrue(link.is_up)
        d = ms.stopService()
        endpoint.flush()
        self.successResultOf(d)
        self.assertEqual(link.state, LinkState.STOPPED)
        self.assertEqual(clock.getDelayedCalls(), [])


# --------------------------------------------------------------------------------------
# Memory tests: the whole stack in memory, every timer on a Clock.


class MemoryLinkMixin:
    URL = "http://127.0.0.1:3000"

    def make_link(self, capable: bool = True, start: bool = True, **options: Any) -> Link:
        self.clock = Clock()
        self.remote = FakeRemote(self.clock, capable=capable)
        self.endpoint = MemoryEndpoint(self.remote, self.clock)
        options.setdefault("refresh_token", refreshed)
        options.setdefault("retry_policy", lambda attempt: 1.0)
        self.link = Link(self.URL, "test-app", self.clock, clock=self.clock,
                         endpoint=self.endpoint, **options)
        self.states: list[LinkState] = []
        self.link.on_state_change(lambda link, state: self.states.append(state))
        self.addCleanup(self.stop_link)
        if start:
            self.link.startService()
            self.flush()
        return self.link

    def flush(self) -> None:
        self.endpoint.flush()

    def stop_link(self) -> None:
        if self.link.running:
            d = self.link.stopService()
            self.flush()
            self.successResultOf(d)
        self.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()

    def reconnect(self) -> list[str]:
        """The remote drops the link and its retry runs: the link is up again. Returns the
        types of every registration frame the remote has had, in order."""
        self.remote.drop_all()
        self.flush()
        self.advance(1.0)
        self.assertTrue(self.link.is_up)
        return [f["type"] for f in self.remote.registration_frames()]

    def request(self, type: str = "login", timeout: float | None = None,
                **fields: Any) -> Recorder:
        recorder = Recorder()
        message = {"type": type, "token": "jwt-for-remote", "jwt": True, **fields}
        self.link.send_request(message, recorder, timeout)
        self.flush()
        return recorder

    def sent(self) -> list[dict[str, Any]]:
        return [frame for _, frame in self.remote.requests]


class MemoryRegistrationTests(MemoryLinkMixin, unittest.TestCase):
    def test_register_then_up(self) -> None:
        link = self.make_link()
        self.assertTrue(link.is_up)
        self.assertTrue(link.echoes_request_ids)
        self.assertEqual(self.remote.registration_frames(), [
            {"type": "ewd-register", "application": "test-app", "jwt": True,
             "qewd_twisted": 1}])
        self.assertEqual(self.states, [LinkState.DOWN, LinkState.REGISTERING, LinkState.UP])
        d = link.when_up()
        self.clock.advance(0)
        self.assertIs(self.successResultOf(d), link)

    def test_qewdjs_remote_does_not_echo(self) -> None:
        link = self.make_link(capable=False)
        self.assertTrue(link.is_up)
        self.assertFalse(link.echoes_request_ids)

    def test_not_up_before_register_reply(self) -> None:
        self.make_link(start=False)
        self.remote.answer_registration = False
        d = self.link.when_up()
        self.link.startService()
        self.flush()
        self.assertEqual(self.link.state, LinkState.REGISTERING)
        self.assertNoResult(d)
        recorder = self.request()
        self.assertEqual(recorder.frames, [DOWN])
        self.assertEqual(self.sent(), [])
        self.link.stopService()
        self.flush()
        self.failureResultOf(d, CancelledError)

    def test_register_error_retries_with_backoff(self) -> None:
        attempts: list[int] = []

        def policy(attempt: int) -> float:
            attempts.append(attempt)
            return 1.0 * attempt

        self.make_link(start=False, retry_policy=policy)
        self.remote.register_replies = [{"error": "no JWT support"},
                                        {"error": "no JWT support"}]
        self.link.startService()
        self.flush()
        self.assertFalse(self.link.is_up)
        self.assertEqual(self.remote.closed, 1)  # the link closed the refused connection
        self.assertEqual(attempts, [1])
        self.advance(1.0)
        self.assertEqual(attempts, [1, 2])  # second refusal: backoff grows
        self.assertEqual(self.remote.closed, 2)
        self.advance(1.9)
        self.assertFalse(self.link.is_up)
        self.advance(0.1)
        self.assertTrue(self.link.is_up)
        self.assertEqual([f["type"] for f in self.remote.registration_frames()],
                         ["ewd-register"] * 3)

    def test_reconnect_reregisters_with_refreshed_token(self) -> None:
        link = self.make_link()
        self.remote.drop_all()
        self.flush()
        self.assertEqual(link.state, LinkState.DOWN)
        self.advance(1.0)
        self.assertTrue(link.is_up)
        self.assertEqual(self.remote.registration_frames()[-1], {
            "type": "ewd-reregister", "token": "refreshed:reg-token-1", "jwt": True,
            "qewd_twisted": 1})
        self.assertTrue(link.echoes_request_ids)
        # The reply's token replaces the stored one (§2.3): the next reregister refreshes it.
        self.remote.drop_all()
        self.flush()
        self.advance(1.0)
        self.assertEqual(self.remote.registration_frames()[-1]["token"],
                         "refreshed:rereg-token-2")

    def test_reregister_refused_falls_back_to_register(self) -> None:
        link = self.make_link()
        self.remote.reregister_replies = [{"error": "Invalid JWT: Error: Token expired"}]
        self.assertEqual(self.reconnect(), ["ewd-register", "ewd-reregister", "ewd-register"])
        self.assertEqual(len(self.endpoint.pumps), 2)  # same connection

    def test_refresh_failure_falls_back_to_register(self) -> None:
        def broken(token: str) -> str:
            raise ValueError("cannot decode")

        self.make_link(refresh_token=broken)
        self.assertEqual(self.reconnect(), ["ewd-register", "ewd-register"])

    def test_connect_refused_retries(self) -> None:
        self.make_link(start=False)
        self.endpoint.refuse = True
        self.link.startService()
        self.advance(1.0)
        self.advance(1.0)
        self.assertEqual(self.endpoint.attempts, 3)
        self.endpoint.refuse = False
        self.advance(1.0)
        self.assertTrue(self.link.is_up)

    def test_remote_closes_during_handshake(self) -> None:
        self.make_link(start=False)
        self.remote.send_connect = False
        self.link.startService()
        self.flush()
        self.assertEqual(self.link.state, LinkState.REGISTERING)
        self.remote.drop_all()
        self.flush()
        self.assertEqual(self.link.state, LinkState.DOWN)
        self.remote.send_connect = True
        self.advance(1.0)
        self.assertTrue(self.link.is_up)

    def test_handshake_timeout(self) -> None:
        self.make_link(start=False, handshake_timeout=5.0)
        self.remote.send_connect = False  # the socket.io CONNECT never comes
        self.link.startService()
        self.flush()
        self.advance(4.9)
        self.assertEqual(self.link.state, LinkState.REGISTERING)
        self.advance(0.1)
        self.assertEqual(self.link.state, LinkState.DOWN)
        self.assertEqual(self.remote.closed, 1)

    def test_pings(self) -> None:
        self.make_link(start=False)
        self.remote.ping_interval_ms, self.remote.ping_timeout_ms = 1000, 500
        self.link.startService()
        self.flush()
        for n in (1, 2, 3):
            self.advance(1.0)
            self.assertEqual(self.remote.pings, n)
        self.assertTrue(self.link.is_up)

    def test_ping_timeout_drops_and_reconnects(self) -> None:
        self.make_link(start=False)
        self.remote.ping_interval_ms, self.remote.ping_timeout_ms = 1000, 500
        self.remote.answer_pings = False
        self.link.startService()
        self.flush()
        self.advance(1.0)
        self.assertEqual(self.remote.pings, 1)
        self.advance(0.4)
        self.assertTrue(self.link.is_up)
        self.advance(0.1)
        self.assertEqual(self.link.state, LinkState.DOWN)
        self.assertEqual(self.remote.closed, 1)
        self.remote.answer_pings = True
        self.advance(1.0)
        self.assertTrue(self.link.is_up)

    def test_server_ping_answered(self) -> None:
        self.make_link()
        self.remote.connections[-1].sendMessage(b"2probe")
        self.flush()
        self.assertIn("3probe", self.remote.raw)

    def test_stop_while_registering(self) -> None:
        self.make_link(start=False)
        self.remote.answer_registration = False
        self.link.startService()
        self.flush()
        d = self.link.stopService()
        self.flush()
        self.successResultOf(d)
        self.assertEqual(self.link.state, LinkState.STOPPED)
        self.assertEqual(self.remote.closed, 1)

    def test_stop_fails_everything_and_cleans_up(self) -> None:
        self.make_link(capable=False)
        first, second = self.request("login", timeout=30), self.request("login", timeout=30)
        d = self.link.stopService()
        self.flush()
        self.successResultOf(d)
        for recorder in (first, second):
            self.assertEqual(recorder.frames, [DOWN])
        self.assertEqual(self.link.state, LinkState.STOPPED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.remote.connections, [])
        self.assertIn("41", self.remote.raw)
        late = self.request("login")
        self.assertEqual(late.frames, [DOWN])


@implementer(ILinkObserver)
class EventRecorder:
    def __init__(self) -> None:
        self.states: list[LinkState] = []
        self.events: list[tuple[str, str]] = []

    def link_state_changed(self, link: Link, state: LinkState) -> None:
        self.states.append(state)

    def link_event(self, link: Link, kind: str, text: str) -> None:
        self.events.append((kind, text))


class LinkContractTests(MemoryLinkMixin, unittest.TestCase):
    def test_provides_its_interfaces(self) -> None:
        link = self.make_link(start=False)
        self.assertTrue(verifyObject(ILink, link))
        self.assertTrue(verifyObject(ILinkObserver, EventRecorder()))
        ms = MicroServices([], Clock())
        self.assertTrue(verifyObject(IRoutes, ms))

    def test_observer_gets_states_timeouts_drops_and_errors(self) -> None:
        self.make_link(start=False)
        seen = EventRecorder()
        unsubscribe = self.link.add_observer(seen)
        self.link.startService()
        self.flush()
        self.request("login", timeout=5)
        self.advance(5)
        self.remote.reply(self.sent()[0], {"ok": True})
        self.flush()
        self.remote.drop_all()
        self.flush()
        self.assertEqual(seen.states, [LinkState.DOWN, LinkState.REGISTERING, LinkState.UP,
                                       LinkState.DOWN])
        self.assertEqual([kind for kind, _ in seen.events], ["timeout", "dropped", "error"])
        self.assertTrue(all(self.URL in text for _, text in seen.events))
        unsubscribe()
        self.advance(1.0)
        self.assertEqual(seen.states[-1], LinkState.DOWN)


class MemoryCorrelationTests(MemoryLinkMixin, unittest.TestCase):
    def test_down_answers_503_at_once(self) -> None:
        self.make_link(start=False)
        recorder = Recorder()
        self.link.send_request({"type": "login", "token": "t"}, recorder, 10)
        self.assertEqual(recorder.frames, [DOWN])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_echoed_ids(self) -> None:
        self.make_link()
        original = {"type": "login", "token": "jwt-for-remote", "jwt": True}
        login = Recorder()
        self.link.send_request(original, login, None)
        self.assertNotIn("ms_requestId", original)  # the caller's dict is left alone
        other = self.request("other")
        self.assertEqual([f["ms_requestId"] for f in self.sent()], [1, 2])
        self.assertEqual(self.sent()[0], {"type": "login", "token": "jwt-for-remote",
                                          "jwt": True, "ms_requestId": 1})
        second, first = self.sent()[1], self.sent()[0]
        self.remote.reply(second, {"text": "working"}, finished=False)
        self.remote.reply(first, {"ok": True, "token": "new"})
        self.remote.reply(second, {"ok": True})
        self.flush()
        self.assertEqual(login.frames, [
            {"type": "login", "finished": True, "message": {"ok": True, "token": "new"},
             "responseTime": "3ms"}])
        self.assertEqual([f["finished"] for f in other.frames], [False, True])
        self.assertNotIn("ms_requestId", other.frames[0])
        self.assertNotIn("ms_requestId", other.frames[0]["message"])
        self.assertEqual(self.link.in_flight, 0)

    def test_qewdjs_one_request_at_a_time(self) -> None:
        self.make_link(capable=False)
        first, second = self.request("login"), self.request("login")
        self.assertEqual(len(self.sent()), 1)
        self.assertEqual(self.link.queued, 1)
        request = self.sent()[0]
        self.remote.reply(request, {"text": "checking credentials"}, finished=False)
        self.flush()
        self.assertEqual(len(self.sent()), 1)
        self.remote.reply(request, {"ok": True, "token": "t1"})
        self.flush()
        self.assertEqual(len(self.sent()), 2)  # the final released the next one
        self.remote.reply(self.sent()[1], {"error": "Invalid login"})
        self.flush()
        self.assertEqual([f["message"] for f in first.frames],
                         [{"text": "checking credentials"}, {"ok": True, "token": "t1"}])
        self.assertEqual(second.frames[-1]["message"], {"error": "Invalid login"})
        self.assertEqual(len(second.frames), 1)

    def test_typed_intermediate_without_id(self) -> None:
        self.make_link(capable=False)
        recorder = self.request("login")
        self.remote.emit({"type": "loginProgress", "finished": False,
                          "message": {"text": "checking"}, "responseTime": "4ms"})
        self.remote.reply(self.sent()[0], {"ok": True})
        self.flush()
        self.assertEqual([f["type"] for f in recorder.frames], ["loginProgress", "login"])

    def test_idless_frame_by_type_then_ambiguous(self) -> None:
        self.make_link()  # echoing remote: many in flight
        login, stock, stock2 = self.request("login"), self.request("stock"), self.request("stock")
        self.remote.emit({"type": "login", "finished": False, "message": {"n": 1}})
        self.remote.emit({"type": "stock", "finished": False, "message": {"n": 2}})
        self.flush()
        self.assertEqual(login.frames, [{"type": "login", "finished": False, "message": {"n": 1}}])
        self.assertEqual(stock.frames + stock2.frames, [])  # two stock requests: dropped

    def test_crash_frame_relabelled(self) -> None:
        self.make_link(capable=False)
        crash, after = self.request("crash"), self.request("login")
        self.remote.emit({"type": "error", "finished": True,
                          "message": "Cannot read properties of null (reading 'boom')",
                          "responseTime": "7ms"})
        self.flush()
        self.assertEqual(crash.frames, [
            {"type": "crash", "finished": True,
             "message": {"error": "Cannot read properties of null (reading 'boom')"}}])
        self.assertEqual(len(self.sent()), 2)
        self.assertEqual(self.sent()[1]["type"], "login")
        self.assertEqual(after.frames, [])

    def test_master_jwt_rejection_is_final(self) -> None:
        self.make_link(capable=False)
        rejected, after = self.request("login"), self.request("login")
        frame = {"type": "login",
                 "message": {"error": "Invalid JWT: Error: Token expired", "disconnect": True}}
        self.remote.emit(frame)
        self.flush()
        self.assertEqual(rejected.frames, [frame])
        self.assertEqual(len(self.sent()), 2)
        self.assertEqual(self.link.in_flight, 1)
        self.assertEqual(after.frames, [])

    def test_typeless_error_gets_request_type(self) -> None:
        self.make_link(capable=False)
        recorder = self.request("login")
        self.remote.emit({"message": {"error": DOWN_ERROR, "status": {"code": 503}},
                          "responseTime": "2ms"})
        self.flush()
        self.assertEqual(recorder.frames, [
            {"type": "login", "message": {"error": DOWN_ERROR, "status": {"code": 503}},
             "responseTime": "2ms"}])

    def test_broadcast_is_not_a_reply(self) -> None:
        self.make_link(capable=False)
        recorder = self.request("login")
        self.remote.emit({"test": "message 2"})
        self.remote.emit({"type": "chat", "message": {"text": "to everyone"}})
        self.flush()
        self.assertEqual(recorder.frames, [])
        self.assertEqual(self.link.in_flight, 1)

    def test_timeout_then_late_frame_dropped(self) -> None:
        self.make_link()
        recorder = self.request("login", timeout=5)
        self.advance(4.9)
        self.assertEqual(recorder.frames, [])
        self.advance(0.1)
        self.assertEqual(recorder.frames, [TIMEOUT])
        self.remote.reply(self.sent()[0], {"ok": True})
        self.flush()
        self.assertEqual(len(recorder.frames), 1)
        self.assertEqual(self.link.in_flight, 0)

    def test_timeout_while_queued_and_qewdjs_late_final(self) -> None:
        self.make_link(capable=False)
        slow = self.request("login", timeout=5)
        queued = self.request("login", timeout=3)
        waiting = self.request("login")
        self.advance(3)
        self.assertEqual(queued.frames, [TIMEOUT])  # never sent
        self.advance(2)
        self.assertEqual(slow.frames, [TIMEOUT])
        self.assertEqual(len(self.sent()), 1)  # still held: the remote still runs `slow`
        # Its late intermediate must not reach anyone, its final releases the queue.
        self.remote.reply(self.sent()[0], {"text": "late"}, finished=False)
        self.flush()
        self.assertEqual(len(self.sent()), 1)
        self.remote.reply(self.sent()[0], {"ok": True})
        self.flush()
        self.assertEqual(len(self.sent()), 2)
        self.assertEqual(len(slow.frames), 1)
        self.remote.reply(self.sent()[1], {"ok": True})
        self.flush()
        self.assertEqual(waiting.frames[-1]["message"], {"ok": True})

    def test_qewdjs_stuck_request_resyncs(self) -> None:
        self.make_link(capable=False, resync_after=10)
        self.request("login", timeout=5)
        waiting = self.request("login")
        self.advance(5)
        self.advance(9.9)
        self.assertTrue(self.link.is_up)
        self.advance(0.1)  # the remote never finished: reconnect to start clean
        self.assertEqual(waiting.frames, [DOWN])
        self.advance(1.0)
        self.assertTrue(self.link.is_up)

    def test_connection_lost_fails_in_flight_and_queued(self) -> None:
        self.make_link(capable=False)
        first, second = self.request("login"), self.request("login", timeout=60)
        self.remote.reply(self.sent()[0], {"text": "working"}, finished=False)
        self.flush()
        self.remote.drop_all()
        self.flush()
        down = DOWN
        self.assertEqual(first.frames[-1], down)
        self.assertEqual(second.frames, [down])
        self.assertEqual(self.link.state, LinkState.DOWN)
        self.advance(1.0)
        self.assertTrue(self.link.is_up)
        self.assertEqual(len(self.sent()), 1)  # nothing re-sent
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the next ping, no deadline

    def test_on_frame_exception_is_isolated(self) -> None:
        self.make_link()

        def boom(frame: dict[str, Any]) -> None:
            raise RuntimeError("handler bug")

        self.link.send_request({"type": "login"}, OnFrame(boom), None)
        self.flush()
        self.remote.reply(self.sent()[0], {"ok": True})
        self.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        after = self.request("login")
        self.remote.reply(self.sent()[1], {"ok": True})
        self.flush()
        self.assertEqual(after.finals[0]["message"], {"ok": True})

    def test_200_concurrent_same_type(self) -> None:
        self.make_link()
        recorders = [self.request("login", params={"n": n}) for n in range(200)]
        requests = self.sent()
        self.assertEqual(len(requests), 200)
        self.assertEqual(len({r["ms_requestId"] for r in requests}), 200)
        rng = random.Random(1)
        intermediates, finals = list(requests), list(requests)
        rng.shuffle(intermediates)
        rng.shuffle(finals)
        for request in intermediates:
            self.remote.reply(request, {"n": request["params"]["n"]}, finished=False)
        for request in finals:
            self.remote.reply(request, {"n": request["params"]["n"], "done": True})
        self.flush()
        for n, recorder in enumerate(recorders):
            self.assertEqual([f["message"]["n"] for f in recorder.frames], [n, n])
            self.assertEqual([f["finished"] for f in recorder.frames], [False, True])
        self.assertEqual(self.link.in_flight, 0)


# --------------------------------------------------------------------------------------
# Loopback tests: real TCP on 127.0.0.1, link timers on a Clock.


def wait_state(link: Link, state: LinkState) -> Deferred[None]:
    """Fires (on a later reactor turn, after ClientService has reacted) at ``state``."""
    d: Deferred[None] = Deferred()

    def observe(_: Link, new: LinkState) -> None:
        if new is state and not d.called:
            unsubscribe()
            global_reactor.callLater(0, d.callback, None)

    unsubscribe = link.on_state_change(observe)
    return d


class LoopbackMixin:
    timeout = 15

    def start_remote(self, capable: bool = True, tls: Any = None, port: int = 0) -> FakeRemote:
        remote = FakeRemote(global_reactor, capable=capable)
        if tls is None:
            port = global_reactor.listenTCP(port, remote.factory, interface="127.0.0.1")
        else:
            port = global_reactor.listenSSL(port, remote.factory, tls, interface="127.0.0.1")
        self.port_number = port.getHost().port

        async def cleanup() -> None:
            remote.drop_all()
            await remote.wait_for(lambda: not remote.connections)
            await port.stopListening()

        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
        return remote

    def start_link(self, url: str | None = None, **options: Any) -> Link:
        self.clock = Clock()
        options.setdefault("refresh_token", refreshed)
        options.setdefault("retry_policy", lambda attempt: 1.0)
        link = Link(url or f"http://127.0.0.1:{self.port_number}", "test-app",
                    global_reactor, clock=self.clock, **options)
        link.startService()
        self.addCleanup(link.stopService)
        return link


class LoopbackTests(LoopbackMixin, unittest.TestCase):
    async def _up_and_forward(self) -> None:
        remote = self.start_remote()
        link = self.start_link()
        await link.when_up()
        self.assertTrue(link.echoes_request_ids)
        recorder = Recorder()
        done = remote.wait_for(lambda: bool(remote.requests))
        link.send_request({"type": "login", "token": "t", "jwt": True}, recorder, 10)
        await done
        request = remote.requests[0][1]
        finished: Deferred[None] = Deferred()
        link.send_request({"type": "ping"}, OnFrame(finished.callback), None)
        remote.reply(request, {"ok": True})
        await remote.wait_for(lambda: len(remote.requests) == 2)
        remote.reply(remote.requests[1][1], {"pong": True})
        frame = await finished
        self.assertEqual(frame["message"], {"pong": True})
        self.assertEqual(recorder.frames[0]["message"], {"ok": True})

    def test_up_and_forward(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._up_and_forward())

    async def _reconnect_reregisters(self) -> None:
        remote = self.start_remote()
        link = self.start_link()
        await link.when_up()
        down = wait_state(link, LinkState.DOWN)
        remote.drop_all()
        await down
        self.clock.advance(1.0)  # ClientService's backoff runs on the Clock
        await link.when_up()
        self.assertEqual(remote.registration_frames()[-1], {
            "type": "ewd-reregister", "token": "refreshed:reg-token-1", "jwt": True,
            "qewd_twisted": 1})

    def test_reconnect_reregisters(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._reconnect_reregisters())

    async def _register_error_retries(self) -> None:
        remote = self.start_remote(capable=False)
        remote.register_replies = [{"error": "Application expects to use JWTs"}]
        link = self.start_link()
        await remote.wait_for(lambda: remote.closed == 1)
        self.assertFalse(link.is_up)
        self.clock.advance(1.0)  # the retry was scheduled when the refusal arrived
        await link.when_up()
        self.assertFalse(link.echoes_request_ids)
        self.assertEqual(remote.registrations, 2)

    def test_register_error_retries(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._register_error_retries())

    async def _ping_timeout_closes(self) -> None:
        remote = self.start_remote()
        remote.ping_interval_ms, remote.ping_timeout_ms = 1000, 500
        remote.answer_pings = False
        link = self.start_link()
        await link.when_up()
        down = wait_state(link, LinkState.DOWN)
        self.clock.advance(1.0)
        await remote.wait_for(lambda: remote.pings == 1)
        self.clock.advance(0.5)
        await down
        await remote.wait_for(lambda: remote.closed == 1)

    def test_ping_timeout_closes(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._ping_timeout_closes())

    async def _connection_refused_then_up(self) -> None:
        # Nothing listens on the link's port at first: take a free port and close it.
        remote = FakeRemote(global_reactor)
        closed = global_reactor.listenTCP(0, remote.factory, interface="127.0.0.1")
        self.port_number = closed.getHost().port
        await closed.stopListening()
        link = self.start_link()
        with self.assertRaises(ConnectionRefusedError):
            await link.when_up(failAfterFailures=1)
        self.assertEqual(link.state, LinkState.DOWN)
        remote = self.start_remote(port=self.port_number)
        self.clock.advance(1.0)  # the retry
        await link.when_up()
        self.assertEqual(len(remote.registration_frames()), 1)

    def test_connection_refused_retries(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._connection_refused_then_up())


# --------------------------------------------------------------------------------------
# TLS on loopback: a throwaway CA-less self-signed certificate for 127.0.0.1.


def self_signed(ip: str | None = None, dns: str | None = None) -> tuple[Any, Any]:
    """(server options, the certificate as a trust root)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from twisted.internet import ssl

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qewd-test")])
    names: list[x509.GeneralName] = []
    if ip:
        names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    if dns:
        names.append(x509.DNSName(dns))
    now = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (3.10)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    server = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
    return server, ssl.Certificate.loadPEM(cert_pem)


class TLSLoopbackTests(LoopbackMixin, unittest.TestCase):
    async def _verified(self) -> None:
        from twisted.internet.ssl import optionsForClientTLS

        server, trust = self_signed(ip="127.0.0.1")
        self.start_remote(tls=server)
        link = self.start_link(f"https://127.0.0.1:{self.port_number}",
                               tls_options=optionsForClientTLS("127.0.0.1", trustRoot=trust))
        self.assertTrue(link.ws_url.startswith("wss://127.0.0.1:"))
        await link.when_up()

    def test_verified(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._verified())

    async def _wrong_host_refused(self) -> None:
        from twisted.internet.ssl import optionsForClientTLS

        server, trust = self_signed(dns="elsewhere.example")
        self.start_remote(tls=server)
        link = self.start_link(f"https://127.0.0.1:{self.port_number}",
                               tls_options=optionsForClientTLS("127.0.0.1", trustRoot=trust))
        from service_identity import VerificationError

        with self.assertRaises(VerificationError):  # the certificate is not for 127.0.0.1
            await link.when_up(failAfterFailures=1)
        self.assertFalse(link.is_up)

    def test_wrong_host_refused(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._wrong_host_refused())
