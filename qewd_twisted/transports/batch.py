# -*- test-case-name: tests.test_batch -*-
"""
Broadcast frames written once per reactor turn (``TurnBatch``).

A broadcast (QEWD's ``q.io.toAll``: the seed's ``test`` sends one to every socket on every
request) is one frame for each connected socket. With many requests handled in one reactor
turn, each socket gets many of them in that turn; writing each to its transport costs
Twisted's whole ``write`` path (checks, producer accounting, writer registration) per frame.
A WebSocket connection (``transports.site``) instead keeps a broadcast frame in a list and
joins the batch; at the end of the turn (``callLater(0)``, before the reactor next polls, so
nothing waits longer than it would have for Twisted's own write) the batch hands each such
connection's frames to its transport at once (``writeSequence``).

Order per connection is kept: while a connection has frames pending, everything else the node
sends it (a reply) is appended behind them; a close frame first flushes them
(``site._NodeProtocol.sendCloseFrame``). Frames still pending when the socket stopped being
open are dropped, as a write to a closing socket is. Frames that are not broadcasts, on a
connection with nothing pending, are written at once as before.

May import: Twisted only.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime


class _Flushable(Protocol):
    def flush(self) -> None: ...


class TurnBatch:
    """The connections with broadcast frames pending, flushed once at the end of the turn."""

    __slots__ = ("_reactor", "_dirty", "_call")

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._dirty: list[_Flushable] = []
        self._call: Any = None

    def add(self, conn: _Flushable) -> None:
        """``conn`` has frames pending (call once per turn, when its first one is queued)."""
        self._dirty.append(conn)
        if self._call is None:
            self._call = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Write what every pending connection has (also called early, e.g. by a test)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    @property
    def pending(self) -> int:
        """How many connections have frames waiting for the end of the turn."""
        return len(self._dirty)
