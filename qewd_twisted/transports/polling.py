# -*- test-case-name: tests.test_polling -*-
"""
The HTTP side of Engine.IO 3: long-polling at ``/socket.io/?EIO=3&transport=polling`` and the
WebSocket that upgrades a polling session (``transport=websocket&sid=...``).

What lives here: ``PollingResource`` (twisted.web: handshake, GET held until packets are
queued, POST of one or several packets, XHR and JSONP, engine.io's error answers),
``UpgradeProtocol`` (Autobahn: the probe and the upgraded socket of a session) and
``build_engine`` (both wired to one ``EngineSessions``). The HTTP layer under them (http.py)
bounds bodies, deadlines and connections. The session logic is in
engineio.py; site.py routes to what ``build_engine`` returns. May import: engineio, payload,
wire, errors, framing, http, twisted.web, Autobahn; never site.py (site.py imports
this).

engine.io 3.6 facts (docs/protocol.md §1.1): errors are 400 JSON ``{"code":N,"message":...}``
with 0 Transport unknown, 1 Session ID unknown, 2 Bad handshake method, 3 Bad request; an
unexpected method on a session is a bare 500; a POST is answered ``ok`` (text/html); XHR
answers reflect the request's Origin with credentials allowed, or ``*``; the ``io`` cookie
carries the sid.
"""

from __future__ import annotations

from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from qewd_twisted import errors as E
from qewd_twisted.transports import payload as P
from qewd_twisted.transports.engineio import (
    EngineSession, EngineSessions, IEngineSocket, IPoll,
)
from qewd_twisted.transports.framing import DirectTextSend, QuietFraming, SmallFrameUnmasking
from qewd_twisted.transports.http import IRequestBodyLimit, origin_refused, read_body

log = Logger()

UNKNOWN_TRANSPORT, UNKNOWN_SID, BAD_HANDSHAKE_METHOD, BAD_REQUEST = 0, 1, 2, 3
ERROR_MESSAGES = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
}


def error_body(code: int) -> bytes:
    return b'{"code":%d,"message":"%s"}' % (code, ERROR_MESSAGES[code].encode())


def engine_error(request: Any, code: int) -> bytes:
    """engine.io 3's ``sendErrorMessage``: 400, JSON, CORS for the request's origin."""
    request.setResponseCode(400)
    request.setHeader(b"content-type", b"application/json")
    _cors(request)
    return error_body(code)


def _cors(request: Any) -> None:
    origin = request.getHeader(b"origin")
    if origin:
        request.setHeader(b"access-control-allow-credentials", b"true")
        request.setHeader(b"access-control-allow-origin", origin)
    else:
        request.setHeader(b"access-control-allow-origin", b"*")


def _io_cookie(sid: str) -> bytes:
    """engine.io's ``io`` cookie (socket.io 2's default): the sid, for sticky load balancers."""
    return b"io=" + sid.encode("ascii") + b"; Path=/; HttpOnly; SameSite=Strict"


def query_args(uri: bytes | None) -> dict[bytes, list[bytes]]:
    """The query string of ``uri`` as twisted.web's ``request.args``."""
    if not uri or b"?" not in uri:
        return {}
    return http.parse_qs(uri.split(b"?", 1)[1], 1)


def _arg(request: Any, name: bytes) -> str | None:
    values = request.args.get(name)
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


