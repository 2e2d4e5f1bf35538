# test-case-name: tests.integration.test_parity_sockets
"""
Extra socket.io namespaces (``webSockets.io_paths``, docs/protocol.md §1.1) on a real node on
loopback: raw Engine.IO frames as socket.io 2 sends them, and QEWD.js's own socket.io-client
2.x connecting to ``http://host:port/<namespace>``.
"""

from __future__ import annotations

import json
import os
import shutil

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url, port_of, start_node
from tests.strict import require
from tests.wsclient import EIOClient, EIOClients

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class NamespaceTests(EIOClients, TestCase):
    async def namespace_message(self, c: EIOClient, namespace: str) -> dict:
        prefix = f"42{namespace},"
        frame = await c.next()
        assert isinstance(frame, str) and frame.startswith(prefix), frame
        name, payload = json.loads(frame[len(prefix):])
        assert name == "ewdjs", frame
        return payload

    @defer.inlineCallbacks
    def test_served_like_the_default_namespace(self):
        node = start_node(self, webSockets={"io_paths": ["/qewd", "/other"]})
        c = self.client(eio_url(node))
        yield defer.ensureDeferred(c.handshake())
        c.send_text("40/qewd,")
        self.assertEqual((yield c.next()), "40/qewd,")
        c.send_text('42/qewd,["ewdjs",{"type":"ewd-register","application":"demo","jwt":true}]')
        reply = yield defer.ensureDeferred(self.namespace_message(c, "/qewd"))
        self.assertEqual(reply["type"], "ewd-register")
        token = reply["message"]["token"]
        claims = node.tokens.session(token)
        sid = next(conn.id for conn in node.node.connections.values() if "#" not in conn.id)
        self.assertEqual(claims["socketId"], f"/qewd#{sid}")  # socket.io 2's id for a namespace
        # the default namespace on the same connection is a client of its own
        c.emit({"type": "echo", "token": token, "params": "wrong socket?"})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["you sent"], "wrong socket?")  # JWTs go anywhere
        c.send_text('42/qewd,["ewdjs",' + json.dumps(
            {"type": "echo", "token": token, "params": "hi"}) + "]")
        reply = yield defer.ensureDeferred(self.namespace_message(c, "/qewd"))
        self.assertEqual(reply["message"]["you sent"], "hi")
        self.assertEqual(len(node.node.connections), 2)
        c.send_text("41/qewd,")
        c.emit({"type": "echo", "token": token, "params": "still here"})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["you sent"], "still here")
        self.assertEqual(len(node.node.connections), 1)

    @defer.inlineCallbacks
    def test_namespace_not_configured(self):
        node = start_node(self, webSockets={"io_paths": ["/qewd"]})
        c = self.client(eio_url(node))
        yield defer.ensureDeferred(c.handshake())
        c.send_text("40/nope,")
        self.assertEqual((yield c.next()), '44/nope,"Invalid namespace"')
        plain = start_node(self)  # no io_paths: every extra namespace is refused
        c2 = self.client(eio_url(plain))
        yield defer.ensureDeferred(c2.handshake())
        c2.send_text("40/qewd,")
        self.assertEqual((yield c2.next()), '44/qewd,"Invalid namespace"')

    @defer.inlineCallbacks
    def test_closing_the_socket_loses_its_namespaces(self):
        node = start_node(self, webSockets={"io_paths": ["/qewd"]})
        c = self.client(eio_url(node))
        yield defer.ensureDeferred(c.handshake())
        c.send_text("40/qewd,")
        yield c.next()
        self.assertEqual(len(node.node.connections), 2)
        yield c.close()
        self.assertEqual(node.node.connections, {})


