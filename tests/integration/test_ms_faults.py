# test-case-name: tests.integration.test_ms_faults
"""
Faulty micro-services (issue 7 item 4): one that answers garbage and one that flaps up and
down. The client always gets a final reply or a clear error within the deadline, and the
master keeps serving.
"""

from __future__ import annotations

import json

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.integration.nodes import start_node
from tests.ports import reserve_port
from tests.integration.test_microservices import client, link_up, login, start_master, start_ms

GARBAGE = [
    b"42not json",
    b"4",
    b"9",
    b'42["ewdjs",null]',
    b'42["ewdjs",[1,2]]',
    b'42["ewdjs",{"type":"login","finished":false,"message":"no id, two in flight"}]',
    b'42["ewdjs",{"type":"login","finished":true,"ms_requestId":"nope"}]',
    b'42["other",{}]',
    b"\xff\xfe",
]


class _GarbageRemote(WebSocketServerProtocol):
    """Registers like a qewd-twisted node, then answers every request with garbage only."""

    def onOpen(self) -> None:
        self.sendMessage(b'0{"sid":"garbagegarbagegarbage","upgrades":[],'
                         b'"pingInterval":25000,"pingTimeout":20000}')
        self.sendMessage(b"40")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not payload.startswith(b"42"):
            return
        _, msg = json.loads(payload[2:])
        if msg.get("type") in ("ewd-register", "ewd-reregister"):
            reply = {"type": msg["type"], "finished": True,
                     "message": {"token": "x.y.z", "ok": True, "qewd_twisted": 1}}
            self.sendMessage(b"42" + json.dumps(["ewdjs", reply]).encode())
            return
        for g in GARBAGE:
            self.sendMessage(g, isBinary=g.startswith(b"\xff"))


class GarbageTests(TestCase):
    @defer.inlineCallbacks
    def test_garbage_answers_end_in_a_timeout_and_the_link_lives_on(self):
        factory = WebSocketServerFactory(reactor=reactor)
        factory.protocol = _GarbageRemote
        factory.setProtocolOptions(autoPingInterval=0)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        master = start_node(self, moduleMap={"jwt": "tests.apps.jwt_app"}, microServiceTimeout=0.5,
                            u_services=[{"application": "jwt", "types": {
                                "login": {"url": url, "application": "test-app"}}}])
        yield defer.ensureDeferred(link_up(master))
        c1, t1 = yield defer.ensureDeferred(client(self, master))
        c2, t2 = yield defer.ensureDeferred(client(self, master))
        results = yield defer.gatherResults([
            defer.ensureDeferred(login(c1, t1, "one")), defer.ensureDeferred(login(c2, t2, "two"))])
        for frames in results:
            self.assertEqual(frames[-1]["message"]["error"], "MicroService request timed out")
            self.assertEqual(frames[-1]["type"], "login")
            # an ambiguous id-less frame is never handed to a client
            self.assertNotIn("no id, two in flight", json.dumps(frames))
        # the master still serves its local application
        c1.emit({"type": "test", "token": t1})
        reply = yield defer.ensureDeferred(c1.message())
        self.assertEqual(reply["message"], {"error": "You must be logged in"})


class FlappingTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_flapping_micro_service(self):
        """Up, down, up...: every request ends with a reply or the 503, nothing hangs."""
        ms_port = reserve_port(self)  # it comes back on the same port (tests/ports.py)
        ms = start_ms(self, listen=f"tcp:{ms_port}:interface=127.0.0.1")
        master = start_master(self, ms, microServiceTimeout=5)
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(client(self, master))
        outcomes = []
        for cycle in range(4):
            frames = yield defer.ensureDeferred(login(c, token, f"flap-{cycle}"))
            outcomes.append(frames[-1]["message"].get("ok"))
            # down: close its sockets and stop it
            for conn in list(ms.node.connections.values()):
                conn.close(4000, "flap")
            yield ms.stopService()
            frames = yield defer.ensureDeferred(login(c, token, f"down-{cycle}"))
            self.assertEqual(frames[-1]["message"]["status"], {"code": 503})
            # up again on the same port
            ms = start_ms(self, listen=f"tcp:{ms_port}:interface=127.0.0.1")
            yield defer.ensureDeferred(link_up(master))
        self.assertEqual(outcomes, [True] * 4)
