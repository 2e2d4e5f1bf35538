# test-case-name: tests.integration.test_websocket
"""
A real node on loopback, spoken to over real WebSockets: Engine.IO 3 framing exactly as the
QEWD.js peer sends it (docs/protocol.md §1.1-§1.2, peer README "Wire protocol"), the plain /ws
endpoint, oversize and binary frames, static files, and QEWD.js's own socket.io-client 2.x.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.integration.nodes import eio_url, plain_url, port_of, start_node
from tests.strict import require
from tests.wsclient import EIOClient, EIOClients, PlainClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EngineIOTests(EIOClients, TestCase):
    @defer.inlineCallbacks
    def test_handshake_matches_peer(self):
        """OPEN packet then 40, with the peer's pingInterval 25000 and pingTimeout 20000."""
        node = start_node(self)
        c = self.client(eio_url(node))
        yield c.opened
        first = yield c.next()
        self.assertEqual(first[0], "0")
        hs = json.loads(first[1:])
        self.assertEqual(list(hs), ["sid", "upgrades", "pingInterval", "pingTimeout"])
        self.assertEqual(len(hs["sid"]), 20)
        self.assertEqual((hs["upgrades"], hs["pingInterval"], hs["pingTimeout"]), ([], 25000, 20000))
        self.assertEqual((yield c.next()), "40")
        c.send_text("2")
        self.assertEqual((yield c.next()), "3")
        c.send_text("2probe")
        self.assertEqual((yield c.next()), "3probe")
        c.send_text("41")
        code, _ = yield c.closed
        self.assertIn(code, (None, 1005))  # the peer closes with no status code (1005) too

    @defer.inlineCallbacks
    def test_register_login_and_use_token(self):
        node = start_node(self)
        c = self.client(eio_url(node))
        hs = yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        reg = yield defer.ensureDeferred(c.message())
        self.assertEqual(reg["type"], "ewd-register")
        session = node.tokens.session(reg["message"]["token"])
        self.assertEqual(session["socketId"], hs["sid"])
        self.assertEqual(session["ipAddress"], "127.0.0.1")
        c.emit({"type": "login", "token": reg["message"]["token"],
                "params": {"username": "rob", "password": "secret"}})
        mid = yield defer.ensureDeferred(c.message())
        self.assertEqual((mid["type"], mid["finished"]), ("login", False))
        self.assertEqual(mid["message"], {"text": "checking credentials", "username": "rob"})
        final = yield defer.ensureDeferred(c.message())
        self.assertEqual(list(final), ["type", "finished", "message", "responseTime"])
        self.assertIs(final["message"]["ok"], True)
        c.emit({"type": "echo", "token": final["message"]["token"], "params": "hi"})
        echo = yield defer.ensureDeferred(c.message())
        self.assertEqual(echo["message"]["you sent"], "hi")
        self.assertEqual(echo["message"]["user"], "rob")

    @defer.inlineCallbacks
    def test_bad_frames_get_errors_and_connection_survives(self):
        node = start_node(self)
        c = self.client(eio_url(node))
        yield defer.ensureDeferred(c.handshake())
        for raw in ["42not json", "42[]", "9", '42["ewdjs",null]', '42["ewdjs"]', "4",
                    '42["other",{}]', '42["ewdjs",' + "[" * 100000 + "]" * 100000 + "]"]:
            c.send_text(raw)
            reply = yield defer.ensureDeferred(c.message())
            self.assertEqual(reply["type"], "error", raw[:20])
            self.assertIn("error", reply["message"])
        c.send_binary(b"\x00\x01")
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["error"], "Binary frames are not supported")
        c.send_text('40/admin,')
        self.assertEqual((yield c.next()), '44/admin,"Invalid namespace"')
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        reg = yield defer.ensureDeferred(c.message())
        self.assertIn("token", reg["message"])

    @defer.inlineCallbacks
    def test_oversize_message_closes_1009(self):
        node = start_node(self, maxMessageSize=4096)
        other = self.client(eio_url(node))
        yield defer.ensureDeferred(other.handshake())
        c = self.client(eio_url(node))
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "x", "params": "a" * 5000})
        code, _ = yield c.closed
        self.assertEqual(code, 1009)
        other.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        reg = yield defer.ensureDeferred(other.message())
        self.assertIn("token", reg["message"])

    @defer.inlineCallbacks
    def test_wrong_protocol_version_and_unknown_transport_refused(self):
        node = start_node(self)
        c = EIOClient(f"ws://127.0.0.1:{port_of(node)}/socket.io/?EIO=4&transport=websocket")
        self.addCleanup(c.close)
        code, _ = yield c.closed
        self.assertFailure(c.opened, ConnectionError)
        yield c.opened.addErrback(lambda f: None)
        agent = Agent(reactor)
        resp = yield agent.request(
            b"GET", f"http://127.0.0.1:{port_of(node)}/socket.io/?EIO=3&transport=flash".encode())
        body = yield readBody(resp)
        self.assertEqual(resp.code, 400)
        self.assertEqual(json.loads(body), {"code": 0, "message": "Transport unknown"})
        # long-polling is served (tests/integration/test_polling.py), for EIO=3 only
        resp = yield agent.request(
            b"GET", f"http://127.0.0.1:{port_of(node)}/socket.io/?EIO=4&transport=polling".encode())
        body = yield readBody(resp)
        self.assertEqual(resp.code, 400)
        self.assertEqual(json.loads(body)["code"], 5)


