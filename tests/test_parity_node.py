# -*- test-case-name: tests.test_parity_node -*-
"""
Issue 17's features through a node (NodeHarness: memory connections, a Clock, no threads):
ewd-fragment, service modules, custom error responses, lockSession, the application switch.
Namespaces on a real socket are in tests.integration.test_parity_sockets; the switch to a
QEWD.js destination in tests.interop.test_parity_interop.
"""

from __future__ import annotations

import os
import tempfile
import types
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors as E
from qewd_twisted.apps.services import allow_service, disallow_service
from qewd_twisted.core.switch import ApplicationSwitch
from qewd_twisted.testing import NodeHarness
from tests.fixtures import RecordingLink


def app(**attrs: Any) -> Any:
    return types.SimpleNamespace(**attrs)


def echo(message, session, send, finished):
    finished({"you sent": message.get("params")})


def web_root() -> str:
    top = tempfile.mkdtemp()
    root = os.path.join(top, "www")
    os.makedirs(os.path.join(root, "demo"))
    os.makedirs(os.path.join(root, "services"))
    with open(os.path.join(root, "demo", "login.html"), "w") as f:
        f.write("<form id='login'></form>")
    with open(os.path.join(root, "services", "nav.html"), "w") as f:
        f.write("<nav></nav>")
    with open(os.path.join(top, "secret.txt"), "w") as f:
        f.write("secret")
    os.symlink(os.path.join(top, "secret.txt"), os.path.join(root, "demo", "link.html"))
    return root


class FragmentTests(SynchronousTestCase):
    """``ewd-fragment`` (§5.5): the QEWD.js peer answers {fragmentName, content} or its error,
    with no token, for session and JWT sockets alike."""

    def setUp(self) -> None:
        svc_dir = tempfile.mkdtemp()
        os.makedirs(os.path.join(svc_dir, "fragments"))
        with open(os.path.join(svc_dir, "fragments", "widget.html"), "w") as f:
            f.write("<i>widget</i>")
        self.h = NodeHarness(
            {"demo": app(handlers={"echo": echo}, servicesAllowed={"widgets": True}),
             "widgets": app(handlers={}, __file__=os.path.join(svc_dir, "widgets.py"))},
            web_root=web_root())

    def fragment(self, jwt: bool = True, **message: Any) -> dict:
        c = self.h.connect()
        token = self.h.register(c, "demo", jwt=jwt)
        [f] = self.h.send(c, {"type": "ewd-fragment", "token": token, **message})
        return f

    def test_fragment(self) -> None:
        for jwt in (True, False):
            f = self.fragment(jwt, params={"file": "login.html", "targetId": "main",
                                           "append": True})
            self.assertEqual(f, {"type": "ewd-fragment", "finished": True,
                                 "message": {"fragmentName": "login.html",
                                             "content": "<form id='login'></form>"},
                                 "responseTime": "0ms"})
        self.assertEqual(self.h.node.in_flight, 0)

    def test_missing_and_escaping_files(self) -> None:
        for name in ("nope.html", "../../secret.txt", "link.html", "/etc/passwd"):
            f = self.fragment(params={"file": name})
            self.assertEqual(f["message"], {"error": f"Fragment file {name} does not exist",
                                            "file": name})

    def test_service_fragments(self) -> None:
        self.assertEqual(self.fragment(params={"file": "widget.html"}, service="widgets")
                         ["message"]["content"], "<i>widget</i>")
        self.assertEqual(self.fragment(params={"file": "nav.html", "isServiceFragment": True})
                         ["message"]["content"], "<nav></nav>")
        self.assertEqual(self.fragment(params={"file": "x"}, service="other")["message"],
                         {"error": "other service is not permitted for the demo application"})

    def test_needs_a_session(self) -> None:
        c = self.h.connect()
        [f] = self.h.send(c, {"type": "ewd-fragment", "params": {"file": "login.html"}})
        self.assertEqual(f["message"], {"error": E.MISSING_AUTH, "disconnect": True})

    def test_without_a_web_root_every_fragment_is_missing(self) -> None:
        h = NodeHarness({"demo": app(handlers={})})
        c = h.connect()
        [f] = h.send(c, {"type": "ewd-fragment", "token": h.register(c, "demo"),
                         "params": {"file": "login.html"}})
        self.assertEqual(f["message"]["error"], "Fragment file login.html does not exist")


