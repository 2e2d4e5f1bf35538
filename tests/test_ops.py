# test-case-name: tests.test_ops
"""
Operations in memory: the config keys, readiness, the status page's data, auth and HTML, the
request rates window, the link event ring and the request log (docs/operations.md).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qewd_twisted.ops.status_page import (
    AuthThrottle,
    StatusJSONResource,
    StatusPageResource,
    render_page,
)
from qewd_twisted.config import ConfigError, config_from_dict
from qewd_twisted.core.interfaces import ILinkObserver
from qewd_twisted.mesh.links import LinkState
from qewd_twisted.ops.metrics import Labels
from qewd_twisted.mesh.replicas import ReplicaSet
from qewd_twisted.ops.operations import LinkEvents, Operations, RequestLog, RequestRates
from qewd_twisted.testing import FakeReactor, NodeHarness

from .test_metrics import APPS, URL, FakeLink


class ConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        c = config_from_dict({})
        self.assertEqual((c.metrics, c.metrics_listen, c.status, c.log_requests),
                         (False, None, True, False))

    def test_metrics_forms(self) -> None:
        self.assertEqual(config_from_dict({"metrics": True}).metrics, True)
        self.assertEqual(config_from_dict({"metrics": False}).metrics, False)
        c = config_from_dict({"metrics": {"listen": "tcp:9100:interface=127.0.0.1"}})
        self.assertEqual((c.metrics, c.metrics_listen),
                         (True, "tcp:9100:interface=127.0.0.1"))

    def test_problems_with_key_paths(self) -> None:
        cases = {
            "config.metrics: must be True, False or {'listen': 'tcp:9100'}, got 'yes' (str)":
                {"metrics": "yes"},
            "config.metrics.listen: missing (an endpoint string such as 'tcp:9100')":
                {"metrics": {}},
            "config.metrics.listen: invalid endpoint 'nope:1': Unknown endpoint type: 'nope'":
                {"metrics": {"listen": "nope:1"}},
            "config.metrics.lisen: unknown key (did you mean 'listen'?)":
                {"metrics": {"lisen": "tcp:9100", "listen": "tcp:9100"}},
            "config.metrics.listen: invalid endpoint 'tcp:8080': it is also in config.listen "
            "(for that, use metrics: True)": {"metrics": {"listen": "tcp:8080"}},
            "config.status: must be True or False, got 1 (int)": {"status": 1},
            "config.logRequests: must be True or False, got 'on' (str)": {"logRequests": "on"},
        }
        for problem, config in cases.items():
            with self.assertRaises(ConfigError) as e:
                config_from_dict(config)
            self.assertEqual(e.exception.problems, [problem])


class RequestRatesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = FakeReactor()
        self.clock.advance(1000)
        self.rates = RequestRates(self.clock, Labels({"demo": ["echo"]}))

    def finish(self, type: str = "echo", outcome: str = "ok", took: float = 0.0) -> None:
        req = SimpleNamespace(application="demo", type=type,
                              started=self.clock.seconds() - took)
        self.rates.request_finished(req, outcome)

    def test_window(self) -> None:
        for _ in range(30):
            self.finish(took=0.01)
        self.clock.advance(30)
        self.finish(outcome="error", took=0.04)
        self.finish(type="made-up")
        [echo, other] = self.rates.recent()
        self.assertEqual(echo, {"application": "demo", "type": "echo", "requests": 31,
                                "errors": 1, "per_second": 0.517, "mean_ms": 11.0})
        self.assertEqual((other["type"], other["requests"]), ("other", 1))
        self.clock.advance(30)  # the first 30 are now more than a minute old
        [echo, other] = self.rates.recent()
        self.assertEqual((echo["requests"], echo["errors"]), (1, 1))
        self.clock.advance(60)
        self.assertEqual(self.rates.recent(), [])
        self.assertEqual(self.rates.totals[("demo", "echo")], [31, 1])

    def test_registrations(self) -> None:
        self.rates.registered(None, "demo", True, False)
        self.rates.registered(None, "demo", False, True)
        self.rates.registered(None, "whatever", True, False)
        self.assertEqual(self.rates.registrations, {("demo", "jwt"): 1, ("demo", "session"): 1,
                                                    ("other", "jwt"): 1})


class LinkEventsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = FakeReactor()
        self.link = FakeLink()
        self.other = FakeLink("http://elsewhere:1")
        self.events = LinkEvents(self.clock, {URL: self.link, self.other.url: self.other},
                                 size=5)

    def test_is_a_link_observer(self) -> None:
        self.assertTrue(verifyObject(ILinkObserver, self.events))
        self.assertEqual(self.link.observers, [self.events])

    def test_state_changes(self) -> None:
        self.events.link_state_changed(self.link, LinkState.DOWN)
        self.clock.advance(2)
        self.events.link_state_changed(self.link, LinkState.UP)
        self.assertEqual([e["text"] for e in self.events.events],
                         [f"link {URL} is down", f"link {URL} is up"])
        self.assertEqual(self.events.since[URL], 2)

    def test_reported_events(self) -> None:
        self.events.link_event(self.link, "error", f"link {URL}: connect failed: refused")
        self.events.link_event(self.other, "timeout", "link http://elsewhere:1: login timed out")
        self.events.link_event(self.link, "dropped", f"link {URL}: late frame dropped")
        self.assertEqual([(e["url"], e["kind"]) for e in self.events.events],
                         [(URL, "error"), ("http://elsewhere:1", "timeout"), (URL, "dropped")])
        self.assertEqual(self.events.last_error[URL]["text"], f"link {URL}: late frame dropped")

    def test_ring_is_bounded_and_stop_detaches(self) -> None:
        for i in range(20):
            self.events.link_event(self.link, "error", f"link {URL}: problem {i}")
        self.assertEqual([e["text"][-2:] for e in self.events.events],
                         ["15", "16", "17", "18", "19"])
        self.events.stop()
        self.assertEqual((self.link.observers, self.other.observers), ([], []))
        self.events.start()
        self.assertEqual(self.link.observers, [self.events])


class RequestLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.captured: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "qewd_twisted.requests":
                self.captured.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_one_event_per_request_with_stable_fields(self) -> None:
        link = FakeLink()
        h = NodeHarness(APPS, micro_services=SimpleNamespace(
            route=lambda a, t: (link, "remote-app") if t == "remote" else None))
        h.node.observer = RequestLog(h.clock)
        c = h.connect()
        token = h.register(c, "demo")
        h.send(c, {"type": "echo", "token": token, "params": {"password": "hunter2"}})
        h.send(c, {"type": "remote", "token": token})
        h.clock.advance(0.25)
        link.requests[0][1].frame({"type": "remote", "finished": True, "message": {"ok": 1}})
        fields = ("request_id", "application", "type", "outcome", "duration_ms", "forwarded",
                  "link")
        [local, forwarded] = self.captured
        self.assertEqual(local["log_level"], LogLevel.info)
        self.assertEqual({k: local[k] for k in fields[1:]},
                         {"application": "demo", "type": "echo", "outcome": "ok",
                          "duration_ms": 0.0, "forwarded": False, "link": None})
        self.assertEqual({k: forwarded[k] for k in fields[1:]},
                         {"application": "demo", "type": "remote", "outcome": "ok",
                          "duration_ms": 250.0, "forwarded": True, "link": URL})
        self.assertEqual(forwarded["request_id"], local["request_id"] + 1)
        self.assertNotIn("hunter2", repr(local))
        self.assertNotIn(token, repr(self.captured))

    def test_off_by_default(self) -> None:
        h = NodeHarness(APPS)
        c = h.connect()
        h.send(c, {"type": "echo", "token": h.register(c, "demo")})
        self.assertEqual(self.captured, [])


class FakeRequest:
    """What the status resources use of twisted.web's Request."""

    def __init__(self, password: bytes | None = None) -> None:
        self.password = password
        self.code = 200
        self.headers: dict[bytes, bytes] = {}

    def getPassword(self) -> bytes:
        return self.password if self.password is not None else b""

    def getUser(self) -> bytes:
        return b"operator" if self.password is not None else b""

    def getHeader(self, name: bytes) -> bytes | None:
        if name.lower() == b"authorization" and self.password is not None:
            return b"Basic ..."
        return None

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value


