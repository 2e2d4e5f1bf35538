# -*- test-case-name: tests.interop.test_reconnect -*-
"""
Links heal across runtimes (issue 4 item 4), with processes of our own on free ports:

- a QEWD.js micro-service stopped and restarted under our master: our link answers 503s
  meanwhile, reconnects and re-registers by itself (logs ``link <url>: re-registered`` and
  ``link <url> up``), and the same client socket logs in again;
- our micro-service (a real ``twistd qewd`` process) stopped and restarted under a QEWD.js
  master: QEWD.js answers its own type-less 503 meanwhile, reconnects, logs ``Re-registered``
  (our node accepted its ``ewd-reregister``), and its client logs in again.

Every wait is on a log line or a frame; nothing sleeps.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.processes import TwistdProcess, write_startup
from tests.interop.peer import (
    EXAMPLE,
    SECRET,
    JSClient,
    LogWatcher,
    connect,
    reserve_port,
    http_url,
    login,
    request,
    require_peer,
    start_master,
    start_peer_master,
    start_peer_ms,
)

MS_DOWN = {"error": "MicroService connection is down", "status": {"code": 503}}


class QEWDMicroServiceRestartTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    @defer.inlineCallbacks
    def test_qewd_ms_restart_under_our_master(self):
        log = LogWatcher(self)
        port = reserve_port(self)
        url = http_url(("127.0.0.1", port))
        ms, ready = start_peer_ms(self, port)
        yield ready
        master = start_master(self, url)
        yield log.wait_for(f"link {url} up", since=0)
        c, token = yield defer.ensureDeferred(connect(self, master))
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertIs(frames[-1]["message"]["ok"], True)

        down = log.wait_for(f"link {url} down")
        yield ms.stop()  # SIGTERM: QEWD.js stops its workers, then exits
        yield down
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertEqual(frames, [{"type": "login", "finished": True, "message": MS_DOWN,
                                   "responseTime": frames[0]["responseTime"]}])

        mark = log.mark()
        _ms2, ready = start_peer_ms(self, port)
        yield ready
        yield log.wait_for(f"link {url}: re-registered", since=mark)
        yield log.wait_for(f"link {url} up", since=mark)
        frames = yield defer.ensureDeferred(request(c, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        session = master.tokens.session(frames[-1]["message"]["token"])
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))


class PythonMicroServiceRestartTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        require_peer(self, spawn=True)

    @defer.inlineCallbacks
    def test_our_ms_restart_under_qewd_master(self):
        port, master_port = reserve_port(self), reserve_port(self)
        startup = write_startup(self, repr({
            "listen": f"tcp:{port}:interface=127.0.0.1",
            "jwt": {"secret": SECRET},
            "moduleMap": {"test-app": os.path.join(EXAMPLE, "test_app.py")},
        }))
        ours = TwistdProcess(self, startup)
        listening = ours.wait_for("started: listening")
        ours.start()
        yield listening
        master, ready = start_peer_master(self, master_port, http_url(("127.0.0.1", port)))
        yield ready
        client = JSClient(self, f"http://127.0.0.1:{master_port}").start()
        yield client.ready
        client.emit({"type": "ewd-register", "application": "jwt", "jwt": True})
        token = (yield client.message())["message"]["token"]
        frames = yield defer.ensureDeferred(request(client, login(token)))
        self.assertIs(frames[-1]["message"]["ok"], True)

        disconnected = master.wait_for("server has disconnected socket")
        yield ours.signal("TERM")  # graceful: closes the QEWD.js master's socket (1001)
        yield disconnected
        frames = yield defer.ensureDeferred(request(client, login(token)))
        self.assertEqual(len(frames), 1)  # QEWD.js's own 503 has no type (PROTOCOL.md §1.4)
        self.assertEqual(frames[0]["message"], MS_DOWN)
        self.assertNotIn("type", frames[0])

        reregistered = master.wait_for("Re-registered")
        again = TwistdProcess(self, startup)
        listening = again.wait_for("started: listening")
        again.start()
        yield listening
        yield reregistered  # socket.io-client reconnected; our node accepted the reregister
        frames = yield defer.ensureDeferred(request(client, login(token)))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        new_token = frames[-1]["message"]["token"]
        frames = yield defer.ensureDeferred(request(client, {
            "type": "test", "token": new_token, "params": {"text": "after restart"}}))
        self.assertEqual(frames[-1]["message"]["text"], "You sent: after restart")
        yield again.signal("TERM")