class SocketIOClientNamespaceTests(TestCase):
    """socket.io-client 2.x (tests/js) on ``http://127.0.0.1:<port>/qewd``: register, login,
    echo, exactly as on the default namespace."""

    @defer.inlineCallbacks
    def test_socket_io_client_2_on_a_namespace(self):
        script = os.path.join(REPO, "tests", "js", "sio_client.js")
        node_bin = shutil.which("node")
        modules = os.path.join(REPO, "tests", "js", "node_modules", "socket.io-client")
        if not node_bin or not os.path.isdir(modules):
            require(self, "node", "node or tests/js/node_modules missing "
                                  "(scripts/test.sh installs them)")
        node = start_node(self, webSockets={"io_paths": ["/qewd"]})
        out, err, code = yield getProcessOutputAndValue(
            node_bin, [script, f"http://127.0.0.1:{port_of(node)}/qewd"], env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        self.assertEqual([(e["type"], e.get("finished")) for e in events],
                         [("ewd-register", True), ("login", False), ("login", True),
                          ("echo", True)])
        self.assertEqual(events[3]["message"]["user"], "rob")


class LockSessionSharedStoreTests(TestCase):
    """``lockSession`` with session-token sessions in a database (SQLite here): the requests of
    one session wait for each other through the store's lock; other sessions do not."""

    timeout = 30

    @defer.inlineCallbacks
    def test_second_request_waits_for_the_first(self):
        import tempfile

        from tests.apps import demo

        demo.release.hold(self)
        path = os.path.join(tempfile.mkdtemp(), "qewd.sqlite")
        node = start_node(self, lockSession={"timeout": 20},
                          database={"type": "sqlite", "params": {"path": path}})
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        tokens = []
        for _ in range(2):
            c.emit({"type": "ewd-register", "application": "demo"})  # session-token mode
            tokens.append((yield defer.ensureDeferred(c.message()))["message"]["token"])
        mine, other = tokens
        c.emit({"type": "blocked", "token": mine})
        self.assertEqual((yield defer.ensureDeferred(c.message()))["message"], {"blocked": True})
        c.emit({"type": "echo", "token": mine, "params": "second"})
        c.emit({"type": "echo", "token": other, "params": "other session"})
        reply = yield defer.ensureDeferred(c.message())  # not held up by the locked one
        self.assertEqual(reply["message"]["you sent"], "other session")
        demo.release.open()
        first = yield defer.ensureDeferred(c.message())
        second = yield defer.ensureDeferred(c.message())
        self.assertEqual((first["type"], first["message"]), ("blocked", {"released": True}))
        self.assertEqual(second["message"]["you sent"], "second")


class PollingNamespaceTests(TestCase):
    """socket.io-client 2.x on ``/qewd`` over long-polling (tests/js/sio_polling.js): polling
    only, and its defaults (polling, then the upgrade to WebSocket with 50 replies in flight)."""

    timeout = 60

    @defer.inlineCallbacks
    def run_client(self, mode):
        script = os.path.join(REPO, "tests", "js", "sio_polling.js")
        node_bin = shutil.which("node")
        modules = os.path.join(REPO, "tests", "js", "node_modules", "socket.io-client")
        if not node_bin or not os.path.isdir(modules) or not os.path.exists(script):
            require(self, "node", "node or tests/js/node_modules missing "
                                  "(scripts/test.sh installs them)")
        node = start_node(self, webSockets={"io_paths": ["/qewd"]})
        out, err, code = yield getProcessOutputAndValue(
            node_bin, [script, f"http://127.0.0.1:{port_of(node)}/qewd", mode],
            env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        frames, last = lines[:-1], lines[-1]
        self.assertEqual([(f["type"], f["finished"]) for f in frames[:3]],
                         [("ewd-register", True), ("login", False), ("login", True)])
        self.assertEqual(last["echoes"], {f"n{i}": 1 for i in range(50)})
        return last

    @defer.inlineCallbacks
    def test_polling_only(self):
        last = yield self.run_client("polling")
        self.assertEqual(last["transport"], "polling")

    @defer.inlineCallbacks
    def test_polling_then_upgrade(self):
        last = yield self.run_client("default")
        self.assertEqual((last["transport"], last["upgraded"]), ("websocket", True))
