# test-case-name: tests.test_node
"""
The node's routing and reply shapes, in memory (docs/protocol.md §1.4, §2, §5).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors as E
from qewd_twisted.apps.modules import on_reactor
from qewd_twisted.core.interfaces import LinkOutcome
from qewd_twisted.testing import NodeHarness
from tests.fixtures import RecordingLink, make_login


def app(**exports: Any) -> SimpleNamespace:
    return SimpleNamespace(**exports)


login = make_login(timeout=1200)  # the shared fixture (tests/fixtures.py)


def echo(messageObj, session, send, finished):
    finished({"you sent": messageObj.get("params")})


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = NodeHarness({"demo": app(handlers={"login": login, "echo": echo})})
        self.c = self.h.connect()

    def register(self, conn=None, application="demo") -> str:
        return self.h.register(conn or self.c, application)


class RegisterTests(Base):
    def test_jwt_register(self) -> None:
        """§2.2: the reply carries a QEWD JWT whose secret claims hold the socket."""
        frames = self.h.send(self.c, {"type": "ewd-register", "application": "demo", "jwt": True})
        self.assertEqual(len(frames), 1)
        f = frames[0]
        self.assertEqual(f["type"], "ewd-register")
        self.assertIs(f["finished"], True)
        self.assertRegex(f["responseTime"], r"^\d+ms$")
        session = self.h.tokens.session(f["message"]["token"])
        self.assertEqual(session["application"], "demo")
        self.assertEqual(session["timeout"], 300)
        self.assertEqual(session["socketId"], self.c.id)
        self.assertEqual(session["ipAddress"], "127.0.0.1")
        self.assertIs(session["authenticated"], False)
        self.assertTrue(session.is_secret("socketId"))
        self.assertTrue(self.c.jwt)

    def test_session_register(self) -> None:
        """§2.1: session-token mode gives a uuid and keeps the session server-side."""
        token = self.h.register(self.c, "demo", jwt=False)
        self.assertRegex(token, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        self.assertEqual(self.h.sessions.get(token).application, "demo")

    def test_jwt_register_without_jwt_support(self) -> None:
        h = NodeHarness({"demo": app(handlers={})}, jwt_secret=None)
        frames = h.send(h.connect(), {"type": "ewd-register", "application": "demo", "jwt": True})
        self.assertEqual(frames[0]["message"], {"error": E.NO_JWT_SUPPORT, "disconnect": True})

    def test_register_bad_application(self) -> None:
        for bad in (None, "", 3, ["x"]):
            frames = self.h.send(self.c, {"type": "ewd-register", "application": bad, "jwt": True})
            self.assertEqual(frames[0]["message"]["error"], E.BAD_APPLICATION)

    def test_capability_echo_only_when_asked(self) -> None:
        f = self.h.send(self.c, {"type": "ewd-register", "application": "demo", "jwt": True})[0]
        self.assertNotIn("qewd_twisted", f["message"])
        f = self.h.send(self.c, {"type": "ewd-register", "application": "demo", "jwt": True,
                                 "qewd_twisted": 1})[0]
        self.assertEqual(f["message"]["qewd_twisted"], 1)


class ReregisterTests(Base):
    def test_jwt_reregister_updates_socket(self) -> None:
        """§2.3: QEWD leaves the old socketId in the token (a bug); we record the new one."""
        token = self.register()
        other = self.h.connect(ip="10.9.8.7")
        f = self.h.send(other, {"type": "ewd-reregister", "token": token, "jwt": True})[0]
        self.assertEqual(f["type"], "ewd-reregister")
        self.assertIs(f["message"]["ok"], True)
        session = self.h.tokens.session(f["message"]["token"])
        self.assertEqual(session["socketId"], other.id)
        self.assertEqual(session["ipAddress"], "10.9.8.7")
        self.assertTrue(session.is_secret("socketId"))
        self.assertTrue(other.jwt)

    def test_jwt_reregister_without_flag(self) -> None:
        """QEWD's browser clients omit jwt:true (§2.3); a verified JWT is still accepted."""
        token = self.register()
        f = self.h.send(self.h.connect(), {"type": "ewd-reregister", "token": token})[0]
        self.assertIs(f["message"]["ok"], True)
        self.assertIn("token", f["message"])

    def test_session_reregister(self) -> None:
        token = self.h.register(self.c, "demo", jwt=False)
        other = self.h.connect()
        f = self.h.send(other, {"type": "ewd-reregister", "token": token})[0]
        self.assertEqual(f["message"], {"ok": True})
        self.assertEqual(self.h.sessions.get(token)["socketId"], other.id)

    def test_reregister_errors(self) -> None:
        f = self.h.send(self.c, {"type": "ewd-reregister"})[0]
        self.assertEqual(f["message"], {"error": E.MISSING_AUTH, "disconnect": True})
        f = self.h.send(self.c, {"type": "ewd-reregister", "token": "no-such-token"})[0]
        self.assertEqual(f["message"], {"error": E.INVALID_SESSION, "disconnect": True})
        f = self.h.send(self.c, {"type": "ewd-reregister", "token": "a.b.c", "jwt": True})[0]
        self.assertTrue(f["message"]["error"].startswith("Invalid JWT: "))


