# -*- test-case-name: tests.test_http_hardening -*-
"""
The node's HTTP layer under every resource: one quiet `NodeSite`, its `NodeChannel` and
`NodeRequest`, and what resources declare to it.

What a channel enforces before a resource sees a request (docs/reliability.md, "HTTP"):

- admission: every TCP connection counts toward ``maxConnections`` (and, if set,
  ``maxConnectionsPerAddress``) from accept until the socket closes, WebSocket or not; past
  it the request gets 503 ``Server busy: too many connections``;
- deadlines: the request line and headers within ``headerTimeout``, a body within
  ``bodyTimeout`` (absolute, not reset by each byte); 408 past either;
- the request head: an unknown method gets 501 (so it never reaches a ``render_*`` that is not
  a method handler), so does a transfer coding other than chunked; a path with control bytes,
  NUL or invalid UTF-8 gets 400, and so does a head Twisted cannot parse (a malformed header
  line, too many or too large headers, a bad ``Content-Length``, broken chunk framing);
- bodies: each resource declares the largest body it accepts (`IRequestBodyLimit`; none by
  default); a larger ``Content-Length`` gets 413 before any of the body is read, a chunked body
  is cut with 413 at the limit, and what is accepted is kept in memory (never spooled to disk).
  `read_body` is the bounded read for resources (also behind a plain twisted.web Site).

These early answers are written by whoever owns the path: `NodeSite.early_answer` finds the
resource the request was for among the tree's registered children (no resource code runs for a
refused request) and, if it provides `IEarlyAnswer`, lets it write the headers and body (the
REST resources answer JSON); otherwise plain text. The status line, ``content-length``,
``connection: close`` and ``x-content-type-options`` are the channel's.

`WebSocketEndpoint` hands a connection over to a WebSocket protocol after the upgrade: the
bytes that arrived behind the upgrade request are fed to it as frames and the socket reads
again (Twisted pauses it past 16 KiB of pipelined bytes and nothing else would resume it).
`origin_allowed` is the ``allowedOrigins`` check for WebSocket and socket.io upgrades
(`origin_refused` also logs a refusal and sets its 403).

Imports twisted.web, errors and config.limits only.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web import http, server
from twisted.web.resource import Resource
from zope.interface import Interface, implementer

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits

__all__ = [
    "Answer",
    "KNOWN_METHODS",
    "LINGER",
    "LOGGED_CHARS",
    "IEarlyAnswer",
    "IRequestBodyLimit",
    "NodeChannel",
    "NodeRequest",
    "NodeSite",
    "WebSocketEndpoint",
    "body_limit_of",
    "clip",
    "origin_allowed",
    "origin_refused",
    "owner_of",
    "plain_answer",
    "read_body",
]

log = Logger()
_DEFAULTS = Limits()

#: After an early answer (408, 413, 503...), how long the channel reads and discards what the
#: client still sends before it aborts, so that the answer is not lost to a reset.
LINGER = 2.0
#: ... or until it has discarded this many bytes.
LINGER_BYTES = 1 << 20
#: Refused connections are logged at most once per this many seconds, with their count.
REFUSAL_REPORT = 10.0
#: The methods any resource here may handle; anything else is answered 501 by the channel.
KNOWN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"})
_NO_BODY_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE"})
_CONTROL = bytes(range(0x20)) + b"\x7f"
_REASONS = {400: b"Bad Request", 403: b"Forbidden", 408: b"Request Timeout",
            413: b"Content Too Large", 501: b"Not Implemented", 503: b"Service Unavailable"}


def _reason(code: int, text: str) -> bytes:
    """The status line's reason: for a refused connection (503) the node's own text, as the
    WebSocket endpoints have always sent it (docs/reliability.md); else the standard phrase."""
    if code == 503 and text.isascii() and text.isprintable():
        return text.encode("ascii")
    return _REASONS.get(code, b"Error")


#: Characters of a client-supplied value (header, path, method) written to the log.
LOGGED_CHARS = 120


def clip(value: bytes | str | None, n: int = LOGGED_CHARS) -> str:
    """A client-supplied value as it may be logged: decoded, repr-escaped, cut to ``n``
    characters."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = repr(value[: n + 1])[1:-1]
    return text[:n] + "..." if len(value) > n else text


class IRequestBodyLimit(Interface):
    """A resource that accepts request bodies says how large (the default is none)."""

    def maxBodyBytes(method: bytes) -> int:  # noqa: N802, N805 - twisted.web's naming
        """The largest body, in bytes, accepted with ``method``; 0 for none."""


