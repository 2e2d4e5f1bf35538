# -*- test-case-name: tests.interop.test_parity_interop -*-
"""
Application switch (docs/protocol.md §4.7) from our node to a real QEWD.js micro-service: our
local ``portal`` handler finishes with ``qewd_destination: "login_service"`` /
``qewd_application: "test-app"``; the node forwards it to the peer's micro-service node and
relays the peer's intermediate and final frames, the token back in ``portal``. The QEWD.js
micro-service is a private one from the peer kit (microservice/qewd-ms.js) on a free port.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url, start_node
from tests.interop.peer import (
    NODE,
    SECRET,
    PeerProcess,
    claims,
    http_url,
    peer_home,
    register,
    request,
    start_peer_ms,
)
from tests.ports import reserve_port
from tests.strict import require
from tests.wsclient import EIOClient


def require_kit(test: TestCase) -> str:
    """The installed peer run folder; the test fails without it and node (tests/strict.py)."""
    home = peer_home()
    if NODE is None or home is None:
        require(test, "interop", "QEWD.js peer kit or node missing "
                                 "(bash scripts/peer.sh start installs it)")
    return home  # type: ignore[return-value]


class SwitchToQEWDjsTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        require_kit(self)
        port = reserve_port(self)
        self.ms_url = http_url(("127.0.0.1", port))
        _ms, ready = start_peer_ms(self, port)
        yield ready
        self.node = start_node(
            self, jwt={"secret": SECRET}, moduleMap={"portal": "tests.apps.switcher"},
            u_services={"destinations": {"login_service": {"host": self.ms_url,
                                                           "application": "test-app"}},
                        "routes": []},
            permit_application_switch={"portal": {"test-app": True}})
        self.link = self.node.micro_services.links[self.ms_url]

    async def client(self) -> tuple[EIOClient, str]:
        c = EIOClient(eio_url(self.node))
        self.addCleanup(c.close)
        return c, await register(c, "portal")

    @defer.inlineCallbacks
    def test_switch_login_at_the_peer(self):
        yield self.link.when_up()
        c, token = yield defer.ensureDeferred(self.client())
        frames = yield defer.ensureDeferred(request(c, {
            "type": "signin", "token": token,
            "params": {"username": "rob", "password": "secret"}}))
        # the peer's test-app: one send() then finished({ok: true})
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials",
                                                "username": "rob"})
        final = frames[1]["message"]
        self.assertIs(final["ok"], True)
        self.assertEqual(claims(final["token"])["application"], "portal")
        session = self.node.tokens.session(final["token"])
        self.assertEqual((session["username"], session["authenticated"], session["via"]),
                         ("rob", True, "portal"))
        [reply] = yield defer.ensureDeferred(request(c, {"type": "whoami",
                                                         "token": final["token"]}))
        self.assertEqual(reply["message"]["username"], "rob")
        self.assertEqual(self.node.node.in_flight, 0)

    @defer.inlineCallbacks
    def test_peer_errors_reach_the_client(self):
        yield self.link.when_up()
        c, token = yield defer.ensureDeferred(self.client())
        frames = yield defer.ensureDeferred(request(c, {
            "type": "signin", "token": token,
            "params": {"username": "rob", "password": "wrong"}}))
        self.assertEqual(frames[-1]["type"], "login")
        self.assertEqual(frames[-1]["message"], {"error": "Invalid login"})


class SameAnswersAsQEWDjsTests(TestCase):
    """The same session-token, fragment and service messages to a QEWD.js node (a private
    micro-service node from the peer kit, application ``test-app``) and to our node: the same
    ``type``, ``finished`` and ``message`` in every reply."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        require_kit(self)
        port = reserve_port(self)
        _ms, ready = start_peer_ms(self, port)
        yield ready
        self.peer_url = f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket"
        self.ours = start_node(self, moduleMap={"test-app": "tests.apps.demo"})

    async def answers(self, url: str) -> list:
        c = EIOClient(url)
        self.addCleanup(c.close)
        await c.handshake()
        c.emit({"type": "ewd-register", "application": "test-app"})  # session-token mode
        token = (await c.message())["message"]["token"]
        out = []
        for message in ({"type": "test2"}, {"type": "test", "token": "nope"},
                        {"type": "nope", "token": token},
                        {"type": "ewd-fragment", "token": token, "params": {"file": "x.html"}},
                        {"type": "ewd-fragment", "token": token,
                         "params": {"file": "../../package.json"}},
                        {"type": "ewd-fragment", "token": token, "service": "svc",
                         "params": {"file": "x.html"}},
                        {"type": "test", "token": token, "service": "svc"}):
            c.emit(message)
            frame = await c.message()
            out.append((frame["type"], frame["finished"], frame["message"]))
        return out

    @defer.inlineCallbacks
    def test_same_messages(self):
        peer = yield defer.ensureDeferred(self.answers(self.peer_url))
        ours = yield defer.ensureDeferred(self.answers(eio_url(self.ours)))
        self.assertEqual(ours, peer)
        self.assertEqual(peer[1][2], {"error": "Invalid token or session expired",
                                      "disconnect": True})
        self.assertEqual(peer[6][2], {"error": "svc service is not permitted for the test-app "
                                               "application", "service": "svc"})


class SwitchFromQEWDjsTests(TestCase):
    """A QEWD.js master (tests/interop/js/switch_master.js) switches its ``portal`` requests to
    application ``login`` on our node: our node runs ``login`` because its own
    ``permit_application_switch`` allows portal -> login, and the QEWD.js master relays our
    frames to its browser client."""

    timeout = 60

    @defer.inlineCallbacks
    def test_qewd_js_master_switches_to_us(self):
        home = require_kit(self)
        ours = start_node(self, jwt={"secret": SECRET},
                          moduleMap={"login": "tests.apps.demo", "portal": "tests.apps.switcher"},
                          permit_application_switch={"portal": {"login": True}})
        port = reserve_port(self)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js",
                              "switch_master.js")
        master = PeerProcess(self, script, {
            "QEWD_MASTER_PORT": str(port),
            "QEWD_SWITCH_URL": f"http://127.0.0.1:{ours.ports[0].getHost().port}",
            "NODE_PATH": os.path.join(home, "node_modules")}, f"QEWD.js master :{port}")
        registered = master.wait_for("login registered")  # its socket client, at our node
        master.start()
        yield registered
        c = EIOClient(f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(c.close)
        token = yield defer.ensureDeferred(register(c, "portal"))
        c.emit({"type": "signin", "token": token,
                "params": {"username": "rob", "password": "secret"}})
        progress = yield defer.ensureDeferred(c.message())
        final = yield defer.ensureDeferred(c.message())
        self.assertEqual((progress["type"], progress["finished"], progress["message"]),
                         ("login", False, {"text": "checking credentials", "username": "rob"}))
        self.assertEqual((final["type"], final["finished"], final["message"]["ok"]),
                         ("login", True, True))
        session = ours.tokens.session(final["message"]["token"])
        self.assertEqual((session["application"], session["username"]), ("portal", "rob"))
