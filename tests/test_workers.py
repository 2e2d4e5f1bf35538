# test-case-name: tests.test_workers
"""The worker pool: bounded queue, results on the reactor, stop without blocking."""

from __future__ import annotations

import os
import queue
import threading
import time

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from qewd_twisted.apps.pool import PoolFull, WorkerPool, _Threads, batch_policy


def gated_pool(test: TestCase, size: int, max_queue: int) -> tuple[WorkerPool, threading.Event]:
    """A started pool and the gate its blocking test calls wait on (``release.wait``); when the
    test ends the gate opens, then the pool stops."""
    pool = WorkerPool(reactor, size=size, max_queue=max_queue)
    pool.startService()
    release = threading.Event()
    test.addCleanup(lambda: defer.maybeDeferred(pool.stopService))
    test.addCleanup(release.set)  # cleanups run last-in first: the gate opens first
    return pool, release


class WorkerPoolTests(TestCase):
    def setUp(self) -> None:
        self.pool, self.release = gated_pool(self, size=1, max_queue=1)

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
        self.pool.startService()  # the cleanup stops it again
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


class ThreadsTests(TestCase):
    """The pool's own threads: resizing, lending a spare for a stuck call, and a restart
    after a stop that left a call stuck."""

    def setUp(self) -> None:
        self.pool, self.release = gated_pool(self, size=2, max_queue=10)

    @defer.inlineCallbacks
    def test_calls_run_in_worker_threads_in_parallel(self):
        names = []
        both = threading.Barrier(2, timeout=10)

        def meet():
            names.append(threading.current_thread().name)
            both.wait()  # only returns if the two calls run at the same time
            return threading.get_ident()

        idents = yield defer.gatherResults([self.pool.run(meet), self.pool.run(meet)])
        self.assertEqual(len(set(idents)), 2)
        self.assertNotIn(threading.get_ident(), idents)
        self.assertTrue(all(n.startswith("qewd-worker") for n in names), names)

    @defer.inlineCallbacks
    def test_spare_thread_serves_the_queue_while_a_call_is_stuck(self):
        stuck = [self.pool.run(self.release.wait, 30) for _ in range(2)]
        queued = self.pool.run(lambda: "served")
        self.assertEqual((self.pool.busy, self.pool.queued), (2, 1))
        self.assertTrue(self.pool.lend_spare())
        self.assertEqual((yield queued), "served")  # by the spare, while both still block
        self.assertFalse(self.release.is_set())
        self.release.set()
        yield defer.gatherResults(stuck)
        self.pool.return_spare()
        self.assertEqual((self.pool.spares, self.pool._threads.live), (0, 2))
        self.assertEqual((yield self.pool.run(lambda: "after")), "after")

    @defer.inlineCallbacks
    def test_restart_after_a_stuck_stop(self):
        stuck = threading.Event()
        self.addCleanup(stuck.set)
        self.pool.run(stuck.wait, 30)
        self.pool.join_timeout = 0.2
        yield self.pool.stopService()
        self.pool.startService()
        # the new threads serve calls although the old one is still blocked
        self.assertEqual((yield self.pool.run(lambda: "fresh")), "fresh")
        self.assertEqual((yield self.pool.run(lambda: "fresh")), "fresh")
        stuck.set()