def body_limit_of(resource: Any, method: bytes) -> int:
    """What ``resource`` declares for ``method`` (0 when it declares nothing)."""
    if IRequestBodyLimit.providedBy(resource):
        return max(0, int(resource.maxBodyBytes(method)))
    return 0


def read_body(request: Any, limit: int) -> bytes | None:
    """A resource's read of its request body: the body if it is at most ``limit`` bytes, else
    None (answer 413). Behind `NodeSite` the channel has refused a larger body already; the
    bound also holds behind any other Site."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    body = content.read(limit + 1)
    return None if len(body) > limit else body


#: An early answer's headers (besides the channel's own) and body.
Answer = tuple[list[tuple[bytes, bytes]], bytes]


class IEarlyAnswer(Interface):
    """A resource that writes the HTTP layer's early answers to requests for it (408, 413, 501,
    400 and a refused connection's 503, sent before any resource runs) its own way."""

    def earlyAnswer(code: int, text: str) -> Answer:  # noqa: N802, N805 - twisted.web's naming
        """The headers and body answering status ``code`` with the node's ``text``; the channel
        adds the status line, ``content-length``, ``connection`` and
        ``x-content-type-options``."""


def plain_answer(code: int, text: str) -> Answer:
    """An early answer as plain text (every path whose owner does not say otherwise)."""
    return [(b"content-type", b"text/plain; charset=utf-8")], text.encode("utf-8") + b"\n"


def owner_of(root: Any, target: bytes | None) -> Any:
    """The resource a request for ``target`` is for, as far as the tree's registered children
    (``putChild``) tell: the deepest one on its path, a leaf ending the walk; ``root`` when the
    path names none. No resource's code runs (the request may be hostile), and the segments are
    the ones twisted.web routes by."""
    node = root
    if node is None or not target:
        return node
    path = target.split(b"?", 1)[0]
    for segment in path[1:].split(b"/"):
        children = getattr(node, "children", None)
        if getattr(node, "isLeaf", False) or not children:
            break
        child = children.get(unquote_to_bytes(segment))
        if child is None:
            break
        node = child
    return node


def bad_path(target: bytes) -> str | None:
    """Why a request target cannot be served (None when it can): bytes outside visible ASCII,
    or a decoded path holding control bytes (NUL included) or invalid UTF-8."""
    if any(b <= 0x20 or b >= 0x7F for b in target):
        return "bytes outside visible ASCII in the request target"
    path = unquote_to_bytes(target.split(b"?", 1)[0])
    if path.translate(None, _CONTROL) != path:
        return "control bytes in the path"
    try:
        path.decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not UTF-8"
    return None


def origin_allowed(request: Any, allowed: frozenset[str] | None) -> bool:
    """The ``allowedOrigins`` policy: no list, or no ``Origin`` header (a client that is not a
    browser), allows; otherwise the origin must be listed (compared case-insensitively,
    without a trailing slash)."""
    if allowed is None:
        return True
    origin = request.getHeader(b"origin") or request.getHeader(b"sec-websocket-origin")
    if origin is None:
        return True
    return origin.strip().lower().rstrip(b"/").decode("latin-1") in allowed


def origin_refused(request: Any, allowed: frozenset[str] | None, what: str) -> bool:
    """`origin_allowed`, for an endpoint that refuses: False when the origin is allowed; else
    the refusal (``what`` is refused) is logged, the status set to 403, and True returned for
    the endpoint to write its own body."""
    if origin_allowed(request, allowed):
        return False
    log.info("refusing {what} from origin {origin}", what=what,
             origin=clip(request.getHeader(b"origin")))
    request.setResponseCode(403)
    return True


class NodeRequest(server.Request):
    """A request whose body stays in memory and within what its resource declared."""

    body_limit = 0
    _body_seen = 0

    def gotLength(self, length: int | None) -> None:
        # The channel admits only bodies within the resource's declared limit, so memory is
        # the right place (twisted.web spools anything from 100 KB, or of unknown length, to
        # a temporary file).
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or getattr(channel, "discarding", False):
            return
        self._body_seen += len(data)
        if self._body_seen > self.body_limit:
            channel.answer_early(413, E.BODY_TOO_LARGE.format(limit=self.body_limit))
            return
        self.content.write(data)

    def process(self) -> None:
        self.setHeader(b"x-content-type-options", b"nosniff")
        super().process()


class _NoCall:
    """Stands for "no deadline running" (cancel is a no-op)."""

    def active(self) -> bool:
        return False

    def cancel(self) -> None:
        pass


