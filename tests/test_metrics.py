# test-case-name: tests.test_metrics
"""
Metrics, in memory: what each hook counts, what is read at scrape time, bounded labels, a
per-node registry, and the exposition format (docs/operations.md lists the metrics).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted.mesh.links import LinkState
from qewd_twisted.mesh.replicas import ReplicaSet
from qewd_twisted.ops.metrics import Labels, NodeMetrics
from qewd_twisted.core.interfaces import ILink, LinkOutcome
from qewd_twisted.ops.observe import FanOut, NodeObserver, combine
from qewd_twisted.testing import MemoryConnection, NodeHarness
from qewd_twisted.apps.pool import PoolFull


def echo(messageObj, session, send, finished):
    finished({"ok": True})


def fail(messageObj, session, send, finished):
    finished({"error": "no"})


def never(messageObj, session, send, finished):
    pass


APPS = {"demo": SimpleNamespace(handlers={"echo": echo, "fail": fail, "never": never})}
URL = "http://10.0.0.5:8080"
URL2 = "http://10.0.0.6:8080"


@implementer(ILink)
class FakeLink:
    """What NodeMetrics and Node read of a Link; requests are answered by the test."""

    def __init__(self, url: str = URL) -> None:
        self.url = url
        self.application = "remote-app"
        self.state = LinkState.UP
        self.in_flight = 0
        self.queued = 0
        self.registrations = 0
        self.reregistrations = 0
        self.requests: list[tuple[dict, Any]] = []
        self.observers: list[Any] = []

    @property
    def is_up(self) -> bool:
        return self.state is LinkState.UP

    def add_observer(self, observer: Any) -> Any:
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def send_request(self, message: dict, receiver: Any, timeout: Any) -> None:
        self.requests.append((message, receiver))


class FakeLinkTests(SynchronousTestCase):
    def test_fake_link_is_a_link(self) -> None:
        self.assertTrue(verifyObject(ILink, FakeLink()))


class FakeMicroServices:
    def __init__(self, link: FakeLink, routes: dict[tuple[str, str], str]) -> None:
        self.link = link
        self.routes = routes

    def route(self, application: str, type: str) -> Any:
        remote = self.routes.get((application, type))
        return (self.link, remote) if remote else None


class TrafficConnection(MemoryConnection):
    framing = "plain"
    bytes = (0, 0)

    def traffic(self) -> tuple[int, int]:
        return self.bytes


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = FakeLink()
        routes = {("demo", "remote"): "remote-app"}
        self.h = NodeHarness(APPS, handler_timeout=5,
                             micro_services=FakeMicroServices(self.link, routes))
        self.pool = SimpleNamespace(size=4, busy=0, queued=0, running=True)
        labels = Labels.for_node(self.h.node.apps,
                                 [SimpleNamespace(application="demo", type="remote")])
        self.m = NodeMetrics(self.h.node, clock=self.h.clock, labels=labels, pool=self.pool,
                             links={URL: self.link}, server_name="test-node", process=False)
        self.h.node.observer = self.m
        self.c = self.h.connect()
        self.token = self.h.register(self.c, "demo")

    def value(self, name: str, **labels: str) -> float | None:
        return self.m.registry.get_sample_value(name, labels)

    def requests(self, application: str, type: str, outcome: str) -> float | None:
        return self.value("qewd_requests_total", application=application, type=type,
                          outcome=outcome)

    def send(self, type: str, **extra: Any) -> list[Any]:
        return self.h.send(self.c, {"type": type, "token": self.token, **extra})


class LabelTests(SynchronousTestCase):
    def test_folding(self) -> None:
        labels = Labels({"demo": ["echo"], "jwt": []})
        self.assertEqual(labels.pair("demo", "echo"), ("demo", "echo"))
        self.assertEqual(labels.pair("demo", "made-up"), ("demo", "other"))
        self.assertEqual(labels.pair("made-up", "echo"), ("other", "other"))
        self.assertEqual(labels.pair(None, None), ("other", "other"))
        self.assertEqual(labels.application("jwt"), "jwt")
        self.assertEqual(labels.application("x" * 1000), "other")

    def test_for_node_knows_handlers_and_routes(self) -> None:
        h = NodeHarness(APPS)
        labels = Labels.for_node(h.node.apps, [SimpleNamespace(application="jwt", type="login")])
        self.assertEqual(labels.known, {"demo": frozenset({"echo", "fail", "never"}),
                                        "jwt": frozenset({"login"})})


class OutcomeTests(SynchronousTestCase):
    def test_combine(self) -> None:
        a, b = NodeObserver(), NodeObserver()
        self.assertIs(type(combine([None, None])), NodeObserver)
        self.assertIs(combine([None, a]), a)
        fan = combine([a, None, b])
        self.assertIsInstance(fan, FanOut)
        self.assertEqual(fan.observers, (a, b))

    def test_fan_out_calls_each(self) -> None:
        calls = []

        class Recorder(NodeObserver):
            def __init__(self, name: str) -> None:
                self.name = name

            def connection_opened(self, conn: Any) -> None:
                calls.append((self.name, "opened"))

            def connection_closed(self, conn: Any) -> None:
                calls.append((self.name, "closed"))

            def registered(self, conn: Any, application: str, jwt: bool, rereg: bool) -> None:
                calls.append((self.name, "registered", application, jwt, rereg))

            def request_finished(self, req: Any, outcome: str) -> None:
                calls.append((self.name, req.type, outcome))

        h = NodeHarness(APPS)
        h.node.observer = combine([Recorder("a"), Recorder("b")])
        c = h.connect()
        token = h.register(c, "demo")
        h.send(c, {"type": "echo", "token": token})
        h.disconnect(c)
        self.assertEqual(calls, [
            ("a", "opened"), ("b", "opened"),
            ("a", "registered", "demo", True, False), ("b", "registered", "demo", True, False),
            ("a", "echo", "ok"), ("b", "echo", "ok"),
            ("a", "closed"), ("b", "closed")])

    def test_default_observer_does_nothing(self) -> None:
        h = NodeHarness(APPS)
        self.assertIs(type(h.node.observer), NodeObserver)
        c = h.connect()
        [f] = h.send(c, {"type": "echo", "token": h.register(c, "demo")})
        self.assertIs(f["message"]["ok"], True)


class RequestMetricsTests(Base):
    def test_known_series_exist_at_zero(self) -> None:
        for type in ("echo", "fail", "never", "remote"):
            for outcome in ("ok", "error", "timeout", "503"):
                self.assertEqual(self.requests("demo", type, outcome), 0.0)
        self.assertEqual(self.value("qewd_forwarded_requests_total", url=URL, outcome="ok"), 0)

    def test_ok_error_and_duration(self) -> None:
        self.send("echo")
        self.send("fail")
        self.assertEqual(self.requests("demo", "echo", "ok"), 1)
        self.assertEqual(self.requests("demo", "fail", "error"), 1)
        self.assertEqual(self.value("qewd_request_duration_seconds_count",
                                    application="demo", type="echo"), 1)

    def test_timeout_and_its_duration(self) -> None:
        self.send("never")
        self.h.clock.advance(5)
        self.assertEqual(self.requests("demo", "never", "timeout"), 1)
        self.assertEqual(self.value("qewd_request_duration_seconds_sum",
                                    application="demo", type="never"), 5.0)
        self.assertEqual(self.value("qewd_request_duration_seconds_bucket",
                                    application="demo", type="never", le="2.5"), 0)
        self.assertEqual(self.value("qewd_request_duration_seconds_bucket",
                                    application="demo", type="never", le="5.0"), 1)

    def test_pool_full_is_503(self) -> None:
        self.h.node.local.pool = SimpleNamespace(run=lambda *a, **k: defer.fail(PoolFull("full")))
        self.send("echo")
        self.assertEqual(self.requests("demo", "echo", "503"), 1)

    def test_no_handler_and_unknown_types_are_other(self) -> None:
        for i in range(50):
            self.send(f"made-up-{i}")
        self.assertEqual(self.requests("demo", "other", "error"), 50)
        exposed = self.m.exposition()[0].decode()
        self.assertNotIn("made-up", exposed)

    def test_unknown_application_is_other(self) -> None:
        token = self.h.register(self.c, "no-such-app")
        self.h.send(self.c, {"type": "anything", "token": token})
        self.assertEqual(self.requests("other", "other", "error"), 1)
        self.assertEqual(self.value("qewd_registrations_total", application="other",
                                    mode="jwt", kind="register"), 1)

    def test_in_flight_read_at_scrape_time(self) -> None:
        self.send("never")
        self.assertEqual(self.value("qewd_requests_in_flight"), 1)
        self.h.clock.advance(5)
        self.assertEqual(self.value("qewd_requests_in_flight"), 0)


class ForwardMetricsTests(Base):
    def test_forwarded_outcomes_and_latency(self) -> None:
        frames = {
            "ok": {"type": "remote", "finished": True, "message": {"ok": True}},
            "error": {"type": "remote", "finished": True, "message": {"error": "bad"}},
            "503": LinkOutcome.DOWN,
            "timeout": LinkOutcome.TIMEOUT,
        }
        for outcome, frame in frames.items():
            self.send("remote")
            _, receiver = self.link.requests.pop()
            self.h.clock.advance(0.2)
            receiver.frame({"type": "remote", "finished": False, "message": {"step": 1}})
            self.assertEqual(self.value("qewd_forwarded_requests_total", url=URL,
                                        outcome=outcome), 0)
            if isinstance(frame, LinkOutcome):
                receiver.failed(frame)
            else:
                receiver.frame(frame)
            self.assertEqual(self.value("qewd_forwarded_requests_total", url=URL,
                                        outcome=outcome), 1, outcome)
            self.assertEqual(self.requests("demo", "remote", outcome), 1)
        self.assertEqual(self.value("qewd_forwarded_request_duration_seconds_count", url=URL), 4)
        self.assertAlmostEqual(
            self.value("qewd_forwarded_request_duration_seconds_sum", url=URL), 0.8, places=5)

    def test_link_state_read_at_scrape_time(self) -> None:
        self.assertEqual(self.value("qewd_link_up", url=URL, application="remote-app"), 1)
        self.link.state = LinkState.DOWN
        self.link.in_flight, self.link.queued = 3, 2
        self.link.registrations, self.link.reregistrations = 1, 4
        self.assertEqual(self.value("qewd_link_up", url=URL, application="remote-app"), 0)
        self.assertEqual(self.value("qewd_link_requests_in_flight", url=URL), 3)
        self.assertEqual(self.value("qewd_link_requests_queued", url=URL), 2)
        self.assertEqual(self.value("qewd_link_registrations_total", url=URL, kind="register"), 1)
        self.assertEqual(self.value("qewd_link_registrations_total", url=URL,
                                    kind="reregister"), 4)
        self.assertEqual(self.value("qewd_link_reconnects_total", url=URL), 4)


class ConnectionMetricsTests(Base):
    def test_registrations_by_mode_and_kind(self) -> None:
        self.h.register(self.c, "demo", jwt=False)
        other = self.h.connect()
        self.h.send(other, {"type": "ewd-reregister", "token": self.token})
        value = self.value
        self.assertEqual(value("qewd_registrations_total", application="demo", mode="jwt",
                               kind="register"), 1)
        self.assertEqual(value("qewd_registrations_total", application="demo", mode="session",
                               kind="register"), 1)
        self.assertEqual(value("qewd_registrations_total", application="demo", mode="jwt",
                               kind="reregister"), 1)

    def test_connections_and_bytes(self) -> None:
        self.assertEqual(self.value("qewd_connections", framing="memory"), 1)
        self.assertEqual(self.value("qewd_connections", framing="plain"), 0)
        a, b = TrafficConnection("plainSocket000000001"), TrafficConnection("plainSocket00002")
        a.bytes, b.bytes = (100, 1000), (10, 20)
        self.h.node.connection_opened(a)
        self.h.node.connection_opened(b)
        self.assertEqual(self.value("qewd_connections", framing="plain"), 2)
        self.assertEqual(self.value("qewd_connections_opened_total", framing="plain"), 2)
        self.assertEqual(self.value("qewd_websocket_received_bytes_total"), 110)
        self.h.node.connection_lost(a)
        a.bytes = (999, 999)  # what it does after closing no longer counts
        self.h.node.connection_lost(a)  # a second close is not counted twice
        b.bytes = (15, 25)
        self.assertEqual(self.value("qewd_connections", framing="plain"), 1)
        self.assertEqual(self.value("qewd_websocket_received_bytes_total"), 115)
        self.assertEqual(self.value("qewd_websocket_sent_bytes_total"), 1025)

    def test_pool_read_at_scrape_time(self) -> None:
        self.pool.busy, self.pool.queued = 4, 17
        self.assertIsNone(self.value("qewd_worker_pool_spare_threads"))
        self.pool.spares = 2
        self.assertEqual(self.value("qewd_worker_pool_spare_threads"), 2)
        self.assertEqual(self.value("qewd_worker_pool_threads"), 4)
        self.assertEqual(self.value("qewd_worker_pool_busy_threads"), 4)
        self.assertEqual(self.value("qewd_worker_pool_queue_depth"), 17)


class ExpositionTests(Base):
    def test_text_format_parses(self) -> None:
        self.send("echo")
        body, content_type = self.m.exposition(None)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"))
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        for name in ("qewd_requests", "qewd_request_duration_seconds", "qewd_connections",
                     "qewd_requests_in_flight", "qewd_worker_pool_busy_threads",
                     "qewd_link_up", "qewd_link_reconnects", "qewd_forwarded_requests",
                     "qewd_registrations", "qewd_websocket_sent_bytes", "qewd_build_info"):
            self.assertIn(name, names)

    def test_openmetrics_when_asked(self) -> None:
        body, content_type = self.m.exposition("application/openmetrics-text; version=1.0.0")
        self.assertTrue(content_type.startswith("application/openmetrics-text"))
        self.assertTrue(body.endswith(b"# EOF\n"))
        list(openmetrics_families(body.decode()))  # parses

    def test_registry_is_per_node(self) -> None:
        other = NodeMetrics(self.h.node, clock=self.h.clock, labels=Labels({}), process=False)
        self.send("echo")
        self.assertEqual(self.requests("demo", "echo", "ok"), 1)
        self.assertIsNone(other.registry.get_sample_value(
            "qewd_requests_total", {"application": "demo", "type": "echo", "outcome": "ok"}))
        self.assertIsNone(REGISTRY.get_sample_value(
            "qewd_requests_total", {"application": "demo", "type": "echo", "outcome": "ok"}))

    def test_build_info(self) -> None:
        from qewd_twisted import __version__

        self.assertEqual(self.value("qewd_build_info", version=__version__,
                                    server_name="test-node"), 1)


class DocsTests(SynchronousTestCase):
    def test_every_metric_is_documented(self) -> None:
        """docs/operations.md names every qewd_* metric family the node exposes."""
        from tests.test_docs import read_doc

        doc = read_doc("operations.md")
        h = NodeHarness(APPS)
        replicas = ReplicaSet([FakeLink(), FakeLink(URL2)])
        m = NodeMetrics(h.node, clock=h.clock, labels=Labels({}), pool=SimpleNamespace(
            size=1, busy=0, queued=0, spares=0), links={URL: FakeLink()},
            replica_sets=[replicas], process=False)
        body = m.exposition()[0].decode()
        names = {f.name for f in text_string_to_metric_families(body)}
        self.assertGreaterEqual(len(names), 21)
        for name in sorted(names):
            documented = {f"`{name}`", f"`{name}_total`"}
            self.assertTrue(any(d in doc for d in documented), f"{name} not in operations.md")


class ReplicaSetMetricsTests(SynchronousTestCase):
    def test_members_up_and_requests_sent_per_replica(self) -> None:
        a, b = FakeLink(), FakeLink(URL2)
        replicas = ReplicaSet([a, b])
        for _ in range(3):
            replicas.send_request({"type": "x"}, None, None)
        b.state = LinkState.DOWN
        replicas.send_request({"type": "x"}, None, None)
        h = NodeHarness(APPS)
        m = NodeMetrics(h.node, clock=h.clock, labels=Labels({}), links={URL: a, URL2: b},
                        replica_sets=[replicas], process=False)
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(m.exposition()[0].decode())
                  for s in f.samples}
        label = (("application", "remote-app"), ("replicas", f"{URL},{URL2}"))
        self.assertEqual(values[("qewd_replica_set_links", label)], 2)
        self.assertEqual(values[("qewd_replica_set_links_up", label)], 1)
        sent = {url: values[("qewd_replica_set_requests_total",
                             (("replicas", f"{URL},{URL2}"), ("url", url)))]
                for url in (URL, URL2)}
        self.assertEqual(sent, {URL: 3, URL2: 1})
        self.assertEqual((len(a.requests), len(b.requests)), (3, 1))