class _ThreadCalls(Clock):
    """A Clock whose callFromThread queues the call for the test thread to run (``pump``)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, f, *args) -> None:  # noqa: N802
        self.from_threads.put((f, args))

    def pump(self, until, timeout: float = 10.0) -> None:
        """Run calls from the threads until ``until()`` is true (bounded in time)."""
        deadline = time.monotonic() + timeout
        while not until():
            f, args = self.from_threads.get(timeout=max(0.0, deadline - time.monotonic()))
            f(*args)


class TurnTests(SynchronousTestCase):
    """A reactor turn's calls reach the threads together at its end (callLater(0)); call()
    reports back without a Deferred."""

    def setUp(self) -> None:
        self.clock = _ThreadCalls()
        self.pool = WorkerPool(self.clock, size=2, max_queue=2)
        self.pool.startService()
        self.addCleanup(self.pool._stop_threads)

    def test_calls_wait_for_the_end_of_the_turn(self) -> None:
        ran: list[int] = []
        results: list[int] = []
        for i in range(3):
            self.pool.run(ran.append, i).addCallback(lambda _, i=i: results.append(i))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one hand-over per turn
        self.assertEqual((ran, self.pool.queued + self.pool.busy), ([], 3))
        self.clock.advance(0)
        self.clock.pump(lambda: len(results) == 3)
        self.assertEqual(sorted(ran), [0, 1, 2])
        self.assertEqual((self.pool.busy, self.pool.queued, self.clock.getDelayedCalls()),
                         (0, 0, []))

    def test_call_reports_return_and_failure(self) -> None:
        done: list = []
        self.pool.call(lambda a, b: a + b, (1, 2), lambda ctx, f: done.append((ctx, f)), "x")

        def boom() -> None:
            raise KeyError("k")

        self.pool.call(boom, (), lambda ctx, f: done.append((ctx, f.check(KeyError))), "y")
        self.clock.advance(0)
        self.clock.pump(lambda: len(done) == 2)
        self.assertEqual(sorted(done), [("x", None), ("y", KeyError)])
        self.assertEqual(self.pool.busy + self.pool.queued, 0)
        self.successResultOf(self.pool.when_idle())

    def test_call_refused_at_the_bound_and_when_stopped(self) -> None:
        for _ in range(4):  # 2 threads + 2 queued
            self.pool.call(lambda: None, (), lambda ctx, f: None)
        self.assertRaises(PoolFull, self.pool.call, lambda: None, (), lambda ctx, f: None)
        self.clock.advance(0)
        self.clock.pump(lambda: self.pool.busy + self.pool.queued == 0)
        self.pool.stopService()
        self.assertRaises(PoolFull, self.pool.call, lambda: None, (), lambda ctx, f: None)

    def test_stop_hands_over_the_turn_first(self) -> None:
        ran = threading.Event()
        self.pool.run(ran.set)
        stopped = self.pool.stopService()  # before the end of the turn: the call still runs
        self.assertTrue(ran.wait(10))
        self.clock.pump(lambda: stopped.called)
        self.assertEqual(self.clock.getDelayedCalls(), [])


def _until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition()`` (threads are involved) until true, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)


class WakeUpTests(SynchronousTestCase):
    """_Threads wakes one idle thread per call, no more, and never leaves a call behind
    (docs/performance.md, "processes: N and sync handlers")."""

    def setUp(self) -> None:
        self.threads = _Threads("test-worker")
        self.threads.resize(3)
        self.addCleanup(self.threads.join)
        self.addCleanup(self.threads.resize, 0)
        _until(lambda: self.threads.idle == 3)

    def test_one_call_wakes_one_thread(self) -> None:
        for i in range(20):
            done = threading.Event()
            self.threads.put((done.set, ()))
            self.assertTrue(done.wait(10))
            _until(lambda: self.threads.idle == 3)
            # queue.SimpleQueue woke a second waiting thread for every call taken
            self.assertEqual(self.threads.woken, i + 1)

    def test_a_turn_wakes_a_thread_per_call_at_most(self) -> None:
        both = threading.Barrier(2, timeout=10)
        met: list[int] = []

        def meet() -> None:
            both.wait()  # returns only if the two calls run at the same time
            met.append(threading.get_ident())

        self.threads.put_many([(meet, ()), (meet, ())])
        _until(lambda: len(met) == 2 and self.threads.idle == 3)
        self.assertEqual((len(set(met)), self.threads.woken), (2, 2))

    def test_a_call_queued_while_a_thread_goes_idle_is_not_missed(self) -> None:
        # the thread found the queue empty; a call is queued (nobody on the idle list to
        # wake) before it puts itself on the list: it must see the call, not sleep
        threads = _Threads("test-idle")
        wake = threading.Lock()
        wake.acquire()
        threads._calls.append((lambda: None, ()))
        going = threading.Thread(target=threads._sleep, args=(wake,), daemon=True)
        going.start()
        going.join(10)
        alive = going.is_alive()
        wake.release()  # a thread that did go to sleep ends
        self.assertFalse(alive, "went to sleep with a call queued")
        self.assertEqual((threads.idle, threads.woken), (0, 0))

    def test_no_call_left_behind(self) -> None:
        # calls queued while threads go idle: each is run (a lost wake-up would stall one)
        ran: list[int] = []
        for i in range(3000):
            if i % 3:
                self.threads.put((ran.append, (i,)))
            else:
                self.threads.put_many([(ran.append, (i,)), (time.sleep, (0,))])
        _until(lambda: len(ran) == 3000)
        self.assertEqual(sorted(ran), list(range(3000)))

    def test_stops_end_threads_after_the_calls_before_them(self) -> None:
        gate = threading.Event()
        ran: list[int] = []
        self.threads.put((gate.wait, (10,)))
        for i in range(5):
            self.threads.put((ran.append, (i,)))
        self.threads.resize(0)
        gate.set()
        self.threads.join()
        self.assertEqual((sorted(ran), self.threads.live), (list(range(5)), 0))


class BatchPolicyTests(TestCase):
    """Pool threads run under SCHED_BATCH on Linux (a thread woken for the GIL does not
    preempt the reactor thread holding it); a policy set by the operator is left alone."""

    def setUp(self) -> None:
        if not hasattr(os, "SCHED_BATCH"):
            raise SkipTest("no SCHED_BATCH on this system")

    def in_thread(self, fn):
        out: list = []
        t = threading.Thread(target=lambda: out.append(fn()))
        t.start()
        t.join(10)
        return out[0]

    @defer.inlineCallbacks
    def test_pool_threads_run_under_sched_batch(self):
        reactor_policy = os.sched_getscheduler(0)
        pool, _ = gated_pool(self, size=2, max_queue=10)
        policies = yield defer.gatherResults([pool.run(os.sched_getscheduler, 0)
                                              for _ in range(4)])
        self.assertEqual(set(policies), {os.SCHED_BATCH})
        self.assertEqual(os.sched_getscheduler(0), reactor_policy)  # the reactor's: unchanged

    @defer.inlineCallbacks
    def test_switched_off(self):
        inherited = self.in_thread(lambda: os.sched_getscheduler(0))
        pool = WorkerPool(reactor, size=1)
        pool.sched_batch = False
        pool.startService()
        self.addCleanup(pool.stopService)
        self.assertEqual((yield pool.run(os.sched_getscheduler, 0)), inherited)

    @defer.inlineCallbacks
    def test_switched_off_by_the_config(self):
        from qewd_twisted.config import config_from_dict
        from qewd_twisted.service import QEWDService

        inherited = self.in_thread(lambda: os.sched_getscheduler(0))
        service = QEWDService(config_from_dict({"port": 0, "poolSchedBatch": False}), reactor)
        pool = service.pool
        pool.startService()
        self.addCleanup(pool.stopService)
        self.assertEqual((yield pool.run(os.sched_getscheduler, 0)), inherited)
        self.assertIs(QEWDService(config_from_dict({"port": 0}), reactor).pool.sched_batch, True)

    def test_a_policy_other_than_the_normal_one_is_left_alone(self):
        def idle_then_batch():
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # no privilege needed
            return batch_policy(), os.sched_getscheduler(0)

        self.assertEqual(self.in_thread(idle_then_batch), (False, os.SCHED_IDLE))
        self.assertEqual(self.in_thread(lambda: (batch_policy(), os.sched_getscheduler(0))),
                         (True, os.SCHED_BATCH))