class HandlerTests(Base):
    def test_login_intermediate_and_final(self) -> None:
        token = self.register()
        frames = self.h.send(self.c, {"type": "login", "token": token,
                                      "params": {"username": "rob", "password": "secret"}})
        self.assertEqual([f["finished"] for f in frames], [False, True])
        self.assertEqual(frames[0]["message"], {"text": "checking credentials", "username": "rob"})
        self.assertNotIn("token", frames[0]["message"])  # intermediate frames carry no token
        final = frames[1]
        self.assertEqual(final["type"], "login")
        self.assertIs(final["message"]["ok"], True)
        session = self.h.tokens.session(final["message"]["token"])
        self.assertEqual(session["username"], "rob")
        self.assertIs(session["authenticated"], True)
        self.assertEqual(session["timeout"], 1200)
        payload = self.h.tokens.decode(final["message"]["token"])
        self.assertNotIn("username", payload)  # secret: only inside the encrypted qewd claim
        self.assertEqual(payload["exp"] - payload["iat"], 1200)

    def test_error_reply_has_no_token(self) -> None:
        token = self.register()
        frames = self.h.send(self.c, {"type": "login", "token": token,
                                      "params": {"username": "rob", "password": "x"}})
        self.assertEqual(frames[-1]["message"], {"error": "Invalid login"})
        self.assertIs(frames[-1]["finished"], True)

    def test_send_type_override(self) -> None:
        def progress(m, s, send, finished):
            send({"type": "progress", "pct": 50})
            finished({"done": True})

        h = NodeHarness({"a": app(handlers={"job": progress})})
        c = h.connect()
        frames = h.send(c, {"type": "job", "token": h.register(c, "a")})
        self.assertEqual(frames[0]["type"], "progress")
        self.assertEqual(frames[0]["message"], {"pct": 50})
        self.assertEqual(frames[1]["type"], "job")

    def test_second_finished_is_ignored(self) -> None:
        def twice(m, s, send, finished):
            finished({"n": 1})
            finished({"n": 2})
            send({"late": True})

        h = NodeHarness({"a": app(handlers={"t": twice})})
        c = h.connect()
        frames = h.send(c, {"type": "t", "token": h.register(c, "a")})
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0]["message"]["n"], 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_handler_timeout(self) -> None:
        h = NodeHarness({"a": app(handlers={"never": lambda m, s, send, f: None})},
                        handler_timeout=5)
        c = h.connect()
        self.assertEqual(h.send(c, {"type": "never", "token": h.register(c, "a")}), [])
        self.assertEqual(h.node.in_flight, 1)
        h.clock.advance(4.9)
        self.assertEqual(c.take(), [])
        h.clock.advance(0.2)
        [f] = c.take()
        self.assertEqual(f["type"], "never")
        self.assertEqual(f["message"]["error"], E.HANDLER_TIMEOUT.format(type="never", seconds=5))
        self.assertEqual(f["message"]["status"], {"code": 504})
        self.assertEqual(h.node.in_flight, 0)

    def test_exception_gives_error_frame_and_node_serves_on(self) -> None:
        def boom(m, s, send, finished):
            raise ValueError("kaboom")

        h = NodeHarness({"a": app(handlers={"boom": boom, "echo": echo})})
        c = h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "boom", "token": token})
        self.assertEqual((f["type"], f["finished"], f["message"]), ("error", True, "kaboom"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        [f] = h.send(c, {"type": "echo", "token": token, "params": 1})
        self.assertEqual(f["message"]["you sent"], 1)

    def test_before_handler_stops_and_runs_before_lookup(self) -> None:
        """The peer's beforeHandler answers even for unknown types (peer README, unknown type)."""
        def before(m, session, send, finished):
            if not session.get("authenticated"):
                finished({"error": "You must be logged in"})
                return False

        h = NodeHarness({"jwt": app(beforeHandler=before, handlers={"login": login})})
        c = h.connect()
        token = h.register(c, "jwt")
        [f] = h.send(c, {"type": "noSuchType", "token": token})
        self.assertEqual(f["message"], {"error": "You must be logged in"})

    def test_missing_handler(self) -> None:
        token = self.register()
        [f] = self.h.send(self.c, {"type": "nope", "token": token})
        self.assertEqual(f["message"]["error"], "Handler not defined for demo messages of type nope")
        self.assertIs(f["finished"], True)

    def test_unknown_application_imports_nothing(self) -> None:
        """§9 item 7: an application name not in moduleMap never leads to an import."""
        token = self.register(application="os")
        [f] = self.h.send(self.c, {"type": "x", "token": token})
        self.assertEqual(f["message"]["error"], "Unable to load handler module for: os")
        self.assertIn("moduleMap", f["message"]["reason"])

    def test_after_handler_runs(self) -> None:
        calls = []
        h = NodeHarness({"a": app(handlers={"echo": echo},
                                  afterHandler=lambda m, s, send, f: calls.append(m["type"]))})
        c = h.connect()
        h.send(c, {"type": "echo", "token": h.register(c, "a")})
        self.assertEqual(calls, ["echo"])

    def test_worker_response_handlers(self) -> None:
        def replace(message, send):
            return {**message, "extra": 1}

        def take_over(message, send):
            send({"custom": True})
            return True

        def broadcast(message, send, q):
            q.to_all({"test": "message 2"})

        h = NodeHarness({"a": app(handlers={"r": echo, "t": echo, "b": echo},
                                  workerResponseHandlers={"r": replace, "t": take_over,
                                                          "b": broadcast})})
        c, other = h.connect(), h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "r", "token": token})
        self.assertEqual(f["message"]["extra"], 1)
        self.assertIn("token", f["message"])
        self.assertEqual(h.send(c, {"type": "t", "token": token}), [{"custom": True}])
        frames = h.send(c, {"type": "b", "token": token})
        self.assertEqual(frames[0], {"test": "message 2"})
        self.assertEqual(frames[1]["type"], "b")
        self.assertEqual(other.take(), [{"test": "message 2"}])

    def test_q_is_a_small_surface_not_the_node(self) -> None:
        seen = []

        def keep(message, send, q):
            seen.append(q)

        h = NodeHarness({"a": app(handlers={"e": echo}, workerResponseHandlers={"e": keep})})
        c = h.connect()
        h.send(c, {"type": "e", "token": h.register(c, "a")})
        [q] = seen
        self.assertIs(q, h.node.q)
        self.assertIsNot(q, h.node)
        self.assertEqual(sorted(n for n in dir(q) if not n.startswith("_")),
                         ["db", "send_to_socket", "set_custom_error_response", "to_all",
                          "to_application"])
        self.assertIs(q.db, h.db)  # the harness's in-memory document store
        self.assertTrue(q.send_to_socket(c.id, {"hi": 1}))
        self.assertFalse(q.send_to_socket("nobody", {"hi": 1}))
        q.to_application({"app": 1}, "a")
        self.assertEqual(c.take(), [{"hi": 1}, {"app": 1}])

    def test_async_handler_runs_on_reactor(self) -> None:
        async def later(m, session, send, finished):
            d: defer.Deferred[None] = defer.Deferred()
            self.h.clock.callLater(1, d.callback, None)
            send({"waiting": True})
            await d
            finished({"ok": 1})

        self.h = NodeHarness({"a": app(handlers={"later": later})})
        c = self.h.connect()
        frames = self.h.send(c, {"type": "later", "token": self.h.register(c, "a")})
        self.assertEqual(frames, [{"type": "later", "finished": False,
                                   "message": {"waiting": True}, "responseTime": "0ms"}])
        self.h.clock.advance(1)
        [f] = c.take()
        self.assertEqual((f["message"]["ok"], f["responseTime"]), (1, "1000ms"))

    def test_reactor_handler_deadline_only_when_it_returns_unfinished(self) -> None:
        """An ``async def`` handler that finishes at once leaves no timer behind; one that
        awaits is answered with the handler timeout ``handlerTimeout`` after it started."""
        async def now(m, session, send, finished):
            finished({"ok": 1})

        async def never(m, session, send, finished):
            await defer.Deferred()

        h = NodeHarness({"a": app(handlers={"now": now, "never": never})}, handler_timeout=5)
        c = h.connect()
        token = h.register(c, "a")
        [f] = h.send(c, {"type": "now", "token": token})
        self.assertEqual((f["message"]["ok"], h.clock.getDelayedCalls()), (1, []))
        self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.advance(4.9)
        self.assertEqual(c.take(), [])
        h.clock.advance(0.2)
        [f] = c.take()
        self.assertEqual(f["message"]["error"], E.HANDLER_TIMEOUT.format(type="never", seconds=5))
        self.assertEqual((h.node.in_flight, h.clock.getDelayedCalls()), (0, []))

    def test_deferred_handler_marked_on_reactor(self) -> None:
        @on_reactor
        def handler(m, session, send, finished):
            d: defer.Deferred[None] = defer.Deferred()
            d.addCallback(lambda _: finished({"ok": 2}))
            self.h.clock.callLater(2, d.callback, None)
            return d

        self.h = NodeHarness({"a": app(handlers={"h": handler})})
        c = self.h.connect()
        self.assertEqual(self.h.send(c, {"type": "h", "token": self.h.register(c, "a")}), [])
        self.h.clock.advance(2)
        self.assertEqual(c.take()[0]["message"]["ok"], 2)

    def test_array_reply(self) -> None:
        h = NodeHarness({"a": app(handlers={"l": lambda m, s, send, f: f([1, 2])})})
        c = h.connect()
        [f] = h.send(c, {"type": "l", "token": h.register(c, "a")})
        self.assertEqual(f["message"], [1, 2])  # §1.4: arrays carry no token (QEWD's quirk)

    def test_not_json_serialisable_reply(self) -> None:
        h = NodeHarness({"a": app(handlers={"s": lambda m, s, send, f: f({"x": {1, 2}})})})
        c = h.connect()
        [f] = h.send(c, {"type": "s", "token": h.register(c, "a")})
        self.assertEqual(f["message"]["error"], E.NOT_JSON_REPLY.format(type="s"))

    def test_empty_reply_in_session_mode_sends_nothing(self) -> None:
        h = NodeHarness({"a": app(handlers={"e": lambda m, s, send, f: f()})})
        c = h.connect()
        token = h.register(c, "a", jwt=False)
        self.assertEqual(h.send(c, {"type": "e", "token": token}), [])
        self.assertEqual(h.node.in_flight, 0)


