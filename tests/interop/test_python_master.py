# -*- test-case-name: tests.interop.test_python_master -*-
"""
Our master in front of a real QEWD.js micro-service node (issue 4 item 1).

Our master routes application ``jwt`` types ``login``, ``msNoHandler`` and ``crash`` to the
peer's ``test-app`` (docs/protocol.md §4.4). A client of our master logs in, gets the peer's
intermediate and final frames, and a token that verifies and decrypts here. Errors from the
QEWD.js micro-service reach our client; QEWD.js's own master loses every one of them (§4.4 item
8), which ``QEWDMasterLosesErrorsTests`` shows on the same peer code.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.interop.peer import (
    CLOSED_CHANNEL_ERRORS,
    CRASH_TEXT,
    PEER_MS,
    WORKER_GONE,
    LogWatcher,
    claims,
    connect,
    eio_url,
    reserve_port,
    http_url,
    login,
    register,
    request,
    require_peer,
    start_master,
    start_peer_master,
    start_peer_ms,
)
from tests.wsclient import EIOClient


class PythonMasterToQEWDMicroServiceTests(TestCase):
    """Our master, the peer's running micro-service node (``QEWD_PEER_MS``)."""

    timeout = 60

    def setUp(self) -> None:
        require_peer(self)
        self.ms_url = http_url(PEER_MS)
        self.master = start_master(self, self.ms_url)
        self.link = self.master.micro_services.links[self.ms_url]

    @defer.inlineCallbacks
    def test_login_rob_secret(self):
        """The peer's intermediate and final frames reach our client; the token it minted (we
        only rewrite ``application`` back) verifies here with ``username`` and
        ``authenticated`` as secret claims, and our local handler accepts it."""
        yield self.link.when_up()
        self.assertFalse(self.link.echoes_request_ids)  # a QEWD.js remote: one at a time
        c, token = yield defer.ensureDeferred(connect(self, self.master))
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials",
                                                "username": "rob"})
        for frame in frames:
            self.assertNotIn("ms_requestId", frame)
            self.assertNotIn("ms_requestId", frame["message"])
            self.assertRegex(frame["responseTime"], r"^\d+ms$")
        self.assertIs(frames[1]["message"]["ok"], True)
        new_token = frames[1]["message"]["token"]

        session = self.master.tokens.session(new_token)  # verifies and decrypts
        self.assertEqual(session["application"], "jwt")  # test-app on the peer, back to jwt
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(session["userText"], "Rob")
        self.assertEqual(session["timeout"], 60)  # the peer's test-app sets 60 (ours: 1200)
        self.assertEqual(session["socketId"],
                         self.master.tokens.session(token)["socketId"])
        public = claims(new_token)
        self.assertEqual(list(public)[:6], ["exp", "iat", "iss", "application", "timeout", "qewd"])
        self.assertNotIn("username", public)  # secret: only inside the encrypted qewd claim
        self.assertNotIn("authenticated", public)
        self.assertEqual(public["userText"], "Rob")  # not made secret: public
        self.assertEqual(public["exp"] - public["iat"], 60)

        # the token works for our master's local handler, which needs authenticated
        frames = yield defer.ensureDeferred(request(c, {
            "type": "test", "token": new_token, "params": {"text": "hi"}}))
        self.assertEqual(frames[-1]["message"]["text"], "You sent: hi")
        self.assertEqual(frames[-1]["message"]["username"], "rob")

    @defer.inlineCallbacks
    def test_wrong_password_gets_invalid_login(self):
        """The peer's ``Invalid login`` reaches our client under its request type, with no
        token (QEWD.js's own master loses it: see QEWDMasterLosesErrorsTests)."""
        yield self.link.when_up()
        c, token = yield defer.ensureDeferred(connect(self, self.master))
        frames = yield defer.ensureDeferred(request(c, login(token, "wrong")))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertEqual(frames[1]["message"], {"error": "Invalid login"})
        # still not logged in here
        frames = yield defer.ensureDeferred(request(c, {"type": "test", "token": token}))
        self.assertEqual(frames[-1]["message"], {"error": "You must be logged in"})


    @defer.inlineCallbacks
    def test_typed_intermediate_is_relayed(self):
        """The peer's ``send({type: X, ...})`` frame has no ``ms_requestId``; with one request
        in flight our link can still tell whose it is, and relays it under its own type
        (QEWD.js's master drops it: docs/protocol.md §4.4 item 7, peer README surprise 2)."""
        yield self.link.when_up()
        c, token = yield defer.ensureDeferred(connect(self, self.master))
        message = login(token)
        message["params"]["progressType"] = "loginProgress"
        frames = yield defer.ensureDeferred(request(c, message))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("loginProgress", False), ("login", True)])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials",
                                                "username": "rob"})

    @defer.inlineCallbacks
    def test_secret_mismatch_reaches_our_client(self):
        """A master whose secret differs from the peer's: the peer's own master-level JWT
        rejection (no ``finished``, no ``ms_requestId``) comes back to our client under the
        request's type."""
        master = start_master(self, self.ms_url, jwt={"secret": "not-the-peer-secret"})
        yield master.micro_services.links[self.ms_url].when_up()
        c, token = yield defer.ensureDeferred(connect(self, master))
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0]["type"], "login")
        self.assertEqual(frames[0]["message"]["error"],
                         "Invalid JWT: Error: Signature verification failed")


