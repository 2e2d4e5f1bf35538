# -*- test-case-name: tests.integration.test_polling -*-
"""
Engine.IO 3 long-polling on a real node on loopback (docs/protocol.md §1.1): the handshake and
engine.io's error answers, everything the node does over polling (register, tokens,
intermediate and final frames, errors, to_all, forwarding, limits), bad input (oversize,
malformed, overlapping GETs), JSONP and b64, and the upgrade to a WebSocket with replies in
flight. Real sockets, the Python client in tests/pollclient.py and tests/wsclient.py.
"""

from __future__ import annotations

import json

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from qewd_twisted.transports.payload import iter_payload
from tests.apps import demo
from tests.integration.nodes import port_of, start_node
from tests.integration.test_microservices import link_up, start_master, start_ms
from tests.pollclient import PollClient
from tests.wsclient import EIOClient


def base(node) -> str:
    return f"http://127.0.0.1:{port_of(node)}"


class PollingTests(TestCase):
    def client(self, node, query: str = "EIO=3&transport=polling") -> PollClient:
        c = PollClient(base(node), query)
        self.addCleanup(c.stop)
        return c

    async def registered(self, node, application: str = "demo") -> tuple[PollClient, str]:
        c = self.client(node)
        await c.handshake()
        c.start()
        await c.emit({"type": "ewd-register", "application": application, "jwt": True})
        reg = await c.message()
        return c, reg["message"]["token"]

    @defer.inlineCallbacks
    def test_handshake_like_the_peer(self):
        node = start_node(self)
        c = self.client(node)
        code, headers, body = yield defer.ensureDeferred(c.raw(
            b"GET", c.url("t=abc"), headers={b"origin": b"http://app.test"}))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=UTF-8"])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"),
                         [b"http://app.test"])
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-credentials"), [b"true"])
        opening, connect = list(iter_payload(body.decode()))
        self.assertEqual(connect, "40")
        hs = json.loads(opening[1:])
        self.assertEqual(list(hs), ["sid", "upgrades", "pingInterval", "pingTimeout"])
        self.assertEqual((hs["upgrades"], hs["pingInterval"], hs["pingTimeout"]),
                         (["websocket"], 25000, 20000))
        self.assertEqual(body[:3], b"97:")  # same length as the peer's open packet
        cookie = headers.getRawHeaders(b"set-cookie")[0]
        self.assertTrue(cookie.startswith(b"io=" + hs["sid"].encode()), cookie)
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(node.node.connections[hs["sid"]].ip, ("127.0.0.1",))

    @defer.inlineCallbacks
    def test_engine_io_error_answers(self):
        node = start_node(self)
        c = self.client(node)
        root = base(node).encode() + b"/socket.io/?EIO=3"
        cases = [
            (b"GET", root + b"&transport=bogus", 0, "Transport unknown"),
            (b"GET", root, 0, "Transport unknown"),
            (b"GET", root + b"&transport=polling&sid=nope", 1, "Session ID unknown"),
            (b"POST", root + b"&transport=polling", 2, "Bad handshake method"),
            (b"GET", root + b"&transport=websocket", 3, "Bad request"),
        ]
        for method, url, ecode, message in cases:
            code, headers, body = yield defer.ensureDeferred(c.raw(method, url, b"" if
                                                                   method == b"POST" else None))
            self.assertEqual((code, json.loads(body)), (400, {"code": ecode, "message": message}),
                             url)
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
            self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [b"*"])
        # an unexpected method on a session: a bare 500, as engine.io
        yield defer.ensureDeferred(c.handshake())
        code, _, body = yield defer.ensureDeferred(c.raw(b"PUT", c.url(), b"x"))
        self.assertEqual((code, body), (500, b""))
        code, headers, _ = yield defer.ensureDeferred(c.raw(b"OPTIONS", c.url()))
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-headers"),
                         [b"Content-Type"])

    async def _register_login_echo(self, c: PollClient, token: str) -> None:
        await c.emit({"type": "login", "token": token,
                      "params": {"username": "rob", "password": "secret"}})
        mid = await c.message()
        self.assertEqual((mid["type"], mid["finished"]), ("login", False))
        self.assertEqual(mid["message"], {"text": "checking credentials", "username": "rob"})
        final = await c.message()
        self.assertEqual(list(final), ["type", "finished", "message", "responseTime"])
        self.assertIs(final["message"]["ok"], True)
        await c.emit({"type": "echo", "token": final["message"]["token"], "params": "hi"})
        echo = await c.message()
        self.assertEqual((echo["message"]["you sent"], echo["message"]["user"]), ("hi", "rob"))

    @defer.inlineCallbacks
    def test_register_login_echo_errors_and_push(self):
        node = start_node(self)
        c, token = yield defer.ensureDeferred(self.registered(node))
        session = node.tokens.session(token)
        self.assertEqual((session["socketId"], session["ipAddress"]), (c.sid, "127.0.0.1"))
        yield defer.ensureDeferred(self._register_login_echo(c, token))
        # errors: a crash, an unknown type, a bad token, a non-object
        yield defer.ensureDeferred(c.emit({"type": "crash", "token": token}))
        crash = yield defer.ensureDeferred(c.message())
        self.assertEqual((crash["finished"], crash["message"]),
                         (True, "'NoneType' object has no attribute 'boom'"))  # as on WebSocket
        self.flushLoggedErrors(AttributeError)
        yield defer.ensureDeferred(c.emit(None))
        bad = yield defer.ensureDeferred(c.message())
        self.assertIn("error", bad["message"])
        # server push reaches a polling client, once, with the WebSocket clients'
        ws = EIOClient(f"ws://127.0.0.1:{port_of(node)}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(ws.close)
        yield defer.ensureDeferred(ws.handshake())
        node.node.to_all({"type": "news", "message": {"n": 1}})
        self.assertEqual((yield defer.ensureDeferred(c.message()))["message"], {"n": 1})
        self.assertEqual((yield defer.ensureDeferred(ws.message()))["message"], {"n": 1})
        self.assertTrue(node.node.send_to_socket(c.sid, {"type": "one", "message": 2}))
        self.assertEqual((yield defer.ensureDeferred(c.message()))["type"], "one")
        node.node.to_application({"type": "app", "message": 3}, "demo")
        self.assertEqual((yield defer.ensureDeferred(c.message()))["type"], "app")

    @defer.inlineCallbacks
    def test_several_packets_in_one_post_and_b64(self):
        node = start_node(self)
        c = self.client(node, "EIO=3&transport=polling&b64=1")
        yield defer.ensureDeferred(c.handshake())
        c.start()
        yield defer.ensureDeferred(c.emit(
            {"type": "ewd-register", "application": "demo", "jwt": True}, {"type": "nope"}))
        first = yield defer.ensureDeferred(c.message())
        second = yield defer.ensureDeferred(c.message())
        self.assertEqual(first["type"], "ewd-register")
        self.assertEqual(second["type"], "nope")  # no token: the node's error, in order
        # a base64 binary packet (b64=1 clients) is refused like a binary frame
        code, body = yield defer.ensureDeferred(c.post(["b4AQID"]))
        self.assertEqual((code, body), (200, b"ok"))
        err = yield defer.ensureDeferred(c.message())
        self.assertEqual(err["message"]["error"], "Binary frames are not supported")

    @defer.inlineCallbacks
    def test_jsonp(self):
        node = start_node(self)
        c = self.client(node, "EIO=3&transport=polling&j=2")
        code, headers, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
        self.assertEqual(code, 200)
        self.assertTrue(body.startswith(b'___eio[2]("') and body.endswith(b'");'), body)
        payload = json.loads(body[len(b"___eio[2]("):-2])
        c.sid = json.loads(list(iter_payload(payload))[0][1:])["sid"]
        msg = '42["ewdjs",{"type":"ewd-register","application":"demo","jwt":true}]'
        form = b"d=" + f"{len(msg)}:{msg}".encode().replace(b"%", b"%25").replace(
            b"&", b"%26").replace(b"+", b"%2B")
        code, _, body = yield defer.ensureDeferred(c.raw(
            b"POST", c.url(), form, {b"content-type": b"application/x-www-form-urlencoded"}))
        self.assertEqual((code, body), (200, b"ok"))
        code, _, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
        packets = list(iter_payload(json.loads(body[len(b"___eio[2]("):-2])))
        self.assertEqual(json.loads(packets[0][2:])[1]["type"], "ewd-register")

    @defer.inlineCallbacks
    def test_oversize_post_refused_session_closed_node_alive(self):
        node = start_node(self, maxMessageSize=4096)
        for chunked in (False, True):
            c = self.client(node)
            yield defer.ensureDeferred(c.handshake())
            big = b"9000:4" + b"x" * 8999
            code, _, body = yield defer.ensureDeferred(c.raw(
                b"POST", c.url(), big, {b"content-type": b"text/plain"}, chunked=chunked))
            self.assertEqual(code, 413)
            self.assertEqual(json.loads(body), {"code": 3, "message": "Bad request"})
            code, _, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
            self.assertEqual(json.loads(body)["code"], 1)  # the session is gone
            self.assertNotIn(c.sid, node.node.connections)
        c, token = yield defer.ensureDeferred(self.registered(node))  # the node is fine
        self.assertTrue(token)

    @defer.inlineCallbacks
    def test_malformed_payload_closes_the_session(self):
        node = start_node(self)
        cases = [(b"5:2", b"text/plain"), (b"x:2", b"text/plain"), (b"1:9", b"text/plain"),
                 (b"\xff\xfe\x00garbage", b"text/plain"),
                 (b"\x07\x01\xff2garbage", b"application/octet-stream"),
                 (b"\x00\x09\xff2", b"application/octet-stream")]
        for bad, ctype in cases:
            c = self.client(node)
            yield defer.ensureDeferred(c.handshake())
            code, _, body = yield defer.ensureDeferred(c.raw(b"POST", c.url(), bad,
                                                             {b"content-type": ctype}))
            self.assertEqual((code, body), (200, b"ok"))  # engine.io answers ok, then closes
            code, _, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
            self.assertEqual((code, json.loads(body)["code"]), (400, 1), bad)

    @defer.inlineCallbacks
    def test_second_get_refused_and_session_closed(self):
        node = start_node(self)
        c = self.client(node)
        yield defer.ensureDeferred(c.handshake())
        first = defer.ensureDeferred(c.get())
        while not node.engine.sessions.get(c.sid).poll:
            yield task.deferLater(reactor, 0.01, lambda: None)
        code, _, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
        self.assertEqual((code, body), (500, b""))
        self.assertEqual((yield first), ["1"])
        self.assertNotIn(c.sid, node.node.connections)

    @defer.inlineCallbacks
    def test_limits_apply_over_polling(self):
        """maxInFlight is per connection, whatever the transport."""
        node = start_node(self, maxInFlight=1)
        c, token = yield defer.ensureDeferred(self.registered(node))
        demo.release.clear()
        self.addCleanup(demo.release.set)
        yield defer.ensureDeferred(c.emit({"type": "blocked", "token": token},
                                          {"type": "echo", "token": token}))
        frames = []
        for _ in range(2):
            frames.append((yield defer.ensureDeferred(c.message())))
        by_type = {f["type"]: f for f in frames}
        self.assertEqual(by_type["blocked"]["message"], {"blocked": True})
        self.assertIn("Too many requests", by_type["echo"]["message"]["error"])
        demo.release.set()
        done = yield defer.ensureDeferred(c.message())
        self.assertIs(done["message"]["released"], True)

    @defer.inlineCallbacks
    def test_forwarding_over_polling(self):
        ms = start_ms(self)
        master = start_master(self, ms)
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(self.registered(master, "jwt"))
        yield defer.ensureDeferred(c.emit({"type": "login", "token": token,
                                           "params": {"username": "user-1",
                                                      "password": "1-resu"}}))
        frames = [(yield defer.ensureDeferred(c.message()))]
        while frames[-1].get("finished") is False:
            frames.append((yield defer.ensureDeferred(c.message())))
        self.assertEqual(frames[-1]["type"], "login")
        self.assertNotIn("error", frames[-1]["message"])
        self.assertIn("token", frames[-1]["message"])

    @defer.inlineCallbacks
    def test_upgrade_with_replies_in_flight(self):
        node = start_node(self)
        c, token = yield defer.ensureDeferred(self.registered(node))
        ws = EIOClient(f"ws://127.0.0.1:{port_of(node)}/socket.io/?EIO=3&transport=websocket"
                       f"&sid={c.sid}")
        self.addCleanup(ws.close)
        yield ws.opened
        demo.release.clear()
        self.addCleanup(demo.release.set)
        # a request whose reply comes during the switch
        yield defer.ensureDeferred(c.emit({"type": "blocked", "token": token}))
        self.assertEqual((yield defer.ensureDeferred(c.message()))["message"], {"blocked": True})
        ws.send_text("2probe")
        self.assertEqual((yield ws.next()), "3probe")
        # the waiting GET is answered with a noop; the client stops polling
        yield c.finish()
        demo.release.set()  # the reply is produced while no transport can carry it
        while node.node.in_flight:
            yield task.deferLater(reactor, 0.01, lambda: None)
        node.node.send_to_socket(c.sid, {"type": "push", "message": 1})
        ws.send_text("5")
        released = yield defer.ensureDeferred(ws.message())
        self.assertIs(released["message"]["released"], True)
        self.assertEqual((yield defer.ensureDeferred(ws.message()))["type"], "push")
        ws.emit({"type": "echo", "token": token, "params": "over ws"})
        echo = yield defer.ensureDeferred(ws.message())
        self.assertEqual(echo["message"]["you sent"], "over ws")
        ws.send_text("2")
        self.assertEqual((yield ws.next()), "3")
        # nothing arrived twice on polling
        leftovers = []
        while c.frames.pending:
            leftovers.append(c.frames.pending.pop(0))
        self.assertFalse([f for f in leftovers if f.startswith("42")], leftovers)
        # polling on an upgraded session: engine.io's Bad request
        code, _, body = yield defer.ensureDeferred(c.raw(b"GET", c.url()))
        self.assertEqual((code, json.loads(body)["code"]), (400, 3))
        # a second upgrade, or one for an unknown sid, is refused
        bad = EIOClient(f"ws://127.0.0.1:{port_of(node)}/socket.io/?EIO=3&transport=websocket"
                        f"&sid=unknown")
        bad.opened.addErrback(lambda f: None)
        code, _ = yield bad.closed
        self.assertNotEqual(code, 1000)
        self.assertIn(c.sid, node.node.connections)
        yield ws.close()
        while c.sid in node.node.connections:
            yield task.deferLater(reactor, 0.01, lambda: None)

    @defer.inlineCallbacks
    def test_abandoned_sessions_are_freed(self):
        """Handshakes never polled again are bounded by maxPendingHandshakes; a session whose
        waiting GET is cut off is closed at once; no session object outlives either."""
        import gc

        from qewd_twisted.transports.engineio import EngineSession

        node = start_node(self, maxPendingHandshakes=10)
        for i in range(150):
            c = PollClient(base(node))
            yield defer.ensureDeferred(c.handshake())
            if i % 2:
                c.start()
                while not node.engine.sessions.get(c.sid).poll:
                    yield task.deferLater(reactor, 0.005, lambda: None)
                yield c.stop()  # the waiting GET's connection is cut: the session closes
        for _ in range(500):  # the last cut-off GETs are seen by the node asynchronously
            if len(node.engine.sessions) <= 10:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertLessEqual(len(node.engine.sessions), 10)
        self.assertLessEqual(len(node.node.connections), 10)
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, EngineSession)]
        self.assertLessEqual(len(alive), 10)
