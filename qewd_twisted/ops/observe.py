# -*- test-case-name: tests.test_metrics -*-
"""
The node's one observation point: what happened to connections, registrations and requests.

``Node.observer`` is a `NodeObserver`. The default does nothing, so a node without metrics, a
status page or a request log pays one no-op method call per event and nothing else. ops.py
installs real observers (metrics.py's `NodeMetrics`, the status page's request rates, the
request log) and fans out to them when there is more than one.

Observers run on the reactor thread, in the middle of the node's work: they must be quick,
must not raise (a failure would become the client's problem), and must not keep the
``Request`` or its message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zope.interface import implementer

from qewd_twisted.core.interfaces import INodeObserver

__all__ = ["OUTCOMES", "FanOut", "NodeObserver", "combine"]

# What a request can come to. "503": refused or failed because something was unavailable (a
# micro-service link down, the worker queue full, the node shutting down); "timeout": the
# handler or the micro-service did not finish in time; "error": an error reply of any other kind.
OUTCOMES = ("ok", "error", "timeout", "503")


@implementer(INodeObserver)
class NodeObserver:
    """Hooks the node calls; every method is a no-op here. Subclass and override some.

    - ``connection_opened(conn)`` / ``connection_closed(conn)``: a client socket (any framing)
      opened / closed. ``conn.traffic()`` gives its wire bytes (in, out) so far.
    - ``registered(conn, application, jwt, reregister)``: ``ewd-register`` or
      ``ewd-reregister`` succeeded; ``jwt`` says which session mode.
    - ``request_finished(req, outcome)``: a request ended, exactly once, with an outcome from
      `OUTCOMES`. ``req.started`` is when it arrived (reactor seconds), ``req.link`` the
      ``Link`` it was forwarded on (None: handled here), ``req.app`` the loaded application
      (None if it never got that far), ``req.id`` its log id.
    """

    def connection_opened(self, conn: Any) -> None:
        pass

    def connection_closed(self, conn: Any) -> None:
        pass

    def registered(self, conn: Any, application: str, jwt: bool, reregister: bool) -> None:
        pass

    def request_finished(self, req: Any, outcome: str) -> None:
        pass


class FanOut(NodeObserver):
    """Calls several observers in turn."""

    def __init__(self, observers: Iterable[NodeObserver]) -> None:
        self.observers = tuple(observers)

    def connection_opened(self, conn: Any) -> None:
        for o in self.observers:
            o.connection_opened(conn)

    def connection_closed(self, conn: Any) -> None:
        for o in self.observers:
            o.connection_closed(conn)

    def registered(self, conn: Any, application: str, jwt: bool, reregister: bool) -> None:
        for o in self.observers:
            o.registered(conn, application, jwt, reregister)

    def request_finished(self, req: Any, outcome: str) -> None:
        for o in self.observers:
            o.request_finished(req, outcome)


def combine(observers: Iterable[NodeObserver | None]) -> NodeObserver:
    """One observer for all of ``observers``: the no-op, the only one, or a `FanOut`."""
    found = [o for o in observers if o is not None]
    if not found:
        return NodeObserver()
    return found[0] if len(found) == 1 else FanOut(found)
