# test-case-name: tests.integration.test_microservices
"""
Forwarding application/type pairs to micro-service nodes, end to end on loopback
(PROTOCOL.md §4.2-§4.4, DESIGN.md's fix list): relays of intermediate and final frames with the
token's application rewritten, errors that QEWD.js would lose, 503 and 504, chaining, and per-
request correlation under 200 concurrent users.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.apps import users
from tests.fixtures import log_in
from tests.integration.nodes import SECRET, ClockedReactor, eio_url, port_of, start_node
from tests.wsclient import EIOClient


def start_ms(test: TestCase, **config: Any):
    config.setdefault("moduleMap", {"test-app": "tests.apps.users"})
    config.setdefault("handlerTimeout", 120)
    return start_node(test, **config)


def start_master(test: TestCase, ms, types=("login", "typed", "crash", "wait", "silent",
                                              "nohandler"), **config: Any):
    url = f"http://127.0.0.1:{port_of(ms)}"
    config.setdefault("moduleMap", {"jwt": "tests.apps.jwt_app"})
    config.setdefault("u_services", [{"application": "jwt", "types": {
        t: {"url": url, "application": "test-app"} for t in types}}])
    return start_node(test, **config)


async def link_up(master) -> None:
    for link in master.micro_services:
        await link.whenUp() if hasattr(link, "whenUp") else await link.when_up()


async def client(test: TestCase, node, application: str = "jwt") -> tuple[EIOClient, str]:
    c = EIOClient(eio_url(node))
    test.addCleanup(c.close)
    await c.handshake()
    c.emit({"type": "ewd-register", "application": application, "jwt": True})
    reply = await c.message()
    return c, reply["message"]["token"]


async def login(c: EIOClient, token: str, username: str = "user-1",
                password: str | None = None) -> list[dict]:
    """tests/apps/users.py's login (password: the name reversed) with the shared client
    helper (tests/fixtures.py)."""
    return await log_in(c, token, username, password or username[::-1])


class ForwardingTests(TestCase):
    async def _pair(self, **master_config):
        ms = start_ms(self)  # on the real clock
        master = start_master(self, ms, **master_config)
        await link_up(master)
        return ms, master

    @defer.inlineCallbacks
    def test_login_through_master(self):
        """The seed's scenario: intermediate + final relayed, token now carries the identity."""
        ms, master = yield defer.ensureDeferred(self._pair())
        c, token = yield defer.ensureDeferred(client(self, master))
        frames = yield defer.ensureDeferred(login(c, token, "rob-1"))
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("login", False), ("login", True)])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials",
                                                "username": "rob-1"})
        self.assertNotIn("ms_requestId", frames[0])
        self.assertNotIn("ms_requestId", frames[1]["message"])
        self.assertRegex(frames[1]["responseTime"], r"^\d+ms$")
        new_token = frames[1]["message"]["token"]
        session = master.tokens.session(new_token)
        self.assertEqual(session["application"], "jwt")  # rewritten back for the client
        self.assertEqual((session["username"], session["authenticated"]), ("rob-1", True))
        self.assertEqual(session["socketId"], master.tokens.session(token)["socketId"])
        self.assertEqual(session["timeout"], 1200)
        # later messages to the master see that identity
        c.emit({"type": "test", "token": new_token, "params": {"text": "hi"}})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["username"], "rob-1")
        self.assertEqual(reply["message"]["text"], "You sent: hi")

    @defer.inlineCallbacks
    def test_not_logged_in_locally(self):
        ms, master = yield defer.ensureDeferred(self._pair())
        c, token = yield defer.ensureDeferred(client(self, master))
        c.emit({"type": "test", "token": token})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"], {"error": "You must be logged in"})

    @defer.inlineCallbacks
    def test_errors_reach_the_client_with_the_request_type(self):
        """QEWD.js drops all of these on the master (§4.4 item 8, peer README surprises 1)."""
        ms, master = yield defer.ensureDeferred(self._pair())
        c, token = yield defer.ensureDeferred(client(self, master))
        frames = yield defer.ensureDeferred(login(c, token, "user-2", "wrong"))
        self.assertEqual(frames[-1]["type"], "login")
        self.assertEqual(frames[-1]["message"]["error"], "Invalid login")
        self.assertNotIn("token", frames[-1]["message"])
        c.emit({"type": "crash", "token": token})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual((reply["type"], reply["finished"]), ("crash", True))
        self.assertEqual(reply["message"], {"error": "micro-service handler failed"})
        self.flushLoggedErrors(RuntimeError)
        c.emit({"type": "nohandler", "token": token})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["type"], "nohandler")
        self.assertEqual(reply["message"]["error"],
                         "Handler not defined for test-app messages of type nohandler")

    @defer.inlineCallbacks
    def test_typed_intermediate_is_relayed(self):
        """§4.4 item 7: QEWD.js drops intermediate frames with their own type."""
        ms, master = yield defer.ensureDeferred(self._pair())
        c, token = yield defer.ensureDeferred(client(self, master))
        c.emit({"type": "typed", "token": token})
        first = yield defer.ensureDeferred(c.message())
        second = yield defer.ensureDeferred(c.message())
        self.assertEqual((first["type"], first["finished"], first["message"]),
                         ("loginProgress", False, {"step": 1}))
        self.assertEqual((second["type"], second["finished"]), ("typed", True))

    @defer.inlineCallbacks
    def test_remote_jwt_rejection_reaches_client(self):
        ms = start_ms(self, jwt={"secret": "a-different-secret"})
        master = start_master(self, ms)
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(client(self, master))
        c.emit({"type": "login", "token": token, "params": {}})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["type"], "login")
        self.assertEqual(reply["message"]["error"],
                         "Invalid JWT: Error: Signature verification failed")

    @defer.inlineCallbacks
    def test_remote_silent_times_out_504(self):
        """microServiceTimeout on the master's clock: the silent request reaches it when the
        test says so; the login after it never does, however slow the machine."""
        clocked = ClockedReactor()
        ms, master = yield defer.ensureDeferred(self._pair(microServiceTimeout=5,
                                                           reactor=clocked))
        c, token = yield defer.ensureDeferred(client(self, master))
        c.emit({"type": "silent", "token": token})
        running = yield defer.ensureDeferred(c.message())  # in flight: its deadline is set
        self.assertEqual((running["finished"], running["message"]), (False, {"silent": True}))
        clocked.clock.advance(5)
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["type"], "silent")
        self.assertEqual(reply["message"]["error"], "MicroService request timed out")
        self.assertEqual(reply["message"]["status"], {"code": 504})
        # the link stays usable
        frames = yield defer.ensureDeferred(login(c, token, "user-3"))
        self.assertIs(frames[-1]["message"]["ok"], True)


