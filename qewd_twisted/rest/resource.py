# -*- test-case-name: tests.test_rest_http -*-
"""
The twisted.web side of REST: `RestResource` (the mount points and micro-service REST paths),
`AjaxResource` (``POST /ajax``, docs/protocol.md §1.7) and `HttpConnection`, the `Connection`
whose final reply frame becomes the HTTP response.

A request becomes a message and goes through the node's one door (``receive(conn, message)``),
exactly as a WebSocket frame does; the node answers on the connection. HTTP conventions live
here: ``X-ResponseTime``, the CORS headers and an answered ``OPTIONS`` preflight with ``cors``,
JSON error bodies (the HTTP layer's early answers on these paths too: ``IEarlyAnswer``), 413 for a
body over the limit (declared to the HTTP layer, which refuses it before it is read), 400 for
malformed JSON.

Imports twisted.web, transports.http, core.requests and rest.mapping.
"""

from __future__ import annotations

import base64
import itertools
import os
from typing import Any, Callable

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from qewd_twisted import _json
from qewd_twisted import errors as E
from qewd_twisted.core.requests import Connection
from qewd_twisted.rest.dispatch import HTTP_FRAMING, REST_TYPE
from qewd_twisted.rest.mapping import (
    CORS_HEADERS,
    BodyError,
    HttpReply,
    error_reply,
    parse_body,
    parse_query,
    reply_from_frame,
)
from qewd_twisted.transports.http import (
    Answer,
    IEarlyAnswer,
    IRequestBodyLimit,
    NodeRequest as _WebRequest,
    read_body,
)

__all__ = ["AjaxResource", "FormlessRequest", "HttpConnection", "RestResource"]

log = Logger()

Receive = Callable[[Connection, Any], None]


class _Door:
    """The node's entry for a transport: ``receive`` and the connection hooks."""

    def __init__(self, node: Any) -> None:
        self.receive: Receive = node.receive
        self.opened = node.connection_opened
        self.lost = node.connection_lost

    def deliver(self, conn: Connection, message: Any) -> None:
        self.opened(conn)
        self.receive(conn, message)


_PREFIX = "http-" + base64.urlsafe_b64encode(os.urandom(6)).decode("ascii") + "-"
_ids = itertools.count(1)


def _new_id() -> str:
    """Unique in this process (it keys the node's connection table), cheap per request."""
    return f"{_PREFIX}{next(_ids)}"