class QEWDMicroServiceErrorsTests(TestCase):
    """``msNoHandler`` and ``crash`` on a QEWD.js micro-service of our own (a crash kills a
    peer worker, so these never touch the shared peer)."""

    timeout = 60

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    @defer.inlineCallbacks
    def _pair(self, **config: Any):
        self.ms_port = port = reserve_port(self)
        ms, ready = start_peer_ms(self, port)
        yield ready
        master = start_master(self, http_url(("127.0.0.1", port)), **config)
        link = master.micro_services.links[http_url(("127.0.0.1", port))]
        yield link.when_up()
        return ms, master, link

    @defer.inlineCallbacks
    def test_errors_reach_our_client(self):
        """``Handler not defined...`` (sent without ``ms_requestId``) and the crash frame
        ``{type: "error", message: "<text>"}`` (also without it) both reach our client as a
        final error under the request's own type; the link goes on working."""
        ms, master, link = yield self._pair()
        c, token = yield defer.ensureDeferred(connect(self, master))
        frames = yield defer.ensureDeferred(request(c, login(token)))
        token = frames[-1]["message"]["token"]

        frames = yield defer.ensureDeferred(request(c, {"type": "msNoHandler", "token": token,
                                                        "params": {}}))
        self.assertEqual(len(frames), 1)
        self.assertEqual((frames[0]["type"], frames[0]["finished"]), ("msNoHandler", True))
        self.assertEqual(frames[0]["message"],
                         {"error": "Handler not defined for test-app messages of type "
                                   "msNoHandler"})

        gone = ms.wait_for(WORKER_GONE)
        frames = yield defer.ensureDeferred(request(c, {"type": "crash", "token": token,
                                                        "params": {}}))
        self.assertEqual(len(frames), 1)
        self.assertEqual((frames[0]["type"], frames[0]["finished"]), ("crash", True))
        self.assertEqual(frames[0]["message"], {"error": CRASH_TEXT})
        yield gone  # the peer forks a new worker on demand once the old one has exited

        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertIs(frames[-1]["message"]["ok"], True)
        self.assertTrue(link.is_up)

    @defer.inlineCallbacks
    def test_request_right_after_a_crash(self):
        """A request that reaches the QEWD.js micro-service just after a crash may never be
        answered: its master marks the crashed worker available on the error frame and can
        hand it the next request before the worker's exit is seen (ewd-qoper8's startWorker;
        docs/protocol.md §5.4 does not say so). Our link sends a queued request the moment the
        crash frame arrives, so it meets exactly that window. The client always gets an
        answer: the reply if the peer's exit won the race (at once, or after the peer forks a
        new worker), else our deadline's 504; the link then waits ``resync_after`` for a late
        final frame and reconnects to start clean, and the next login works.

        The third outcome is the peer's own crash: when the worker's IPC channel has closed
        but its exit has not been seen, ewd-qoper8's ``sendRequestToWorker`` calls
        ``worker.send`` without a callback and with no ``error`` listener, so Node.js throws
        ``ERR_IPC_CHANNEL_CLOSED`` (or, when the write lands later in the worker's exit, an
        unhandled ``EPIPE``) and the micro-service process exits.
        Our link is dropped and the client gets the 503 "MicroService connection is down"
        (docs/errors.md), which is the right answer: the link comes back once a micro-service
        listens on that port again."""
        log = LogWatcher(self)
        ms, master, link = yield self._pair(microServiceTimeout=10)
        c, token = yield defer.ensureDeferred(connect(self, master))
        frames = yield defer.ensureDeferred(request(c, login(token)))
        token = frames[-1]["message"]["token"]

        mark = log.mark()
        c.emit({"type": "crash", "token": token, "params": {}})
        c.emit(login(token))  # queued on our link behind the crash (QEWD.js remote)
        crashed = yield defer.ensureDeferred(c.message())
        self.assertEqual((crashed["type"], crashed["message"]), ("crash", {"error": CRASH_TEXT}))
        first = yield defer.ensureDeferred(c.message())
        self.assertEqual(first["type"], "login")
        if first["message"].get("status") == {"code": 504}:
            # lost in the dying worker: our deadline answered it
            self.assertEqual(first["message"]["error"], "MicroService request timed out")
            # a final frame that comes late unblocks the link; none at all: it reconnects
            yield defer.DeferredList([log.wait_for("re-registered", since=mark),
                                      log.wait_for("expired request", since=mark)],
                                     fireOnOneCallback=True, consumeErrors=True)
            yield link.when_up()
        elif first["message"].get("status") == {"code": 503}:
            # the peer micro-service itself died of the send to the closed channel
            self.assertEqual(first["message"]["error"], "MicroService connection is down")
            yield ms.ended
            self.assertTrue(any(e in ms.output for e in CLOSED_CHANNEL_ERRORS), ms.output[-3000:])
            _ms, ready = start_peer_ms(self, self.ms_port)  # the same (reserved) port
            yield ready
            yield link.when_up()
        else:
            self.assertEqual((first["finished"], first["message"]),
                             (False, {"text": "checking credentials", "username": "rob"}))
            final = yield defer.ensureDeferred(c.message())
            self.assertIs(final["message"]["ok"], True)
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertIs(frames[-1]["message"]["ok"], True)