_NO_CALL = _NoCall()


class NodeChannel(http.HTTPChannel):
    """An HTTP/1.1 channel with the node's deadlines, admission and body limits."""

    discarding = False
    _deadline: Any = _NO_CALL
    _refusal: str | None = None
    _upgraded: Any = None
    _counted = False
    _heard = False  # bytes of a request arrived since the current header deadline started

    @property
    def limits(self) -> Limits:
        return getattr(self.site, "limits", _DEFAULTS)

    def connectionMade(self) -> None:
        super().connectionMade()
        admit = getattr(self.site, "admit", None)
        self._refusal = admit(self) if admit is not None else None
        self._counted = self._refusal is None and admit is not None
        self._start_deadline(self.limits.header_timeout, "headers")

    # -- deadlines

    def _start_deadline(self, seconds: float, what: str) -> None:
        self._stop_deadline()
        self._heard = False
        self._deadline = self.callLater(seconds, self._expired, what)

    def _stop_deadline(self) -> None:
        if self._deadline.active():
            self._deadline.cancel()
        self._deadline = _NO_CALL

    def _expired(self, what: str) -> None:
        self._deadline = _NO_CALL
        if self.transport is None:
            return
        log.info("closing {peer}: its request {what} did not arrive within the deadline",
                 peer=_peer(self), what=what)
        if what == "headers" and not self._heard:
            self.loseConnection()  # an idle keep-alive connection: nothing to answer
        else:
            self.answer_early(408, E.REQUEST_TIMEOUT)

    # -- the request head

    _discarded = 0

    def dataReceived(self, data: bytes) -> None:
        if self.discarding:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES and self.transport is not None:
                self.transport.abortConnection()  # it will not stop: no point reading on
            return
        self._heard = True
        super().dataReceived(data)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:  # noqa: N802
        # Twisted answers a transfer coding it does not decode with a bare 400; RFC 9112 §6.1
        # says 501 (and the answer is the owner's to write, as every early answer here).
        if header == b"Transfer-Encoding" and data.lower() not in (b"chunked", b"identity"):
            log.info("refusing transfer coding {coding} from {peer}", coding=clip(data),
                     peer=_peer(self))
            self.answer_early(501, E.CODING_NOT_IMPLEMENTED)
            return False
        return bool(super()._maybeChooseTransferDecoder(header, data))

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 - Twisted's name
        # Twisted's own refusals of a malformed head (header lines, sizes, counts, chunk
        # framing): a bare 400 there, an early answer like the others here.
        self.answer_early(400, E.BAD_REQUEST_HEAD)

    def allHeadersReceived(self) -> None:
        if self.discarding:
            return
        self._stop_deadline()
        req = self.requests[-1]
        if self._refusal is not None:
            return self.answer_early(503, self._refusal)
        method, target = self._command, self._path
        if method not in KNOWN_METHODS:
            log.info("refusing method {method} from {peer}", method=clip(method), peer=_peer(self))
            return self.answer_early(501, E.METHOD_NOT_IMPLEMENTED)
        why = bad_path(target)
        if why is not None:
            log.info("refusing a request from {peer}: {why}: {target}", peer=_peer(self),
                     why=why, target=clip(target))
            return self.answer_early(400, E.BAD_REQUEST_PATH)
        if self.length != 0:  # a Content-Length above zero, or a chunked body
            limit = self._declared_limit(req, method, target)
            if self.length is not None and self.length > limit:
                return self.answer_early(413, E.BODY_TOO_LARGE.format(limit=limit))
            req.body_limit = limit
            self._start_deadline(self.limits.body_timeout, "body")
        super().allHeadersReceived()

    def _declared_limit(self, req: Any, method: bytes, target: bytes) -> int:
        """Find the resource this request is for, before its body is read, and ask it."""
        if method in _NO_BODY_METHODS:
            return 0
        site = self.site
        req.method, req.uri = method, target
        req.path = target.split(b"?", 1)[0]
        req.args = {}
        req.prepath, req.postpath = [], [unquote_to_bytes(p) for p in req.path[1:].split(b"/")]
        try:
            resource = site.getResourceFor(req)
        except Exception:
            log.failure("finding the resource for {target}", target=clip(target))
            return 0
        return body_limit_of(resource, method)

    def answer_early(self, code: int, text: str) -> None:
        """Answer ``code`` before (or instead of) reading the request, then close: the write
        side at once, the read side once the client stops, ``linger`` seconds have passed or
        ``LINGER_BYTES`` were discarded, so that the answer is not lost to a reset."""
        if self.discarding or self.transport is None or self.transport.disconnecting:
            return  # answered already, or closing (Twisted's own idle timeout, say)
        self.discarding = True
        self.setRawMode()  # what is still buffered is discarded, never parsed as a request
        self._stop_deadline()
        self.setTimeout(None)
        site_answer = getattr(self.site, "early_answer", None)
        target = getattr(self, "_path", None)  # once the request line has arrived
        headers, body = (site_answer(target, code, text) if site_answer is not None
                         else plain_answer(code, text))
        head = [b"HTTP/1.1 %d %s\r\n" % (code, _reason(code, text))]
        head += [b"%s: %s\r\n" % header for header in headers]
        head.append(b"content-length: %d\r\nconnection: close\r\n"
                    b"x-content-type-options: nosniff\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        if half_close is None:
            return self.loseConnection()
        half_close()
        self._deadline = self.callLater(getattr(self.site, "linger", LINGER), self._linger_over)

    def _linger_over(self) -> None:
        self._deadline = _NO_CALL
        if self.transport is not None:
            self.transport.abortConnection()

    # -- the body and after

    def rawDataReceived(self, data: bytes) -> None:
        if self._upgraded is not None:
            return self._upgraded.dataReceived(data)
        if self.discarding:
            return
        super().rawDataReceived(data)

    def _finishRequestBody(self, data: bytes) -> None:
        if not self.discarding:
            super()._finishRequestBody(data)

    def allContentReceived(self) -> None:
        if self.discarding:
            return
        self._stop_deadline()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        if self.persistent and self._upgraded is None and not self.discarding:
            # the next request's head is due within the deadline (set before the base class
            # replays pipelined bytes, which may complete it at once)
            self._start_deadline(self.limits.header_timeout, "headers")
        super().requestDone(request)

    _stall: Any = _NO_CALL

    def pauseProducing(self) -> None:
        # The transport's buffer is full: the client is not reading what we send. A response
        # may wait for it, but not for ever (Twisted stops its idle timer during a response).
        super().pauseProducing()
        if self._handlingRequest and self._upgraded is None and not self._stall.active():
            self._stall = self.callLater(self.limits.stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        if self._stall.active():
            self._stall.cancel()
        self._stall = _NO_CALL
        super().resumeProducing()

    def _stalled(self) -> None:
        self._stall = _NO_CALL
        if self.transport is not None:
            log.info("aborting {peer}: it read nothing of its response for {seconds} s",
                     peer=_peer(self), seconds=self.limits.stall_timeout)
            self.transport.abortConnection()

    def hand_over(self, protocol: Any, transport: Any) -> Callable[[], None]:
        """The connection now belongs to ``protocol`` (a WebSocket): stop every HTTP deadline,
        feed it what was read behind the upgrade request, make the socket read again.
        Returns what the protocol calls when its connection is lost (to free the slot)."""
        self._stop_deadline()
        self.setTimeout(None)
        if self._stall.active():
            self._stall.cancel()
        self._upgraded = protocol
        buffered, self._dataBuffer = b"".join(self._dataBuffer), []
        self._waitingForTransport = False
        self._networkProducer.resumeProducing()  # what rawDataReceived paused
        if buffered:
            protocol.dataReceived(buffered)
        return self._release

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.site.release(self)

    def connectionLost(self, reason: Any) -> None:
        self._stop_deadline()
        if self._stall.active():
            self._stall.cancel()
        self._release()
        super().connectionLost(reason)


def _peer(channel: Any) -> str:
    transport = channel.transport
    if transport is None:
        return "?"
    peer = transport.getPeer()
    return str(getattr(peer, "host", peer))


class NodeSite(server.Site):
    """The one Site of a node (its port and the metrics endpoint): no access-log line per
    request, hardened channels, and the connection count for ``maxConnections``.

    ``connections`` is a callable giving the node's own count of clients (sockets it serves
    that are not TCP connections of this site, e.g. long-polling sessions); admission refuses
    when either count reaches ``max_connections``.
    """

    noisy = False
    displayTracebacks = False
    linger = LINGER
    protocol = NodeChannel
    requestFactory = NodeRequest

    def __init__(self, resource: Any, *, reactor: Any, limits: Limits = _DEFAULTS,
                 max_connections: int | None = None,
                 connections: Callable[[], int] | None = None) -> None:
        # No Twisted idle timeout (60 s): the channel's own deadlines cover every wait, and at
        # bodyTimeout's default, also 60 s, the idle one closed a stalled upload silently
        # before the 408 could be sent.
        super().__init__(resource, reactor=reactor, timeout=None)
        self.limits = limits
        self.max_connections = max_connections
        self._connections = connections
        self.open_connections = 0
        self.by_address: dict[str, int] = {}

    def log(self, request: Any) -> None:
        pass

    def early_answer(self, target: bytes | None, code: int, text: str) -> Answer:
        """How the channel's early answer ``code`` to a request for ``target`` is written: by
        the resource that owns the path (`owner_of`) if it provides `IEarlyAnswer`, else as
        plain text."""
        owner = owner_of(self.resource, target)
        if IEarlyAnswer.providedBy(owner):
            try:
                return owner.earlyAnswer(code, text)
            except Exception:
                log.failure("writing an early {code} answer for {target}", code=code,
                            target=clip(target))
        return plain_answer(code, text)

    def admit(self, channel: Any) -> str | None:
        """Count a new connection, or say why it is refused (it is then not counted)."""
        ip = _peer(channel)
        cap = self.limits.max_connections_per_address
        others = self._connections() if self._connections is not None else 0
        if self.max_connections is not None and max(self.open_connections, others) \
                >= self.max_connections:
            self._refused("maxConnections", max(self.open_connections, others))
            return E.TOO_MANY_CONNECTIONS
        if cap is not None and self.by_address.get(ip, 0) >= cap:
            self._refused("maxConnectionsPerAddress", self.by_address[ip])
            return E.TOO_MANY_FROM_ADDRESS
        channel.counted_ip = ip
        self.open_connections += 1
        self.by_address[ip] = self.by_address.get(ip, 0) + 1
        return None

    _refusals = 0
    _next_report = 0.0

    def _refused(self, limit: str, n: int) -> None:
        """Log refusals at most once per ``REFUSAL_REPORT`` seconds (a flood of them is what
        a limit is for; a line per connection would be a second flood)."""
        self._refusals += 1
        now = self.reactor.seconds()
        if now >= self._next_report:
            log.warn("refused {count} connection(s) since the last report: {n} open ({limit})",
                     count=self._refusals, n=n, limit=limit)
            self._refusals = 0
            self._next_report = now + REFUSAL_REPORT

    def release(self, channel: Any) -> None:
        ip = channel.counted_ip
        self.open_connections -= 1
        left = self.by_address.get(ip, 1) - 1
        if left > 0:
            self.by_address[ip] = left
        else:
            self.by_address.pop(ip, None)


def _close_after(request: Any) -> None:
    """End the connection after this response: a refused upgrade leaves nothing to reuse."""
    request.setHeader(b"connection", b"close")
    if request.channel is not None:
        request.channel.persistent = False


@implementer(IRequestBodyLimit)
class WebSocketEndpoint(Resource):
    """A WebSocket endpoint: checks the origin, then gives the connection to a protocol from
    ``factory`` (an Autobahn server factory), as autobahn's WebSocketResource does, plus the
    hand-over described in the module docstring."""

    isLeaf = True

    def __init__(self, factory: Any, allowed_origins: frozenset[str] | None = None) -> None:
        super().__init__()
        self.factory = factory
        self.allowed_origins = allowed_origins

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return 0  # an upgrade carries no body; what follows it is WebSocket frames

    def render(self, request: Any) -> Any:
        if origin_refused(request, self.allowed_origins, "a WebSocket upgrade"):
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            _close_after(request)
            return E.ORIGIN_REFUSED.encode("utf-8") + b"\n"
        channel = request.channel
        transport = channel.transport
        if transport is None:  # HTTP/2: no transport to take over
            request.setResponseCode(426)
            request.setHeader(b"upgrade", b"websocket")
            return b""
        protocol = self.factory.buildProtocol(transport.getPeer())
        if protocol is None:
            request.setResponseCode(503)
            return b""
        channel.transport = None
        if isinstance(transport, ProtocolWrapper):  # TLS (old style)
            transport.wrappedProtocol = protocol
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):  # TLS
            transport.protocol.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        # The handshake goes to the protocol as it arrived (Autobahn parses it itself).
        head = [request.method, b" ", request.uri, b" HTTP/1.1\r\n"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            head += [name, b": ", b",".join(values), b"\r\n"]
        head.append(b"\r\n")
        protocol.dataReceived(b"".join(head))
        hand_over = getattr(channel, "hand_over", None)
        if hand_over is not None:
            protocol.release_connection_slot = hand_over(protocol, transport)
        else:
            transport.resumeProducing()
        return server.NOT_DONE_YET
