# -*- test-case-name: tests.test_node -*-
"""
The requests in flight on a node: begun (a handler runs, or a link carries it), not yet ended.

`InFlight` counts them per connection (for ``maxInFlight`` / ``maxInFlightPerLink``), ends each
exactly once (reporting its outcome to the node's observer), and lets a stopping node wait
for them (``drain``) or end them all at once (``abort``).

May import: ``qewd_twisted.core.requests``, ``core.interfaces`` and Twisted.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from qewd_twisted.core.interfaces import INodeObserver
from qewd_twisted.core.requests import Request

__all__ = ["InFlight"]


class InFlight:
    """The set of requests in flight. ``observer`` (an ``INodeObserver``) hears of each end;
    the node keeps it current when its own observer is replaced."""

    def __init__(self, clock: IReactorTime, observer: INodeObserver) -> None:
        self._clock = clock
        self.observer = observer
        self._requests: set[Request] = set()
        # request -> what must run when it ends (a session lock's release)
        self._on_end: dict[Request, Callable[[], None]] = {}
        self._drained: list[defer.Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, req: Request) -> bool:
        return req in self._requests

    def begin(self, req: Request) -> None:
        """``req`` starts: it counts against its connection's limit until it ends."""
        self._requests.add(req)
        req.conn.in_flight += 1

    def end(self, req: Request, outcome: str = "ok") -> None:
        """``req`` is over (its final frame is about to be sent): stop its timer, uncount it
        and report ``outcome``, once; later calls only mark it done."""
        req.done = True
        if self._on_end:
            self._ended(req)
        if req.timer is not None and req.timer.active():
            req.timer.cancel()
        req.timer = None
        if req in self._requests:
            self._requests.discard(req)
            req.conn.in_flight -= 1
            self.observer.request_finished(req, outcome)
        if not self._requests and self._drained:
            # Next reactor turn: the caller is about to send this request's final frame, and a
            # waiter (a stopping service) would otherwise close the socket before it goes out.
            self._clock.callLater(0, self._fire_drained)

    def ended_early(self, req: Request, outcome: str) -> None:
        """Report a request that was answered before it began (e.g. no such handler)."""
        if self._on_end:
            self._ended(req)
        self.observer.request_finished(req, outcome)

    def on_end(self, req: Request, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once when ``req`` ends (however it ends)."""
        self._on_end[req] = fn

    def _ended(self, req: Request) -> None:
        fn = self._on_end.pop(req, None)
        if fn is not None:
            fn()

    def drain(self) -> defer.Deferred[None]:
        """A Deferred that fires once no request is in flight (at once if none is). The
        caller bounds the wait (``Deferred.addTimeout``); cancelling it is harmless."""
        if not self._requests:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)
        return d

    def abort(self, outcome: str = "503") -> list[Request]:
        """End every request still in flight with ``outcome``; the caller answers each."""
        requests = list(self._requests)
        for req in requests:
            self.end(req, outcome)
        return requests

    def _fire_drained(self) -> None:
        if self._requests:
            return
        waiting, self._drained = self._drained, []
        for d in waiting:
            if not d.called:
                d.callback(None)