def sample_status(**changes: Any) -> dict[str, Any]:
    status = {
        "server": {"name": "node-<1>", "version": "0.1.0", "started": "2026-01-01T00:00:00Z",
                   "uptime_seconds": 5, "listen": ["tcp:8080"], "accepting": True,
                   "ready": False, "reasons": [f"link {URL} has not registered yet"],
                   "links_down": [URL]},
        "connections": {"total": 2, "by_framing": {"engine.io": 2},
                        "by_application": {"demo": 2}, "from_masters": 0},
        "pool": {"size": 2, "busy": 1, "queued": 0, "max_queue": 20000, "running": True},
        "requests": {"in_flight": 1, "window_seconds": 60,
                     "recent": [{"application": "demo", "type": "echo", "requests": 6,
                                 "errors": 1, "per_second": 0.1, "mean_ms": 2.0}],
                     "since_start": [{"application": "demo", "type": "echo", "requests": 6,
                                      "errors": 1}]},
        "registrations": [{"application": "demo", "mode": "jwt", "count": 2}],
        "links": [{"url": URL, "application": "remote-app", "state": "down", "since": None,
                   "in_flight": 0, "queued": 0, "registrations": 0, "reregistrations": 0,
                   "last_error": {"text": "connect failed: <refused>"}}],
        "events": [{"time": "2026-01-01T00:00:01Z", "url": URL, "kind": "error",
                    "text": "connect failed: <refused>"}],
    }
    status.update(changes)
    return status


class StatusResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ops = SimpleNamespace(status=sample_status)

    def test_needs_the_password(self) -> None:
        resource = StatusPageResource(self.ops, b"s3cret!", AuthThrottle(Clock()))
        for password in (None, b"", b"wrong", b"s3cret", b"s3cret!!"):
            request = FakeRequest(password)
            body = resource.render_GET(request)
            self.assertEqual(request.code, 401, password)
            self.assertEqual(request.headers[b"www-authenticate"],
                             b'Basic realm="qewd status", charset="UTF-8"')
            self.assertNotIn(b"remote-app", body)
        request = FakeRequest(b"s3cret!")
        body = resource.render_GET(request)
        self.assertEqual(request.code, 200)
        self.assertEqual(request.headers[b"content-type"], b"text/html; charset=utf-8")
        self.assertIn(b"default-src 'none'", request.headers[b"content-security-policy"])
        self.assertEqual(request.headers[b"cache-control"], b"no-store")
        self.assertIn(b"remote-app", body)

    def test_json(self) -> None:
        request = FakeRequest(b"pw")
        body = StatusJSONResource(self.ops, b"pw", AuthThrottle(Clock())).render_GET(request)
        self.assertEqual(request.headers[b"content-type"], b"application/json")
        self.assertEqual(json.loads(body), sample_status())

    def test_page_escapes_everything(self) -> None:
        page = render_page(sample_status())
        self.assertNotIn("<1>", page)
        self.assertIn("node-&lt;1&gt;", page)
        self.assertIn("connect failed: &lt;refused&gt;", page)
        self.assertIn(f'data-url="{URL}" data-state="down"', page)
        self.assertNotIn("<script", page)

    def test_page_when_empty(self) -> None:
        page = render_page(sample_status(links=[], events=[], registrations=[]))
        self.assertIn("No micro-service links configured.", page)
        self.assertIn("No link events.", page)

    def test_replica_sets_table_only_when_there_are_some(self) -> None:
        self.assertNotIn("Replica sets", render_page(sample_status()))
        page = render_page(sample_status(replica_sets=[
            {"urls": [URL, "http://<b>:2"], "application": "remote-app", "state": "up",
             "links": 2, "up": 1, "in_flight": 3, "queued": 0,
             "sent": {URL: 4, "http://<b>:2": 5}}]))
        self.assertIn('<table id="replica-sets">', page)
        self.assertIn("1 of 2", page)
        self.assertIn("http://&lt;b&gt;:2: 5", page)
        self.assertNotIn("<b>", page)


class ReplicaReadinessTests(SynchronousTestCase):
    """/ready with replicas: a set needs one registered replica, a lone link itself."""

    @staticmethod
    def link(url: str, registrations: int) -> Any:
        return SimpleNamespace(url=url, application="remote-app", registrations=registrations,
                               reregistrations=0,
                               state=LinkState.UP if registrations else LinkState.DOWN,
                               is_up=bool(registrations),
                               add_observer=lambda observer: (lambda: None))

    def readiness(self, links: list[Any], replica_sets: list[Any]) -> tuple[bool, Any]:
        service = SimpleNamespace(running=True, ports=[1], listeners=[1],
                                  node=SimpleNamespace(accepting=True),
                                  pool=SimpleNamespace(running=True))
        ops = SimpleNamespace(service=service, links={link.url: link for link in links},
                              replica_sets=replica_sets)
        return Operations.readiness(ops)  # type: ignore[arg-type]

    def test_one_replica_registered_is_enough(self) -> None:
        a, b = self.link("http://a:1", 1), self.link("http://b:1", 0)
        ready, body = self.readiness([a, b], [ReplicaSet([a, b])])
        self.assertTrue(ready)
        self.assertEqual(body["down"], ["http://b:1"])
        lone = self.link("http://c:1", 0)
        ready, body = self.readiness([a, b, lone], [ReplicaSet([a, b])])
        self.assertEqual((ready, body["reasons"]),
                         (False, ["link http://c:1 has not registered yet"]))

    def test_a_set_with_none_registered_is_waited_for(self) -> None:
        a, b = self.link("http://a:1", 0), self.link("http://b:1", 0)
        ready, body = self.readiness([a, b], [ReplicaSet([a, b])])
        self.assertFalse(ready)
        self.assertEqual(body["reasons"], ["link http://a:1 has not registered yet",
                                           "link http://b:1 has not registered yet"])