class ServiceTests(SynchronousTestCase):
    """``servicesAllowed`` and the ``service`` field (§5.2)."""

    def setUp(self) -> None:
        self.calls: list[str] = []

        def before(message, session, send, finished):
            self.calls.append("app before")
            finished({"error": "You must be logged in"})
            return False

        def svc_before(message, session, send, finished):
            self.calls.append("service before")

        def hello(message, session, send, finished):
            send({"type": "progress", "step": 1})
            session["seen"] = session.get("seen", 0) + 1
            finished({"hello": session.get("application"), "seen": session["seen"]})

        def wrh(message, send):
            return {**message, "by": "service wrh"}

        self.h = NodeHarness({
            "demo": app(handlers={"echo": echo}, beforeHandler=before,
                        servicesAllowed={"greeter": True, "locked": False}),
            "greeter": app(handlers={"hello": hello}, beforeHandler=svc_before,
                           workerResponseHandlers={"hello": wrh}),
            "locked": app(handlers={"hello": hello}),
        })
        self.c = self.h.connect()
        self.token = self.h.register(self.c, "demo")

    def send(self, **message: Any) -> list[dict]:
        return self.h.send(self.c, {"token": self.token, **message})

    def test_allowed_service_runs_with_the_same_session(self) -> None:
        progress, final = self.send(type="hello", service="greeter")
        self.assertEqual(progress["type"], "progress")
        self.assertIs(progress["finished"], False)
        token = final["message"].pop("token")
        self.assertEqual(final["message"], {"hello": "demo", "seen": 1, "by": "service wrh"})
        self.assertEqual(self.h.tokens.decode(token)["application"], "demo")
        self.token = token
        self.assertEqual(self.send(type="hello", service="greeter")[-1]["message"]["seen"], 2)
        # the service's own beforeHandler, not the application's (as QEWD.js)
        self.assertEqual(self.calls, ["service before", "service before"])

    def test_refusals(self) -> None:
        [f] = self.send(type="hello", service="locked")
        self.assertEqual(f["message"], {
            "error": "locked service is not permitted for the demo application",
            "service": "locked"})
        [f] = self.send(type="nope", service="greeter")
        self.assertEqual(f["message"], {
            "error": "No handler defined for greeter service messages of type nope",
            "service": "greeter"})
        [f] = self.send(type="echo")  # no service: the app's beforeHandler as usual
        self.assertEqual(f["message"], {"error": "You must be logged in"})
        self.assertEqual(self.h.node.in_flight, 0)

    def test_per_session_services(self) -> None:
        h = NodeHarness({
            "demo": app(handlers={
                "grant": lambda m, s, send, fin: (allow_service(s, "locked"), fin({}))[1],
                "revoke": lambda m, s, send, fin: (disallow_service(s, "greeter"), fin({}))[1]},
                servicesAllowed={"greeter": True}),
            "greeter": app(handlers={"hello": lambda m, s, send, fin: fin({"hi": 1})}),
            "locked": app(handlers={"hello": lambda m, s, send, fin: fin({"hi": 2})}),
        })
        c = h.connect()
        token = h.register(c, "demo", jwt=False)
        [f] = h.send(c, {"type": "hello", "service": "locked", "token": token})
        self.assertIn("is not permitted", f["message"]["error"])
        h.send(c, {"type": "grant", "token": token})
        h.send(c, {"type": "revoke", "token": token})
        [f] = h.send(c, {"type": "hello", "service": "locked", "token": token})
        self.assertEqual(f["message"], {"hi": 2})
        [f] = h.send(c, {"type": "hello", "service": "greeter", "token": token})
        self.assertEqual(f["message"], {"error": "You are not allowed access to the greeter "
                                        "service", "service": "greeter"})