class ReactorHandlerTests(SynchronousTestCase):
    """Reactor handlers without before/after hooks are called directly (no Deferred unless
    they await): every outcome must be what the Deferred path gave."""

    def run_handler(self, handler, *, advance=0.0):
        self.flushLoggedErrors()
        h = NodeHarness({"a": app(handlers={"h": handler})})
        c = h.connect()
        frames = h.send(c, {"type": "h", "token": h.register(c, "a")})
        h.clock.advance(advance)
        frames += c.take()
        self.assertEqual(h.node.in_flight, 0)
        return frames

    def test_finishes_without_awaiting(self) -> None:
        async def h(m, session, send, finished):
            send({"step": 1})
            finished({"ok": True})

        frames = self.run_handler(h)
        self.assertEqual([f["finished"] for f in frames], [False, True])
        self.assertIn("token", frames[1]["message"])

    def test_raises_before_awaiting(self) -> None:
        async def h(m, session, send, finished):
            raise KeyError("boom")

        [f] = self.run_handler(h)
        self.assertEqual((f["type"], f["message"]), ("error", "'boom'"))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_raises_after_awaiting(self) -> None:
        clock_holder = {}

        async def h(m, session, send, finished):
            d: defer.Deferred[None] = defer.Deferred()
            clock_holder["d"] = d
            await d
            raise ValueError("late")

        h_ = NodeHarness({"a": app(handlers={"h": h})})
        c = h_.connect()
        self.assertEqual(h_.send(c, {"type": "h", "token": h_.register(c, "a")}), [])
        self.assertEqual(h_.node.in_flight, 1)
        clock_holder["d"].callback(None)
        [f] = c.take()
        self.assertEqual((f["type"], f["message"]), ("error", "late"))
        self.assertEqual(h_.node.in_flight, 0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_awaits_several_times_and_catches_a_failure(self) -> None:
        async def h(m, session, send, finished):
            total = 0
            for i in range(3):
                d: defer.Deferred[int] = defer.Deferred()
                h_.clock.callLater(1, d.callback, i)
                total += await d
            failing: defer.Deferred[None] = defer.Deferred()
            h_.clock.callLater(1, failing.errback, RuntimeError("caught"))
            try:
                await failing
            except RuntimeError as e:
                finished({"total": total, "caught": str(e)})

        h_ = NodeHarness({"a": app(handlers={"h": h})})
        c = h_.connect()
        self.assertEqual(h_.send(c, {"type": "h", "token": h_.register(c, "a")}), [])
        for _ in range(4):
            h_.clock.advance(1)
        [f] = c.take()
        self.assertEqual((f["message"]["total"], f["message"]["caught"]), (3, "caught"))

    def test_awaited_result_already_there(self) -> None:
        async def h(m, session, send, finished):
            value = await defer.succeed(5)
            finished({"v": value})

        [f] = self.run_handler(h)
        self.assertEqual(f["message"]["v"], 5)

    def test_inline_callbacks_handler(self) -> None:
        @defer.inlineCallbacks
        def h(m, session, send, finished):
            value = yield defer.succeed(7)
            finished({"v": value})

        [f] = self.run_handler(h)
        self.assertEqual(f["message"]["v"], 7)

    def test_returns_without_finishing_times_out(self) -> None:
        async def h(m, session, send, finished):
            return None

        [f] = self.run_handler(h, advance=60)
        self.assertEqual(f["message"]["status"], {"code": E.STATUS_HANDLER_TIMEOUT})


class MicroServiceRequestTests(Base):
    def test_ms_request_id_echoed_on_every_frame(self) -> None:
        token = self.register()
        frames = self.h.send(self.c, {"type": "login", "token": token, "jwt": True,
                                      "ms_requestId": 7,
                                      "params": {"username": "rob", "password": "secret"}})
        self.assertEqual([f["ms_requestId"] for f in frames], [7, 7])
        self.assertEqual(frames[1]["message"]["ms_requestId"], 7)

    def test_errors_with_ms_request_id_omit_disconnect(self) -> None:
        [f] = self.h.send(self.c, {"type": "login", "token": "x.y.z", "jwt": True,
                                   "ms_requestId": 3})
        self.assertEqual(f["ms_requestId"], 3)
        self.assertNotIn("disconnect", f["message"])


class AuthTests(Base):
    def test_no_token(self) -> None:
        [f] = self.h.send(self.c, {"type": "echo"})
        self.assertEqual(f["message"], {"error": E.MISSING_AUTH, "disconnect": True})
        self.assertIs(f["finished"], True)

    def test_expired_jwt(self) -> None:
        token = self.register()
        self.h.clock.advance(301)
        [f] = self.h.send(self.c, {"type": "echo", "token": token})
        # The QEWD.js master's shape: no finished, no responseTime (peer README).
        self.assertEqual(f, {"type": "echo", "message": {
            "error": "Invalid JWT: Error: Token expired", "disconnect": True}})

    def test_tampered_and_wrong_secret_jwt(self) -> None:
        from qewd_twisted.auth.tokens import TokenCodec

        token = self.register()
        head, body, sig = token.split(".")
        tampered = ".".join([head, body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1], sig])
        [f] = self.h.send(self.c, {"type": "echo", "token": tampered})
        self.assertTrue(f["message"]["error"].startswith("Invalid JWT: "))
        other = TokenCodec("anotherSecret", clock=self.h.clock).register_token(
            "demo", {"socketId": "x", "ipAddress": "y", "authenticated": True})
        [f] = self.h.send(self.c, {"type": "echo", "token": other})
        self.assertEqual(f["message"]["error"], "Invalid JWT: Error: Signature verification failed")

    def test_session_mode_errors(self) -> None:
        [f] = self.h.send(self.c, {"type": "echo", "token": "no-such-session"})
        self.assertEqual(f["message"], {"error": E.INVALID_SESSION, "disconnect": True})
        token = self.h.register(self.c, "demo", jwt=False)
        self.h.clock.advance(301)
        [f] = self.h.send(self.c, {"type": "echo", "token": token})
        # the running QEWD.js answers an expired session as an unknown one (§2.4)
        self.assertEqual(f["message"], {"error": E.INVALID_SESSION, "disconnect": True})

    def test_session_mode_sliding_expiry(self) -> None:
        token = self.h.register(self.c, "demo", jwt=False)
        for _ in range(3):
            self.h.clock.advance(200)
            [f] = self.h.send(self.c, {"type": "echo", "token": token, "params": "p"})
            self.assertEqual(f["message"], {"you sent": "p"})


