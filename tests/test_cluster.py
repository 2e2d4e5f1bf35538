"""
The processes of one node (qewd_twisted/cluster): the supervisor's logic with a fake spawner
and a Clock (restarts and backoff, the watchdog, the shutdown order), the control channel in
memory (push relay in order and exactly once, the whole node's figures), the shared socket
adopted on real loopback, and ``processes`` in the config.
"""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted import QEWDService
from qewd_twisted.cluster import aggregate
from qewd_twisted.cluster.child import (
    ChildControl,
    ProcessPushBus,
    SharedPortEndpoint,
    shared_endpoints,
)
from qewd_twisted.cluster.protocol import Chunked, Deliver, Ready
from qewd_twisted.cluster.supervisor import (
    EX_CONFIG,
    KILL_MARGIN,
    START_TIMEOUT,
    IProcessSpawner,
    Supervisor,
    open_shared,
)
from qewd_twisted.config import Config, ConfigError, config_from_dict
from qewd_twisted.core.push import IPushBus, make_push


class FakeNode:
    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.connections: dict[str, Any] = {}

    def deliver_push(self, push: dict[str, Any]) -> None:
        self.delivered.append(push)


class FakeProcess:
    """A node process: its control channel is a ChildControl in memory (pump to deliver)."""

    def __init__(self, index: int, pid: int, channel: Any, ended: Any, log: list[Any]) -> None:
        self.index = index
        self.pid = pid
        self.ended = ended
        self.signals: list[str] = []
        self.log = log
        self.node = FakeNode()
        self.reports: dict[str, Any] = {"status": {"process": index}}
        self.child = ChildControl(node=self.node, reporter=self.reports.__getitem__)
        self.pump = connect(channel, FakeTransport(channel, True),
                            self.child, FakeTransport(self.child, False))

    def signal(self, name: str) -> None:
        self.signals.append(name)
        self.log.append((name, self.index))

    def end(self, code: int | None = 0, signal: int | None = None) -> None:
        self.ended(Failure(error.ProcessTerminated(code, signal)))

    def ready(self) -> None:
        self.child.callRemote(Ready, pid=self.pid)
        self.pump.flush()


@implementer(IProcessSpawner)
class FakeSpawner:
    def __init__(self) -> None:
        self.spawned: list[FakeProcess] = []
        self.log: list[Any] = []

    def spawn(self, index: int, channel: Any, ended: Any) -> FakeProcess:
        p = FakeProcess(index, 1000 + len(self.spawned), channel, ended, self.log)
        self.spawned.append(p)
        return p

    def current(self, index: int) -> FakeProcess:
        return [p for p in self.spawned if p.index == index][-1]


class FakePort:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def stopListening(self) -> None:
        self.log.append(("close",))


def no_jitter() -> Any:
    return backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0, jitter=lambda: 0)


