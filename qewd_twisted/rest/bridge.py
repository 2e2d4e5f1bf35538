# -*- test-case-name: tests.test_rest_node -*-
"""
`NodeBridge`: everything the REST code asks of the node, in one place: its token codec and
applications, replies (built by the node, so envelopes have one home), the requests-in-flight
bookkeeping, and running a handler where handlers run (the worker pool or the reactor).

Imports nothing from the package; the node is ``core.node.Node`` (duck-typed).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["NodeBridge"]


class NodeBridge:
    """The node's services for the REST dispatcher and router."""

    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def tokens(self) -> Any:
        return self.node.tokens

    @property
    def apps(self) -> Any:
        return self.node.apps

    @property
    def initial_session_timeout(self) -> int:
        return self.node.initial_session_timeout

    @property
    def q(self) -> Any:
        """What handlers taking a third argument get (``core.q.Q``)."""
        return self.node.q

    def elapsed(self, started: float) -> str:
        return self.node._elapsed(started)

    def send(self, conn: Any, frame: Any) -> None:
        """Send ``frame`` as is (JSON problems answered by the node)."""
        self.node._send(conn, frame)

    def reply(self, conn: Any, type: str, message: Any, started: float, rid: Any = None) -> None:
        """A final reply frame (``ms_requestId`` echoed, inside ``message`` too)."""
        self.node._reply(conn, type, message, started, rid)

    def fail(self, conn: Any, type: str, text: str, started: float, rid: Any = None,
             status: int | None = None, **extra: Any) -> None:
        """A final error reply: ``{"error": text, "status": {"code": status}, **extra}``."""
        message: dict[str, Any] = {"error": text, **extra}
        if status is not None:
            message["status"] = {"code": status}
        self.reply(conn, type, message, started, rid)

    def custom_error(self, application: Any, error_type: str) -> tuple[str, Any] | None:
        """The application's ``q.set_custom_error_response`` for ``error_type``: ``(text,
        status code)``, or None."""
        return self.node.custom_errors.get(application, error_type)

    def begin(self, req: Any) -> None:
        self.node.requests.begin(req)

    def end(self, req: Any, outcome: str = "ok") -> None:
        self.node.requests.end(req, outcome)

    def run_handler(self, req: Any, target: Callable, call: Callable) -> None:
        """Run ``call(send, finished)`` where ``target`` (the user's function) must run."""
        self.node.local.run_handler(req, target, call)

    def run_local(self, req: Any) -> None:
        """``req`` through the application's own ``handlers`` (the WebSocket path)."""
        self.node._run_local(req)
