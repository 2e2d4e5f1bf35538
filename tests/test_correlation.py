"""
Tests for qewd_twisted.mesh.correlation: request ids, the send queue, deadlines and reply
attribution, without any socket (docs/protocol.md §4.4, §4.5 item 6, §4.9).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted.core.interfaces import IReplyReceiver, LinkOutcome
from qewd_twisted.mesh.correlation import Correlator

DOWN, TIMEOUT = LinkOutcome.DOWN, LinkOutcome.TIMEOUT


@implementer(IReplyReceiver)
class Receiver:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def frame(self, frame: dict[str, Any]) -> None:
        self.got.append(frame)

    def failed(self, outcome: LinkOutcome) -> None:
        self.got.append(outcome)


class Base(SynchronousTestCase):
    def make(self, echoes: bool = True, open: bool = True, **kwargs: Any) -> Correlator:
        self.clock = Clock()
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.resyncs = 0
        self.reports: list[tuple[str, str]] = []

        def resync() -> None:
            self.resyncs += 1

        self.c = Correlator(self.clock, lambda i, m: self.sent.append((i, m)), resync=resync,
                            report=lambda kind, text: self.reports.append((kind, text)),
                            label="http://ms:3000", **kwargs)
        if open:
            self.c.open(echoes)
        return self.c

    def submit(self, type: str = "login", timeout: float | None = None) -> Receiver:
        r = Receiver()
        self.c.submit(r, type, {"type": type}, timeout)
        return r


class QueueTests(Base):
    def test_receiver_contract(self) -> None:
        self.assertTrue(verifyObject(IReplyReceiver, Receiver()))

    def test_not_open_fails_at_once(self) -> None:
        self.make(open=False)
        r = self.submit(timeout=5)
        self.assertEqual(r.got, [DOWN])
        self.assertEqual((self.sent, self.clock.getDelayedCalls()), ([], []))

    def test_ids_from_one_and_message_copied(self) -> None:
        self.make()
        message = {"type": "login", "token": "t"}
        self.c.submit(Receiver(), "login", message, None)
        self.submit("other")
        self.assertEqual([i for i, _ in self.sent], [1, 2])
        self.assertEqual(self.sent[0][1], message)
        self.assertIsNot(self.sent[0][1], message)
        self.assertEqual(self.c.in_flight, 2)

    def test_one_at_a_time_towards_qewdjs(self) -> None:
        self.make(echoes=False)
        first, second = self.submit(), self.submit()
        self.assertEqual((len(self.sent), self.c.queued), (1, 1))
        self.c.received({"type": "login", "finished": False, "message": {"n": 1}})
        self.assertEqual(len(self.sent), 1)
        self.c.received({"type": "login", "finished": True, "message": {"ok": 1},
                         "ms_requestId": 1})
        self.assertEqual([i for i, _ in self.sent], [1, 2])
        self.assertEqual([f["message"] for f in first.got], [{"n": 1}, {"ok": 1}])
        self.assertEqual(second.got, [])

    def test_close_fails_everything_once(self) -> None:
        self.make(echoes=False)
        a, b = self.submit(timeout=3), self.submit(timeout=3)
        self.c.close("connection lost")
        self.assertEqual((a.got, b.got), ([DOWN], [DOWN]))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.c.is_open)
        self.assertEqual(self.submit().got, [DOWN])

    def test_receiver_failure_is_isolated(self) -> None:
        self.make()

        @implementer(IReplyReceiver)
        class Broken:
            def frame(self, frame: Any) -> None:
                raise RuntimeError("bug")

            def failed(self, outcome: Any) -> None:
                raise RuntimeError("bug")

        self.c.submit(Broken(), "login", {}, None)
        self.c.received({"type": "login", "finished": True, "message": {}, "ms_requestId": 1})
        self.c.submit(Broken(), "login", {}, 1)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(self.c.in_flight, 0)


class AttributionTests(Base):
    def test_by_id_in_frame_or_message(self) -> None:
        self.make()
        a, b = self.submit("a"), self.submit("b")
        self.c.received({"type": "b", "finished": False, "message": {"ms_requestId": 2}})
        self.c.received({"type": "a", "finished": True, "message": {}, "ms_requestId": 1})
        self.assertEqual(b.got, [{"type": "b", "finished": False, "message": {}}])
        self.assertEqual(a.got, [{"type": "a", "finished": True, "message": {}}])

    def test_unknown_id_dropped_and_reported(self) -> None:
        self.make()
        r = self.submit()
        self.c.received({"type": "login", "finished": True, "ms_requestId": 99})
        self.c.received({"type": "login", "finished": True, "ms_requestId": True})
        self.assertEqual(r.got, [])
        self.assertEqual([k for k, _ in self.reports], ["dropped", "dropped"])
        self.assertIn("http://ms:3000", self.reports[0][1])

    def test_idless_by_type_else_only_one_else_ambiguous(self) -> None:
        self.make()
        login, s1, s2 = self.submit("login"), self.submit("stock"), self.submit("stock")
        self.c.received({"type": "login", "finished": False, "message": {}})
        self.c.received({"type": "stock", "finished": False, "message": {}})
        self.assertEqual((len(login.got), len(s1.got), len(s2.got)), (1, 0, 0))
        self.assertEqual(self.reports[-1][0], "dropped")
        self.assertIn("ambiguous", self.reports[-1][1])

    def test_broadcasts_are_not_replies(self) -> None:
        self.make(echoes=False)
        r = self.submit()
        self.c.received({"type": "chat", "message": {"text": "hi"}})
        self.c.received("not an object")
        self.assertEqual((r.got, self.reports), ([], []))

    def test_remote_crash_retyped(self) -> None:
        self.make(echoes=False)
        r = self.submit("crash")
        self.c.received({"type": "error", "finished": True, "message": "null"})
        self.assertEqual(r.got, [{"type": "crash", "finished": True,
                                  "message": {"error": "null"}}])


class DeadlineTests(Base):
    def test_timeout_then_late_frame(self) -> None:
        self.make()
        r = self.submit(timeout=5)
        self.clock.advance(4.9)
        self.assertEqual(r.got, [])
        self.clock.advance(0.1)
        self.assertEqual(r.got, [TIMEOUT])
        self.assertEqual(self.reports[0][0], "timeout")
        self.c.received({"type": "login", "finished": True, "ms_requestId": 1})
        self.assertEqual(r.got, [TIMEOUT])
        self.assertEqual(self.c.blocker, None)  # an echoing remote: nothing held

    def test_queued_request_times_out_unsent(self) -> None:
        self.make(echoes=False)
        self.submit()
        queued = self.submit(timeout=2)
        self.clock.advance(2)
        self.assertEqual(queued.got, [TIMEOUT])
        self.assertEqual((len(self.sent), self.c.queued), (1, 0))

    def test_qewdjs_blocker_released_by_late_final(self) -> None:
        self.make(echoes=False)
        self.submit(timeout=5)
        waiting = self.submit()
        self.clock.advance(5)
        self.assertEqual(self.c.blocker, 1)
        self.c.received({"type": "login", "finished": False, "message": {}})
        self.assertEqual((len(self.sent), waiting.got), (1, []))
        self.c.received({"type": "login", "finished": True, "message": {}})
        self.assertEqual(self.c.blocker, None)
        self.assertEqual([i for i, _ in self.sent], [1, 2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_qewdjs_blocker_asks_for_resync(self) -> None:
        self.make(echoes=False, resync_after=10)
        self.submit(timeout=5)
        self.clock.advance(5)
        self.clock.advance(9.9)
        self.assertEqual(self.resyncs, 0)
        self.clock.advance(0.1)
        self.assertEqual(self.resyncs, 1)
        self.assertEqual(self.reports[-1][0], "error")