class SupervisorTests(SynchronousTestCase):
    def make(self, n: int = 2, **config: Any) -> tuple[Supervisor, FakeSpawner, Clock]:
        clock = Clock()
        spawner = FakeSpawner()
        self.gave_up: list[bool] = []
        sup = Supervisor(Config(processes=n, **config), clock, spawner, policy=no_jitter(),
                         on_give_up=lambda: self.gave_up.append(True))
        sup.startService()
        return sup, spawner, clock

    def test_spawner_interface(self) -> None:
        verifyObject(IProcessSpawner, FakeSpawner())

    def test_starts_every_process_and_sees_it_ready(self) -> None:
        sup, spawner, clock = self.make(3)
        self.assertEqual([p.index for p in spawner.spawned], [0, 1, 2])
        self.assertEqual([p["state"] for p in sup.processes()], ["starting"] * 3)
        for p in spawner.spawned:
            p.ready()
        self.assertEqual([p["state"] for p in sup.processes()], ["ready"] * 3)
        self.assertEqual([p["pid"] for p in sup.processes()], [1000, 1001, 1002])

    def test_a_process_that_ends_is_restarted_with_growing_bounded_backoff(self) -> None:
        sup, spawner, clock = self.make(2)
        delays = []
        for _ in range(9):
            spawner.current(1).end(1)
            self.assertEqual(sup.processes()[1]["state"], "restarting")
            call = sup.slots[1].restart_call
            delays.append(call.getTime() - clock.seconds())
            before = len(spawner.spawned)
            clock.advance(delays[-1])
            self.assertEqual(len(spawner.spawned), before + 1)
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])
        self.assertEqual(sup.processes()[1]["restarts"], 9)
        self.assertEqual(sup.processes()[0]["restarts"], 0)

    def test_backoff_starts_again_after_a_stable_run(self) -> None:
        sup, spawner, clock = self.make(1)
        for _ in range(3):
            spawner.current(0).end(1)
            clock.advance(sup.slots[0].restart_call.getTime() - clock.seconds())
        spawner.current(0).ready()
        for _ in range(40):  # answer heartbeats while it runs stably
            clock.advance(1)
            spawner.current(0).pump.flush()
        spawner.current(0).end(None, 9)
        self.assertEqual(sup.slots[0].restart_call.getTime() - clock.seconds(), 0.5)

    def test_a_configuration_failure_stops_the_node(self) -> None:
        sup, spawner, clock = self.make(2)
        spawner.current(0).end(EX_CONFIG)
        self.assertEqual(self.gave_up, [True])
        self.assertIsNone(sup.slots[0].restart_call)
        clock.advance(60)
        self.assertEqual(len(spawner.spawned), 2)

    def test_a_process_that_stops_answering_heartbeats_is_killed_and_replaced(self) -> None:
        sup, spawner, clock = self.make(2, process_heartbeat_timeout=4.0)
        for p in spawner.spawned:
            p.ready()
        stuck = spawner.current(1)
        for _ in range(20):  # process 0 answers; process 1's reactor is stuck (never pumped)
            clock.advance(0.5)
            spawner.current(0).pump.flush()
        self.assertEqual(spawner.current(0).signals, [])
        self.assertEqual(stuck.signals, ["KILL"])
        self.assertIn("no heartbeat answer", sup.slots[1].killed)
        stuck.end(None, 9)  # SIGKILL's end
        clock.advance(0.5)
        self.assertIsNot(spawner.current(1), stuck)
        self.assertEqual(sup.processes()[1]["restarts"], 1)
        self.assertEqual(sup.processes()[0]["state"], "ready")

    def test_a_process_that_never_gets_ready_is_killed(self) -> None:
        sup, spawner, clock = self.make(1)
        clock.advance(START_TIMEOUT - 1)
        self.assertEqual(spawner.current(0).signals, [])
        clock.advance(2)
        self.assertEqual(spawner.current(0).signals, ["KILL"])

    def test_sigterm_drains_every_process_then_closes_and_ends(self) -> None:
        sup, spawner, clock = self.make(3, shutdown_grace=5.0)
        sup.ports = [FakePort(spawner.log)]
        for p in spawner.spawned:
            p.ready()
        spawner.current(2).end(1)  # one is waiting for its restart
        d = sup.stopService()
        self.assertEqual(spawner.log, [("TERM", 0), ("TERM", 1), ("close",)])
        self.assertNoResult(d)
        spawner.current(0).end(0)
        self.assertNoResult(d)
        clock.advance(60)  # no restart while stopping
        self.assertEqual(len(spawner.spawned), 3)
        spawner.current(1).end(0)
        self.successResultOf(d)

    def test_sigterm_kills_what_outlives_the_grace_period(self) -> None:
        sup, spawner, clock = self.make(2, shutdown_grace=5.0)
        d = sup.stopService()
        spawner.current(0).end(0)
        clock.advance(5.0 + KILL_MARGIN)
        self.assertEqual(spawner.current(1).signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        spawner.current(1).end(None, 9)
        self.successResultOf(d)


class FakePortReading:
    connected = True

    def __init__(self) -> None:
        self.reading = True

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


class BalanceTests(SynchronousTestCase):
    def test_a_process_well_above_the_mean_stops_accepting_until_back(self) -> None:
        from types import SimpleNamespace

        from qewd_twisted.cluster.child import Balance

        port = FakePortReading()
        service = SimpleNamespace(node=FakeNode(), ports=[port])
        balance = Balance(service)
        service.node.connections = dict.fromkeys(range(10))
        self.assertEqual(balance(9.0), 10)  # near the mean
        self.assertTrue(port.reading)
        self.assertEqual(balance(5.0), 10)  # twice the mean (10 vs 0 elsewhere)
        self.assertFalse(port.reading)
        service.node.connections = dict.fromkeys(range(6))
        balance(5.0)  # 6 <= 5 x 1.1 + 2
        self.assertTrue(port.reading)

    def test_the_supervisor_sends_the_mean_and_keeps_the_counts(self) -> None:
        clock = Clock()
        spawner = FakeSpawner()
        sup = Supervisor(Config(processes=2, process_heartbeat_timeout=4.0), clock, spawner)
        sup.startService()
        shares: list[float] = []
        for p, n in zip(spawner.spawned, (10, 0)):
            p.child.balance = lambda share, n=n: shares.append(share) or n
            p.ready()
        for _ in range(2):
            clock.advance(1)
            for p in spawner.spawned:
                p.pump.flush()
        self.assertEqual([slot.connections for slot in sup.slots], [10, 0])
        self.assertEqual(shares, [0.0, 0.0, 5.0, 5.0])


class PushRelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.sup = Supervisor(Config(processes=3), self.clock, self.spawner)
        self.sup.startService()
        for p in self.spawner.spawned:
            p.ready()

    def flush(self) -> None:
        for _ in range(3):
            for p in self.spawner.spawned:
                p.pump.flush()

    def test_bus_interface(self) -> None:
        verifyObject(IPushBus, ProcessPushBus(ChildControl()))

    def test_each_push_reaches_every_other_process_once_in_order(self) -> None:
        p0, p1, p2 = self.spawner.spawned
        bus0, bus2 = ProcessPushBus(p0.child), ProcessPushBus(p2.child)
        sent0 = [make_push("all", {"n": i}, "p0") for i in range(50)]
        sent2 = [make_push("application", {"n": i}, "p2", application="a") for i in range(5)]
        for push in sent0:
            bus0.publish(push)
        bus2.publish(sent2[0])
        self.flush()
        for push in sent2[1:]:
            bus2.publish(push)
        self.flush()
        self.assertEqual(p0.node.delivered, sent2)
        self.assertEqual(p1.node.delivered[:50], sent0)
        self.assertEqual(p1.node.delivered[50:], sent2)
        self.assertEqual(p2.node.delivered, sent0)
        self.assertEqual(self.sup.relayed, 2 * 55)

    def test_a_push_larger_than_one_amp_value(self) -> None:
        p0, p1, _ = self.spawner.spawned
        big = make_push("socket", {"text": "x" * 300000}, "p0", socket_id="s1")
        ProcessPushBus(p0.child).publish(big)
        self.flush()
        self.assertEqual(p1.node.delivered, [big])

    def test_a_push_that_is_not_json_is_dropped_and_counted(self) -> None:
        p0, p1, _ = self.spawner.spawned
        bus = ProcessPushBus(p0.child)
        bus.publish(make_push("all", {"bad": object()}, "p0"))
        self.flush()
        self.assertEqual((bus.dropped, p1.node.delivered), (1, []))

    def test_a_malformed_push_from_the_channel_is_refused(self) -> None:
        p0 = self.spawner.spawned[0]
        channel = self.sup.slots[0].channel
        channel.callRemote(Deliver, push=b'{"scope":"nowhere","message":1,"origin":"x"}')
        self.flush()
        self.assertEqual((p0.node.delivered, p0.child.refused), ([], 1))

    def test_gather_asks_every_ready_process(self) -> None:
        p0, p1, p2 = self.spawner.spawned
        d = p1.child.gather("status")
        self.flush()
        whole = self.successResultOf(d)
        self.assertEqual([r["report"] for r in whole["reports"]],
                         [{"process": 0}, {"process": 1}, {"process": 2}])
        self.assertEqual([p["state"] for p in whole["processes"]], ["ready"] * 3)

    def test_a_failing_report_is_an_error_entry_and_the_channels_stay(self) -> None:
        p0, p1, p2 = self.spawner.spawned
        p2.reports.clear()  # its reporter raises KeyError: an error AMP does not know
        d = p0.child.gather("status")
        self.flush()
        whole = self.successResultOf(d)
        self.assertEqual(whole["reports"][2]["error"], "KeyError: 'status'")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertTrue(all(slot.channel is not None for slot in self.sup.slots))
        self.assertTrue(all(not p.child.transport.disconnecting for p in self.spawner.spawned))

    def test_gather_reports_a_process_that_does_not_answer(self) -> None:
        p0, p1, p2 = self.spawner.spawned
        d = p0.child.gather("status")
        for _ in range(3):  # p2 is stuck: never pumped from here on
            p0.pump.flush()
            p1.pump.flush()
        self.assertNoResult(d)
        self.clock.advance(5.1)
        p0.pump.flush()
        whole = self.successResultOf(d)
        self.assertEqual(whole["reports"][2]["error"], "no answer within 5 s")


class HandOffTests(SynchronousTestCase):
    def test_session_ids_name_their_process(self) -> None:
        from qewd_twisted.cluster.handoff import owner_of, sid_maker
        from qewd_twisted.transports.engineio import new_sid

        for index in (0, 1, 63, 64, 255, 4095):
            sid = sid_maker(index, new_sid)()
            self.assertEqual(len(sid), len(new_sid()))
            self.assertEqual(owner_of(sid.encode()), index)
        for bad in (b"", b"a", b"\xff\xfe", b"*abc"):
            self.assertIsNone(owner_of(bad))

    def test_raw_request_is_the_request_again(self) -> None:
        from twisted.web.test.requesthelper import DummyRequest

        from qewd_twisted.cluster.handoff import raw_request

        request = DummyRequest([b"socket.io", b""])
        request.method = b"POST"
        request.uri = b"/socket.io/?EIO=3&transport=polling&sid=AB"
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"transfer-encoding", [b"chunked"])
        request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1"])
        request.content = io.BytesIO(b"5:42[1]")
        self.assertEqual(raw_request(request),
                         b"POST /socket.io/?EIO=3&transport=polling&sid=AB HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Length: 7\r\n\r\n5:42[1]")

    def test_a_connection_for_a_process_not_serving_is_refused(self) -> None:
        from qewd_twisted.cluster.protocol import NotServing

        clock = Clock()
        spawner = FakeSpawner()
        sup = Supervisor(Config(processes=2), clock, spawner)
        sup.startService()
        spawner.current(0).ready()
        for owner in (1, 7):  # starting; no such process
            r, w = os.pipe()
            self.addCleanup(os.close, w)
            self.failureResultOf(sup.hand_over(owner, b"GET / HTTP/1.1\r\n\r\n", r),
                                 NotServing)
            self.assertRaises(OSError, os.fstat, r)  # the received copy is closed


class ChunkedTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        arg = Chunked()
        for data in (b"", b"x", b"y" * 65535, bytes(range(256)) * 1000):
            strings: dict[bytes, bytes] = {}
            arg.toBox(b"push", strings, {"push": data}, None)
            self.assertTrue(all(len(v) <= 0xFFFF for v in strings.values()))
            objects: dict[str, Any] = {}
            arg.fromBox(b"push", strings, objects, None)
            self.assertEqual(objects, {"push": data})


SAMPLE_A = """# HELP qewd_requests_total Requests finished.
# TYPE qewd_requests_total counter
qewd_requests_total{application="a",type="t",outcome="ok"} 3.0
# HELP qewd_connections Client connections open now.
# TYPE qewd_connections gauge
qewd_connections{framing="engine.io"} 2.0
"""
SAMPLE_B = SAMPLE_A.replace("} 3.0", "} 5.0").replace("} 2.0", "} 7.0")


class AggregateTests(SynchronousTestCase):
    def test_metrics_carry_a_process_label(self) -> None:
        whole = {"processes": [{"process": 0, "state": "ready", "restarts": 0},
                               {"process": 1, "state": "restarting", "restarts": 2}],
                 "reports": [{"process": 0, "pid": 1, "report": {"text": SAMPLE_A}},
                             {"process": 1, "pid": 2, "error": "no answer within 5 s"},
                             {"process": 2, "pid": 3, "report": {"text": SAMPLE_B}}]}
        text = aggregate.merge_metrics(whole).decode()
        self.assertIn('qewd_requests_total{application="a",outcome="ok",process="0",type="t"} '
                      '3.0', text)
        self.assertIn('qewd_requests_total{application="a",outcome="ok",process="2",type="t"} '
                      '5.0', text)
        self.assertIn('qewd_connections{framing="engine.io",process="2"} 7.0', text)
        self.assertEqual(text.count("# TYPE qewd_requests_total counter"), 1)
        self.assertIn('qewd_processes{state="restarting"} 1.0', text)
        self.assertIn('qewd_process_restarts_total{process="1"} 2.0', text)
        self.assertIn("qewd_process_reports_missing 1.0", text)

    def status(self, total: int, busy: int, requests: int) -> dict[str, Any]:
        return {"server": {"name": "q", "version": "0", "started": "2026-01-01T00:00:00Z",
                           "uptime_seconds": 5, "listen": ["tcp:0"], "accepting": True,
                           "reasons": [], "ready": True, "links_down": []},
                "connections": {"total": total, "by_framing": {"engine.io": total},
                                "by_application": {"a": total}, "from_masters": 0},
                "pool": {"size": 2, "busy": busy, "queued": 0, "max_queue": 10,
                         "running": True},
                "requests": {"in_flight": busy, "window_seconds": 60,
                             "recent": [{"application": "a", "type": "t",
                                         "requests": requests, "errors": 0,
                                         "per_second": requests / 60, "mean_ms": 2.0}],
                             "since_start": [{"application": "a", "type": "t",
                                              "requests": requests, "errors": 1}]},
                "registrations": [{"application": "a", "mode": "jwt", "count": total}],
                "links": [], "events": []}

    def test_status_sums_the_processes(self) -> None:
        whole = {"processes": [{"process": 0, "pid": 10, "state": "ready", "restarts": 0,
                                "uptime_seconds": 5},
                               {"process": 1, "pid": 11, "state": "ready", "restarts": 1,
                                "uptime_seconds": 3}],
                 "reports": [{"process": 0, "pid": 10, "report": self.status(3, 1, 60)},
                             {"process": 1, "pid": 11, "report": self.status(4, 2, 120)}]}
        merged = aggregate.merge_status(self.status(3, 1, 60), whole, 0)
        self.assertEqual(merged["connections"]["total"], 7)
        self.assertEqual(merged["connections"]["by_framing"], {"engine.io": 7})
        self.assertEqual((merged["pool"]["size"], merged["pool"]["busy"]), (4, 3))
        self.assertEqual(merged["requests"]["in_flight"], 3)
        self.assertEqual(merged["requests"]["recent"][0]["requests"], 180)
        self.assertEqual(merged["requests"]["since_start"][0]["errors"], 2)
        self.assertEqual(merged["registrations"][0]["count"], 7)
        self.assertEqual([p["connections"] for p in merged["processes"]], [3, 4])
        self.assertTrue(merged["server"]["ready"])
        from qewd_twisted.ops.status_page import render_page

        self.assertIn('id="processes"', render_page(merged))

    def test_status_names_a_missing_or_restarting_process(self) -> None:
        whole = {"processes": [{"process": 0, "pid": 10, "state": "ready", "restarts": 0,
                                "uptime_seconds": 5},
                               {"process": 1, "pid": None, "state": "restarting",
                                "restarts": 1, "uptime_seconds": 0}],
                 "reports": [{"process": 0, "pid": 10, "report": self.status(3, 1, 60)}]}
        merged = aggregate.merge_status(self.status(3, 1, 60), whole, 0)
        self.assertFalse(merged["server"]["ready"])
        self.assertEqual(merged["server"]["reasons"], ["process 1: restarting"])