@implementer(IPoll)
class _HeldGet:
    """A GET waiting for packets; JSONP when the client asked with ``j=``."""

    def __init__(self, request: Any, sid: str, jsonp: str | None) -> None:
        self.request = request
        self.sid = sid
        self.jsonp = jsonp
        self.gone = False

    def deliver(self, packets: list[bytes]) -> None:
        if self.gone:
            return
        self.gone = True
        body = P.encode_payload(packets)
        r = self.request
        if self.jsonp is not None:
            body = P.jsonp_wrap(body, self.jsonp)
            r.setHeader(b"content-type", b"text/javascript; charset=UTF-8")
        else:
            r.setHeader(b"content-type", b"text/plain; charset=UTF-8")
            _cors(r)
        r.setHeader(b"set-cookie", _io_cookie(self.sid))
        r.setHeader(b"content-length", b"%d" % len(body))
        r.write(body)
        r.finish()

    def refuse(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.request.setResponseCode(500)
        self.request.setHeader(b"content-length", b"0")
        self.request.finish()


@implementer(IRequestBodyLimit)
class PollingResource(Resource):
    """``/socket.io/?transport=polling``: every Engine.IO 3 long-polling request.

    A POST body may be up to ``maxMessageSize`` (engine.io's maxHttpBufferSize): the HTTP
    layer (http.NodeChannel) answers a larger one 413 before reading it. A handshake from a
    browser origin not in ``allowedOrigins`` gets socket.io 2's 403 ``{"code":4,...}``."""

    isLeaf = True

    def __init__(self, sessions: EngineSessions,
                 allowed_origins: frozenset[str] | None = None) -> None:
        super().__init__()
        self.sessions = sessions
        self.allowed_origins = allowed_origins

    def maxBodyBytes(self, method: bytes) -> int:  # noqa: N802
        return self.sessions.max_http_buffer_size if method == b"POST" else 0

    def render(self, request: Any) -> Any:
        eio = _arg(request, b"EIO")
        if eio is not None and eio != "3":
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"application/json")
            _cors(request)
            return b'{"code":5,"message":"Unsupported protocol version"}'
        sid = _arg(request, b"sid")
        if not sid:
            if request.method != b"GET":
                return engine_error(request, BAD_HANDSHAKE_METHOD)
            return self._handshake(request)
        session = self.sessions.get(sid)
        if session is None:
            return engine_error(request, UNKNOWN_SID)
        if session.ws is not None:
            return engine_error(request, BAD_REQUEST)  # upgraded: polling is over
        jsonp = session.jsonp
        if request.method == b"GET":
            poll = _HeldGet(request, session.sid, jsonp)
            request.notifyFinish().addErrback(self._get_lost, session, poll)
            session.attach_poll(poll)
            return NOT_DONE_YET
        if session.state != "open":
            return engine_error(request, UNKNOWN_SID)
        if request.method == b"POST":
            return self._post(request, session, jsonp)
        if request.method == b"OPTIONS" and jsonp is None:
            request.setHeader(b"access-control-allow-headers", b"Content-Type")
            _cors(request)
            return b""
        request.setResponseCode(500)
        return b""

    def _get_lost(self, failure: Any, session: EngineSession, poll: _HeldGet) -> None:
        poll.gone = True
        session.poll_lost(poll)

    def _handshake(self, request: Any) -> Any:
        if origin_refused(request, self.allowed_origins, "a polling handshake"):
            request.setHeader(b"content-type", b"application/json")
            _cors(request)
            return b'{"code":4,"message":"Forbidden"}'
        if self.sessions.full():
            log.warn("refusing a polling handshake: {n} clients connected (maxConnections)",
                     n=len(self.sessions.node.connections))
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=UTF-8")
            return E.TOO_MANY_CONNECTIONS.encode()
        j = _arg(request, b"j")
        session, packets = self.sessions.open(_client_ip(request))
        session.jsonp = None if j is None else P.index_of(j)
        _HeldGet(request, session.sid, session.jsonp).deliver(packets)
        return NOT_DONE_YET

    def _post(self, request: Any, session: EngineSession, jsonp: str | None) -> bytes:
        body = read_body(request, self.sessions.max_http_buffer_size)
        if body is None:
            return refuse_oversize(request, session)
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype == b"application/octet-stream":
            session.receive_payload(P.iter_binary_payload(body), len(body))
        elif jsonp is not None:
            text = P.jsonp_unwrap(body)
            if text is not None:
                session.receive_payload(P.iter_payload(text), len(body))
        else:
            session.receive_payload(P.iter_payload(body.decode("utf-8", "replace")), len(body))
        request.setHeader(b"content-type", b"text/html")
        if jsonp is None:
            _cors(request)
        request.setHeader(b"set-cookie", _io_cookie(session.sid))
        return b"ok"


def refuse_oversize(request: Any, session: EngineSession | None) -> bytes:
    """A body over maxMessageSize: 413 and the session closed, as engine.io closes it."""
    if session is not None:
        log.warn("closing {conn}: a polling body over the size limit", conn=session.conn)
        session.close("transport error")
    request.setResponseCode(413)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"connection", b"close")
    _cors(request)
    return error_body(BAD_REQUEST)