class CustomErrorTests(SynchronousTestCase):
    """``q.set_custom_error_response`` from ``init(application, q)`` (§5.3)."""

    def setUp(self) -> None:
        def init(application, q):
            q.set_custom_error_response(application=application, errorType="noTypeHandler",
                                        text="Resource Not Found", statusCode="404")
            q.set_custom_error_response({"application": application,
                                         "errorType": "sessionNotAuthenticated",
                                         "text": "Please log in", "statusCode": 401})
            q.set_custom_error_response(application=application,
                                        errorType="serviceNotAllowed", text="No such service")

        self.h = NodeHarness({"api": app(handlers={"echo": echo}, init=init),
                              "other": app(handlers={})})

    def test_no_type_handler(self) -> None:
        c = self.h.connect()
        [f] = self.h.send(c, {"type": "nope", "token": self.h.register(c, "api")})
        self.assertEqual(f["message"], {"error": "Resource Not Found", "status": {"code": 404}})
        c2 = self.h.connect()
        [f] = self.h.send(c2, {"type": "nope", "token": self.h.register(c2, "other")})
        self.assertEqual(f["message"], {"error": E.NO_HANDLER.format(application="other",
                                                                     type="nope")})

    def test_session_not_authenticated(self) -> None:
        c = self.h.connect()
        self.h.register(c, "api", jwt=False)
        [f] = self.h.send(c, {"type": "echo", "token": "not-a-session"})
        self.assertEqual(f["message"], {"error": "Please log in", "status": {"code": 401},
                                        "disconnect": True})
        c = self.h.connect()
        self.h.register(c, "api")
        [f] = self.h.send(c, {"type": "echo", "token": "a.b.c"})
        self.assertEqual(f["message"]["error"], "Please log in")

    def test_service_refusal_and_default_status(self) -> None:
        c = self.h.connect()
        [f] = self.h.send(c, {"type": "echo", "service": "x", "token": self.h.register(c, "api")})
        self.assertEqual(f["message"], {"error": "No such service", "status": {"code": 400},
                                        "service": "x"})


