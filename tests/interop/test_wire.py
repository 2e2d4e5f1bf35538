# -*- test-case-name: tests.interop.test_wire -*-
"""
Where the running QEWD.js peer differs from PROTOCOL.md, or from us on purpose (issue 4 item
5); docs/interop.md, "PROTOCOL.md vs the running peer", lists each with the test that shows it.
Each test asserts what the peer does and, next to it, what our node does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url as our_eio_url
from tests.integration.nodes import start_node
from tests.interop.peer import (
    CRASH_TEXT,
    PEER_MASTER,
    PEER_MS,
    connect,
    eio_url,
    reserve_port,
    http_url,
    login,
    request,
    require_peer,
    start_master,
    start_peer_ms,
)
from tests.wsclient import EIOClient


class EngineIOTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        require_peer(self)

    async def _open(self, url: str) -> tuple[EIOClient, dict[str, Any]]:
        c = EIOClient(url)
        self.addCleanup(c.close)
        return c, await c.handshake()

    @defer.inlineCallbacks
    def test_open_packet_ping_timeout_is_20000(self):
        """PROTOCOL.md §1.1 says pingTimeout 5000; the peer (socket.io 2.5.1 / engine.io
        3.6) sends 20000, on the master and the micro-service. Ours sends the same."""
        ours = start_node(self)
        for url in (eio_url(PEER_MASTER), eio_url(PEER_MS), our_eio_url(ours)):
            _c, opened = yield defer.ensureDeferred(self._open(url))
            self.assertEqual({k: v for k, v in opened.items() if k != "sid"},
                             {"upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}, url)
            self.assertEqual(len(opened["sid"]), 20)

    @defer.inlineCallbacks
    def test_disconnect_packet(self):
        """``41`` (socket.io DISCONNECT) only leaves the namespace on the peer: the WebSocket
        stays open (a ping still gets its pong) until the client closes it, and a QEWD.js
        client closes it at once with no status code, which is the "1005" in the peer's
        transcripts. Our node closes the WebSocket itself on ``41`` (with no status code)."""
        peer, _ = yield defer.ensureDeferred(self._open(eio_url(PEER_MASTER)))
        peer.send_text("41")
        peer.send_text("2")
        frame = yield peer.next()
        while isinstance(frame, str) and frame.startswith("42"):  # another test's broadcast
            frame = yield peer.next()
        self.assertEqual(frame, "3")
        self.assertFalse(peer.closed.called)
        peer.proto.sendClose()  # what socket.io-client does next: a close without a code
        code, _ = yield peer.closed
        self.assertIsNone(code)  # no status code: Autobahn says None, Node's ws says 1005
        self.assertTrue(peer.proto.wasClean)

        ours = start_node(self)
        c, _ = yield defer.ensureDeferred(self._open(our_eio_url(ours)))
        c.send_text("41")
        code, _ = yield c.closed
        self.assertIsNone(code)
        self.assertTrue(c.proto.wasClean)


class RequestIdTests(TestCase):
    """``ms_requestId`` echo, frame by frame, on a QEWD.js micro-service of our own (the
    crash kills one of its workers) and on our node, both registered with as ``test-app``."""

    timeout = 60

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    async def _frames(self, url: str) -> dict[str, list[dict[str, Any]]]:
        c = EIOClient(url)
        self.addCleanup(c.close)
        await c.handshake()
        c.emit({"type": "ewd-register", "application": "test-app", "jwt": True})
        token = (await c.message())["message"]["token"]
        bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        sent = {
            "login": login(token),
            "wrong password": login(token, "wrong"),
            "no handler": {"type": "msNoHandler", "token": token, "params": {}},
            "bad JWT": {"type": "login", "token": bad, "params": {}},
            "crash": {"type": "crash", "token": token, "params": {}},
        }
        out = {}
        for n, (name, message) in enumerate(sent.items(), start=7):
            out[name] = await request(c, dict(message, jwt=True, ms_requestId=n))
        return out

    @staticmethod
    def _ids(frames: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        """(top-level, message-level) ``ms_requestId`` of each frame; None where absent."""
        return [(f.get("ms_requestId"),
                 f["message"].get("ms_requestId") if isinstance(f["message"], dict) else None)
                for f in frames]

    @defer.inlineCallbacks
    def test_qewd_echoes_only_on_final_replies_through_its_worker_wrapper(self):
        """QEWD.js echoes ``ms_requestId`` (top level and in ``message``) only on final
        frames that go through its worker's ``finished()`` wrapper: not on intermediate
        frames, not on ``Handler not defined``, not on the master's JWT rejection, not on
        the crash frame. Our node echoes it on every frame, so our links can correlate
        each one (against QEWD.js they send one request at a time instead)."""
        port = reserve_port(self)
        _ms, ready = start_peer_ms(self, port)
        yield ready
        peer = yield defer.ensureDeferred(self._frames(eio_url(("127.0.0.1", port))))
        self.assertEqual(self._ids(peer["login"]), [(None, None), (7, 7)])
        self.assertEqual(self._ids(peer["wrong password"]), [(None, None), (8, 8)])
        self.assertEqual(self._ids(peer["no handler"]), [(None, None)])
        self.assertEqual(self._ids(peer["bad JWT"]), [(None, None)])
        self.assertEqual(self._ids(peer["crash"]), [(None, None)])
        self.assertEqual(peer["bad JWT"][0], {"type": "login", "message": {
            "error": "Invalid JWT: Error: Signature verification failed", "disconnect": True}})
        self.assertEqual({k: v for k, v in peer["crash"][0].items() if k != "responseTime"},
                         {"type": "error", "finished": True, "message": CRASH_TEXT})

        node = start_node(self, moduleMap={"test-app": "tests.apps.demo"})
        ours = yield defer.ensureDeferred(self._frames(our_eio_url(node)))
        self.flushLoggedErrors(AttributeError)  # demo.crash
        self.assertEqual(self._ids(ours["login"]), [(7, 7), (7, 7)])
        self.assertEqual(self._ids(ours["wrong password"]), [(8, 8), (8, 8)])
        self.assertEqual(self._ids(ours["no handler"]), [(9, 9)])
        self.assertEqual(self._ids(ours["bad JWT"]), [(10, None)])
        self.assertEqual(self._ids(ours["crash"]), [(11, None)])
        # a rejection that carries an id has no disconnect (PROTOCOL.md §2.4)
        self.assertEqual(ours["bad JWT"][0], {"type": "login", "ms_requestId": 10, "message": {
            "error": "Invalid JWT: Error: Signature verification failed"}})


class LinkCorrelationTests(TestCase):
    """QEWD.js's master keeps one reply callback per type per micro-service connection, so two
    overlapping logins cross (peer README, surprise 3). Our link to a QEWD.js remote sends
    one request at a time (the remote echoes no id on intermediate frames), so each client
    gets its own frames; to our nodes it sends them all at once, correlated by id."""

    timeout = 60

    def setUp(self) -> None:
        require_peer(self)

    @defer.inlineCallbacks
    def _two_logins_at_once(self, master):
        (a, token_a), (b, token_b) = yield defer.gatherResults([
            defer.ensureDeferred(connect(self, master)),
            defer.ensureDeferred(connect(self, master))])
        frames_a, frames_b = yield defer.gatherResults([
            defer.ensureDeferred(request(a, login(token_a))),
            defer.ensureDeferred(request(b, {"type": "login", "token": token_b,
                                             "params": {"username": "bob", "password": "x"}}))])
        self.assertEqual([f["message"].get("username") for f in frames_a[:1]], ["rob"])
        self.assertIs(frames_a[-1]["message"]["ok"], True)
        session = master.tokens.session(frames_a[-1]["message"]["token"])
        self.assertEqual(session["socketId"], master.tokens.session(token_a)["socketId"])
        self.assertEqual([f["message"].get("username") for f in frames_b[:1]], ["bob"])
        self.assertEqual(frames_b[-1]["message"], {"error": "Invalid login"})

    @defer.inlineCallbacks
    def test_qewd_remote_one_at_a_time(self):
        master = start_master(self, http_url(PEER_MS))
        link = yield master.micro_services.links[http_url(PEER_MS)].when_up()
        self.assertFalse(link.echoes_request_ids)
        yield self._two_logins_at_once(master)

    @defer.inlineCallbacks
    def test_our_remote_all_at_once(self):
        ms = start_node(self, moduleMap={"test-app": "tests.apps.demo"})
        url = http_url(("127.0.0.1", ms.ports[0].getHost().port))
        master = start_master(self, url)
        link = yield master.micro_services.links[url].when_up()
        self.assertTrue(link.echoes_request_ids)
        yield self._two_logins_at_once(master)