class BadInputTests(Base):
    def test_non_objects(self) -> None:
        for bad in (None, [], [1], 3, 1.5, "text", True):
            [f] = self.h.send(self.c, bad)
            self.assertEqual(f, {"type": "error", "finished": True,
                                 "message": {"error": E.NOT_AN_OBJECT}, "responseTime": "0ms"})

    def test_bad_types(self) -> None:
        for bad in ({}, {"type": None}, {"type": 3}, {"type": ""}, {"type": ["a"]}):
            [f] = self.h.send(self.c, bad)
            self.assertEqual(f["message"], {"error": E.BAD_TYPE})

    def test_internal_types_refused(self) -> None:
        """§9 item 2: no signing oracle. The QEWD.js worker signs any payload for this."""
        token = self.register()
        for t in sorted(E.INTERNAL_TYPES):
            for msg in ({"type": t, "params": {"payload": {"application": "demo"}}},
                        {"type": t, "token": token, "params": {"jwt": token}}):
                [f] = self.h.send(self.c, msg)
                self.assertEqual(f["message"]["error"], E.RESERVED_TYPE.format(type=t))
                self.assertNotIn("jwt", f["message"])
                self.assertNotIn("token", f["message"])

    def test_unsupported_types(self) -> None:
        [f] = self.h.send(self.c, {"type": "ewd-dump-documents", "params": {"password": "x"}})
        self.assertEqual(f["message"]["error"],
                         E.NOT_SUPPORTED.format(type="ewd-dump-documents"))

    def test_other_clients_unaffected(self) -> None:
        good = self.h.connect()
        token = self.register(good)
        for bad in (None, {"type": 1}, {"type": "ewd-jwt-encode"}, {"type": "x", "token": 5}):
            self.h.send(self.c, bad)
        [f] = self.h.send(good, {"type": "echo", "token": token, "params": "ok"})
        self.assertEqual(f["message"]["you sent"], "ok")