class LockSessionTests(SynchronousTestCase):
    """``lockSession`` in session-token mode (§5.5)."""

    def setUp(self) -> None:
        self.gates: dict[str, defer.Deferred] = {}
        self.order: list[str] = []

        async def slow(message, session, send, finished):
            name = message["params"]
            self.order.append("start " + name)
            self.gates[name] = defer.Deferred()
            await self.gates[name]
            session["count"] = session.get("count", 0) + 1
            self.order.append("end " + name)
            finished({"name": name, "count": session["count"]})

        self.h = NodeHarness({"demo": app(handlers={"slow": slow})}, lock_timeout=30.0,
                             handler_timeout=None)

    def session(self) -> tuple[Any, str]:
        c = self.h.connect()
        return c, self.h.register(c, "demo", jwt=False)

    def test_one_request_at_a_time_per_session(self) -> None:
        c, token = self.session()
        other, other_token = self.session()
        for name in ("a", "b"):
            self.h.node.receive(c, {"type": "slow", "token": token, "params": name})
        self.h.node.receive(other, {"type": "slow", "token": other_token, "params": "c"})
        self.assertEqual(self.order, ["start a", "start c"])  # b waits, c runs beside a
        self.gates["a"].callback(None)
        self.assertEqual(self.order, ["start a", "start c", "end a", "start b"])
        self.gates["b"].callback(None)
        self.gates["c"].callback(None)
        self.assertEqual([f["message"] for f in c.take()],
                         [{"name": "a", "count": 1}, {"name": "b", "count": 2}])
        self.assertEqual(self.h.node.in_flight, 0)
        self.assertFalse(self.h.node.session_locks.held(1))

    def test_timeout(self) -> None:
        c, token = self.session()
        self.h.node.receive(c, {"type": "slow", "token": token, "params": "a"})
        self.h.node.receive(c, {"type": "slow", "token": token, "params": "b"})
        self.h.clock.advance(30.5)
        [f] = c.take()
        self.assertEqual(f["message"], {"error": E.SESSION_LOCK_TIMEOUT})
        self.assertEqual(f["message"]["error"], "Timed out waiting for EWD session to be released")
        self.gates["a"].callback(None)
        self.assertEqual(self.order, ["start a", "end a"])

    def test_a_handler_timeout_releases_the_lock(self) -> None:
        h = NodeHarness({"demo": app(handlers={"never": lambda m, s, send, fin: None,
                                               "echo": echo})},
                        lock_timeout=30.0, handler_timeout=5.0)
        c = h.connect()
        token = h.register(c, "demo", jwt=False)
        h.node.receive(c, {"type": "never", "token": token})
        h.node.receive(c, {"type": "echo", "token": token, "params": 1})
        h.clock.advance(5)
        # the lock goes as the timed-out request ends: echo runs (and answers) at once
        answer, timeout = c.take()
        self.assertEqual((answer["type"], answer["message"]), ("echo", {"you sent": 1}))
        self.assertIn("did not finish", timeout["message"]["error"])

    def test_errors_release_the_lock(self) -> None:
        c, token = self.session()
        for _ in range(3):
            [f] = self.h.send(c, {"type": "nope", "token": token})
            self.assertIn("Handler not defined", f["message"]["error"])
        self.assertFalse(self.h.node.session_locks.held(1))

    def test_waiting_when_the_node_stops(self) -> None:
        c, token = self.session()
        self.h.node.receive(c, {"type": "slow", "token": token, "params": "a"})
        self.h.node.receive(c, {"type": "slow", "token": token, "params": "b"})
        self.h.node.accepting = False  # what drain() does first
        self.gates["a"].callback(None)
        # b is refused as a's end releases the lock, just before a's reply goes out
        refused, done = c.take()
        self.assertEqual(done["message"]["name"], "a")
        self.assertEqual(refused["message"], {"error": E.SHUTTING_DOWN, "status": {"code": 503}})
        self.assertEqual(self.order, ["start a", "end a"])
        self.assertFalse(self.h.node.session_locks.held(1))

    def test_jwt_sessions_are_not_locked(self) -> None:
        c = self.h.connect()
        token = self.h.register(c, "demo")
        for name in ("a", "b"):
            self.h.node.receive(c, {"type": "slow", "token": token, "params": name})
        self.assertEqual(self.order, ["start a", "start b"])
        for gate in self.gates.values():
            gate.callback(None)


class Dest:
    def __init__(self, url: str, application: str) -> None:
        self.url, self.application = url, application


