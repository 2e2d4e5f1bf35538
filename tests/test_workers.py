# test-case-name: tests.test_workers
"""The worker pool: bounded queue, results on the reactor, stop without blocking."""

from __future__ import annotations

import threading

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from qewd_twisted.apps.pool import PoolFull, WorkerPool


class WorkerPoolTests(TestCase):
    def setUp(self) -> None:
        self.pool = WorkerPool(reactor, size=1, max_queue=1)
        self.pool.startService()
        self.release = threading.Event()
        self.addCleanup(self.release.set)

    def tearDown(self) -> defer.Deferred:
        self.release.set()
        return defer.maybeDeferred(self.pool.stopService)

    @defer.inlineCallbacks
    def test_queue_limit_then_recovery(self):
        first = self.pool.run(self.release.wait, 30)
        second = self.pool.run(lambda: "queued")
        self.assertEqual((self.pool.busy, self.pool.queued), (1, 1))
        third = self.pool.run(lambda: "refused")
        self.failureResultOf(third, PoolFull)
        self.release.set()
        self.assertIs((yield first), True)
        self.assertEqual((yield second), "queued")
        yield self.pool.when_idle()
        self.assertEqual((yield self.pool.run(lambda: "again")), "again")

    @defer.inlineCallbacks
    def test_exceptions_come_back_as_failures(self):
        def boom():
            raise KeyError("x")

        with self.assertRaises(KeyError):
            yield self.pool.run(boom)
        self.assertEqual(self.pool.busy + self.pool.queued, 0)

    @defer.inlineCallbacks
    def test_stop_does_not_wait_forever_for_a_stuck_handler(self):
        stuck = threading.Event()
        self.addCleanup(stuck.set)
        self.pool.run(stuck.wait, 30)
        self.pool.join_timeout = 0.2
        yield self.pool.stopService()  # returns although the thread is still blocked
        self.assertFalse(stuck.is_set())
        self.pool.startService()  # tearDown stops it again
        stuck.set()


class PostTests(TestCase):
    """post(): calls from pool threads run on the reactor thread, in order, sharing wake-ups."""

    def setUp(self) -> None:
        self.pool = WorkerPool(reactor, size=2)
        self.pool.startService()

    def tearDown(self) -> defer.Deferred:
        return defer.maybeDeferred(self.pool.stopService)

    @defer.inlineCallbacks
    def test_order_thread_and_result(self):
        seen: list[tuple[str, int, bool]] = []
        main = threading.get_ident()

        def record(label: str, i: int) -> None:
            seen.append((label, i, threading.get_ident() == main))

        def work(label: str) -> str:
            for i in range(50):
                self.pool.post(record, label, i)
            return label

        results = yield defer.gatherResults([self.pool.run(work, "a"), self.pool.run(work, "b")])
        self.assertEqual(sorted(results), ["a", "b"])
        for label in "ab":
            mine = [(i, on_main) for lbl, i, on_main in seen if lbl == label]
            # every call ran, on the reactor thread, before its thread's result was delivered
            self.assertEqual(mine, [(i, True) for i in range(50)])

    @defer.inlineCallbacks
    def test_a_raising_call_does_not_stop_the_others(self):
        ran: list[int] = []

        def boom() -> None:
            raise RuntimeError("posted call failed")

        def work() -> None:
            self.pool.post(boom)
            self.pool.post(ran.append, 1)

        yield self.pool.run(work)
        self.assertEqual(ran, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
