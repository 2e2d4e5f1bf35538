# -*- test-case-name: tests.test_workers -*-
"""
The worker pool: ``poolSize`` threads with a bounded queue, owned by a service.

Sync handlers run here so they may block without stalling the reactor (QEWD's pitch: handlers
"may block without harming the master", docs/protocol.md §6). The pool is our own, not the reactor's
(which also resolves host names), its queue is bounded (``max_queue_length``, QEWD's name), and on
stop it is drained for a grace period. Threads are daemon threads: a handler stuck forever cannot
keep the process alive after the node has stopped.

The threads (`_Threads`) take calls from one ``deque``; handing calls over wakes one idle
thread per call and no more (``queue.SimpleQueue``, used before, also woke a second waiting
thread each time a waiting one took a call, for nothing), where Twisted's ThreadPool went
through its team coordinator, a Python-level queue and condition variables on both sides
(docs/performance.md). The calls of one reactor turn are handed over together at its end
(``callLater(0)``, before the reactor next polls): a thread woken in the middle of the turn
could not run anyway (the reactor thread holds the GIL), and would take the GIL from it at its
next system call, once per call. On Linux the threads run under ``SCHED_BATCH``
(`batch_policy`): a thread woken for the GIL does not preempt the reactor thread that holds it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qewd_twisted.core.interfaces import IWorkerPool

log = Logger()


class PoolFull(Exception):
    """The pool's queue is at its limit; the request is refused (the client is told)."""


_STOP = object()  # taken from the queue: the thread that takes it ends


def batch_policy() -> bool:
    """Put the calling thread under Linux's ``SCHED_BATCH`` if it is under the normal policy
    (``SCHED_OTHER``; a real-time or idle policy set by the operator is left alone). True if
    it did.

    A pool thread is woken to take the GIL from the reactor thread, which holds it until its
    next system call; at the normal policy the kernel lets the woken thread preempt the reactor
    when both share a CPU, and it blocks again at once on the GIL: two context switches for
    nothing, 0.3-0.5 times per request when every CPU is busy (``processes: 2``). Under
    ``SCHED_BATCH`` a woken thread does not preempt on wake-up: it runs when the CPU is free
    (the reactor waiting in ``epoll``, which also releases the GIL) or at the next tick. Same
    weight, same nice value, same share of the CPU (sched(7)); no privilege needed. The price:
    a woken thread also waits for another program's running task instead of preempting it
    (p99 latency +20% beside CPU-bound jobs, throughput unchanged). Elsewhere than Linux:
    nothing (docs/performance.md, "processes: N and sync handlers").
    """
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            return False
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


class _Threads:
    """Daemon threads running calls ``(fn, args)`` from one queue, in order.

    Started, resized and stopped from one thread (the reactor's). Each ``_STOP`` in the queue
    ends exactly one thread, after the calls queued before it; so ``live`` (threads started
    minus stops queued) is how many threads will go on taking calls, whichever thread takes
    which stop (a stuck thread counts until it takes one).

    The queue is a ``deque`` and each idle thread sleeps on a lock of its own: ``put`` wakes
    one idle thread per call, no more (the thread idle last first: its stack is the warmest),
    and a thread that finds the queue empty goes back to sleep without waking another.
    ``queue.SimpleQueue`` (what this replaced) wakes a second waiting thread every time a
    waiting thread takes a call, whether or not a call is left for it: with the pool's threads
    idle between turns, one call cost two thread wake-ups, the second one for nothing (it takes
    the GIL, finds the queue empty and sleeps again; docs/performance.md, "processes: N and
    sync handlers"). Appends, pops and ``list.remove`` of the deque and the idle list are
    single operations under the GIL, so no lock of our own is needed around them.
    """

    def __init__(self, name: str, batch: bool = True) -> None:
        self._name = name
        self.batch = batch  # threads started from now on under SCHED_BATCH (batch_policy)
        self._calls: deque[Any] = deque()
        self._idle: list[Any] = []  # the wake-up locks of the threads waiting for a call
        self._started: list[threading.Thread] = []
        self.live = 0
        self.woken = 0  # times a sleeping thread was woken (tests, docs/performance.md)

    @property
    def idle(self) -> int:
        """Threads asleep waiting for a call."""
        return len(self._idle)

    def put(self, item: Any) -> None:
        """Queue one call (or ``_STOP``); an idle thread, if any, is woken for it."""
        self._calls.append(item)
        if self._idle:
            self._wake(1)

    def put_many(self, items: list[Any]) -> None:
        """Queue calls in order; as many idle threads as calls (at most) are woken."""
        self._calls.extend(items)
        if self._idle:
            self._wake(len(items))

    def _wake(self, n: int) -> None:
        idle = self._idle
        while n > 0:
            try:
                lock = idle.pop()
            except IndexError:
                return
            lock.release()
            n -= 1

    def resize(self, n: int) -> None:
        """Have ``n`` threads taking calls: start more now, or queue stops for the extra."""
        while self.live < n:
            self.live += 1
            t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._started)}",
                                 daemon=True)
            self._started = [x for x in self._started if x.is_alive()] + [t]
            t.start()
        while self.live > n:
            self.live -= 1
            self.put(_STOP)

    def join(self) -> None:
        """Wait for every thread started here to end (after ``resize(0)``; blocks while a
        call runs: callers that cannot wait do this in another thread)."""
        for t in list(self._started):
            t.join()

    def _sleep(self, wake: Any) -> None:
        """Idle until ``put`` releases ``wake``. On the idle list first, then look at the
        queue again: a call queued since this thread found it empty is either seen here
        (no sleep) or finds this thread on the list to wake."""
        idle = self._idle
        idle.append(wake)
        if self._calls:
            try:
                idle.remove(wake)
                return
            except ValueError:  # already taken off the list: its release is coming
                pass
        wake.acquire()
        self.woken += 1

    def _work(self) -> None:
        if self.batch:
            batch_policy()
        take = self._calls.popleft
        wake = threading.Lock()  # held while this thread is awake; released to wake it
        wake.acquire()
        while True:
            try:
                call = take()
            except IndexError:
                self._sleep(wake)
                continue
            if call is _STOP:
                return
            try:
                call[0](*call[1])
            except BaseException:  # WorkerPool._call catches everything; this is a backstop
                log.failure("a worker thread call raised")