class SwitchTests(SynchronousTestCase):
    """Application switch (§4.7) with a fake link."""

    def setUp(self) -> None:
        self.link = RecordingLink()
        self.sent = self.link.sent

        class Routes:
            def route(self, application, type):
                return None

        def login(message, session, send, finished):
            session["step"] = "local"
            finished({"type": "login", "qewd_destination": message["params"]["to"],
                      "qewd_application": message["params"].get("app", "login"),
                      "params": {"username": "rob"}})

        self.links: list[tuple[str, str]] = []
        switch = ApplicationSwitch(
            {"login_service": Dest("http://127.0.0.1:3000", "login")},
            {"demo": {"login": True}},
            lambda url, application: self.links.append((url, application)) or self.link)
        self.h = NodeHarness({"demo": app(handlers={"login": login})}, micro_services=Routes(),
                             switch=switch)
        self.c = self.h.connect()
        self.token = self.h.register(self.c, "demo")

    def login(self, **params: Any) -> list[dict]:
        return self.h.send(self.c, {"type": "login", "token": self.token, "params": params})

    def test_forwards_and_relays(self) -> None:
        self.assertEqual(self.login(to="login_service"), [])
        [(message, receiver)] = self.sent
        self.assertEqual(self.links, [("http://127.0.0.1:3000", "login")])
        session = self.h.tokens.session(message.pop("token"))
        self.assertEqual((session["application"], session["step"]), ("login", "local"))
        self.assertEqual(message, {"type": "login", "qewd_destination": "login_service",
                                   "qewd_application": "login",
                                   "params": {"username": "rob"}, "jwt": True})
        self.assertEqual(self.h.node.in_flight, 1)
        receiver.frame({"type": "login", "finished": False, "message": {"text": "checking"}})
        session["authenticated"] = True
        receiver.frame({"type": "login", "finished": True,
                        "message": {"ok": True, "token": self.h.tokens.issue(session)}})
        intermediate, final = self.c.take()
        self.assertEqual(intermediate["message"], {"text": "checking"})
        back = self.h.tokens.session(final["message"]["token"])
        self.assertEqual((back["application"], back["authenticated"]), ("demo", True))
        self.assertEqual(self.h.node.in_flight, 0)

    def test_refusals(self) -> None:
        [f] = self.login(to="nowhere")
        self.assertEqual(f["message"], {"error": "nowhere is not a valid microservice "
                                                 "destination"})
        self.assertEqual(f["type"], "login")
        [f] = self.login(to="login_service", app="admin")
        self.assertEqual(f["message"], {"error": "No permissions set to allow a switch from "
                                                 "demo to admin"})
        self.assertEqual((self.sent, self.h.node.in_flight), ([], 0))

    def test_session_token_mode(self) -> None:
        token = self.h.register(self.c, "demo", jwt=False)
        [f] = self.h.send(self.c, {"type": "login", "token": token,
                                   "params": {"to": "login_service"}})
        self.assertEqual(f["message"], {"error": E.SWITCH_NEEDS_JWT})

    def test_without_switch_config_the_reply_goes_to_the_client(self) -> None:
        h = NodeHarness({"demo": app(handlers={"login": lambda m, s, send, fin: fin(
            {"qewd_destination": "x", "qewd_application": "y"})})})
        c = h.connect()
        [f] = h.send(c, {"type": "login", "token": h.register(c, "demo")})
        self.assertEqual(f["message"]["qewd_destination"], "x")


class SwitchDestinationTests(SynchronousTestCase):
    """The destination side: a QEWD.js master sends the reply object with the caller's token
    (application unchanged) and ``qewd_application``; this node's own
    ``permit_application_switch`` says whether it runs as that application."""

    def setUp(self) -> None:
        def login(message, session, send, finished):
            finished({"ran": "login", "application": session["application"]})

        switch = ApplicationSwitch({}, {"portal": {"login": True}}, lambda url, app: None)
        self.h = NodeHarness({"portal": app(handlers={"echo": echo}),
                              "login": app(handlers={"login": login}),
                              "admin": app(handlers={"login": login})}, switch=switch)
        self.c = self.h.connect()
        self.token = self.h.register(self.c, "portal")

    def send(self, **message: Any) -> dict:
        [f] = self.h.send(self.c, {"type": "login", "token": self.token, **message})
        return f

    def test_permitted_switch_runs_the_target(self) -> None:
        f = self.send(qewd_destination="login_service", qewd_application="login")
        self.assertEqual(f["message"]["ran"], "login")
        self.assertEqual(f["message"]["application"], "portal")  # the caller's token
        self.assertEqual(self.h.tokens.decode(f["message"]["token"])["application"], "portal")

    def test_anything_else_runs_as_the_token_says(self) -> None:
        for extra in ({"qewd_application": "login"},  # no destination
                      {"qewd_destination": "d", "qewd_application": "admin"},  # not permitted
                      {"qewd_destination": "d", "qewd_application": 5}):
            f = self.send(**extra)
            self.assertEqual(f["message"]["error"],
                             "Handler not defined for portal messages of type login")

    def test_a_switch_request_without_destinations_is_refused(self) -> None:
        h = NodeHarness({"portal": app(handlers={"go": lambda m, s, send, fin: fin(
            {"qewd_destination": "d", "qewd_application": "login"})})},
            switch=ApplicationSwitch({}, {"portal": {"login": True}}, lambda u, a: None))
        c = h.connect()
        [f] = h.send(c, {"type": "go", "token": h.register(c, "portal")})
        self.assertEqual(f["message"], {"error": "d is not a valid microservice destination"})