class ConfigTests(SynchronousTestCase):
    def test_default_is_one(self) -> None:
        self.assertEqual(config_from_dict({}).processes, 1)
        self.assertEqual(config_from_dict({"processes": 4}).processes, 4)

    def test_bad_values(self) -> None:
        for value in (0, -1, 1.5, "2", True, 100000):
            with self.assertRaises(ConfigError) as e:
                config_from_dict({"processes": value})
            self.assertIn("config.processes: must be an integer from 1 to 256", str(e.exception))

    def test_endpoints_that_cannot_be_shared(self) -> None:
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"processes": 2, "listen": ["tcp:0", "systemd:domain=INET:index=0"]})
        self.assertIn("config.processes: 2 processes share their listening sockets",
                      str(e.exception))
        self.assertIn("'systemd:domain=INET:index=0'", str(e.exception))

    def test_heartbeat_timeout(self) -> None:
        self.assertEqual(config_from_dict({}).process_heartbeat_timeout, 10.0)
        with self.assertRaises(ConfigError):
            config_from_dict({"processHeartbeatTimeout": 0})

    def test_an_embedded_service_is_one_process(self) -> None:
        with self.assertRaises(ConfigError) as e:
            QEWDService(config_from_dict({"processes": 2}), Clock())
        self.assertIn("config.processes: 2 processes are started and supervised by `twistd "
                      "qewd`", str(e.exception))


