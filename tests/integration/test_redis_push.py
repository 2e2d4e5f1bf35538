# -*- test-case-name: tests.integration.test_redis_push -*-
"""
Server push across nodes through a real Redis (qewd_twisted/pushbus): two real nodes
(QEWDService on loopback, two ports) sharing one redis-server on a free loopback port, with
WebSocket clients on each. ``q.to_all``, ``q.to_application`` and ``q.send_to_socket`` reach
every matching client of both nodes exactly once and in the order sent; Redis killed mid-run:
local delivery goes on and the pushes for the other node are dropped and counted; Redis back
on the same port: the buses resubscribe and cross-node push resumes. Also: a node of two
processes (one node id) beside another node, a third node on another channel (another mesh),
a password-protected Redis, and bench/pushbus.py's smoke run.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService
import tests.integration.test_processes as _processes
from tests.documents.redisserver import RedisServer
from tests.integration.nodes import eio_url, start_node
from tests.ports import reserve_port
from tests.wsclient import EIOClient

N = 200  # numbered pushes per scope


async def until(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` on the reactor until it holds; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await task.deferLater(reactor, 0.02, lambda: None)


class Client:
    """An Engine.IO client registered for ``application``; keeps every push it receives."""

    def __init__(self, service: QEWDService, application: str) -> None:
        self.service = service
        self.application = application
        self.ws = EIOClient(eio_url(service))
        self.token = ""
        self.id = ""
        self.received: list[Any] = []

    async def start(self) -> Client:
        before = set(self.service.node.connections)
        await self.ws.handshake()
        self.ws.emit({"type": "ewd-register", "application": self.application, "jwt": True})
        reply = await self.ws.message()
        self.token = reply["message"]["token"]
        [self.id] = set(self.service.node.connections) - before
        return self

    async def ask(self, type: str, **params: Any) -> Any:
        """Send a request and return its reply; pushes that arrive meanwhile are kept."""
        self.ws.emit({"type": type, "token": self.token, "params": params})
        while True:
            frame = await self.ws.message()
            if frame.get("type") == "push":
                self.received.append(frame)
            else:
                return frame["message"]

    async def pushes(self, scope: str | None = None) -> list[Any]:
        """Every push received so far (of ``scope``), in arrival order, and forget them. The
        reply to a ``ping`` (``echo`` for demo) is the barrier: pushes written to this client
        before it arrive before it."""
        reply = await self.ask("ping" if self.application == "pusher" else "echo")
        assert "error" not in reply, reply
        got, self.received = self.received, []
        return [p for p in got if scope is None or p["scope"] == scope]


def numbered(scope: str, start: int, count: int) -> list[dict[str, Any]]:
    return [{"type": "push", "scope": scope, "n": n} for n in range(start, start + count)]


class RedisNodes(TestCase):
    """A redis-server on a reserved loopback port, and nodes on it (no tests of its own)."""

    timeout = 120

    def setUp(self) -> None:
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        self.redis.start(reserve_port(self))

    def node(self, **config: Any) -> QEWDService:
        return start_node(self, metrics=True,
                          moduleMap={"pusher": "tests.apps.pusher", "demo": "tests.apps.demo"},
                          database={"type": "redis", "params": {"port": self.redis.port}},
                          **config)

    async def nodes(self) -> tuple[QEWDService, QEWDService]:
        a, b = self.node(), self.node()
        self.assertEqual((a.push_bus.channel, b.push_bus.channel),
                         (b"qewd-twisted:push:db0",) * 2)
        self.assertNotEqual(a.node.node_id, b.node.node_id)
        await a.push_bus.when_up()
        await b.push_bus.when_up()
        return a, b

    async def clients(self, *specs: tuple[QEWDService, str]) -> list[Client]:
        out = []
        for service, application in specs:
            c = await Client(service, application).start()
            self.addCleanup(c.ws.close)
            out.append(c)
        return out



class RedisPushTests(RedisNodes):
    async def exactly_once_in_order(self) -> None:
        a, b = await self.nodes()
        a1, a2, b1, b2 = await self.clients((a, "pusher"), (a, "demo"), (b, "pusher"),
                                            (b, "demo"))
        # to_all from node A (a handler on a1): every client of both nodes
        self.assertEqual((await a1.ask("announce", scope="all", start=0, count=N))["sent"], N)
        # to_application from node B: the "pusher" clients of both nodes only
        await b1.ask("announce", scope="application", application="pusher", start=0, count=N)
        # send_to_socket from node A to a client of node B, and to one of its own
        await a1.ask("announce", scope="socket", socket=b2.id, start=0, count=N)
        await a1.ask("announce", scope="socket", socket=a2.id, start=N, count=1)
        # every push of both nodes has crossed Redis: the other node delivered it, and the
        # echo of each node's own came back and was skipped
        await until("node B delivered A's pushes", lambda: b.push_bus.received == 2 * N)
        await until("node A delivered B's pushes", lambda: a.push_bus.received == N)
        await until("node A saw its own pushes come back",
                    lambda: a.push_bus.own_skipped == 2 * N)
        await until("node B saw its own pushes come back", lambda: b.push_bus.own_skipped == N)
        # one sender's pushes in order, each once; two senders' may interleave
        everyone, pushers = numbered("all", 0, N), numbered("application", 0, N)
        expected = {
            a1: (everyone, pushers, []),
            a2: (everyone, [], numbered("socket", N, 1)),
            b1: (everyone, pushers, []),
            b2: (everyone, [], numbered("socket", 0, N)),
        }
        for client, (all_, application, socket) in expected.items():
            got = await client.pushes()
            self.assertEqual(len(got), len(all_) + len(application) + len(socket))
            self.assertEqual([p for p in got if p["scope"] == "all"], all_)
            self.assertEqual([p for p in got if p["scope"] == "application"], application)
            self.assertEqual([p for p in got if p["scope"] == "socket"], socket)
        for bus in (a.push_bus, b.push_bus):
            self.assertEqual(sum(bus.dropped.values()), 0, bus.dropped)
        self.assertEqual((a.push_bus.published, b.push_bus.published), (2 * N, N))

    def test_pushes_reach_every_node_exactly_once_in_order(self) -> defer.Deferred:
        return defer.ensureDeferred(self.exactly_once_in_order())

    async def handler_pushes(self) -> None:
        a, b = await self.nodes()
        elsewhere = self.node(push={"channel": "another-mesh"})  # same Redis, another mesh
        alone = self.node(push={"redis": False})  # same Redis, push kept to itself
        self.assertEqual((alone.push_bus, alone.node.push_buses), (None, []))
        await elsewhere.push_bus.when_up()
        a1, b1, c1, d1 = await self.clients((a, "pusher"), (b, "pusher"), (elsewhere, "pusher"),
                                            (alone, "pusher"))
        await a1.ask("announce", scope="all", start=0, count=3)
        self.assertEqual(a1.received, numbered("all", 0, 3))  # its own, before the reply
        await until("B received", lambda: b.push_bus.received == 3)
        await until("A skipped its own", lambda: a.push_bus.own_skipped == 3)
        self.assertEqual(await b1.pushes(), numbered("all", 0, 3))
        self.assertEqual(await a1.pushes(), numbered("all", 0, 3))  # and not again
        # the other mesh's node heard nothing, and its pushes don't reach this mesh
        await c1.ask("announce", scope="all", start=100, count=1)
        await until("the other mesh's push crossed its Redis channel",
                    lambda: elsewhere.push_bus.own_skipped == 1)
        self.assertEqual(await c1.pushes(), numbered("all", 100, 1))
        self.assertEqual((elsewhere.push_bus.received, a.push_bus.received,
                          b.push_bus.received), (0, 0, 3))
        self.assertEqual(await b1.pushes(), [])
        self.assertEqual(await d1.pushes(), [])

    def test_the_sender_gets_its_own_push_once_and_other_meshes_nothing(self) -> defer.Deferred:
        return defer.ensureDeferred(self.handler_pushes())

    async def redis_down_and_back(self) -> None:
        a, b = await self.nodes()
        a1, b1 = await self.clients((a, "pusher"), (b, "pusher"))
        await a1.ask("announce", scope="all", start=0, count=5)
        await until("B received", lambda: b.push_bus.received == 5)
        self.assertEqual(await b1.pushes(), numbered("all", 0, 5))
        self.assertEqual(await a1.pushes(), numbered("all", 0, 5))

        self.redis.proc.kill()
        self.redis.proc.wait()
        await until("both buses are down", lambda: not a.push_bus.up and not b.push_bus.up)
        # local delivery goes on; the pushes for the other node are dropped and counted
        await a1.ask("announce", scope="all", start=5, count=10)
        self.assertEqual(await a1.pushes(), numbered("all", 5, 10))
        self.assertEqual(a.push_bus.dropped["down"], 10)
        body = a.ops.metrics.exposition()[0].decode()
        self.assertIn('qewd_push_dropped_total{bus="redis",reason="down"} 10.0', body)
        self.assertIn('qewd_push_bus_up{bus="redis"} 0.0', body)
        [status] = a.ops.status()["push"]
        self.assertEqual((status["bus"], status["up"], status["dropped"]["down"]),
                         ("redis", False, 10))
        from qewd_twisted.ops.status_page import render_page

        page = render_page(a.ops.status())
        self.assertIn("<h2>Server push across nodes</h2>", page)
        self.assertIn("down: 10", page)

        self.redis.start(self.redis.port)  # the same port: the buses reconnect by themselves
        await a.push_bus.when_up()
        await b.push_bus.when_up()
        await a1.ask("announce", scope="all", start=15, count=5)
        await until("B received after the restart", lambda: b.push_bus.received == 10)
        self.assertEqual(await b1.pushes(), numbered("all", 15, 5))  # 5..14 were dropped
        self.assertEqual(await a1.pushes(), numbered("all", 15, 5))
        self.assertEqual(a.push_bus.dropped["down"], 10)
        self.assertIn('qewd_push_bus_up{bus="redis"} 1.0',
                      a.ops.metrics.exposition()[0].decode())

    def test_redis_down_local_push_goes_on_and_cross_node_push_resumes(self) -> defer.Deferred:
        return defer.ensureDeferred(self.redis_down_and_back())


class TwoBusesTests(RedisNodes):
    """A node of two processes (one node id; their own bus between them, here a
    MemoryPushHub standing in for the processes' AMP channel) and a second node, all on one
    Redis: each client gets each push exactly once, whichever process sent it."""

    def process(self, node_id: str) -> QEWDService:
        from qewd_twisted import config_from_dict
        from tests.integration.nodes import SECRET

        service = QEWDService(config_from_dict({
            "listen": "tcp:0:interface=127.0.0.1", "jwt": {"secret": SECRET},
            "moduleMap": {"pusher": "tests.apps.pusher"}, "shutdownGracePeriod": 1,
            "database": {"type": "redis", "params": {"port": self.redis.port}}}),
            reactor, node_id=node_id)
        self.addCleanup(lambda: service.stopService() if service.running else None)
        service.startService()
        return service

    async def scenario(self) -> None:
        from qewd_twisted.testing import MemoryPushHub

        p1, p2 = self.process("node-a"), self.process("node-a")
        hub = MemoryPushHub()
        hub.join(p1.node)
        hub.join(p2.node)
        b = self.node()
        for service in (p1, p2, b):
            await service.push_bus.when_up()
        c1, c2, cb = await self.clients((p1, "pusher"), (p2, "pusher"), (b, "pusher"))
        await c1.ask("announce", scope="all", start=0, count=50)
        await c2.ask("announce", scope="all", start=50, count=50)
        await until("B delivered both processes' pushes", lambda: b.push_bus.received == 100)
        # each process of node A saw both processes' pushes on Redis and skipped them all
        await until("p1 skipped", lambda: p1.push_bus.own_skipped == 100)
        await until("p2 skipped", lambda: p2.push_bus.own_skipped == 100)
        for client in (c1, c2, cb):
            got = await client.pushes()
            self.assertEqual([p for p in got if p["n"] < 50], numbered("all", 0, 50))
            self.assertEqual([p for p in got if p["n"] >= 50], numbered("all", 50, 50))
            self.assertEqual(len(got), 100)
        self.assertEqual((p1.push_bus.received, p2.push_bus.received), (0, 0))

    def test_a_node_of_two_processes_and_another_node(self) -> defer.Deferred:
        return defer.ensureDeferred(self.scenario())


class HungRedisTests(RedisNodes):
    """A Redis that stops answering without closing its connections (SIGSTOP): the reply
    deadline and the keep-alive PING notice it, the bus goes down (pushes counted), and it
    comes back once Redis answers again (SIGCONT)."""

    async def scenario(self) -> None:
        import os
        import signal

        from qewd_twisted.pushbus.redisbus import RedisPushBus

        got: list[Any] = []
        a = RedisPushBus(reactor, "A", lambda record: None, port=self.redis.port,
                         timeout=0.5, keepalive=0.3)
        b = RedisPushBus(reactor, "B", got.append, port=self.redis.port,
                         timeout=0.5, keepalive=0.3)
        for bus in (a, b):
            bus.startService()
            self.addCleanup(bus.stopService)
            await bus.when_up()
        a.publish({"scope": "all", "message": 1, "origin": "A/p"})
        await until("B got the first push", lambda: len(got) == 1)

        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: self.redis.proc.poll() is None
                        and os.kill(self.redis.proc.pid, signal.SIGCONT))
        a.publish({"scope": "all", "message": 2, "origin": "A/p"})  # never acknowledged
        await until("both buses noticed", lambda: not a.up and not b.up, timeout=10)
        self.assertEqual(a.dropped["lost"], 1)
        a.publish({"scope": "all", "message": 3, "origin": "A/p"})
        self.assertEqual(a.dropped["down"], 1)

        os.kill(self.redis.proc.pid, signal.SIGCONT)
        await a.when_up()
        await b.when_up()
        a.publish({"scope": "all", "message": 4, "origin": "A/p"})
        await until("B got the push after Redis answered again",
                    lambda: got and got[-1]["message"] == 4, timeout=10)
        # the push whose connection was dropped unacknowledged was never resent; Redis may
        # still have delivered it to a subscriber before the stop, but nothing arrives twice
        messages = [r["message"] for r in got]
        self.assertIn(messages, ([1, 4], [1, 2, 4]))

    def test_a_hung_redis_is_noticed_and_pushes_resume(self) -> defer.Deferred:
        return defer.ensureDeferred(self.scenario())


class RedisPasswordTests(TestCase):
    """A Redis that requires a password (``database.params.password``): the bus authenticates
    on both connections; with a wrong password it never comes up, and pushes for other nodes
    are dropped and counted while local delivery goes on."""

    timeout = 60

    def setUp(self) -> None:
        self.redis = RedisServer("--requirepass", "s3cret")
        self.addCleanup(self.redis.cleanup)
        self.redis.start(reserve_port(self))

    def node(self, password: str) -> QEWDService:
        return start_node(self, moduleMap={"pusher": "tests.apps.pusher"},
                          database={"type": "redis", "params": {"port": self.redis.port,
                                                                "password": password}})

    async def scenario(self) -> None:
        a, b = self.node("s3cret"), self.node("s3cret")
        await a.push_bus.when_up()
        await b.push_bus.when_up()
        a1, b1 = (await Client(a, "pusher").start()), (await Client(b, "pusher").start())
        for c in (a1, b1):
            self.addCleanup(c.ws.close)
        await a1.ask("announce", scope="all", start=0, count=2)
        await until("B received", lambda: b.push_bus.received == 2)
        self.assertEqual(await b1.pushes(), numbered("all", 0, 2))

        # a bus with the wrong password: refused, retried, never up; pushes dropped, counted
        from qewd_twisted.pushbus.redisbus import RedisPushBus

        delivered: list[Any] = []
        wrong = RedisPushBus(reactor, "wrong-node", delivered.append, port=self.redis.port,
                             password="wrong")
        wrong.startService()
        self.addCleanup(wrong.stopService)
        await until("the bus was refused twice (it retries)", lambda: self._refusals() >= 2)
        self.assertFalse(wrong.up)
        wrong.publish({"scope": "all", "message": 1, "origin": "wrong-node/p"})
        self.assertEqual(wrong.dropped["down"], 1)
        await a1.ask("announce", scope="all", start=2, count=1)
        await until("B received", lambda: b.push_bus.received == 3)
        self.assertEqual(delivered, [])

    def test_authenticates_and_a_wrong_password_keeps_it_down(self) -> defer.Deferred:
        self.events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        return defer.ensureDeferred(self.scenario())

    def _refusals(self) -> int:
        return sum("failed" in e.get("log_format", "") and "WRONGPASS" in str(e.get("error"))
                   for e in self.events)


class BenchSmokeTests(TestCase):
    """bench/pushbus.py runs (a few hundred pushes; no figure is asserted)."""

    timeout = 60

    def test_bench_pushbus_runs(self) -> defer.Deferred:
        from bench.pushbus import measure

        async def run() -> None:
            [row] = await measure(reactor, 300, 1)
            self.assertEqual(row["dropped"], 0)
            self.assertGreater(row["per_second"], 0)

        return defer.ensureDeferred(run())


class ProcessesAndRedisTests(TestCase):
    """``twistd -n qewd`` with ``processes: 2`` (tests/integration/test_processes.py's node)
    and a second node, on one real Redis: a push from either process or from the other node
    reaches every client exactly once and in order. The node's processes relay to each other
    over their AMP channel and skip their own node's pushes on Redis (one node id)."""

    timeout = 240
    setUp = _processes.ProcessesTests.setUp
    _kill_strays = _processes.ProcessesTests._kill_strays
    start = _processes.ProcessesTests.start
    serving = _processes.ProcessesTests.serving
    health = _processes.ProcessesTests.health
    get = _processes.ProcessesTests.get
    client = _processes.ProcessesTests.client
    one_per_process = _processes.ProcessesTests.one_per_process
    shouts = _processes.ProcessesTests.shouts

    @defer.inlineCallbacks
    def test_a_node_of_two_processes_and_another_node_share_push(self) -> Any:
        redis = RedisServer()
        self.addCleanup(redis.cleanup)
        redis.start(reserve_port(self))
        database = {"type": "redis", "params": {"port": redis.port}}
        node = self.start(database=database)
        yield self.serving(node, 2)
        yield _processes.poll("both processes' push buses up",
                              lambda: node.output.count("carrying server push") >= 2)
        other = start_node(self, moduleMap={"procs": "tests.apps.procs"}, database=database)
        yield other.push_bus.when_up()
        a, b = yield self.one_per_process()
        c = EIOClient(eio_url(other))
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "procs", "jwt": True})
        c.token = (yield defer.ensureDeferred(c.message()))["message"]["token"]

        def shout(sender: Any, tag: str, count: int) -> None:
            sender.emit({"type": "shout", "token": sender.token,
                         "params": {"tag": tag, "count": count}})
            sender.emit({"type": "shout", "token": sender.token,
                         "params": {"tag": tag + "-end", "count": 1}})

        # from one process of the node: its sibling (AMP) and the other node (Redis)
        shout(a, "x", 30)
        expected = [("x", i, a.pid) for i in range(30)]
        for client in (a, b, c):
            self.assertEqual((yield self.shouts(client, "x")), expected)
        # from the other node: both processes of the node, each from Redis
        shout(c, "y", 30)
        expected = [("y", i, os.getpid()) for i in range(30)]
        for client in (a, b, c):
            self.assertEqual((yield self.shouts(client, "y")), expected)
        # and nothing came twice: a last round finds no stray copy before it
        shout(b, "z", 1)
        for client in (a, b, c):
            self.assertEqual((yield self.shouts(client, "z")), [("z", 0, b.pid)])
        self.assertEqual(sum(other.push_bus.dropped.values()), 0)
        self.assertEqual(other.push_bus.own_skipped, 31)
        self.assertEqual(other.push_bus.received, 31 + 2)  # x and x-end, z and z-end
        yield node.signal("TERM")