class DrainTests(Base):
    def test_drain_waits_for_in_flight_then_refuses(self) -> None:
        h = NodeHarness({"a": app(handlers={"never": lambda m, s, send, f: None,
                                            "echo": echo})}, handler_timeout=None)
        c = h.connect()
        token = h.register(c, "a")
        h.send(c, {"type": "never", "token": token})
        d = h.node.drain(10)
        self.assertNoResult(d)
        [f] = h.send(c, {"type": "echo", "token": token})
        self.assertEqual(f["message"]["error"], E.SHUTTING_DOWN)
        c.take()
        h.clock.advance(10)
        self.successResultOf(d)
        # past the grace period the request still running is ended with an answer
        [f] = c.take()
        self.assertEqual((f["type"], f["message"]), ("never", {
            "error": E.SHUTTING_DOWN, "status": {"code": 503}}))
        self.assertEqual(h.node.in_flight, 0)
        self.assertEqual(h.clock.getDelayedCalls(), [])


    def test_drain_fires_once_the_last_request_ends(self) -> None:
        held = []
        h = NodeHarness({"a": app(handlers={"hold": lambda m, s, send, f: held.append(f)})})
        c = h.connect()
        h.send(c, {"type": "hold", "token": h.register(c, "a")})
        d = h.node.drain(10)
        held[0]({"ok": True})
        self.assertNoResult(d)  # the final frame goes out first: next reactor turn
        self.assertEqual(c.take()[0]["message"]["ok"], True)
        h.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_drain_with_nothing_in_flight(self) -> None:
        h = NodeHarness({})
        self.successResultOf(h.node.drain(10))
        self.assertFalse(h.node.accepting)

    def test_close_all_waits_for_the_closes_or_its_timeout(self) -> None:
        h = NodeHarness({})
        a, b = h.connect(), h.connect()
        d = h.node.close_all(timeout=5)
        self.assertEqual((a.closed, b.closed), ((1001, "server shutting down"),) * 2)
        h.disconnect(a)
        self.assertNoResult(d)
        h.disconnect(b)
        self.successResultOf(d)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        c = h.connect()
        d = h.node.close_all(timeout=5)
        h.clock.advance(5)  # c never reports its close
        self.successResultOf(d)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertIsNotNone(c.closed)


