# -*- test-case-name: tests.test_express -*-
"""
The node's express path (``Node._express``, ``LocalRunner.express``) against the general one.

Every scenario runs twice, on two nodes that differ only in ``node.express``, from the same
start: the same messages at the same fake times. Each step's frames (tokens included, byte for
byte: the token layer is deterministic for a given clock), in-flight counts, observer reports
and what a link was handed must be the same; and the express node must really have taken the
common cases (counted), so a test cannot pass with the express path switched off.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors as E
from qewd_twisted.ops.observe import NodeObserver
from qewd_twisted.testing import NodeHarness
from tests.fixtures import RecordingLink

CLOCK = {}  # the harness's clock, for handlers that wait on it (set per node)


async def echo(messageObj, session, send, finished):
    session["date"] = 1700000000
    session["xxx"] = "Test data"
    session.make_secret("xxx")
    finished({"text": "You sent: %s" % ((messageObj.get("params") or {}).get("text"),)})


async def progress(messageObj, session, send, finished):
    send({"step": 1})
    send({"type": "custom", "step": 2})
    send(None)
    finished({"done": True})


async def later(messageObj, session, send, finished):
    d: defer.Deferred[None] = defer.Deferred()
    CLOCK["clock"].callLater(2, d.callback, None)
    await d
    session["waited"] = True
    finished({"waited": True})


async def never(messageObj, session, send, finished):
    pass


async def crash(messageObj, session, send, finished):
    raise RuntimeError("the handler broke")


async def refuse(messageObj, session, send, finished):
    finished({"error": "Not allowed", "status": {"code": 403}})


async def as_list(messageObj, session, send, finished):
    finished([1, 2, 3])


async def nothing(messageObj, session, send, finished):
    finished()


async def twice(messageObj, session, send, finished):
    finished({"n": 1})
    finished({"n": 2})
    send({"late": True})


async def not_json(messageObj, session, send, finished):
    finished({"bad": {1, 2}})


async def odd_floats(messageObj, session, send, finished):
    finished({"nan": math.nan, "tiny": 1e-7, "x": 0.5})


async def mutate(messageObj, session, send, finished):
    reply = {"a": 1}
    finished(reply)
    reply["a"] = 2  # after finished(): the snapshot went out


async def bad_session(messageObj, session, send, finished):
    session["timeout"] = "forever"  # not a number: the token cannot be re-issued
    finished({"ok": True})


async def forget(messageObj, session, send, finished):
    session.pop("authenticated", None)
    session["username"] = "rob"
    finished({"ok": True})


async def with_q(messageObj, session, send, finished, q):
    finished({"q": q is not None})


def sync_echo(messageObj, session, send, finished):
    session["sync"] = 1
    send({"working": True})
    finished({"text": "sync"})


def sync_crash(messageObj, session, send, finished):
    raise ValueError("sync broke")


def rewritten(message, send):
    return {"rewritten": message}


HANDLERS = {f.__name__: f for f in (
    echo, progress, later, never, crash, refuse, as_list, nothing, twice, not_json, odd_floats,
    mutate, bad_session, forget, with_q, sync_echo, sync_crash)}


class App:
    handlers = dict(HANDLERS, wrapped=echo)
    workerResponseHandlers = {"wrapped": rewritten}


class Hooked:
    handlers = {"echo": echo, "sync_echo": sync_echo, "crash": crash, "never": never,
                "later": later}

    @staticmethod
    def beforeHandler(messageObj, session, send, finished):
        if (messageObj.get("params") or {}).get("refuse"):
            finished({"error": "refused by beforeHandler"})
            return False
        session["before"] = True
        return True

    @staticmethod
    def afterHandler(messageObj, session, send, finished):
        send({"after": True})


class Recorder(NodeObserver):
    def __init__(self) -> None:
        self.log: list[Any] = []

    def request_finished(self, req: Any, outcome: str) -> None:
        self.log.append((req.type, req.application, req.ms_request_id, outcome))


class Routes:
    def __init__(self, link: RecordingLink) -> None:
        self.link = link

    def route(self, application: str, type: str) -> Any:
        return (self.link, "remote") if type == "remoteType" else None


class _Side:
    """One node of the pair."""

    def __init__(self, express: bool, **options: Any) -> None:
        self.link = RecordingLink()
        self.h = NodeHarness({"app": App, "hooked": Hooked}, micro_services=Routes(self.link),
                             handler_timeout=5, **options)
        self.h.node.express = express
        self.observer = Recorder()
        self.h.node.observer = self.observer
        self.taken = 0
        run = self.h.node._express_local

        def counted(*args: Any) -> bool:
            taken = run(*args)
            self.taken += taken
            return taken

        self.h.node._express_local = counted

    def state(self) -> Any:
        return (self.h.node.in_flight, list(self.observer.log),
                [(m, r.__class__.__name__) for m, r in self.link.sent])


class ExpressTests(SynchronousTestCase):
    def tearDown(self) -> None:
        self.flushLoggedErrors(RuntimeError, ValueError)  # the crashing handlers'
    def pair(self, **options: Any) -> tuple[_Side, _Side]:
        return _Side(True, **options), _Side(False, **options)

    def same(self, sides: tuple[_Side, _Side], script: Any) -> list[list[Any]]:
        """Run ``script(side)`` (a generator of steps: each yields the frames of one step) on
        both nodes and check every step gives the same frames and state."""
        runs = []
        for side in sides:
            CLOCK["clock"] = side.h.clock
            runs.append([(frames, side.state()) for frames in script(side)])
        self.assertEqual(len(runs[0]), len(runs[1]))
        for i, (a, b) in enumerate(zip(*runs)):
            self.assertEqual(a, b, f"step {i}")
        return [frames for frames, _ in runs[0]]

    def steps(self, messages: list[dict], app: str = "app", jwt: bool = True,
              advance: float = 0) -> Any:
        """A script: register, then each message (``TOKEN`` replaced by the latest token),
        then let the clock run ``advance`` seconds."""
        def script(side: _Side) -> Any:
            h = side.h
            conn = h.connect()
            token = h.register(conn, app, jwt=jwt)
            yield [token if jwt else "a session token"]  # a JWT is the same on both
            for message in messages:
                message = {k: (token if v == "TOKEN" else v) for k, v in message.items()}
                frames = h.send(conn, message)
                for f in frames:
                    if isinstance(f.get("message"), dict) and "token" in f["message"]:
                        token = f["message"]["token"]
                yield frames
                h.clock.advance(0.25)
            if advance:
                h.clock.advance(advance)
                yield conn.take()
        return script

    def test_every_handler_the_same_both_ways(self) -> None:
        sides = self.pair()
        messages = []
        for name in sorted(HANDLERS) + ["wrapped", "noSuchType"]:
            # twice each: the first token is new to the cache, the second has its session
            messages += [{"type": name, "token": "TOKEN", "params": {"text": name}}] * 2
        frames = self.same(sides, self.steps(messages, advance=10))
        self.assertGreater(sides[0].taken, len(HANDLERS))  # the express path ran
        self.assertEqual(sides[1].taken, 0)
        replies = {f["type"]: f for step in frames[1:] for f in step}
        echoed = replies["echo"]
        self.assertEqual(echoed["message"]["text"], "You sent: echo")
        self.assertEqual(sides[0].h.tokens.session(echoed["message"]["token"])["xxx"],
                         "Test data")
        self.assertEqual({k: v for k, v in replies["odd_floats"]["message"].items()
                          if k != "token"}, {"nan": None, "tiny": 1e-7, "x": 0.5})

    def test_micro_service_requests_the_same(self) -> None:
        sides = self.pair()
        rids: list[Any] = [7, "r-8", True, 1.5, [1], None, -1, 2**60]
        messages = [{"type": "echo", "token": "TOKEN", "ms_requestId": rid} for rid in rids]
        messages += [{"type": t, "token": "TOKEN", "ms_requestId": 9}
                     for t in ("as_list", "progress", "refuse", "crash", "sync_echo", "later")]
        self.same(sides, self.steps(messages, advance=3))
        self.assertGreater(sides[0].taken, 5)

    def test_refusals_the_same(self) -> None:
        sides = self.pair(max_in_flight=2)
        messages = [
            {"type": "never", "token": "TOKEN"}, {"type": "echo", "token": "TOKEN"},
            {"type": "never", "token": "TOKEN"},  # the third in flight: refused
            {"type": "echo", "token": "TOKEN"},
            {"type": "", "token": "TOKEN"}, {"token": "TOKEN"}, {"type": 5, "token": "TOKEN"},
            {"type": "echo", "token": "TOKEN" + "x"}, {"type": "echo", "token": 12},
            {"type": "echo"}, {"type": "ewd-register", "application": "app", "jwt": True},
            {"type": "ewd-fragment", "token": "TOKEN", "params": {"file": "x.html"}},
            {"type": sorted(E.INTERNAL_TYPES)[0], "token": "TOKEN"},
            {"type": sorted(E.UNSUPPORTED_TYPES)[0], "token": "TOKEN"},
            {"type": "echo", "token": "TOKEN", "service": "svc"},
            {"type": "echo", "token": "TOKEN", "qewd_application": "other"},
            {"type": "remoteType", "token": "TOKEN", "params": {"x": 1}},
            {"type": "remoteType", "token": "TOKEN", "ms_requestId": 4},
        ]
        self.same(sides, self.steps(messages, advance=6))
        self.assertGreater(sides[0].taken, 0)

    def test_expired_token_the_same(self) -> None:
        sides = self.pair(initial_session_timeout=60)

        def script(side: _Side) -> Any:
            h = side.h
            conn = h.connect()
            token = h.register(conn, "app")
            [f] = h.send(conn, {"type": "forget", "token": token})
            token = f["message"]["token"]
            yield [f]
            yield h.send(conn, {"type": "echo", "token": token})
            yield h.send(conn, {"type": "echo", "token": token})  # its session known now
            h.clock.advance(61)
            yield h.send(conn, {"type": "echo", "token": token})
        frames = self.same(sides, script)
        self.assertNotIn("finished", frames[-1][0])  # a JWT rejection (§1.4)
        self.assertIn("expired", frames[-1][0]["message"]["error"])
        self.assertEqual(sides[0].taken, 1)

    def test_hooks_the_same(self) -> None:
        sides = self.pair()
        messages = [{"type": t, "token": "TOKEN", "params": p}
                    for t in ("echo", "sync_echo", "crash", "later", "never", "echo")
                    for p in ({}, {"refuse": True}, {})]
        self.same(sides, self.steps(messages, app="hooked", advance=6))
        self.assertGreater(sides[0].taken, 4)

    def test_session_mode_goes_the_general_way(self) -> None:
        sides = self.pair()
        self.same(sides, self.steps([{"type": "echo", "token": "TOKEN"}] * 3, jwt=False))
        self.assertEqual(sides[0].taken, 0)

    def test_draining_node_the_same(self) -> None:
        sides = self.pair()

        def script(side: _Side) -> Any:
            h = side.h
            conn = h.connect()
            token = h.register(conn, "app")
            yield h.send(conn, {"type": "echo", "token": token})
            yield h.send(conn, {"type": "later", "token": token})
            d = h.node.drain(1)
            yield h.send(conn, {"type": "echo", "token": token})
            h.clock.advance(1)
            yield conn.take() + [d.called]
        self.same(sides, script)
