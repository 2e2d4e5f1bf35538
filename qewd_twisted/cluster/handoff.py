# -*- test-case-name: tests.integration.test_processes -*-
"""
Engine.IO long-polling across the processes of one node.

A long-polling session lives in the process that answered its handshake, but each of its
requests (the polls, the POSTs, the WebSocket upgrade) may come on a new connection, which
whichever process is free accepts. So a session id names its process (`sid_maker`: its first
two characters are the process index), and a process that receives a request for another
process's session hands the connection over (`ProcessRouter` in front of ``/socket.io/``):
the request is written out again as bytes, the socket itself goes over the control channels
(SCM_RIGHTS, AMP's ``Descriptor``) through the supervisor to the owner, which adopts the
socket and reads the request from those bytes as if it had accepted the connection itself.
The client sees nothing of it; the connection stays with the owner for its next requests.

Over TLS (``ssl:`` endpoints) the TLS session cannot move with the socket: such a request is
answered as an unknown session (Engine.IO's ``Session ID unknown``), as before.

May import: ``transports``, ``cluster``.
"""

from __future__ import annotations

import os
import string
from typing import Any, Callable

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource
from zope.interface import implementer

from qewd_twisted.transports.http import IRequestBodyLimit
from qewd_twisted.transports.polling import query_args

__all__ = ["ProcessRouter", "owner_of", "raw_request", "sid_maker"]

log = Logger()

_DIGITS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"  # base64url


def sid_maker(index: int, make: Callable[[], str]) -> Callable[[], str]:
    """Session ids from ``make`` (20 URL-safe characters) whose first two name process
    ``index`` (up to 4096 processes)."""
    prefix = _DIGITS[index // 64] + _DIGITS[index % 64]
    return lambda: prefix + make()[2:]


def owner_of(sid: bytes) -> int | None:
    """The process index a session id names, or None."""
    try:
        text = sid.decode("ascii")
        return _DIGITS.index(text[0]) * 64 + _DIGITS.index(text[1])
    except (UnicodeDecodeError, ValueError, IndexError):
        return None


def raw_request(request: Any) -> bytes:
    """The request as bytes on the wire again: line, headers, and the body with its length."""
    request.content.seek(0)
    body = request.content.read()
    lines = [b"%s %s %s" % (request.method, request.uri, request.clientproto)]
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() not in (b"content-length", b"transfer-encoding"):
            lines += [name + b": " + value for value in values]
    if body or request.method == b"POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@implementer(IRequestBodyLimit)
class ProcessRouter(Resource):
    """``/socket.io/`` of one process of several: requests for this process's sessions (and
    new ones) go to ``inner``; one for another process's session is handed over to it."""

    isLeaf = False

    def __init__(self, inner: Any, index: int, hand_over: Callable[[int, int, bytes], Any],
                 max_body: int) -> None:
        super().__init__()
        self.inner = inner
        self.index = index
        self.hand_over = hand_over
        self.max_body = max_body
        self.engine = inner.engine

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return self.inner.maxBodyBytes(method)

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:  # noqa: N802
        if path == b"":
            args = request.args or query_args(request.uri)
            owner = owner_of((args.get(b"sid") or [b""])[0])
            if owner is not None and owner != self.index and _movable(request):
                return _HandOver(self, owner)
        return self.inner.getChildWithDefault(path, request)


def _movable(request: Any) -> bool:
    # a plain TCP connection (a TLS one is wrapped in a protocol, its session is in-process)
    return isinstance(request.channel.transport, tcp.Server)


@implementer(IRequestBodyLimit)
class _HandOver(Resource):
    isLeaf = True

    def __init__(self, router: ProcessRouter, owner: int) -> None:
        super().__init__()
        self.router = router
        self.owner = owner

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return self.router.max_body if method == b"POST" else 0

    def render(self, request: Any) -> Any:
        transport = request.channel.transport
        data = raw_request(request)
        fd = os.dup(transport.fileno())
        transport.stopReading()
        # Only this process's copy of the socket is closed: no shutdown(), which would end the
        # connection for the process it now belongs to.
        transport._shouldShutdown = False
        d = self.router.hand_over(self.owner, fd, data)

        def sent(result: Any) -> Any:
            os.close(fd)
            return result

        def handed(_: Any) -> None:
            transport.loseConnection()

        def refused(failure: Any) -> None:
            log.info("a request for a session of process {owner} could not be handed over "
                     "({why}): answered here", owner=self.owner,
                     why=failure.getErrorMessage())
            # the session is not here either: answered as any unknown session is
            transport._shouldShutdown = True
            transport.startReading()
            try:
                body = self.router.inner.getChildWithDefault(b"", request).render(request)
            except Exception:
                log.failure("answering a request that could not be handed over")
                transport.loseConnection()
                return
            if body is not server.NOT_DONE_YET and not request.finished:
                request.write(body)
                request.finish()

        d.addBoth(sent)
        d.addCallbacks(handed, refused)
        return server.NOT_DONE_YET
