# -*- test-case-name: tests.test_redispush -*-
"""
The Redis push bus (qewd_twisted/pushbus/redisbus.py) in memory: its connections are
protocols on ``StringTransport``s driven by hand (what Redis would answer), on a fake clock;
its config (``push``) and its metrics. tests/integration/test_redis_push.py runs it against a
real redis-server between two real nodes.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted.config import ConfigError, config_from_dict
from qewd_twisted.core.push import IPushBus, IPushBusStats, make_push
from qewd_twisted.ops.metrics import Labels, NodeMetrics
from qewd_twisted.pushbus import redisbus
from qewd_twisted.pushbus.redisbus import CHANNEL_PREFIX, RedisPushBus
from qewd_twisted.pushbus.resp import ReplyParser, encode_command
from qewd_twisted.testing import NodeHarness

CHANNEL = (CHANNEL_PREFIX + "db0").encode()


def confirmation(channel: bytes = CHANNEL) -> bytes:
    return b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(channel), channel)


def message(data: bytes, channel: bytes = CHANNEL) -> bytes:
    return b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(data), data)


@implementer(IStreamClientEndpoint)
class Unreachable:
    """An endpoint whose connection attempts never complete (the tests connect by hand)."""

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return defer.Deferred()


class Wired:
    """A bus whose two connections are in-memory transports, made up the way its
    ClientServices would (each connection built and prepared)."""

    def __init__(self, test: SynchronousTestCase, node_id: str = "nodeA",
                 password: str | None = None) -> None:
        self.clock = Clock()
        self.delivered: list[dict[str, Any]] = []
        self.bus = RedisPushBus(self.clock, node_id, self.delivered.append, password=password,
                                channel="db0", timeout=5, keepalive=None,
                                endpoint=Unreachable())
        self.publisher = self.pub_transport = None
        self.subscriber = self.sub_transport = None
        self.password = password

    def connect_publisher(self, answer: bool = True) -> None:
        self.publisher = self.bus._new_publisher()
        self.pub_transport = StringTransport()
        self.publisher.makeConnection(self.pub_transport)  # the bus prepares it from here
        if not answer:
            return
        if self.password is not None:
            self.publisher.dataReceived(b"+OK\r\n")
        self.publisher.dataReceived(b"+PONG\r\n")

    def connect_subscriber(self) -> None:
        self.subscriber = self.bus._new_subscriber()
        self.sub_transport = StringTransport()
        self.subscriber.makeConnection(self.sub_transport)
        if self.password is not None:
            self.subscriber.dataReceived(b"+OK\r\n")
        self.subscriber.dataReceived(confirmation())

    def up(self) -> RedisPushBus:
        self.connect_publisher()
        self.connect_subscriber()
        return self.bus

    def published(self) -> list[Any]:
        """The PUBLISH commands written so far, as records."""
        commands = ReplyParser().feed(self.pub_transport.value())
        out = []
        for cmd in commands:
            if cmd[0] == b"PUBLISH":
                assert cmd[1] == CHANNEL, cmd
                out.append(json.loads(cmd[2]))
        return out


class LogCapture:
    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def about(self, text: str) -> list[dict[str, Any]]:
        return [e for e in self.events if text in e.get("log_format", "")]


class BusTests(SynchronousTestCase):
    def test_provides_the_interfaces(self) -> None:
        bus = Wired(self).bus
        verifyObject(IPushBus, bus)
        verifyObject(IPushBusStats, bus)
        self.assertEqual(bus.kind, "redis")

    def test_up_only_once_published_and_subscribed(self) -> None:
        w = Wired(self, password="s3cret")
        waiting = w.bus.when_up()
        w.connect_publisher()
        self.assertEqual(ReplyParser().feed(w.pub_transport.value()),
                         [[b"AUTH", b"s3cret"], [b"PING"]])
        self.assertFalse(w.bus.up)
        self.assertNoResult(waiting)
        w.connect_subscriber()
        self.assertEqual(ReplyParser().feed(w.sub_transport.value()),
                         [[b"AUTH", b"s3cret"], [b"SUBSCRIBE", CHANNEL]])
        self.assertTrue(w.bus.up)
        self.successResultOf(waiting)
        self.successResultOf(w.bus.when_up())

    def test_publish_carries_the_record_and_counts_acknowledgements(self) -> None:
        w = Wired(self)
        bus = w.up()
        push = make_push("application", {"text": "caf\u00e9 \U0001f600"}, "nodeA/p1",
                         application="chat")
        bus.publish(push)
        bus.publish(make_push("socket", 2, "nodeA/p1", socket_id="s9"))
        self.assertEqual(w.published(), [push, make_push("socket", 2, "nodeA/p1",
                                                          socket_id="s9")])
        self.assertTrue(w.pub_transport.value().isascii())  # JSON with \\u escapes
        self.assertEqual(bus.published, 0)  # not yet acknowledged
        w.publisher.dataReceived(b":3\r\n:0\r\n")
        self.assertEqual(bus.published, 2)
        self.assertEqual(sum(bus.dropped.values()), 0)

    def test_down_drops_and_counts_with_one_log_line_a_minute(self) -> None:
        logs = LogCapture(self)
        w = Wired(self)
        for n in range(5):
            w.bus.publish(make_push("all", n, "nodeA/p1"))
        w.connect_publisher()  # subscriber not yet: still down
        w.bus.publish(make_push("all", 5, "nodeA/p1"))
        self.assertEqual(w.published(), [])
        self.assertEqual(w.bus.dropped["down"], 6)
        self.assertEqual(len(logs.about("not carried")), 1)
        w.clock.advance(60)
        w.bus.publish(make_push("all", 6, "nodeA/p1"))
        lines = logs.about("not carried")
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1]["count"], 6)  # the ones since the last line
        self.assertEqual(lines[1]["reason"], "down")

    def test_a_lost_connection_counts_unacknowledged_pushes_and_goes_down(self) -> None:
        logs = LogCapture(self)
        w = Wired(self)
        bus = w.up()
        bus.publish(make_push("all", 1, "nodeA/p1"))
        bus.publish(make_push("all", 2, "nodeA/p1"))
        w.publisher.dataReceived(b":1\r\n")
        w.publisher.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((bus.published, bus.dropped["lost"]), (1, 1))
        self.assertFalse(bus.up)
        self.assertEqual(len(logs.about("lost Redis")), 1)
        bus.publish(make_push("all", 3, "nodeA/p1"))
        self.assertEqual(bus.dropped["down"], 1)
        # back: a new publishing connection; the subscriber stayed
        w.connect_publisher()
        self.assertTrue(bus.up)
        self.assertEqual(len(logs.about("is back on channel")), 1)
        bus.publish(make_push("all", 4, "nodeA/p1"))
        self.assertEqual([p["message"] for p in w.published()], [4])

    def test_unacknowledged_bytes_are_bounded(self) -> None:
        w = Wired(self)
        bus = w.up()
        push = make_push("all", "x" * 100, "nodeA/p1")
        size = len(json.dumps(push, separators=(",", ":")))
        self.patch(redisbus, "MAX_UNACKED_BYTES", size * 3)
        for _ in range(5):
            bus.publish(push)
        self.assertEqual((len(w.published()), bus.dropped["backlog"]), (3, 2))
        w.publisher.dataReceived(b":1\r\n")  # one acknowledged: room for one more
        bus.publish(push)
        bus.publish(push)
        self.assertEqual((len(w.published()), bus.dropped["backlog"]), (4, 3))

    def test_too_large_and_not_json_are_dropped(self) -> None:
        w = Wired(self)
        bus = w.up()
        self.patch(redisbus, "MAX_PUSH_BYTES", 200)
        bus.publish(make_push("all", "x" * 300, "nodeA/p1"))
        bus.publish(make_push("all", {1, 2}, "nodeA/p1"))
        bus.publish(make_push("all", float("nan"), "nodeA/p1"))
        self.assertEqual((bus.dropped["too_large"], bus.dropped["not_json"]), (1, 2))
        self.assertEqual(w.published(), [])

    def test_a_publisher_is_up_only_once_redis_answered(self) -> None:
        w = Wired(self)
        w.connect_subscriber()
        w.connect_publisher(answer=False)  # connected (the kernel accepted), no PONG yet
        self.assertEqual(ReplyParser().feed(w.pub_transport.value()), [[b"PING"]])
        self.assertFalse(w.bus.up)
        w.publisher.dataReceived(b"+PONG\r\n")
        self.assertTrue(w.bus.up)

    def test_publish_never_raises(self) -> None:
        w = Wired(self)
        bus = w.up()
        w.pub_transport.write = None  # a transport that blows up
        bus.publish(make_push("all", 1, "nodeA/p1"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual(bus._unacked, 0)

    def test_received_pushes_from_other_nodes_are_delivered_own_node_skipped(self) -> None:
        w = Wired(self, node_id="nodeA")
        bus = w.up()
        other = make_push("all", {"n": 1}, "nodeB/p7")
        same_node_other_process = make_push("all", {"n": 2}, "nodeA/p2")
        prefix_only = make_push("all", {"n": 3}, "nodeAB/p1")  # another node, same prefix
        w.subscriber.dataReceived(b"".join(
            message(json.dumps(p).encode()) for p in (other, same_node_other_process,
                                                      prefix_only)))
        self.assertEqual(w.delivered, [other, prefix_only])
        self.assertEqual((bus.received, bus.own_skipped), (2, 1))

    def test_malformed_messages_are_counted_not_delivered(self) -> None:
        w = Wired(self)
        bus = w.up()
        for data in (b"not json", b"\xff\xfe", b"[1]", b'{"scope":"all","origin":"x/y"}',
                     b'{"scope":"all","message":NaN,"origin":"x/y"}'):
            w.subscriber.dataReceived(message(data))
        w.subscriber.dataReceived(message(b'{"scope":"all","message":1,"origin":"x/y"}',
                                          channel=b"another"))
        self.assertEqual(w.delivered, [])
        self.assertEqual(bus.dropped["malformed"], 5)

    def test_a_delivery_that_raises_is_logged_and_the_bus_goes_on(self) -> None:
        w = Wired(self)
        bus = w.up()

        def deliver(record: dict[str, Any]) -> None:
            if record["message"] == 1:
                raise RuntimeError("boom")
            w.delivered.append(record)

        bus.deliver = deliver
        w.subscriber.dataReceived(message(b'{"scope":"all","message":1,"origin":"x/y"}')
                                  + message(b'{"scope":"all","message":2,"origin":"x/y"}'))
        self.assertEqual([r["message"] for r in w.delivered], [2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopping_is_not_an_outage(self) -> None:
        logs = LogCapture(self)
        w = Wired(self)
        bus = w.up()
        bus.startService()
        bus.publish(make_push("all", 1, "nodeA/p1"))
        d = bus.stopService()
        w.publisher.connectionLost(Failure(ConnectionDone()))
        w.subscriber.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertFalse(bus.up)
        self.assertEqual(bus.dropped["lost"], 1)  # counted, but neither it nor the
        self.assertEqual(logs.about("lost Redis") + logs.about("not carried"), [])  # close logs

    def test_not_up_within_the_timeout_is_said_once(self) -> None:
        logs = LogCapture(self)
        w = Wired(self)
        w.bus.startService()
        w.clock.advance(4.9)
        self.assertEqual(logs.about("not reachable yet"), [])
        w.clock.advance(0.2)
        self.assertEqual(len(logs.about("not reachable yet")), 1)
        w.clock.advance(60)
        self.assertEqual(len(logs.about("not reachable yet")), 1)
        self.successResultOf(w.bus.stopService())
        # up in time: nothing said; stopped first: the timer is gone
        w = Wired(self)
        w.bus.startService()
        w.up()
        w.clock.advance(10)
        w.bus.stopService()
        w2 = Wired(self)
        w2.bus.startService()
        w2.bus.stopService()
        self.assertEqual(w2.clock.getDelayedCalls(), [])
        self.assertEqual(len(logs.about("not reachable yet")), 1)

    def test_a_refused_connection_is_closed_and_retried_with_growing_backoff(self) -> None:
        w = Wired(self, password="wrong")
        policy = w.bus._policy("publisher")
        for refusals in (1, 2, 3):
            w.connect_publisher(answer=False)
            w.publisher.dataReceived(b"-WRONGPASS invalid username-password pair\r\n")
            self.assertTrue(w.pub_transport.disconnecting)
            self.assertFalse(w.bus.up)
            self.assertEqual(w.bus.refusals["publisher"], refusals)
            w.publisher.connectionLost(Failure(ConnectionDone()))
        # ClientService saw connections made (attempt 1 each time); the backoff grows anyway
        self.assertGreaterEqual(policy(1), 0.8)  # 0.1 * 2 ** 3
        w.connect_publisher()  # AUTH +OK, PING +PONG
        self.assertEqual(w.bus.refusals["publisher"], 0)
        self.assertLess(policy(1), 0.5)

    def test_a_stale_connection_lost_does_not_take_the_new_one_down(self) -> None:
        w = Wired(self)
        bus = w.up()
        old = w.publisher
        w.connect_publisher()  # a newer publishing connection is ready
        old.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(bus.up)


class NodeTests(SynchronousTestCase):
    def test_origin_is_node_id_slash_process_id(self) -> None:
        a, b = NodeHarness({}), NodeHarness({})
        node_id, process = a.node.origin.split("/")
        self.assertEqual(node_id, a.node.node_id)
        self.assertEqual(len(process), 32)
        self.assertNotEqual(a.node.node_id, b.node.node_id)

    def test_the_processes_of_one_node_share_its_id(self) -> None:
        from qewd_twisted.core.node import Node
        from qewd_twisted.testing import SyncPool

        h = NodeHarness({})
        one = Node(h.clock, h.node.apps, SyncPool(), node_id="n1")
        two = Node(h.clock, h.node.apps, SyncPool(), node_id="n1")
        self.assertTrue(one.origin.startswith("n1/") and two.origin.startswith("n1/"))
        self.assertNotEqual(one.origin, two.origin)

    def test_a_bus_on_the_node_gets_its_pushes_and_delivers_to_its_sockets(self) -> None:
        h = NodeHarness({})
        w = Wired(self, node_id=h.node.node_id)
        w.bus.deliver = h.node.deliver_push
        h.node.push_buses.append(w.up())
        conn = h.connect()
        h.node.to_all({"n": 1})
        self.assertEqual(conn.take(), [{"n": 1}])
        [sent] = w.published()
        self.assertEqual(sent["origin"], h.node.origin)
        # its own push coming back from Redis is not delivered again
        w.subscriber.dataReceived(message(json.dumps(sent).encode()))
        self.assertEqual(conn.take(), [])
        # another node's is
        w.subscriber.dataReceived(message(json.dumps(
            make_push("socket", {"n": 2}, "other/p", socket_id=conn.id)).encode()))
        self.assertEqual(conn.take(), [{"n": 2}])

    def test_metrics(self) -> None:
        h = NodeHarness({})
        w = Wired(self, node_id=h.node.node_id)
        h.node.push_buses.append(w.bus)
        w.bus.publish(make_push("all", 1, h.node.origin))
        metrics = NodeMetrics(h.node, clock=h.clock, labels=Labels({}), process=False)
        body = metrics.exposition()[0].decode()
        self.assertIn('qewd_push_bus_up{bus="redis"} 0.0', body)
        self.assertIn('qewd_push_dropped_total{bus="redis",reason="down"} 1.0', body)
        self.assertIn('qewd_push_dropped_total{bus="redis",reason="lost"} 0.0', body)
        self.assertIn('qewd_push_published_total{bus="redis"} 0.0', body)
        self.assertIn('qewd_push_received_total{bus="redis"} 0.0', body)
        w.up()
        body = metrics.exposition()[0].decode()
        self.assertIn('qewd_push_bus_up{bus="redis"} 1.0', body)


REDIS = {"type": "redis", "params": {"port": 6390, "db": 3}}


class ConfigTests(SynchronousTestCase):
    def config(self, **keys: Any) -> Any:
        return config_from_dict({"port": 0, **keys})

    def problems(self, **keys: Any) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            self.config(**keys)
        return caught.exception.problems

    def test_on_by_default_with_a_redis_database_only(self) -> None:
        self.assertFalse(self.config().push_redis)
        self.assertFalse(self.config(database={"type": "sqlite",
                                               "params": {"path": "x.sqlite"}}).push_redis)
        c = self.config(database=REDIS)
        self.assertEqual((c.push_redis, c.push_channel), (True, "db3"))
        c = self.config(database={"type": "redis"})
        self.assertEqual((c.push_redis, c.push_channel), (True, "db0"))

    def test_turned_off_or_renamed(self) -> None:
        c = self.config(database=REDIS, push={"redis": False})
        self.assertFalse(c.push_redis)
        c = self.config(database=REDIS, push={"channel": "shop-eu"})
        self.assertEqual((c.push_redis, c.push_channel), (True, "shop-eu"))
        self.assertFalse(self.config(push={"redis": False}).push_redis)

    def test_problems(self) -> None:
        self.assertEqual(self.problems(push={"redis": True}), [
            "config.push.redis: server push through Redis uses the database's Redis: set "
            "config.database to {'type': 'redis', 'params': {...}}"])
        self.assertEqual(len(self.problems(database=REDIS, push={"redis": "yes"})), 1)
        for bad in ("", "two words", 5, "x" * 201, "tab\there"):
            [problem] = self.problems(database=REDIS, push={"channel": bad})
            self.assertTrue(problem.startswith("config.push.channel: must be a name"), problem)
        [problem] = self.problems(push={"chanel": "x"})
        self.assertTrue(problem.startswith("config.push.chanel: unknown key"), problem)
        [problem] = self.problems(push=True)
        self.assertTrue(problem.startswith("config.push: must be"), problem)


class WholeNodeStatusTests(SynchronousTestCase):
    def test_the_processes_push_buses_are_merged_for_the_status_page(self) -> None:
        from qewd_twisted.cluster.aggregate import _merge_push

        def bus(up: bool, published: int, down: int) -> dict[str, Any]:
            return {"bus": "redis", "up": up, "published": published, "received": 2,
                    "dropped": {"down": down, "lost": 0}}

        self.assertEqual(_merge_push([{"push": [bus(True, 5, 0)]}, {"push": [bus(False, 1, 3)]},
                                      {}]),
                         [{"bus": "redis", "up": False, "published": 6, "received": 4,
                           "dropped": {"down": 3, "lost": 0}}])
        self.assertEqual(_merge_push([{"push": []}]), [])