class QEWDMasterLosesErrorsTests(TestCase):
    """The same errors through QEWD.js's own master (ours, started for this test, in front of
    our own peer micro-service): its socket client hands every ``message.error`` frame that
    has no ``ms_requestId`` to a ``restRequest`` event nobody listens to (§4.4 item 8). The
    client hears nothing; the next request's frames are the next thing it gets."""

    timeout = 60

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    @defer.inlineCallbacks
    def test_qewd_master_drops_ms_errors(self):
        ms_port, master_port = reserve_port(self), reserve_port(self)
        ms, ms_ready = start_peer_ms(self, ms_port)
        yield ms_ready
        peer_master, ready = start_peer_master(self, master_port,
                                               http_url(("127.0.0.1", ms_port)))
        yield ready
        c = EIOClient(eio_url(("127.0.0.1", master_port)))
        self.addCleanup(c.close)
        token = yield defer.ensureDeferred(register(c))
        lost = "Emitting error as restRequest: "

        # wrong password: the intermediate arrives, the final error is dropped
        dropped = peer_master.wait_for(
            lost + '{"type":"login","finished":true,"message":{"error":"Invalid login"}')
        c.emit(login(token, "wrong"))
        first = yield defer.ensureDeferred(c.message())
        self.assertEqual((first["type"], first["finished"]), ("login", False))
        yield dropped

        dropped = peer_master.wait_for(lost + '{"type":"msNoHandler","finished":true,'
                                       '"message":{"error":"Handler not defined for test-app '
                                       'messages of type msNoHandler"}')
        c.emit({"type": "msNoHandler", "token": token, "params": {}})
        yield dropped

        dropped = peer_master.wait_for(lost + '{"message":{"error":"' + CRASH_TEXT + '"}}')
        gone = ms.wait_for(WORKER_GONE)
        c.emit({"type": "crash", "token": token, "params": {}})
        yield dropped
        yield gone

        # nothing came for the three; the next login's frames are the next frames
        self.assertEqual(c.frames.pending, [])
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertIs(frames[-1]["message"]["ok"], True)
