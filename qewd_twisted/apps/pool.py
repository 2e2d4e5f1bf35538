# -*- test-case-name: tests.test_workers -*-
"""
The worker pool: a bounded Twisted ThreadPool of ``poolSize`` threads, owned by a service.

Sync handlers run here so they may block without stalling the reactor (QEWD's pitch: handlers
"may block without harming the master", PROTOCOL.md §6). The pool is our own, not the reactor's
(which also resolves host names), its queue is bounded (``max_queue_length``, QEWD's name), and on
stop it is drained for a grace period. Threads are daemon threads: a handler stuck forever cannot
keep the process alive after the node has stopped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from qewd_twisted.core.interfaces import IWorkerPool

log = Logger()


class PoolFull(Exception):
    """The pool's queue is at its limit; the request is refused (the client is told)."""


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    t = threading.Thread(*args, **kwargs)
    t.daemon = True
    return t


@implementer(IWorkerPool)
class WorkerPool(Service):
    """Runs sync handler calls in ``size`` threads, at most ``max_queue`` waiting."""

    name = "workers"

    def __init__(self, reactor: IReactorThreads, size: int, max_queue: int = 20000) -> None:
        if size < 1:
            raise ValueError("poolSize must be at least 1")
        self._reactor = reactor
        self.size = size
        self.max_queue = max_queue
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name="qewd-worker")
        self._pool.threadFactory = _daemon_thread
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
        # Raising only the maximum would start a thread for the *next* call; the minimum
        # makes the pool start one now, for the calls already queued.
        self._pool.adjustPoolsize(self.threads, self.threads)
        return True

    def return_spare(self) -> None:
        """The stuck call has returned: the pool shrinks back."""
        if self.spares > 0:
            self.spares -= 1
            self._pool.adjustPoolsize(self.spares and self.threads, self.threads)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Call ``fn`` in a pool thread; the Deferred fires on the reactor with its result."""
        if not self.running:
            return defer.fail(PoolFull("the worker pool is not running"))
        if self._outstanding >= self.threads + self.max_queue:
            return defer.fail(PoolFull("the worker pool queue is full"))
        self._outstanding += 1
        d: defer.Deferred[Any] = defer.Deferred()
        self._pool.callInThread(self._call, d, fn, args, kwargs)
        d.addBoth(self._done)
        return d

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
        self._pool.start()

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

        def join() -> None:
            self._pool.stop()
            self._reactor.callFromThread(fire)  # type: ignore[attr-defined]

        if self._outstanding == 0:
            self._pool.stop()
            return defer.succeed(None)
        log.warn("stopping with {n} handler call(s) still running", n=self._outstanding)
        threading.Thread(target=join, name="qewd-pool-stop", daemon=True).start()
        d.addTimeout(self.join_timeout, clock, onTimeoutCancel=lambda result, timeout: None)
        return d