@implementer(IWorkerPool)
class WorkerPool(Service):
    """Runs sync handler calls in ``size`` threads, at most ``max_queue`` waiting."""

    name = "workers"

    #: The threads under ``SCHED_BATCH`` on Linux (`batch_policy`); False leaves them at the
    #: policy they inherit (docs/performance.md, "processes: N and sync handlers").
    sched_batch = True

    def __init__(self, reactor: IReactorThreads, size: int, max_queue: int = 20000,
                 sched_batch: bool | None = None) -> None:
        """``sched_batch``: the threads under ``SCHED_BATCH`` (config ``poolSchedBatch``);
        None: the class's ``sched_batch``."""
        if size < 1:
            raise ValueError("poolSize must be at least 1")
        self._reactor = reactor
        self.size = size
        self.max_queue = max_queue
        if sched_batch is not None:
            self.sched_batch = sched_batch
        self._threads = _Threads("qewd-worker", self.sched_batch)
        self._outstanding = 0  # queued + running, counted on the reactor thread
        self._idle: list[defer.Deferred[None]] = []
        # A handler past its timeout still holds its thread (a thread can't be interrupted):
        # the pool lends a spare thread in its place, at most ``max_spares`` at a time, so
        # stuck handlers of one application cannot starve every other one.
        self.max_spares = size
        self.spares = 0
        # post(): calls from pool threads to the reactor thread, in order (see post)
        self._posted: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._drain_scheduled = False
        # run(): calls of this reactor turn, handed to the threads at its end (_hand_over)
        self._turn: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._hand_over_call: Any = None

    @property
    def threads(self) -> int:
        """Threads the pool may run now: poolSize plus spares lent for stuck handlers."""
        return self.size + self.spares

    @property
    def busy(self) -> int:
        """Calls running in a thread now."""
        return min(self._outstanding, self.threads)

    @property
    def queued(self) -> int:
        """Calls waiting for a free thread."""
        return max(0, self._outstanding - self.threads)

    def lend_spare(self) -> bool:
        """A call is stuck past its deadline: add a thread in its place. False at the cap."""
        if self.spares >= self.max_spares:
            return False
        self.spares += 1
        if self.running:
            self._threads.resize(self.threads)  # started now, for the calls already queued
        return True

    def return_spare(self) -> None:
        """The stuck call has returned: the pool shrinks back."""
        if self.spares > 0:
            self.spares -= 1
            if self.running:
                self._threads.resize(self.threads)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Call ``fn`` in a pool thread; the Deferred fires on the reactor with its result."""
        if not self.running:
            return defer.fail(PoolFull("the worker pool is not running"))
        if self._outstanding >= self.threads + self.max_queue:
            return defer.fail(PoolFull("the worker pool queue is full"))
        self._outstanding += 1
        d: defer.Deferred[Any] = defer.Deferred()
        self._turn.append((self._call, (d, fn, args, kwargs)))
        if self._hand_over_call is None:
            self._hand_over_call = self._reactor.callLater(  # type: ignore[attr-defined]
                0, self._hand_over)
        d.addBoth(self._done)
        return d

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...],
             done: Callable[[Any, Failure | None], Any], context: Any = None) -> None:
        """``run`` without a Deferred, for a caller that makes one call per request (the
        local runner): ``fn(*args)`` in a pool thread, then ``done(context, failure)`` on the
        reactor thread, ``failure`` None when ``fn`` returned and its Failure when it raised
        (its result is not kept). Raises PoolFull at once when ``run`` would fail with it."""
        if not self.running:
            raise PoolFull("the worker pool is not running")
        if self._outstanding >= self.threads + self.max_queue:
            raise PoolFull("the worker pool queue is full")
        self._outstanding += 1
        self._turn.append((self._call_then, (fn, args, done, context)))
        if self._hand_over_call is None:
            self._hand_over_call = self._reactor.callLater(  # type: ignore[attr-defined]
                0, self._hand_over)

    def _call_then(self, fn: Callable[..., Any], args: tuple[Any, ...],
                   done: Callable[[Any, Failure | None], Any], context: Any) -> None:
        # in a pool thread
        try:
            fn(*args)
        except BaseException:
            self.post(self._returned, done, context, Failure())
        else:
            self.post(self._returned, done, context, None)

    def _returned(self, done: Callable[[Any, Failure | None], Any], context: Any,
                  failure: Failure | None) -> None:
        self._done(None)
        done(context, failure)

    def _hand_over(self) -> None:
        """The end of the reactor turn: the threads get this turn's calls, in order."""
        call, self._hand_over_call = self._hand_over_call, None
        if call is not None and call.active():
            call.cancel()  # called early (stopping)
        turn, self._turn = self._turn, []
        if turn:
            self._threads.put_many(turn)

    def _call(self, d: defer.Deferred[Any], fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
        # in a pool thread
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self.post(d.errback, Failure())
        else:
            self.post(d.callback, result)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """From a pool thread: call ``fn(*args)`` on the reactor thread, after everything posted
        before it (what ``reactor.callFromThread`` does, in the same order).

        Calls posted close together share one reactor wake-up: a handler's ``finished()`` and
        its thread's return come microseconds apart, and every wake-up is a system call that
        hands the GIL to the reactor thread and back (docs/performance.md).
        """
        self._posted.append((fn, args))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._reactor.callFromThread(self._drain)  # type: ignore[attr-defined]

    def _drain(self) -> None:
        # Reset first: whatever a thread posts from now on is either taken by this loop or
        # schedules another drain.
        self._drain_scheduled = False
        posted = self._posted
        while posted:
            fn, args = posted.popleft()
            try:
                fn(*args)
            except Exception:
                log.failure("a call posted from a worker thread raised")

    def _done(self, result: Any) -> Any:
        self._outstanding -= 1
        if self._outstanding == 0 and self._idle:
            # next turn: callbacks after this one on the call's Deferred run first
            self._reactor.callLater(0, self._fire_idle)  # type: ignore[attr-defined]
        return result

    def _fire_idle(self) -> None:
        if self._outstanding:
            return
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    def when_idle(self) -> defer.Deferred[None]:
        """Fires when nothing is queued or running."""
        if self._outstanding == 0:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def startService(self) -> None:
        super().startService()
        self._threads.batch = self.sched_batch
        self._threads.resize(self.threads)

    def stopService(self) -> defer.Deferred[None]:
        """Stop the threads without blocking the reactor on a handler that never returns.

        The caller (QEWDService) drains in-flight requests for the grace period first. The join
        happens in a helper thread; the Deferred fires when every thread has exited or after
        ``join_timeout`` seconds, whichever comes first.
        """
        super().stopService()
        return self._stop_threads()

    join_timeout = 5.0

    def _stop_threads(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        clock: IReactorTime = self._reactor  # type: ignore[assignment]

        def fire() -> None:
            if not d.called:
                d.callback(None)

        # These threads end after the calls already queued (this turn's too); a restarted pool
        # gets new ones with their own queue (a thread stuck here must not take the new
        # threads' calls).
        self._hand_over()
        threads, self._threads = self._threads, _Threads("qewd-worker", self.sched_batch)
        threads.resize(0)

        def join() -> None:
            threads.join()
            self._reactor.callFromThread(fire)  # type: ignore[attr-defined]

        if self._outstanding == 0:
            threads.join()
            return defer.succeed(None)
        log.warn("stopping with {n} handler call(s) still running", n=self._outstanding)
        threading.Thread(target=join, name="qewd-pool-stop", daemon=True).start()
        d.addTimeout(self.join_timeout, clock, onTimeoutCancel=lambda result, timeout: None)
        return d
