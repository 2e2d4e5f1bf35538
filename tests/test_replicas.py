"""
Tests for qewd_twisted.mesh.replicas: a micro-service destination with several hosts
(issue 16 item 4). The real ``Link``s, ``ClientService``s and Autobahn clients of
tests/test_links.py, one fake remote per replica connected in memory (iosim), every timer on a
Clock: spread, failover, all down, recovery, deadlines and per-request ordering.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qewd_twisted import errors as E
from qewd_twisted.config import Route, config_from_dict
from qewd_twisted.core.interfaces import ILink
from qewd_twisted.mesh.links import LinkState, MicroServices
from qewd_twisted.mesh.replicas import ReplicaSet
from qewd_twisted.rest import RestDispatcher, attach
from qewd_twisted.rest.forwarding import RestForwarder
from qewd_twisted.testing import MemoryConnection, NodeHarness
from tests.test_links import (
    DOWN,
    TIMEOUT,
    EventRecorder,
    FakeRemote,
    MemoryEndpoint,
    Recorder,
    refreshed,
)

URLS = ("http://127.0.0.1:3001", "http://127.0.0.1:3002", "http://127.0.0.1:3003")


class ReplicasMixin:
    """Three replicas of ``test-app`` behind one route, ``("jwt", "login")``."""

    def make(self, capable: bool = True, start: bool = True,
             extra_routes: tuple[Route, ...] = ()) -> ReplicaSet:
        self.clock = Clock()
        urls = URLS
        self.remotes = [FakeRemote(self.clock, capable=capable) for _ in urls]
        self.endpoints = [MemoryEndpoint(r, self.clock) for r in self.remotes]
        routes = [Route("jwt", "login", urls[0], "test-app", None, urls), *extra_routes]
        self.ms = MicroServices(routes, self.clock, clock=self.clock, refresh_token=refreshed,
                                retry_policy=lambda attempt: 1.0,
                                endpoints=dict(zip(urls, self.endpoints)))
        [self.replicas] = self.ms.replica_sets
        self.addCleanup(self.stop)
        if start:
            self.ms.startService()
            self.flush()
        return self.replicas

    def flush(self) -> None:
        # a frame one pump delivers may make another remote's link send: pump until still
        for _ in range(5):
            for endpoint in self.endpoints:
                endpoint.flush()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()

    def stop(self) -> None:
        if self.ms.running:
            d = self.ms.stopService()
            self.flush()
            self.successResultOf(d)
        self.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def request(self, n: int = 0, timeout: float | None = None) -> Recorder:
        """One login through the route, as the node sends it (``route`` once per request)."""
        recorder = Recorder()
        link, application = self.ms.route("jwt", "login")
        self.assertEqual(application, "test-app")
        link.send_request({"type": "login", "token": "t", "params": {"n": n}}, recorder,
                          timeout)
        self.flush()
        return recorder

    def sent_to(self, i: int) -> list[dict[str, Any]]:
        return [frame for _, frame in self.remotes[i].requests]

    def counts(self) -> list[int]:
        return [len(remote.requests) for remote in self.remotes]

    def answer(self, i: int, request: dict[str, Any], **message: Any) -> None:
        self.remotes[i].reply(request, {"n": request["params"]["n"], **message})
        self.flush()

    def kill(self, i: int) -> None:
        """Replica ``i`` goes away and stays away until `revive`."""
        self.endpoints[i].refuse = True
        self.remotes[i].drop_all()
        self.flush()

    def revive(self, i: int) -> None:
        self.endpoints[i].refuse = False


class ReplicaSetTests(ReplicasMixin, unittest.TestCase):
    def test_is_a_link_and_sums_its_members(self) -> None:
        replicas = self.make(start=False)
        self.assertTrue(verifyObject(ILink, replicas))
        self.assertEqual(replicas.url, ",".join(URLS))
        self.assertEqual(replicas.application, "test-app")
        self.assertEqual(replicas.state, LinkState.STOPPED)
        self.assertFalse(replicas.is_up)
        self.ms.startService()
        self.flush()
        self.assertEqual(replicas.state, LinkState.UP)
        self.assertEqual((replicas.live, replicas.registrations), (3, 3))
        self.assertTrue(replicas.ever_registered)
        self.request(1), self.request(2)
        self.assertEqual((replicas.in_flight, replicas.queued), (2, 0))

    def test_one_link_per_host_shared_and_one_set_per_host_list(self) -> None:
        self.make(extra_routes=(Route("jwt", "lone", URLS[1], "test-app"),
                                Route("jwt", "again", URLS[0], "test-app", None, URLS)))
        self.assertEqual(sorted(self.ms.links), list(URLS))
        self.assertEqual(len(self.ms.replica_sets), 1)
        self.assertIs(self.ms.link_for(list(URLS), "test-app"), self.replicas)
        self.assertIs(self.ms.route("jwt", "lone")[0], self.ms.links[URLS[1]])
        self.assertIs(self.ms.link_for(URLS[1], "x"), self.ms.links[URLS[1]])
        # every member is a plain link of the MicroServices (started and stopped with it)
        self.assertEqual(sorted(s.name for s in self.ms), list(URLS))
        self.assertRaises(ValueError, ReplicaSet, [self.ms.links[URLS[0]]])

    def test_spread_round_robin_when_loads_are_equal(self) -> None:
        self.make()
        for n in range(6):  # each answered before the next: every load is 0
            self.request(n)
            i = n % 3
            self.assertEqual(len(self.remotes[i].requests), n // 3 + 1)
            self.answer(i, self.sent_to(i)[-1], ok=True)
        self.assertEqual(self.counts(), [2, 2, 2])
        for n in range(6, 12):  # none answered: still even
            self.request(n)
        self.assertEqual(self.counts(), [4, 4, 4])
        self.assertEqual(self.replicas.sent, dict.fromkeys(URLS, 4))

    def test_least_outstanding_first(self) -> None:
        self.make()
        self.request(0), self.request(1), self.request(2)  # one on each, unanswered
        self.answer(1, self.sent_to(1)[0], ok=True)
        self.answer(2, self.sent_to(2)[0], ok=True)
        for n in (3, 4):  # replica 0 still has one in flight: these go to 1 and 2
            self.request(n)
        self.assertEqual(self.counts(), [1, 2, 2])
        self.request(5)  # now every replica has one outstanding: the next in turn
        self.assertEqual(sum(self.counts()), 6)
        self.assertEqual(max(self.counts()), 2)

    def test_a_qewdjs_member_that_queues_gets_fewer(self) -> None:
        self.make(capable=False)  # one request at a time per link, the rest queued
        for n in range(6):
            self.request(n)
        self.assertEqual(self.counts(), [1, 1, 1])  # sent; three more queued, one each
        self.assertEqual(self.replicas.queued, 3)
        self.answer(0, self.sent_to(0)[0], ok=True)  # replica 0 sends its queued one
        self.request(6)  # 0 has 1 outstanding, 1 and 2 have 2 each
        self.assertEqual(self.ms.links[URLS[0]].in_flight + self.ms.links[URLS[0]].queued, 2)
        self.assertEqual(self.replicas.sent[URLS[0]], 3)

    def test_failover_in_flight_gets_down_new_requests_go_to_the_survivors(self) -> None:
        self.make()
        recorders = [self.request(n, timeout=30) for n in range(6)]  # two on each
        for request in self.sent_to(0):
            self.remotes[0].reply(request, {"step": 1}, finished=False)
        self.flush()
        self.kill(0)
        self.assertEqual(self.ms.links[URLS[0]].state, LinkState.DOWN)
        # the two on replica 0: their intermediate frame, then the 503, once; never re-sent
        for n in (0, 3):
            self.assertEqual(recorders[n].frames[0]["message"], {"step": 1})
            self.assertEqual(recorders[n].frames[1:], [DOWN])
        self.assertEqual(self.counts(), [2, 2, 2])
        # the others are untouched and answered normally
        for i in (1, 2):
            for request in self.sent_to(i):
                self.answer(i, request, ok=True)
        for n in (1, 2, 4, 5):
            self.assertEqual([f["message"] for f in recorders[n].frames],
                             [{"n": n, "ok": True}])
        # new requests: only the survivors, evenly
        later = [self.request(n) for n in range(6, 12)]
        self.assertEqual(self.counts(), [2, 5, 5])
        self.assertTrue(all(r.frames == [] for r in later))
        self.assertEqual(self.replicas.live, 2)
        self.assertEqual(self.replicas.state, LinkState.UP)

    def test_all_down_is_the_lone_links_503_at_once(self) -> None:
        self.make()
        for i in range(3):
            self.kill(i)
        self.assertFalse(self.replicas.is_up)
        self.assertEqual(self.replicas.state, LinkState.DOWN)
        through_route = self.request(0, timeout=30)
        direct = Recorder()
        self.replicas.send_request({"type": "login", "token": "t"}, direct, 30)
        self.assertEqual(through_route.frames, [DOWN])
        self.assertEqual(direct.frames, [DOWN])
        self.assertEqual(self.counts(), [0, 0, 0])
        # no deadline left running for them: only the links' reconnect timers
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)

    def test_recovery_brings_a_replica_back_into_rotation(self) -> None:
        self.make()
        self.kill(0)
        for n in range(4):
            self.request(n)
        self.assertEqual(self.counts(), [0, 2, 2])
        self.advance(1.0)  # a retry while it is still away
        self.assertFalse(self.ms.links[URLS[0]].is_up)
        self.revive(0)
        self.advance(1.0)
        self.assertTrue(self.ms.links[URLS[0]].is_up)
        self.assertEqual(self.replicas.live, 3)
        self.assertEqual(self.ms.links[URLS[0]].reregistrations, 1)
        for n in (4, 5):  # replicas 1 and 2 still hold 2 each: replica 0 first
            self.request(n)
        self.assertEqual(self.counts(), [2, 2, 2])
        for i in range(3):
            for request in self.sent_to(i):
                self.answer(i, request, ok=True)
        for n in range(6, 9):
            self.request(n)
        self.assertEqual(self.counts(), [3, 3, 3])

    def test_deadlines_as_for_a_lone_link(self) -> None:
        self.make()
        slow = self.request(0, timeout=5)
        fast = self.request(1, timeout=5)
        self.answer(1, self.sent_to(1)[0], ok=True)
        self.advance(4.9)
        self.assertEqual(slow.frames, [])
        self.advance(0.1)
        self.assertEqual(slow.frames, [TIMEOUT])
        self.assertEqual(len(fast.frames), 1)
        self.answer(0, self.sent_to(0)[0], ok=True)  # late: dropped, not delivered
        self.assertEqual(slow.frames, [TIMEOUT])

    def test_replies_of_each_request_stay_in_order(self) -> None:
        self.make()
        recorders = [self.request(n) for n in range(30)]
        rng = random.Random(16)
        # every request's three frames, interleaved at random across requests and replicas,
        # each request's own in order; flushed now and then so they cross on the wire
        todo = [[i, request, 1] for i in range(3) for request in self.sent_to(i)]
        while todo:
            entry = rng.choice(todo)
            i, request, step = entry
            self.remotes[i].reply(request, {"n": request["params"]["n"], "step": step},
                                  finished=step == 3)
            entry[2] += 1
            if step == 3:
                todo.remove(entry)
            if rng.random() < 0.2:
                self.flush()
        self.flush()
        for n, recorder in enumerate(recorders):
            self.assertEqual([(f["message"]["n"], f["message"]["step"], f["finished"])
                              for f in recorder.frames],
                             [(n, 1, False), (n, 2, False), (n, 3, True)])
        self.assertEqual(self.replicas.in_flight, 0)

    def test_observers_hear_each_member(self) -> None:
        self.make(start=False)
        seen = EventRecorder()
        unsubscribe = self.replicas.add_observer(seen)
        self.ms.startService()
        self.flush()
        self.assertEqual(seen.states.count(LinkState.UP), 3)
        heard = len(seen.states)
        self.kill(2)
        self.assertEqual(seen.states[heard:], [LinkState.DOWN])
        self.assertEqual([kind for kind, _ in seen.events], ["error"])
        self.assertIn(URLS[2], seen.events[0][1])
        unsubscribe()
        self.kill(1)
        self.assertEqual(len(seen.states), heard + 1)


class ReplicaSetLogTests(ReplicasMixin, unittest.TestCase):
    def test_last_replica_down_and_back_are_logged(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.make()

        def said() -> list[str]:
            texts = [formatEvent(e) for e in events if "replica set" in e.get("log_format", "")]
            del events[:]
            return texts

        self.assertEqual(said(), [])  # coming up at start is the links' own news
        self.kill(0), self.kill(1)
        self.assertEqual(said(), [])
        self.kill(2)
        self.assertEqual(said(), [f"replica set {self.replicas.url}: no replica up; its "
                                  "requests get the 503 until one is back"])
        self.revive(1)
        self.advance(1.0)
        self.assertEqual(said(), [f"replica set {self.replicas.url}: 1 of 3 replicas up again"])


class NodeThroughReplicasTests(ReplicasMixin, unittest.TestCase):
    """Through a node: the client's frames are those of a lone link, whichever replica."""

    def setUp(self) -> None:
        self.make()
        self.h = NodeHarness({"jwt": SimpleNamespace(handlers={})}, micro_services=self.ms,
                             micro_service_timeout=None)
        self.conn = self.h.connect()
        self.token = self.h.register(self.conn, "jwt")

    def login(self, n: int) -> None:
        self.h.node.receive(self.conn, {"type": "login", "token": self.token,
                                        "params": {"n": n}})
        self.flush()

    def test_spread_failover_and_all_down(self) -> None:
        for n in range(3):
            self.login(n)
        self.assertEqual(self.counts(), [1, 1, 1])
        self.kill(1)
        [down] = self.conn.take()
        self.assertEqual((down["type"], down["message"]),
                         ("login", {"error": E.MS_DOWN, "status": {"code": 503}}))
        for i in (0, 2):
            self.answer(i, self.sent_to(i)[0], ok=True)
        self.assertEqual([f["message"]["n"] for f in self.conn.take()], [0, 2])
        for n in range(3, 7):
            self.login(n)
        self.assertEqual(self.counts(), [3, 1, 3])
        self.kill(0), self.kill(2)
        self.assertEqual(len(self.conn.take()), 4)  # the four in flight: 503 each
        self.login(99)
        [frame] = self.conn.take()
        self.assertEqual((frame["type"], frame["finished"], frame["message"]),
                         ("login", True, {"error": E.MS_DOWN, "status": {"code": 503}}))
        self.assertEqual(self.h.node.in_flight, 0)