class PlainTests(TestCase):
    @defer.inlineCallbacks
    def test_plain_endpoint(self):
        node = start_node(self)
        c = PlainClient(plain_url(node))
        self.addCleanup(c.close)
        yield c.opened
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        reg = yield defer.ensureDeferred(c.message())
        c.emit({"type": "echo", "token": reg["message"]["token"], "params": [1, 2]})
        echo = yield defer.ensureDeferred(c.message())
        self.assertEqual(echo["message"]["you sent"], [1, 2])
        c.send_text("{not json")
        err = yield defer.ensureDeferred(c.message())
        self.assertEqual(err["type"], "error")
        c.send_text("null")
        err = yield defer.ensureDeferred(c.message())
        self.assertEqual(err["message"]["error"], "Invalid message: expected a JSON object")


class StaticTests(TestCase):
    @defer.inlineCallbacks
    def test_static_files_without_listing(self):
        root = self.mktemp()
        os.makedirs(os.path.join(root, "www", "sub"))
        with open(os.path.join(root, "www", "index.html"), "w") as f:
            f.write("<h1>hello</h1>")
        node = start_node(self, base_dir=root, webServerRootPath="www")
        agent = Agent(reactor)
        base = f"http://127.0.0.1:{port_of(node)}"
        resp = yield agent.request(b"GET", (base + "/").encode())
        self.assertEqual((resp.code, (yield readBody(resp))), (200, b"<h1>hello</h1>"))
        resp = yield agent.request(b"GET", (base + "/sub/").encode())
        yield readBody(resp)
        self.assertEqual(resp.code, 404)
        resp = yield agent.request(b"GET", (base + "/../setup.py").encode())
        yield readBody(resp)
        self.assertEqual(resp.code, 404)


class SocketIOClientTests(TestCase):
    """QEWD.js's own socket.io-client 2.x (tests/js) registers, sends and receives."""

    @defer.inlineCallbacks
    def test_socket_io_client_2(self):
        script = os.path.join(REPO, "tests", "js", "sio_client.js")
        node_bin = shutil.which("node")
        modules = os.path.join(REPO, "tests", "js", "node_modules", "socket.io-client")
        if not node_bin or not os.path.isdir(modules):
            require(self, "node", "node or tests/js/node_modules missing "
                                  "(scripts/test.sh installs them)")
        node = start_node(self)
        out, err, code = yield getProcessOutputAndValue(
            node_bin, [script, f"http://127.0.0.1:{port_of(node)}"], env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        types = [(e["type"], e.get("finished")) for e in events]
        self.assertEqual(types, [("ewd-register", True), ("login", False), ("login", True),
                                 ("echo", True)])
        self.assertEqual(events[3]["message"]["user"], "rob")