class LimitTests(SynchronousTestCase):
    def test_in_flight_per_connection(self) -> None:
        h = NodeHarness({"a": app(handlers={"never": lambda m, s, send, f: None, "echo": echo})},
                        max_in_flight=2, handler_timeout=None)
        c, other = h.connect(), h.connect()
        token = h.register(c, "a")
        self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        self.assertEqual(h.send(c, {"type": "never", "token": token}), [])
        [f] = h.send(c, {"type": "echo", "token": token})
        self.assertEqual(f["message"], {"error": E.TOO_MANY_IN_FLIGHT, "status": {"code": 429}})
        # other connections are not limited by this one
        [f] = h.send(other, {"type": "echo", "token": h.register(other, "a"), "params": 1})
        self.assertEqual(f["message"]["you sent"], 1)

    def test_links_from_our_masters_get_the_higher_limit(self) -> None:
        h = NodeHarness({"a": app(handlers={"never": lambda m, s, send, f: None})},
                        max_in_flight=1, handler_timeout=None)
        link = h.connect()
        f = h.send(link, {"type": "ewd-register", "application": "a", "jwt": True,
                          "qewd_twisted": 1})[0]
        token = f["message"]["token"]
        for i in range(5):
            self.assertEqual(h.send(link, {"type": "never", "token": token, "jwt": True,
                                           "ms_requestId": i}), [])
        self.assertEqual(h.node.in_flight, 5)


