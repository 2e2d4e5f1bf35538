"""
The node: decides, per message, what happens to it, and shapes every reply.

For each message from a client (any framing): built-in types (``ewd-register``,
``ewd-reregister``), then authentication (JWT or session token), then either a remote link (the
``(application, type)`` is routed in ``u_services``) or the local handler module. JWT work and
routing run on the reactor thread; only handler code goes to the worker pool (DESIGN.md).

Reply envelopes follow PROTOCOL.md §1.4: ``{type, finished, message, responseTime}``; JWT
rejections are ``{type, message: {error, disconnect: true}}`` with no ``finished`` (as the QEWD.js
peer sends them). A request that arrived with ``ms_requestId`` (a forward from a master) gets it
echoed on every frame, intermediate ones included, so the master can correlate each frame.

Running a request with a local handler module lives in ``_local.LocalHandlers``, a mixin of
``Node``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger

from qewd_twisted import errors as E
from qewd_twisted.apps.local import LocalHandlers
from qewd_twisted.core.requests import Connection, Request, _looks_like_jwt
from qewd_twisted.apps.modules import Applications
from qewd_twisted.ops.observe import NodeObserver, outcome_of
from qewd_twisted.auth.sessions import SessionError
from qewd_twisted.auth.tokens import NO_APPLICATION, TokenError

log = Logger()


class Node(LocalHandlers):
    """Routes messages from connections to handlers or links and sends the replies."""

    def __init__(
        self,
        reactor: Any,
        apps: Applications,
        pool: Any,
        *,
        tokens: Any = None,
        sessions: Any = None,
        micro_services: Any = None,
        initial_session_timeout: int = 300,
        handler_timeout: float | None = 60,
        micro_service_timeout: float | None = 30,
        max_in_flight: int = 64,
        max_in_flight_link: int = 1024,
    ) -> None:
        self.reactor = reactor
        self.apps = apps
        self.pool = pool
        self.tokens = tokens
        self.sessions = sessions
        self.micro_services = micro_services
        self.initial_session_timeout = initial_session_timeout
        self.handler_timeout = handler_timeout
        self.micro_service_timeout = micro_service_timeout
        self.max_in_flight = max_in_flight
        self.max_in_flight_link = max_in_flight_link
        self.connections: dict[str, Connection] = {}
        self.accepting = True
        self._in_flight: set[Request] = set()
        self._drained: list[defer.Deferred[None]] = []
        self._all_closed: list[defer.Deferred[None]] = []
        self._arity: dict[Any, int] = {}
        self._on_reactor: dict[Any, bool] = {}  # handler -> runs_on_reactor(handler)
        # How pool threads hand a call to the reactor: the pool's post() shares reactor
        # wake-ups between finished() and the thread's return; a pool without it (a user's
        # own) gets callFromThread.
        self._to_reactor: Callable[..., None] = (
            getattr(pool, "post", None) or getattr(reactor, "callFromThread", None))
        # metrics, status page, request log (observe.py, ops.py); the default does nothing
        self.observer: NodeObserver = NodeObserver()
        # what handles restRequest messages (rest/dispatch.py RestDispatcher); None: refused
        self.rest: Any = None

    # -- connections ---------------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self.observer.connection_opened(conn)

    def connection_lost(self, conn: Connection) -> None:
        conn.open = False
        if self.connections.pop(conn.id, None) is not None:
            self.observer.connection_closed(conn)
        if not self.connections and self._all_closed:
            waiting, self._all_closed = self._all_closed, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    def to_all(self, obj: Any) -> None:
        """Send ``obj`` as is to every connected client (QEWD's ``q.io.toAll``)."""
        self._broadcast(obj, list(self.connections.values()))

    def to_application(self, obj: Any, application: str) -> None:
        """Send ``obj`` to every client registered for ``application`` (``toApplication``)."""
        self._broadcast(obj, [c for c in self.connections.values()
                              if c.application == application])

    def _broadcast(self, obj: Any, conns: list[Connection]) -> None:
        # one encoding per framing, not per recipient
        encoded: dict[str, bytes] = {}
        for conn in conns:
            if not conn.open:
                continue
            data = encoded.get(conn.framing)
            if data is None:
                try:
                    data = encoded[conn.framing] = conn.encode(obj)
                except (TypeError, ValueError) as e:
                    log.warn("broadcast is not JSON-serialisable: {error}", error=e)
                    return
            conn.send_encoded(data)

    def send_to_socket(self, socket_id: str, obj: Any) -> bool:
        """Send ``obj`` to one socket by id; False when it is not connected here."""
        conn = self.connections.get(socket_id)
        if conn is None:
            return False
        self._send(conn, obj)
        return True

    # -- sending -------------------------------------------------------------------------

    def _send(self, conn: Connection, frame: Any) -> None:
        if not conn.open:
            return
        try:
            conn.send(frame)
        except (TypeError, ValueError) as e:
            log.warn("reply to {conn} is not JSON-serialisable: {error}", conn=conn, error=e)
            ftype = frame.get("type", "error") if isinstance(frame, dict) else "error"
            finished = frame.get("finished", True) if isinstance(frame, dict) else True
            fallback = {"type": ftype, "finished": finished,
                        "message": {"error": E.NOT_JSON_REPLY.format(type=ftype)}}
            if isinstance(frame, dict):
                for key in ("responseTime", "ms_requestId"):
                    if key in frame:
                        fallback[key] = frame[key]
            conn.send(fallback)

    def _elapsed(self, started: float) -> str:
        return f"{max(0, int((self.reactor.seconds() - started) * 1000))}ms"

    def _reply(self, conn: Connection, type: str, message: Any, started: float,
               rid: Any = None, finished: bool = True) -> None:
        frame: dict[str, Any] = {"type": type, "finished": finished, "message": message,
                                 "responseTime": self._elapsed(started)}
        if rid is not None:
            frame["ms_requestId"] = rid
            if isinstance(message, dict):
                message["ms_requestId"] = rid
        self._send(conn, frame)

    def _error(self, conn: Connection, type: str, text: str, started: float, rid: Any = None,
               disconnect: bool = False, status: int | None = None, **extra: Any) -> None:
        message: dict[str, Any] = {"error": text, **extra}
        if status is not None:
            message["status"] = {"code": status}
        if disconnect and rid is None:  # §2.4: with ms_requestId, disconnect is omitted
            message["disconnect"] = True
        self._reply(conn, type, message, started, rid)

    def _jwt_rejected(self, conn: Connection, type: str, text: str, rid: Any) -> None:
        # The QEWD.js master's pre-check shape: no finished, no responseTime (§1.4, peer README).
        frame: dict[str, Any] = {"type": type, "message": {"error": text}}
        if rid is None:
            frame["message"]["disconnect"] = True
        else:
            frame["ms_requestId"] = rid
        self._send(conn, frame)

    # -- receiving -----------------------------------------------------------------------

    def message_received(self, conn: Connection, obj: Any) -> None:
        """Handle one decoded message from ``conn``. Never raises: every failure is answered."""
        started = self.reactor.seconds()
        try:
            self._receive(conn, obj, started)
        except Exception:
            log.failure("unexpected error handling a message from {conn}", conn=conn)
            mtype = obj.get("type") if isinstance(obj, dict) else None
            self._send(conn, {"type": mtype if isinstance(mtype, str) else "error",
                              "finished": True, "message": {"error": E.INTERNAL_ERROR}})

    def _receive(self, conn: Connection, obj: Any, started: float) -> None:
        if not isinstance(obj, dict):
            return self._error(conn, "error", E.NOT_AN_OBJECT, started)
        mtype = obj.get("type")
        if not isinstance(mtype, str) or not mtype:
            return self._error(conn, "error", E.BAD_TYPE, started)
        rid = obj.get("ms_requestId")
        if not isinstance(rid, (int, str)) or isinstance(rid, bool):
            rid = None
        if mtype in E.INTERNAL_TYPES:
            return self._error(conn, mtype, E.RESERVED_TYPE.format(type=mtype), started, rid)
        if mtype in E.UNSUPPORTED_TYPES:
            return self._error(conn, mtype, E.NOT_SUPPORTED.format(type=mtype), started, rid)
        if not self.accepting:
            return self._error(conn, mtype, E.SHUTTING_DOWN, started, rid, status=503)
        limit = self.max_in_flight_link if conn.is_link else self.max_in_flight
        if conn.in_flight >= limit:
            return self._error(conn, mtype, E.TOO_MANY_IN_FLIGHT, started, rid,
                               status=E.STATUS_TOO_MANY)
        if mtype == "restRequest":
            if self.rest is None:
                return self._error(conn, mtype, E.NOT_SUPPORTED.format(type=mtype), started, rid)
            return self.rest.receive(conn, obj, started, rid)
        if mtype == "ewd-register":
            return self._register(conn, obj, started, rid)
        if mtype == "ewd-reregister":
            return self._reregister(conn, obj, started, rid)

        token = obj.get("token")
        use_jwt = conn.jwt or bool(obj.get("jwt")) or _looks_like_jwt(token)
        if use_jwt and self.tokens is None:
            if obj.get("jwt") or conn.jwt:
                return self._jwt_rejected(conn, mtype, E.JWT_NOT_CONFIGURED, rid)
            use_jwt = False
        if not token:
            return self._error(conn, mtype, E.MISSING_AUTH, started, rid, disconnect=True)
        if use_jwt:
            self._jwt_message(conn, obj, mtype, token, started, rid)
        else:
            self._session_message(conn, obj, mtype, token, started, rid)

    def _jwt_message(self, conn: Connection, obj: dict, mtype: str, token: Any,
                     started: float, rid: Any) -> None:
        try:
            payload = self.tokens.decode(token)
            application = payload.get("application")
            if not isinstance(application, str) or not application:
                raise TokenError(NO_APPLICATION)
            route = (self.micro_services.route(application, mtype)
                     if self.micro_services is not None else None)
            if route is not None:
                req = Request(conn, obj, mtype, started, rid, True, payload, application)
                return self._forward(req, *route)
            session = self.tokens.session_from_payload(payload, token)
        except TokenError as e:
            return self._jwt_rejected(conn, mtype, str(e), rid)
        req = Request(conn, obj, mtype, started, rid, True, session, application)
        self._run_local(req)

    def _session_message(self, conn: Connection, obj: dict, mtype: str, token: Any,
                         started: float, rid: Any) -> None:
        try:
            session = self.sessions.authenticate(token if isinstance(token, str) else "")
        except SessionError as e:
            return self._error(conn, mtype, str(e), started, rid, disconnect=True)
        req = Request(conn, obj, mtype, started, rid, False, session, session.application)
        self._run_local(req)

    # -- built-ins (PROTOCOL.md §2) -----------------------------------------------------

    def _register(self, conn: Connection, obj: dict, started: float, rid: Any) -> None:
        mtype = "ewd-register"
        application = obj.get("application")
        if (not isinstance(application, str) or not application
                or len(application) > E.MAX_APPLICATION_LENGTH):
            return self._error(conn, mtype, E.BAD_APPLICATION, started, rid)
        if obj.get("jwt"):
            if self.tokens is None:
                return self._error(conn, mtype, E.NO_JWT_SUPPORT, started, rid, disconnect=True)
            token = self.tokens.register_token(
                application,
                {"socketId": conn.id, "ipAddress": conn.ip, "authenticated": False},
                timeout=self.initial_session_timeout,
            )
            conn.jwt = True
        else:
            try:
                session = self.sessions.create(
                    application, self.initial_session_timeout, conn.id, conn.ip)
            except SessionError as e:
                return self._error(conn, mtype, str(e), started, rid, status=503)
            token = session.token
            conn.jwt = False
        conn.application = application
        message: dict[str, Any] = {"token": token}
        if obj.get("qewd_twisted"):
            message["qewd_twisted"] = 1  # tells our links: every frame echoes ms_requestId
            conn.is_link = True
        self.observer.registered(conn, application, conn.jwt, False)
        self._reply(conn, mtype, message, started, rid)

    def _reregister(self, conn: Connection, obj: dict, started: float, rid: Any) -> None:
        mtype = "ewd-reregister"
        token = obj.get("token")
        if not token or not isinstance(token, str):
            return self._error(conn, mtype, E.MISSING_AUTH, started, rid, disconnect=True)
        message: dict[str, Any] = {"ok": True}
        # A JWT is treated as one even without jwt:true, so QEWD's own browser clients (which
        # omit it, §2.3) survive a reconnect; the token is fully verified either way.
        if self.tokens is not None and (obj.get("jwt") or _looks_like_jwt(token)):
            try:
                session = self.tokens.session(token)
            except TokenError as e:
                return self._error(conn, mtype, str(e), started, rid, disconnect=True)
            # QEWD means to record the new socket here but assigns a misspelt global (§2.3).
            session["socketId"] = conn.id
            session["ipAddress"] = conn.ip
            message["token"] = self.tokens.issue(session)
            conn.jwt = True
            conn.application = session.get("application")
        else:
            try:
                server_session = self.sessions.authenticate(token)
            except SessionError as e:
                return self._error(conn, mtype, str(e), started, rid, disconnect=True)
            server_session["socketId"] = conn.id
            conn.jwt = False
            conn.application = server_session.application
        if obj.get("qewd_twisted"):
            message["qewd_twisted"] = 1
            conn.is_link = True
        self.observer.registered(conn, conn.application, conn.jwt, True)
        self._reply(conn, mtype, message, started, rid)

    # -- local handlers (PROTOCOL.md §5; running them: _local.LocalHandlers) ------------

    def _begin(self, req: Request) -> None:
        self._in_flight.add(req)
        req.conn.in_flight += 1

    def _end(self, req: Request, outcome: str = "ok") -> None:
        req.done = True
        if req.timer is not None and req.timer.active():
            req.timer.cancel()
        req.timer = None
        if req in self._in_flight:
            self._in_flight.discard(req)
            req.conn.in_flight -= 1
            self.observer.request_finished(req, outcome)
        if not self._in_flight and self._drained:
            # Next reactor turn: the caller is about to send this request's final frame, and a
            # waiter (a stopping service) would otherwise close the socket before it goes out.
            self.reactor.callLater(0, self._fire_drained)

    def _fire_drained(self) -> None:
        if self._in_flight:
            return
        waiting, self._drained = self._drained, []
        for d in waiting:
            if not d.called:
                d.callback(None)

    # -- forwarding (PROTOCOL.md §4.4) ---------------------------------------------------

    def _forward(self, req: Request, link: Any, remote_application: str) -> None:
        out = {k: v for k, v in req.message.items() if k not in ("ms_requestId", "qewd_twisted")}
        out["token"] = self.tokens.rewrite(req.message["token"], remote_application)
        out["jwt"] = True
        req.link = link
        self._begin(req)
        link.send_request(out, lambda frame: self._relay(req, frame), self.micro_service_timeout)

    def _relay(self, req: Request, frame: dict) -> None:
        if req.done:
            log.debug("late frame for {type} dropped", type=req.type)
            return
        frame = dict(frame)
        final = bool(frame.get("finished", True))
        message = frame.get("message")
        if isinstance(message, dict) and isinstance(message.get("token"), str):
            message = dict(message)
            try:
                message["token"] = self.tokens.rewrite(message["token"], req.application)
            except TokenError as e:
                # Never re-sign what we could not verify; and don't report success while the
                # session update that came with it is lost.
                log.warn("micro-service reply to {type} carries a token that does not verify "
                         "here: {error}", type=req.type, error=e.reason)
                del message["token"]
                if final:
                    message = {"error": E.BAD_MS_TOKEN, "status": {"code": E.STATUS_BAD_GATEWAY}}
            frame["message"] = message
        frame.setdefault("type", req.type)
        if final and isinstance(frame.get("message"), dict) and "disconnect" in frame["message"]:
            # A remote's JWT rejection says "disconnect": the client's own socket and token
            # are fine (the fault is in the mesh), so it gets a plain final error instead.
            frame["message"] = {k: v for k, v in frame["message"].items() if k != "disconnect"}
            frame["finished"] = True
        frame["responseTime"] = self._elapsed(req.started)
        if req.ms_request_id is not None:
            frame["ms_requestId"] = req.ms_request_id
        if final:
            self._end(req, outcome_of(frame))
        self._send(req.conn, frame)

    # -- shutdown ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def drain(self, grace: float) -> defer.Deferred[None]:
        """Stop accepting new requests; fire when in-flight ones end or after ``grace`` s."""
        self.accepting = False
        if not self._in_flight:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)

        def give_up() -> None:
            if not d.called:
                log.warn("{n} request(s) still in flight after the grace period: ending them",
                         n=len(self._in_flight))
                self._abort_in_flight()
                d.callback(None)

        timer = self.reactor.callLater(grace, give_up)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return d

    def _abort_in_flight(self) -> None:
        """End every request still running: its client gets a 503 instead of silence."""
        for req in list(self._in_flight):
            self._end(req, "503")
            self._error(req.conn, req.type, E.SHUTTING_DOWN, req.started, req.ms_request_id,
                        status=503)

    def close_all(self, code: int = 1001, reason: str = "server shutting down",
                  timeout: float = 5.0) -> defer.Deferred[None]:
        """Close every client socket; fire when all have closed or after ``timeout`` s.

        Waiting matters under twistd: once stopService returns, the reactor drops sockets
        without flushing, and the clients would never see the close frame.
        """
        for conn in list(self.connections.values()):
            try:
                conn.close(code, reason)
            except Exception:
                log.failure("closing {conn}", conn=conn)
        if not self.connections:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._all_closed.append(d)
        timer = self.reactor.callLater(timeout, lambda: d.called or d.callback(None))
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return d

    def iter_connections(self) -> Iterable[Connection]:
        return list(self.connections.values())