class _Hello(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello")
        self.transport.loseConnection()


class SharedSocketTests(TestCase):
    """The supervisor's socket, adopted twice (as two processes would) on real loopback."""

    @defer.inlineCallbacks
    def test_adopted_socket_serves_and_survives_one_adopter(self) -> None:
        shared = open_shared(reactor, "tcp:0:interface=127.0.0.1")
        self.addCleanup(shared.stopListening)
        port = shared.getHost().port
        adopted = []
        for _ in range(2):
            endpoint = SharedPortEndpoint(reactor, os.dup(shared.fileno()))
            adopted.append((yield endpoint.listen(Factory.forProtocol(_Hello))))
        self.addCleanup(lambda: [p.stopListening() for p in adopted if p.connected])
        self.assertEqual([p.getHost().port for p in adopted], [port, port])
        self.assertEqual((yield self.fetch(port)), b"hello")
        yield adopted[0].stopListening()  # one process gone: the port still answers
        self.assertEqual((yield self.fetch(port)), b"hello")

    @defer.inlineCallbacks
    def test_unix_socket_kept_while_one_adopter_stops(self) -> None:
        from twisted.internet.endpoints import UNIXClientEndpoint

        import tempfile

        folder = tempfile.mkdtemp(prefix="qewd-")  # a short path: AF_UNIX allows ~100 bytes
        self.addCleanup(os.rmdir, folder)
        path = os.path.join(folder, "node.sock")
        description = f"unix:{path}"
        shared = open_shared(reactor, description)
        self.addCleanup(shared.stopListening)
        endpoints = [shared_endpoints(reactor, [description], [os.dup(shared.fileno())])
                     for _ in range(2)]
        adopted = []
        for endpoint in endpoints:
            adopted.append((yield endpoint[description].listen(Factory.forProtocol(_Hello))))
        self.addCleanup(lambda: adopted[1].stopListening() if adopted[1].connected else None)
        client = UNIXClientEndpoint(reactor, path)
        self.assertEqual((yield self.fetch(0, client)), b"hello")
        yield adopted[0].stopListening()
        self.assertTrue(os.path.exists(path))  # the supervisor's, not the process's to remove
        self.assertEqual((yield self.fetch(0, client)), b"hello")

    @defer.inlineCallbacks
    def test_tls_endpoint_adopted_with_its_context(self) -> None:
        import twisted.test
        from twisted.internet import ssl
        from twisted.internet.endpoints import SSL4ClientEndpoint

        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        description = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
        shared = open_shared(reactor, description)
        self.addCleanup(shared.stopListening)
        endpoint = shared_endpoints(reactor, [description], [os.dup(shared.fileno())])
        adopted = yield endpoint[description].listen(Factory.forProtocol(_Hello))
        self.addCleanup(adopted.stopListening)
        client = SSL4ClientEndpoint(reactor, "127.0.0.1", shared.getHost().port,
                                    ssl.CertificateOptions(verify=False))
        self.assertEqual((yield self.fetch(0, client)), b"hello")

    def fetch(self, port: int, client: Any = None) -> defer.Deferred[bytes]:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        class Read(Protocol):
            def __init__(self) -> None:
                self.data = b""
                self.done: defer.Deferred[bytes] = defer.Deferred()

            def dataReceived(self, data: bytes) -> None:
                self.data += data

            def connectionLost(self, reason: Any) -> None:
                self.done.callback(self.data)

        proto = Read()
        d = connectProtocol(client or TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        d.addCallback(lambda _: proto.done)
        return d
