# -*- test-case-name: tests.test_node -*-
"""
What the node works on: a ``Connection`` (one client socket, whatever its framing) and a
``Request`` (one message being handled). Both are re-exported by node.py, their public home.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable

from zope.interface import implementer

from qewd_twisted.apps.modules import Application
from qewd_twisted.core.interfaces import IConnection

__all__ = ["Connection", "Request"]

_request_ids = itertools.count(1)  # Request.id: per process, for log correlation


@implementer(IConnection)
class Connection:
    """One client socket, whatever its framing. Subclasses provide ``send`` and ``close``.

    ``send(frame)`` may raise TypeError/ValueError when the frame is not JSON-serialisable; the
    node catches that and answers with an error frame instead.
    """

    framing = "abstract"

    def __init__(self, id: str, ip: str) -> None:
        self.id = id
        self.ip = ip
        self.application: str | None = None
        self.jwt = False
        self.open = True
        self.in_flight = 0
        # A link from one of our masters (it registered with qewd_twisted: 1) carries many
        # users' requests: it gets the higher maxInFlightPerLink. Nothing proves the claim,
        # so that limit is a bound too, not an exemption.
        self.is_link = False

    def send(self, frame: Any) -> None:
        self.send_encoded(self.encode(frame))

    def encode(self, frame: Any) -> bytes:
        """The frame as this connection's framing writes it (raises if not JSON-able)."""
        raise NotImplementedError

    def send_encoded(self, data: bytes) -> None:
        """Write what ``encode`` made (for a broadcast, encoded once per framing)."""
        raise NotImplementedError

    def close(self, code: int = 1000, reason: str = "") -> None:
        raise NotImplementedError

    def traffic(self) -> tuple[int, int]:
        """Bytes (received, sent) on the wire so far; (0, 0) where the transport can't tell."""
        return 0, 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.ip}>"


class Request:
    """One message being handled: where replies go and whether the final one has been sent."""

    __slots__ = (
        "conn", "message", "type", "started", "ms_request_id", "jwt", "session",
        "application", "done", "timer", "app", "id", "link", "in_thread", "spare",
    )

    def __init__(self, conn: Connection, message: dict, type: str, started: float,
                 ms_request_id: Any, jwt: bool, session: Any, application: str) -> None:
        self.conn = conn
        self.message = message
        self.type = type
        self.started = started
        self.ms_request_id = ms_request_id
        self.jwt = jwt
        self.session = session
        self.application = application
        self.done = False
        self.timer: Any = None
        self.app: Application | None = None
        self.in_thread = False  # its handler runs in a pool thread
        self.spare = False  # the pool lent a thread in place of this stuck one
        self.id = next(_request_ids)
        self.link: Any = None  # the Link it was forwarded on, if any


def snapshot(value: Any) -> Any:
    # A handler thread may keep mutating what it passed to send(); copy the top level now.
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def looks_like_jwt(token: Any) -> bool:
    return isinstance(token, str) and token.count(".") == 2


def positional_arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 3
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