class HttpMemoryConnection(MemoryConnection):
    framing = "http"
    needs_reply = True


class RestThroughReplicasTests(ReplicasMixin, unittest.TestCase):
    """REST micro-service routes to a destination with replicas use the same set as the
    WebSocket routes (one rotation, one set of links); a group of replicated destinations
    still sends to every destination, each to one of its replicas."""

    def setUp(self) -> None:
        self.make()
        config = config_from_dict({"jwt": {"secret": "someSecret123"}, "port": 0, "u_services": {
            "destinations": {"svc": {"hosts": list(URLS), "application": "test-app"},
                             "group": {"destinations": ["svc"]}},
            "routes": [{"application": "jwt", "types": {"login": {"destination": "svc"}}},
                       {"path": "/api/items/:id", "destination": "svc"},
                       {"path": "/api/all/:id", "destination": "group"}]}})
        self.h = NodeHarness({"jwt": SimpleNamespace(handlers={})}, micro_services=self.ms)
        forwarder = RestForwarder(self.h.node, config.micro_services, self.ms, timeout=None)
        self.assertIs(forwarder.links["svc"], self.replicas)
        attach(self.h.node, RestDispatcher(self.h.node, forwarder=forwarder))

    def get(self, n: int, prefix: str = "/api/items/") -> HttpMemoryConnection:
        conn = HttpMemoryConnection()
        self.h.node.receive(conn, {"type": "restRequest", "method": "GET",
                                   "path": f"{prefix}{n}", "headers": {}, "query": {},
                                   "body": {}, "ip": "10.1.1.1", "ips": ["10.1.1.1"]})
        self.flush()
        return conn

    def test_rest_and_websocket_share_the_rotation_and_failover(self) -> None:
        self.get(0)
        self.request(1)  # a WebSocket route's request: the next replica in turn
        self.get(2)
        self.assertEqual(self.counts(), [1, 1, 1])
        self.assertEqual([r["type"] for _, r in self.remotes[1].requests], ["login"])
        self.kill(2)
        conns = [self.get(n) for n in range(3, 7)]
        self.assertEqual(self.counts(), [3, 3, 1])
        for i in (0, 1):
            for request in self.sent_to(i):
                if request["type"] == "restRequest":
                    self.remotes[i].reply(request, {"path": request["path"]})
        self.flush()
        self.assertEqual([c.take()[0]["message"]["path"] for c in conns],
                         [f"/api/items/{n}" for n in range(3, 7)])
        self.kill(0), self.kill(1)
        [frame] = self.get(9).take()
        self.assertEqual(frame["message"], {"error": E.MS_DOWN, "status": {"code": 503}})

    def test_a_group_member_with_replicas_gets_it_on_one_replica(self) -> None:
        """A group sends to every member (QEWD's fan-out); a member with replicas takes it
        on one of them, not on all."""
        conn = self.get(1, "/api/all/")
        self.assertEqual(self.counts(), [1, 0, 0])
        [(_, request)] = self.remotes[0].requests
        self.remotes[0].reply(request, {"ok": True})
        self.flush()
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"results": {"svc": {"ok": True}}})
        self.get(2, "/api/all/")
        self.assertEqual(self.counts(), [1, 1, 0])
