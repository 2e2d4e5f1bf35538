# -*- test-case-name: tests.test_parity -*-
"""
``lockSession``: one request at a time per session-token session (docs/protocol.md §5.5).

QEWD.js (``lockSession: true | {timeout: s}``) takes a database lock on
``<sessionDocumentName>("session", id)`` before a handler runs and releases it when the
handler calls ``finished``; a request that waits longer than ``timeout`` (default 30 s) gets
``Timed out waiting for EWD session to be released``. (On Redis it passes the timeout where
ewd-redis-globals does not read it, and the second worker crashes; here the timeout is kept.)

Two providers of `ISessionLocks`:

- `MemorySessionLocks`: waiters queue on the reactor (no thread is held while waiting), first
  come first served, each with its own deadline on the node's clock. It serialises the
  requests of one node process: right for the in-memory session store, whose sessions live
  in one process anyway.
- `StoreSessionLocks`: the document store's exclusive lock, for sessions in a database
  (``config["database"]``: SQLite, Redis): requests for one session are serialised across
  every process and node sharing it, QEWD.js nodes included (the same lock name). Waiting
  holds one of the store's threads, as it holds a QEWD.js worker.

Requests on different sessions never wait for each other. May import: Twisted only.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

__all__ = ["ISessionLocks", "LockTimedOut", "MemorySessionLocks", "StoreSessionLocks"]

log = Logger()

class LockTimedOut(Exception):
    """The session stayed locked for longer than the timeout."""


class ISessionLocks(Interface):
    """Exclusive per-session locks for requests."""

    def acquire(key, timeout):
        """A Deferred firing with a no-argument release function once the lock on ``key``
        is held, or failing with `LockTimedOut` after ``timeout`` seconds."""


class _Waiter:
    __slots__ = ("d", "timer")

    def __init__(self, d: defer.Deferred[Callable[[], None]]) -> None:
        self.d = d
        self.timer: Any = None


@implementer(ISessionLocks)
class MemorySessionLocks:
    """Per-session locks within one process, waited for on the reactor."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._queues: dict[Any, deque[_Waiter]] = {}  # key -> waiters; present = held

    def held(self, key: Any) -> bool:
        return key in self._queues

    def waiting(self, key: Any) -> int:
        return len(self._queues.get(key, ()))

    def acquire(self, key: Any, timeout: float) -> defer.Deferred[Callable[[], None]]:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque()
            return defer.succeed(self._releaser(key))
        waiter = _Waiter(defer.Deferred(lambda d: self._cancel(key, waiter)))
        waiter.timer = self._clock.callLater(timeout, self._expire, key, waiter)
        queue.append(waiter)
        return waiter.d

    def _releaser(self, key: Any) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(key)

        return release

    def _release(self, key: Any) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        if not queue:
            del self._queues[key]
            return
        waiter = queue.popleft()
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.d.callback(self._releaser(key))

    def _expire(self, key: Any, waiter: _Waiter) -> None:
        waiter.timer = None
        queue = self._queues.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            waiter.d.errback(LockTimedOut(key))

    def _cancel(self, key: Any, waiter: _Waiter) -> None:
        queue = self._queues.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()


@implementer(ISessionLocks)
class StoreSessionLocks:
    """Per-session locks in the node's document store, named as QEWD.js names them: the node
    ``<sessionDocumentName>("session", id)`` (ewd-redis-globals' ``lock:`` keys on Redis).

    ``documents`` is a ``documents.DocumentStore``: ``use(name, *subscripts)`` gives a node
    whose ``lock(timeout)`` blocks until it is held (raising a ``TimeoutError`` after
    ``timeout``) and returns a lock with ``release()``; ``run(fn, *args)`` runs a blocking
    call in the store's threads and returns a Deferred.
    """

    def __init__(self, documents: Any, document_name: str) -> None:
        self._documents = documents
        self._name = document_name

    def acquire(self, key: Any, timeout: float) -> defer.Deferred[Callable[[], None]]:
        run = self._documents.run

        def locked(lock: Any) -> Callable[[], None]:
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    run(lock.release).addErrback(
                        lambda f: log.failure("unlocking session {key}", f, key=key))

            return release

        def timed_out(failure: Any) -> None:
            failure.trap(TimeoutError)
            raise LockTimedOut(key)

        node = self._documents.use(self._name, "session", key)
        d = run(node.lock, timeout)
        d.addCallbacks(locked, timed_out)
        return d