class HttpConnection(Connection):
    """One HTTP request as the node's connection: its final frame is the HTTP response.

    Intermediate frames (``send()``) are dropped, as QEWD does over HTTP (§1.7), and so are
    broadcasts. The node counts it among its connections from the request to the response
    (so shutdown closes it with a 503).
    """

    framing = HTTP_FRAMING
    needs_reply = True  # an empty reply is still an HTTP response

    def __init__(self, request: Any, ip: str, started: float, clock: Any, cors: bool,
                 error_status: int = 400, framing: str = HTTP_FRAMING,
                 lost: Callable[[Connection], None] | None = None) -> None:
        super().__init__(_new_id(), ip)
        self.framing = framing
        self._request = request
        self._started = started
        self._clock = clock
        self._cors = cors
        self._error_status = error_status
        self._lost = lost
        self.answered = False
        if isinstance(request, FormlessRequest):
            request.connection = self  # it tells us when it is over (no Deferred per request)
        else:
            request.notifyFinish().addBoth(self._gone)

    def _gone(self, _: Any) -> None:
        """The response is written, or the client went away: the connection ends."""
        self.open = False
        lost, self._lost = self._lost, None
        if lost is not None:
            lost(self)

    def encode(self, frame: Any) -> bytes:
        return _json.dumps_utf8(frame)

    def send_encoded(self, data: bytes) -> None:
        pass  # a broadcast: not for an HTTP client

    def send(self, frame: Any) -> None:
        if self.answered or (isinstance(frame, dict) and frame.get("finished") is False):
            return
        reply = reply_from_frame(frame, self._error_status)
        body = _json.dumps_utf8(reply.body)  # raises before anything is written
        self.answer(reply, body)

    def answer(self, reply: HttpReply, body: bytes | None = None) -> None:
        if self.answered:
            return
        self.answered = True
        if body is None:
            body = _json.dumps_utf8(reply.body)
        if not self.open:
            return
        self.open = False
        write_json(self._request, reply, body, self._cors,
                   max(0, int((self._clock.seconds() - self._started) * 1000)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.answered:
            self.answer(error_reply(503, E.SHUTTING_DOWN))


_JSON = [b"application/json; charset=utf-8"]
_CORS = [(name.encode(), [value.encode()]) for name, value in CORS_HEADERS]


def write_json(request: Any, reply: HttpReply, body: bytes, cors: bool, elapsed_ms: int) -> None:
    request.setResponseCode(reply.status)
    headers = request.responseHeaders
    headers.setRawHeaders(b"content-type", _JSON)
    headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
    headers.setRawHeaders(b"x-responsetime", [b"%dms" % elapsed_ms])
    if cors:
        for name, values in _CORS:
            headers.setRawHeaders(name, values)
    for name, value in reply.headers:
        if name.lower() == "set-cookie":
            request.responseHeaders.addRawHeader(b"set-cookie", value.encode("utf-8"))
        else:
            request.setHeader(name.encode("utf-8"), value.encode("utf-8"))
    request.write(body)
    request.finish()


class FormlessRequest(_WebRequest):
    """The Site's request class: bodies are parsed by the resources that take them (REST,
    /ajax). twisted.web's own form parsing would read every POST form into ``args`` and answer
    a malformed multipart body with a bare, non-JSON 400 before any resource saw it."""

    #: the HttpConnection answering this request, if any: told when the request is over
    connection: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)

    def finish(self) -> None:
        super().finish()
        self._over()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - twisted.web's naming
        super().connectionLost(reason)
        self._over()

    def _over(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            conn._gone(None)


def _headers(request: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        out[key] = ", ".join(v.decode("latin-1") for v in values)
    return out


@implementer(IRequestBodyLimit, IEarlyAnswer)
class _JsonResource(Resource):
    """What REST and /ajax share: limits, the body, CORS, answering early (here, and the HTTP
    layer's early answers on these paths)."""

    isLeaf = True

    def __init__(self, node: Any, clock: Any, *, cors: bool = False,
                 max_body: int = 1048576) -> None:
        super().__init__()
        self._door = _Door(node)
        self._clock = clock
        self.cors = cors
        self.max_body = max_body

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802 - twisted.web's naming
        """The body limit this resource declares to the HTTP layer."""
        return self.max_body

    def earlyAnswer(self, code: int, text: str) -> Answer:  # noqa: N802 - twisted.web's naming
        """The HTTP layer's early answers (413, 400, 501, 408, 503, sent before this resource
        runs) as every REST error: JSON ``{"error": text}`` (docs/rest.md)."""
        headers = [(b"content-type", _JSON[0]), (b"x-responsetime", b"0ms")]
        if self.cors:
            headers += [(name, values[0]) for name, values in _CORS]
        return headers, _json.dumps_utf8({"error": text})

    def _early(self, request: Any, reply: HttpReply, started: float) -> bytes:
        write_json(request, reply, _json.dumps_utf8(reply.body), self.cors,
                   max(0, int((self._clock.seconds() - started) * 1000)))
        return NOT_DONE_YET

    def _body(self, request: Any) -> bytes | HttpReply:
        """The raw body, or the 413 to answer. Behind the node's HTTP layer a body over the
        limit this resource declares was refused before it was read (transports/http.py);
        the bound holds behind any other Site too."""
        body = read_body(request, self.max_body)
        if body is None:
            return error_reply(413, E.BODY_TOO_LARGE.format(limit=self.max_body))
        return body

    def _preflight(self, request: Any, started: float) -> bytes:
        request.setResponseCode(204)
        for name, value in CORS_HEADERS:
            request.setHeader(name.encode(), value.encode())
        request.setHeader(b"x-responsetime",
                          f"{max(0, int((self._clock.seconds() - started) * 1000))}ms".encode())
        return b""


class RestResource(_JsonResource):
    """Every path under the mount points (and the micro-service REST paths): a ``restRequest``
    message ``{method, path, headers, query, body, ip, ips}`` through the node's door."""

    def render(self, request: Any) -> bytes:
        started = self._clock.seconds()
        method = request.method.decode("ascii", "replace").upper()
        if method == "OPTIONS" and self.cors:
            return self._preflight(request, started)
        raw = self._body(request)
        if isinstance(raw, HttpReply):
            return self._early(request, raw, started)
        try:
            body = parse_body(raw, (request.getHeader(b"content-type") or b"").decode("latin-1"))
        except BodyError as e:
            return self._early(request, error_reply(400, str(e)), started)
        uri = request.uri.decode("utf-8", "replace")
        ip = request.getClientAddress().host if hasattr(request, "getClientAddress") else ""
        message = {
            "type": REST_TYPE,
            "method": method,
            "path": uri,
            "headers": _headers(request),
            "query": parse_query(uri.partition("?")[2]) if "?" in uri else {},
            "body": body,
            "ip": ip,
            "ips": [ip],
        }
        conn = HttpConnection(request, ip, started, self._clock, self.cors,
                              lost=self._door.lost)
        self._door.deliver(conn, message)
        return NOT_DONE_YET


class AjaxResource(_JsonResource):
    """``POST /ajax``: the body is any QEWD message (§1.7); the reply body is its ``message``,
    errors are 400 (or ``status.code``) with ``{error}``. Intermediate ``send()`` frames are
    not delivered over HTTP."""

    def render(self, request: Any) -> bytes:
        started = self._clock.seconds()
        method = request.method.decode("ascii", "replace").upper()
        if method == "OPTIONS" and self.cors:
            return self._preflight(request, started)
        if method != "POST":
            reply = error_reply(405, E.METHOD_NOT_ALLOWED.format(method=method, path="/ajax"))
            reply.headers.append(("Allow", "POST"))
            return self._early(request, reply, started)
        raw = self._body(request)
        if isinstance(raw, HttpReply):
            return self._early(request, raw, started)
        try:
            body = parse_body(raw, "application/json")
        except BodyError as e:
            return self._early(request, error_reply(400, str(e)), started)
        ip = request.getClientAddress().host if hasattr(request, "getClientAddress") else ""
        conn = HttpConnection(request, ip, started, self._clock, self.cors, framing="ajax",
                              lost=self._door.lost)
        self._door.deliver(conn, body)
        return NOT_DONE_YET
