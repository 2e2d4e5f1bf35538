# -*- test-case-name: tests.test_node -*-
"""
``q``: what the node offers to application code, as QEWD's ``this`` / ``q`` does (docs/handlers.md).

A `Q` is handed to ``workerResponseHandlers`` as their third argument (``fn(message, send, q)``),
to handlers (and before/after hooks) that take a fifth parameter
(``fn(messageObj, session, send, finished, q)``), and to ``init(application, q)``.
Its whole surface:

- ``q.to_all(obj)``: send ``obj`` as is to every connected client (QEWD's ``q.io.toAll``);
- ``q.to_application(obj, application)``: to every client registered for ``application``;
- ``q.send_to_socket(socket_id, obj) -> bool``: to one client by socket id (False when it is
  not connected to this node and no push bus (``core.push``) carries it elsewhere);
- ``q.db``: the document store (``documents.DocumentStore``), or None for a node built
  without one.

- ``q.set_custom_error_response(application=..., errorType=..., text=..., statusCode=...)``
  (or one dict; QEWD's ``this.setCustomErrorResponse``): the text and status code of one of
  QEWD's error types for one application (``apps.custom_errors``); called from a module's
  ``init(application, q)``.

The push methods are called on the reactor thread (a workerResponseHandler and ``init`` run
there); the document store blocks, so ``async def`` code reaches it through ``q.db.run``
(docs/documents.md).

May import: nothing at run time (the node only for type checking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qewd_twisted.core.node import Node

__all__ = ["Q"]


class Q:
    """The application-facing surface of one node (see the module docstring)."""

    __slots__ = ("_node", "db")

    def __init__(self, node: Node, db: Any = None) -> None:
        self._node = node
        self.db = db

    def to_all(self, obj: Any) -> None:
        """Send ``obj`` as is to every connected client."""
        self._node.to_all(obj)

    def to_application(self, obj: Any, application: str) -> None:
        """Send ``obj`` to every client registered for ``application``."""
        self._node.to_application(obj, application)

    def send_to_socket(self, socket_id: str, obj: Any) -> bool:
        """Send ``obj`` to one client by socket id; False when it is not connected here."""
        return self._node.send_to_socket(socket_id, obj)

    def set_custom_error_response(self, params: Any = None, /, **kw: Any) -> bool:
        """QEWD's ``setCustomErrorResponse({application, errorType, text, statusCode})``;
        False when nothing was set (no application or error type, or an unknown type)."""
        return self._node.custom_errors.set(params, **kw)

    def __repr__(self) -> str:
        return "<q>"