class NamespaceRegistrationTests(SynchronousTestCase):
    """registerTimeout (docs/reliability.md) and extra namespaces: a socket.io client on
    ``/qewd`` registers there and never on ``/``, so its connection must stay open; one that
    registers nowhere is still closed (WebSocket and long-polling alike)."""

    def setUp(self) -> None:
        self.h = NodeHarness({"demo": app(handlers={"echo": echo})})

    def websocket(self) -> tuple[Any, Any]:
        from qewd_twisted.config.limits import Limits
        from qewd_twisted.transports.site import EngineIOProtocol, make_factory
        from tests.test_http_hardening import ADDR, _handshake

        factory = make_factory(EngineIOProtocol, self.h.node, self.h.clock, 1 << 20,
                               limits=Limits(register_timeout=60), io_paths=("/qewd",))
        proto = factory.buildProtocol(ADDR)
        return proto, _handshake(proto, "/socket.io/?EIO=3&transport=websocket")

    def ws_close_codes(self, transport: Any) -> list[int]:
        import struct

        from tests.test_framing import server_frames

        return [struct.unpack("!H", p[:2])[0] for op, p in server_frames(transport.value())
                if op == 8]

    def ws_send(self, proto: Any, text: str) -> None:
        from tests.test_framing import client_frame

        proto.dataReceived(client_frame(text.encode()))

    def ws_ping_for(self, proto: Any, seconds: int) -> None:
        for _ in range(seconds // 10):
            self.h.clock.advance(10)
            self.ws_send(proto, "2")  # Engine.IO's heartbeat stays happy

    def test_websocket_registered_on_a_namespace_stays(self) -> None:
        proto, transport = self.websocket()
        self.ws_send(proto, "40/qewd,")
        self.ws_send(proto, '42/qewd,["ewdjs",{"type":"ewd-register","application":"demo"}]')
        self.ws_ping_for(proto, 90)
        self.assertEqual(self.ws_close_codes(transport), [])
        self.assertIn("/qewd#" + proto.conn.id, self.h.node.connections)

    def test_websocket_on_a_namespace_but_unregistered_is_closed(self) -> None:
        proto, transport = self.websocket()
        self.ws_send(proto, "40/qewd,")
        self.ws_ping_for(proto, 60)
        self.assertEqual(self.ws_close_codes(transport), [1008])

    def test_polling_session_registered_on_a_namespace_stays(self) -> None:
        from qewd_twisted.transports.engineio import EngineSessions

        sessions = EngineSessions(self.h.node, self.h.clock, register_timeout=5,
                                  io_paths=("/qewd",))
        on_ns, _ = sessions.open("10.0.0.2")
        nowhere, _ = sessions.open("10.0.0.3")
        for session in (on_ns, nowhere):
            session.receive("40/qewd,")
        on_ns.receive('42/qewd,["ewdjs",{"type":"ewd-register","application":"demo"}]')
        self.assertIn("/qewd#" + on_ns.conn.id, self.h.node.connections)
        self.h.clock.advance(5)
        self.assertEqual(on_ns.state, "open")
        self.assertEqual(nowhere.reason, "not registered")