class RelayTests(SynchronousTestCase):
    """The master's side of a forwarded request, with a fake link (docs/protocol.md §4.4)."""

    def setUp(self) -> None:
        link = RecordingLink()
        self.sent = link.sent

        class Routes:
            def route(self, application, type):
                return (link, "remote-app") if type == "login" else None

        self.h = NodeHarness({"jwt": app(handlers={})}, micro_services=Routes())
        self.c = self.h.connect()
        self.token = self.h.register(self.c, "jwt")

    def forward(self) -> Any:
        self.h.send(self.c, {"type": "login", "token": self.token, "params": {}})
        [(message, receiver)] = self.sent
        self.receiver = receiver
        return message, receiver.frame

    def test_outgoing_token_is_for_the_remote_application(self) -> None:
        message, _ = self.forward()
        self.assertIs(message["jwt"], True)
        self.assertEqual(self.h.tokens.decode(message["token"])["application"], "remote-app")

    def test_reply_token_rewritten_back(self) -> None:
        message, on_frame = self.forward()
        remote = self.h.tokens.session(message["token"])
        remote["username"] = "rob"
        remote.make_secret("username")
        on_frame({"type": "login", "finished": True,
                  "message": {"ok": True, "token": self.h.tokens.issue(remote)}})
        [f] = self.c.take()
        session = self.h.tokens.session(f["message"]["token"])
        self.assertEqual((session["application"], session["username"]), ("jwt", "rob"))

    def test_unverifiable_reply_token_is_an_error_not_a_silent_success(self) -> None:
        from qewd_twisted.auth.tokens import TokenCodec

        _, on_frame = self.forward()
        foreign = TokenCodec("not-our-secret", clock=self.h.clock).register_token(
            "remote-app", {"username": "mallory"})
        on_frame({"type": "login", "finished": True, "message": {"ok": True, "token": foreign}})
        [f] = self.c.take()
        self.assertEqual(f["message"], {"error": E.BAD_MS_TOKEN, "status": {"code": 502}})
        self.assertEqual(self.h.node.in_flight, 0)

    def test_remote_rejection_does_not_tell_the_client_to_disconnect(self) -> None:
        """A remote's JWT rejection (QEWD.js shape: no finished, disconnect: true) is about
        the mesh, not the client's socket: relayed as a plain final error."""
        _, on_frame = self.forward()
        on_frame({"type": "login", "message": {
            "error": "Invalid JWT: Error: Signature verification failed", "disconnect": True}})
        [f] = self.c.take()
        self.assertIs(f["finished"], True)
        self.assertEqual(f["message"], {"error": "Invalid JWT: Error: Signature verification failed"})

    def test_intermediate_then_final(self) -> None:
        _, on_frame = self.forward()
        on_frame({"type": "progress", "finished": False, "message": {"step": 1}})
        on_frame({"type": "login", "finished": True, "message": {"error": "Invalid login"}})
        frames = self.c.take()
        self.assertEqual([(f["type"], f["finished"]) for f in frames],
                         [("progress", False), ("login", True)])
        on_frame({"type": "login", "finished": True, "message": {"late": True}})
        self.assertEqual(self.c.take(), [])  # after the final frame nothing more is relayed
        self.receiver.failed(LinkOutcome.DOWN)
        self.assertEqual(self.c.take(), [])

    def test_link_outcomes_become_the_clients_503_and_504(self) -> None:
        for outcome, text, code in ((LinkOutcome.DOWN, E.MS_DOWN, 503),
                                    (LinkOutcome.TIMEOUT, E.MS_TIMEOUT, 504)):
            self.sent.clear()
            self.forward()
            self.h.clock.advance(0.25)
            self.receiver.failed(outcome)
            self.assertEqual(self.c.take(), [
                {"type": "login", "finished": True, "responseTime": "250ms",
                 "message": {"error": text, "status": {"code": code}}}])
            self.assertEqual(self.h.node.in_flight, 0)
            self.receiver.failed(outcome)  # once only
            self.receiver.frame({"type": "login", "finished": True, "message": {}})
            self.assertEqual(self.c.take(), [])

    def test_link_outcome_keeps_a_masters_request_id(self) -> None:
        self.h.send(self.c, {"type": "login", "token": self.token, "ms_requestId": 12})
        [(_, receiver)] = self.sent
        receiver.failed(LinkOutcome.DOWN)
        [f] = self.c.take()
        self.assertEqual(f["ms_requestId"], 12)
        self.assertEqual(f["message"]["status"], {"code": 503})


