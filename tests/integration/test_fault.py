# test-case-name: tests.integration.test_fault
"""
Issue 3 item 8, with real processes: a master and a micro-service run as ``twistd`` nodes; the
micro-service is killed with SIGKILL mid-request and restarted. Meanwhile the client gets 503s;
the master reconnects and re-registers by itself; requests work again on the same client socket.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.processes import TwistdProcess, write_startup
from tests.ports import reserve_port
from tests.wsclient import EIOClient


class KillMicroServiceTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_kill_9_and_restart(self):
        ms_port, master_port = reserve_port(self), reserve_port(self)
        ms_startup = write_startup(self, repr({
            "listen": f"tcp:{ms_port}:interface=127.0.0.1",
            "jwt": {"secret": "fault-test"},
            "moduleMap": {"test-app": "tests.apps.users"},
        }))
        master_startup = write_startup(self, repr({
            "listen": f"tcp:{master_port}:interface=127.0.0.1",
            "jwt": {"secret": "fault-test"},
            "moduleMap": {"jwt": "tests.apps.jwt_app"},
            "u_services": [{"application": "jwt", "types": {
                t: {"url": f"http://127.0.0.1:{ms_port}", "application": "test-app"}
                for t in ("login", "wait")}}],
        }))
        ms = TwistdProcess(self, ms_startup).start()
        yield ms.wait_for("started: listening")
        master = TwistdProcess(self, master_startup)
        up = master.wait_for("up (remote echoes request ids: True)")
        master.start()
        yield up

        c = EIOClient(f"ws://127.0.0.1:{master_port}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "jwt", "jwt": True})
        token = (yield defer.ensureDeferred(c.message()))["message"]["token"]

        def login(name):
            c.emit({"type": "login", "token": token,
                    "params": {"username": name, "password": name[::-1]}})

        login("before")
        self.assertEqual((yield defer.ensureDeferred(c.message()))["finished"], False)
        final = yield defer.ensureDeferred(c.message())
        self.assertIs(final["message"]["ok"], True)

        # a request in flight on the micro-service when it dies
        c.emit({"type": "wait", "token": token})
        running = yield defer.ensureDeferred(c.message())
        self.assertEqual(running["message"], {"waiting": True})
        down = master.wait_for(" down: ")
        yield ms.signal("KILL")
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["type"], "wait")
        self.assertEqual(reply["message"], {"error": "MicroService connection is down",
                                            "status": {"code": 503}})
        yield down
        # while it is down: an immediate 503 with the request's type
        login("during")
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual((reply["type"], reply["message"]["status"]), ("login", {"code": 503}))

        # restart: the master reconnects and re-registers with its refreshed token by itself
        reregistered = master.wait_for("re-registered")
        ms2 = TwistdProcess(self, ms_startup).start()
        yield ms2.wait_for("started: listening")
        yield reregistered
        login("after")
        mid = yield defer.ensureDeferred(c.message())
        self.assertEqual(mid["message"]["username"], "after")
        final = yield defer.ensureDeferred(c.message())
        self.assertEqual(final["message"]["username"], "after")
        self.assertIn("token", final["message"])
        yield ms2.signal("TERM")
        yield master.signal("TERM")