class LinkFailureTests(TestCase):
    @defer.inlineCallbacks
    def test_down_gives_503_with_type_and_in_flight_fail_at_once(self):
        users.release.hold(self)
        ms = start_ms(self)
        master = start_master(self, ms)
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(client(self, master))
        c.emit({"type": "wait", "token": token})
        running = yield defer.ensureDeferred(c.message())  # the handler is running on the MS
        self.assertEqual(running["message"], {"waiting": True})
        # the micro-service goes away with the request in flight
        for conn in list(ms.node.connections.values()):
            conn.close(4000, "test: drop the link")
        yield ms.stopService()
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["type"], "wait")
        self.assertEqual(reply["message"], {"error": "MicroService connection is down",
                                            "status": {"code": 503}})
        c.emit({"type": "login", "token": token, "params": {}})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual((reply["type"], reply["finished"]), ("login", True))
        self.assertEqual(reply["message"]["status"], {"code": 503})


class ChainingTests(TestCase):
    @defer.inlineCallbacks
    def test_remote_that_forwards_again(self):
        """master (jwt) -> middle (test-app) -> last (final-app): frames come back two hops."""
        last = start_node(self, moduleMap={"final-app": "tests.apps.users"})
        middle = start_node(self, moduleMap={}, u_services=[{
            "application": "test-app",
            "types": {"login": {"url": f"http://127.0.0.1:{port_of(last)}",
                                "application": "final-app"}}}])
        master = start_master(self, middle, types=("login",))
        yield defer.ensureDeferred(link_up(middle))
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(client(self, master))
        frames = yield defer.ensureDeferred(login(c, token, "chain-user"))
        self.assertEqual([f["finished"] for f in frames], [False, True])
        session = master.tokens.session(frames[-1]["message"]["token"])
        self.assertEqual((session["application"], session["username"]), ("jwt", "chain-user"))


class CorrelationTests(TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_200_users_same_type_at_once(self):
        """Issue 3 item 5: every client gets exactly its own replies and its own token."""
        n = 200
        ms = start_ms(self, poolSize=8)
        master = start_master(self, ms)
        yield defer.ensureDeferred(link_up(master))
        clients = yield defer.gatherResults([
            defer.ensureDeferred(client(self, master)) for _ in range(n)])
        results = yield defer.gatherResults([
            defer.ensureDeferred(login(c, token, f"user-{i}"))
            for i, (c, token) in enumerate(clients)])
        for i, frames in enumerate(results):
            name = f"user-{i}"
            self.assertEqual([f["finished"] for f in frames], [False, True], name)
            self.assertEqual(frames[0]["message"]["username"], name)
            self.assertEqual(frames[1]["message"]["username"], name)
            session = master.tokens.session(frames[1]["message"]["token"])
            self.assertEqual(session["username"], name)
            own = master.tokens.session(clients[i][1])["socketId"]
            self.assertEqual(session["socketId"], own)
        # nothing duplicated or left over: every client's queue is empty
        for c, _ in clients:
            self.assertEqual(len(c.frames.pending), 0)


_ = SECRET