def _client_ip(request: Any) -> str:
    addr = request.getClientAddress()
    return getattr(addr, "host", None) or str(addr)


@implementer(IPushProducer)
class UpgradeProtocol(DirectTextSend, SmallFrameUnmasking, QuietFraming,
                      WebSocketServerProtocol):
    """``/socket.io/?transport=websocket&sid=...``: the probe, then the session's transport.

    As the session's socket it is also the producer of its TCP transport: while Twisted has
    it paused (the client stopped reading), sent bytes are counted and past maxBufferedBytes
    the socket is dropped, as the WebSocket transport does it.
    """

    session: EngineSession | None = None
    _paused = False
    _pending = 0
    release_connection_slot: Any = None  # set by the HTTP channel that handed us the socket

    def onConnect(self, request: Any) -> None:
        sid = request.params.get("sid", [""])[0]
        session = self.factory.sessions.get(sid)
        if session is None or session.state != "open":
            raise ConnectionDeny(400, ERROR_MESSAGES[UNKNOWN_SID])
        if not session.can_upgrade():
            raise ConnectionDeny(400, ERROR_MESSAGES[BAD_REQUEST])
        self.session = session

    def onOpen(self) -> None:
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        if self.session.can_upgrade():
            self.session.start_upgrade(_SocketFace(self))
            self.face = self.session.probe
        else:
            self.sendClose()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session, face = self.session, getattr(self, "face", None)
        if session is None or face is None:
            return
        if isBinary:
            if session.ws is face and payload:
                return session.receive(P.BinaryPacket(str(payload[0]), payload[1:]))
            return face.close()
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return face.close()
        session.socket_message(face, text)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        face = getattr(self, "face", None)
        if self.session is not None and face is not None:
            self.session.socket_closed(face)

    def connectionLost(self, reason: Any) -> None:
        release, self.release_connection_slot = self.release_connection_slot, None
        if release is not None:
            release()
        super().connectionLost(reason)
        for name in ("closeHandshakeTimeoutCall", "openHandshakeTimeoutCall"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    # IPushProducer: Twisted pauses us when the socket's write buffer is full
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pending = 0

    def stopProducing(self) -> None:
        self._paused = False

    def sent(self, nbytes: int) -> None:
        if not self._paused:
            return
        self._pending += nbytes
        if self._pending > self.factory.max_buffered_bytes:
            log.warn("dropping {conn}: it stopped reading and {n} bytes are queued for it",
                     conn=self.session.conn if self.session else None, n=self._pending)
            self._pending = 0
            self.dropConnection(abort=True)


@implementer(IEngineSocket)
class _SocketFace:
    """What the session sees of its WebSocket."""

    def __init__(self, proto: UpgradeProtocol) -> None:
        self._proto = proto

    def send_text(self, data: bytes) -> None:
        self._proto.sendMessage(data, isBinary=False)
        self._proto.sent(len(data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        proto = self._proto
        if proto.state == WebSocketServerProtocol.STATE_OPEN:
            if code == 1000 or 3000 <= code <= 4999:
                proto.sendClose(code, reason or None)
            else:  # 1001 "going away" and other protocol codes: the frame-level call
                proto.sendCloseFrame(code, reason.encode("utf-8")[:120] or None)
        elif proto.transport is not None:
            proto.dropConnection(abort=True)


class Engine:
    """The polling resource and the upgrade WebSocket of one node, sharing their sessions."""

    def __init__(self, sessions: EngineSessions, polling: PollingResource,
                 upgrade: Resource) -> None:
        self.sessions = sessions
        self.polling = polling
        self.upgrade = upgrade


def build_engine(node: Any, reactor: Any, ws_endpoint: Callable[[type], Any],
                 allowed_origins: frozenset[str] | None = None, **settings: Any) -> Engine:
    """``ws_endpoint(protocol)`` makes the WebSocket endpoint resource for the upgrade (an
    http.WebSocketEndpoint around site.make_factory's factory, whose ``factory`` it keeps)."""
    sessions = EngineSessions(node, reactor, **settings)
    upgrade = ws_endpoint(UpgradeProtocol)
    upgrade.factory.sessions = sessions
    return Engine(sessions, PollingResource(sessions, allowed_origins), upgrade)
