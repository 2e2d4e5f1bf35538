# -*- test-case-name: tests.test_push -*-
"""
Server push beyond one process (qewd_twisted.core.push): the push record, and a node handing
``to_all`` / ``to_application`` / ``send_to_socket`` to its buses while delivering to its own
sockets exactly once (DESIGN.md "Scale").
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qewd_twisted.core.push import IPushBus, check_push, make_push
from qewd_twisted.testing import MemoryPushHub, NodeHarness


class RecordTests(SynchronousTestCase):
    def test_make_push_names_what_each_scope_needs(self) -> None:
        self.assertEqual(make_push("all", {"a": 1}, "o1"),
                         {"scope": "all", "message": {"a": 1}, "origin": "o1"})
        self.assertEqual(make_push("application", 1, "o", application="news")["application"],
                         "news")
        self.assertEqual(make_push("socket", 1, "o", socket_id="s1")["socket_id"], "s1")
        self.assertRaises(ValueError, make_push, "everyone", 1, "o")

    def test_check_push_refuses_malformed_records(self) -> None:
        good = make_push("socket", [1], "o", socket_id="s")
        self.assertIs(check_push(good), good)
        for bad in ([], {"scope": "all", "origin": "o"},
                    {"scope": "all", "message": 1},
                    {"scope": "x", "message": 1, "origin": "o"},
                    {"scope": "application", "message": 1, "origin": "o"},
                    {"scope": "socket", "message": 1, "origin": "o", "socket_id": 3}):
            self.assertRaises(ValueError, check_push, bad)


class NodePushTests(SynchronousTestCase):
    def pair(self) -> tuple[NodeHarness, NodeHarness, MemoryPushHub]:
        a, b = NodeHarness({}), NodeHarness({})
        b._n = 1000  # distinct socket ids across the two harnesses
        hub = MemoryPushHub()
        hub.join(a.node)
        hub.join(b.node)
        return a, b, hub

    def test_the_memory_bus_provides_ipushbus(self) -> None:
        a, _, _ = self.pair()
        verifyObject(IPushBus, a.node.push_buses[0])

    def test_to_all_reaches_every_socket_of_both_nodes_once(self) -> None:
        a, b, hub = self.pair()
        ca, cb1, cb2 = a.connect(), b.connect(), b.connect()
        a.node.to_all({"n": 1})
        a.node.to_all({"n": 2})
        for conn in (ca, cb1, cb2):
            self.assertEqual(conn.take(), [{"n": 1}, {"n": 2}])
        self.assertEqual([p["origin"] for p in hub.pushes], [a.node.origin] * 2)
        self.assertNotEqual(a.node.origin, b.node.origin)

    def test_to_application_reaches_only_that_application_everywhere(self) -> None:
        a, b, _ = self.pair()
        ca, cb, other = a.connect(), b.connect(), b.connect()
        a.register(ca, "news")
        b.register(cb, "news")
        b.register(other, "sport")
        b.node.to_application({"headline": 1}, "news")
        self.assertEqual(ca.take(), [{"headline": 1}])
        self.assertEqual(cb.take(), [{"headline": 1}])
        self.assertEqual(other.take(), [])

    def test_send_to_socket_on_another_node(self) -> None:
        a, b, hub = self.pair()
        cb = b.connect()
        self.assertIs(a.node.send_to_socket(cb.id, {"hi": 1}), True)
        self.assertEqual(cb.take(), [{"hi": 1}])
        # a socket connected here is not published
        ca = a.connect()
        before = len(hub.pushes)
        self.assertIs(a.node.send_to_socket(ca.id, {"hi": 2}), True)
        self.assertEqual(len(hub.pushes), before)
        self.assertEqual(ca.take(), [{"hi": 2}])

    def test_without_a_bus_send_to_socket_is_false_for_unknown_sockets(self) -> None:
        h = NodeHarness({})
        self.assertIs(h.node.send_to_socket("nobody", {}), False)
        self.assertEqual(h.node.push_buses, [])

    def test_a_delivered_push_is_not_published_again(self) -> None:
        a, b, hub = self.pair()
        b.node.deliver_push(make_push("all", {"x": 1}, "elsewhere"))
        self.assertEqual(hub.pushes, [])

    def test_a_closed_socket_gets_nothing(self) -> None:
        a, b, _ = self.pair()
        cb = b.connect()
        b.disconnect(cb)
        a.node.to_all({"late": 1})
        self.assertEqual(cb.take(), [])

    def test_not_json_is_dropped_by_the_bus_and_nobody_gets_it(self) -> None:
        a, b, hub = self.pair()
        cb = b.connect()
        bad: Any = {"set": {1}}
        a.node.to_all(bad)
        self.assertEqual(cb.take(), [])
        self.assertEqual(hub.pushes, [])
