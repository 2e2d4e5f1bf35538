# -*- test-case-name: tests.interop.test_peer_master -*-
"""
A real QEWD.js master in front of our micro-service node (issue 4 item 2).

Each test starts its own QEWD.js master (the peer's master/qewd-jwt.js, ``QEWD_MS_URL`` pointed
at our node) and waits for its ``micro-service ready`` line. QEWD.js's own client library
(socket.io-client 2.x, tests/interop/js/sio_driver.js) registers with that master and logs in;
the master routes ``login`` to our ``test-app`` (examples/jwt/test_app.py). The token our node
mints comes back through QEWD.js, which decrypts our secret claims on its next ``test``
message. Our error replies are dropped by the QEWD.js master (PROTOCOL.md §4.4 item 8): the
tests follow the peer and show the drop in its own log.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.nodes import port_of, start_node
from tests.interop.peer import (
    EXAMPLE,
    JSClient,
    reserve_port,
    http_url,
    login,
    request,
    require_peer,
    start_peer_master,
)

DROPPED = "Emitting error as restRequest: "  # QEWD.js socketClient.js, before the drop


class QEWDMasterToPythonMicroServiceTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    @defer.inlineCallbacks
    def _mesh(self, module_map: dict[str, str]):
        """Our micro-service node, a QEWD.js master routing to it, and a socket.io-client
        registered with that master; returns (our node, master process, client, token)."""
        ms = start_node(self, base_dir=EXAMPLE, moduleMap=module_map, handlerTimeout=20)
        ms_url = http_url(("127.0.0.1", port_of(ms)))
        master_port = reserve_port(self)
        master, ready = start_peer_master(self, master_port, ms_url)
        yield ready  # it registered with our node
        client = JSClient(self, f"http://127.0.0.1:{master_port}").start()
        yield client.ready
        client.emit({"type": "ewd-register", "application": "jwt", "jwt": True})
        reply = yield client.message()
        self.assertEqual(reply["type"], "ewd-register")
        return ms, master, client, reply["message"]["token"]

    @defer.inlineCallbacks
    def test_login_and_test_through_qewd_master(self):
        """Our intermediate and final replies reach QEWD.js's client through QEWD.js's master;
        the token (ours, its ``application`` rewritten by QEWD.js) is accepted by QEWD.js's
        ``test`` handler, whose beforeHandler needs the ``authenticated`` secret claim we
        encrypted."""
        ms, _master, client, token = yield self._mesh({"test-app": "test_app.py"})
        frames = yield defer.ensureDeferred(request(client, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials",
                                                "username": "rob"})
        self.assertRegex(frames[1]["responseTime"], r"^\d+ms$")
        self.assertIs(frames[1]["message"]["ok"], True)
        new_token = frames[1]["message"]["token"]
        session = ms.tokens.session(new_token)
        self.assertEqual(session["application"], "jwt")  # QEWD.js rewrote test-app back
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(session["timeout"], 1200)  # our test_app.py's value (the peer's: 60)

        # an intermediate frame with its own type: QEWD.js's master drops it (§4.4 item 7),
        # so the final frame is the first to come
        message = login(new_token)
        message["params"]["progressType"] = "loginProgress"
        frames = yield defer.ensureDeferred(request(client, message))
        self.assertEqual([(f["type"], f["finished"]) for f in frames], [("login", True)])
        new_token = frames[0]["message"]["token"]

        frames = yield defer.ensureDeferred(request(client, {
            "type": "test", "token": new_token, "params": {"text": "hi"}}, broadcasts=True))
        self.assertIn({"test": "message 2"}, frames)  # apps/jwt.js's toAll broadcast
        self.assertEqual((frames[-1]["type"], frames[-1]["finished"]), ("test", True))
        self.assertEqual(frames[-1]["message"]["text"], "You sent: hi")
        # the token QEWD.js issued for it carries our secret claims, plus its own
        session = ms.tokens.session(frames[-1]["message"]["token"])
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(session["xxx"], "Test data")
        self.assertTrue(session.is_secret("xxx"))

    @defer.inlineCallbacks
    def test_qewd_master_drops_our_errors(self):
        """``Invalid login``, a missing handler and a crash: our node answers each (with the
        request's type; the crash as QEWD's ``{type: "error", message: "<text>"}``), and the
        QEWD.js master logs each as "Emitting error as restRequest" and drops it. The client
        gets nothing for them; the next login's frames are the next frames it gets."""
        _ms, master, client, token = yield self._mesh({"test-app": "tests.apps.demo"})

        dropped = master.wait_for(
            DROPPED + '{"type":"login","finished":true,"message":{"error":"Invalid login"}')
        client.emit(login(token, "wrong"))
        first = yield client.message()
        self.assertEqual((first["type"], first["finished"]), ("login", False))
        yield dropped

        dropped = master.wait_for(
            DROPPED + '{"type":"msNoHandler","finished":true,"message":{"error":"Handler not '
                      'defined for test-app messages of type msNoHandler"}')
        client.emit({"type": "msNoHandler", "token": token, "params": {}})
        yield dropped

        dropped = master.wait_for(
            DROPPED + '{"message":{"error":"\'NoneType\' object has no attribute \'boom\'"}}')
        client.emit({"type": "crash", "token": token, "params": {}})
        yield dropped
        self.flushLoggedErrors(AttributeError)  # our node logs the handler's exception

        self.assertEqual(client.pending, [])
        frames = yield defer.ensureDeferred(request(client, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertIs(frames[-1]["message"]["ok"], True)