class DispatchTableTests(SynchronousTestCase):
    """The slots for built-in types (how ``ewd-fragment`` will be added)."""

    def test_session_builtin_gets_an_authenticated_request_and_is_never_forwarded(self) -> None:
        forwarded = []
        routes = SimpleNamespace(route=lambda a, t: forwarded.append(t) or (None, "x"))
        h = NodeHarness({"a": app(handlers={})}, micro_services=routes)
        got = []

        def builtin(req):
            got.append((req.type, req.application, req.jwt))
            h.node.local._reply(req.conn, req.type, {"ok": True}, req.started)

        h.node.session_builtins["my-builtin"] = builtin
        c = h.connect()
        [f] = h.send(c, {"type": "my-builtin", "token": h.register(c, "a")})
        self.assertEqual(f["message"], {"ok": True})
        s = h.connect()
        h.send(s, {"type": "my-builtin", "token": h.register(s, "a", jwt=False)})
        self.assertEqual(got, [("my-builtin", "a", True), ("my-builtin", "a", False)])
        self.assertEqual(forwarded, [])
        self.assertEqual(h.send(c, {"type": "my-builtin", "token": "bad.jwt.here"})[0]
                         ["message"]["disconnect"], True)
        self.assertEqual(len(got), 2)

    def test_builtin_without_session(self) -> None:
        h = NodeHarness({})
        h.node.builtins["ping"] = lambda conn, msg, started, rid: conn.send({"pong": rid})
        c = h.connect()
        self.assertEqual(h.send(c, {"type": "ping", "ms_requestId": 3}), [{"pong": 3}])


class FixesTests(SynchronousTestCase):
    def test_intermediate_that_is_not_json_does_not_end_the_request(self) -> None:
        def h(m, s, send, finished):
            send({"bad": {1}})
            finished({"ok": True})

        harness = NodeHarness({"a": app(handlers={"h": h})})
        c = harness.connect()
        frames = harness.send(c, {"type": "h", "token": harness.register(c, "a")})
        self.assertEqual([f["finished"] for f in frames], [False, True])
        self.assertEqual(frames[0]["message"]["error"], E.NOT_JSON_REPLY.format(type="h"))

    def test_unusable_timeout_is_reported_as_such(self) -> None:
        def h(m, session, send, finished):
            session["timeout"] = "sixty"
            finished({"ok": True})

        harness = NodeHarness({"a": app(handlers={"h": h})})
        c = harness.connect()
        [f] = harness.send(c, {"type": "h", "token": harness.register(c, "a")})
        self.assertTrue(f["message"]["error"].startswith(
            "The h handler left the session unusable: "), f)

    def test_array_reply_to_a_micro_service_request_is_wrapped_with_token(self) -> None:
        harness = NodeHarness({"a": app(handlers={"l": lambda m, s, send, f: f([1])})})
        c = harness.connect()
        token = harness.register(c, "a")
        [f] = harness.send(c, {"type": "l", "token": token, "jwt": True, "ms_requestId": 1})
        self.assertEqual(f["message"]["results"], [1])
        self.assertIn("token", f["message"])

    def test_harness_runs_init(self) -> None:
        seen = []
        NodeHarness({"a": app(handlers={}, init=seen.append)})
        self.assertEqual(seen, ["a"])

    def test_handler_timeout_text(self) -> None:
        harness = NodeHarness({"a": app(handlers={"n": lambda m, s, send, f: None})},
                              handler_timeout=60.0)
        c = harness.connect()
        harness.send(c, {"type": "n", "token": harness.register(c, "a")})
        harness.clock.advance(60)
        [f] = c.take()
        self.assertIn("within 60 seconds", f["message"]["error"])
