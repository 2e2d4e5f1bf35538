# -*- test-case-name: tests.test_node -*-
"""
The node: admission, authentication and dispatch for every message, whatever its transport.

``Node.receive(conn, message)`` is the one door. A transport (the WebSocket protocols in
``transports.site``, an HTTP long-poll or ``POST /ajax`` resource, a REST resource, a test's
``MemoryConnection``) decodes a message into a JSON value and calls it with the connection
(an ``IConnection``) the replies must go back through. The node never knows the transport:
it answers only with ``conn.send(frame)`` (or ``encode`` / ``send_encoded`` for broadcasts).
An HTTP transport gives each client (an Engine.IO polling session, or one REST request) its own
``IConnection`` whose ``send`` queues or writes the frame to the pending HTTP response, calls
``connection_opened(conn)`` when the client appears, ``receive(conn, message)`` for each
message in the request body, and ``connection_lost(conn)`` when the session ends (a REST
request: when its final frame has been written, ``envelope.is_final``).

Per message (``receive``): shape checks, reserved and unsupported types, admission (shutting
down, ``maxInFlight``), then the built-in types (`Node.builtins`: ``ewd-register``,
``ewd-reregister``), then authentication (a JWT, or a session token), then either forwarding
(the ``(application, type)`` is routed to a link: ``core.forwarding.Forwarder``) or the local
handler (``apps.local.LocalRunner``). Requests in flight are counted in ``core.inflight``;
every frame is built by ``core.envelope``. JWT work and routing run on the reactor thread; only
handler code goes to the worker pool.

Adding a built-in type: one that needs no session goes in ``self.builtins`` (``type ->
fn(conn, message, started, rid)``), checked after admission and before authentication; one
that needs an authenticated session (``ewd-fragment``) goes in ``self.session_builtins``
(``type -> fn(req)``, ``req.session`` set), checked after authentication, before routing. Take
the type out of ``errors.UNSUPPORTED_TYPES`` and list it in docs/errors.md if it has errors.

May import: ``qewd_twisted.errors``, ``qewd_twisted.core``, ``qewd_twisted.auth``,
``qewd_twisted.apps``, ``qewd_twisted.config.limits`` and ``qewd_twisted.ops.observe`` (the
do-nothing observer). Never a transport, never the mesh (links and routes are ``ILink`` /
``IRoutes``).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qewd_twisted import errors as E
from qewd_twisted.apps.custom_errors import CustomErrors
from qewd_twisted.apps.fragments import FragmentBuiltin
from qewd_twisted.apps.local import LocalRunner
from qewd_twisted.apps.modules import Applications
from qewd_twisted.auth.sessions import ISessionStore, SessionError
from qewd_twisted.auth.tokens import NO_APPLICATION, TokenCodec, TokenError
from qewd_twisted.config.limits import Limits
from qewd_twisted.core import envelope
from qewd_twisted.core.forwarding import Forwarder
from qewd_twisted.core.inflight import InFlight
from qewd_twisted.core.interfaces import IConnection, INodeObserver, IRoutes, IWorkerPool
from qewd_twisted.core.push import IPushBus, make_push
from qewd_twisted.core.q import Q
from qewd_twisted.core.requests import Connection, Request, looks_like_jwt
from qewd_twisted.core.session_locks import ISessionLocks, LockTimedOut, MemorySessionLocks
from qewd_twisted.core.switch import ApplicationSwitch, SwitchRefused
from qewd_twisted.ops.observe import NodeObserver

__all__ = ["Connection", "Node", "Request"]

log = Logger()

#: Types ``_express`` leaves to ``_receive``: reserved, not supported, or empty.
_NOT_EXPRESS = E.INTERNAL_TYPES | E.UNSUPPORTED_TYPES | {""}

#: A built-in type that needs no session: ``fn(conn, message, started, rid)``.
Builtin = Callable[[IConnection, dict, float, Any], None]
#: A built-in type that needs an authenticated session: ``fn(req)``.
SessionBuiltin = Callable[[Request], None]


class Node:
    """Routes messages from connections to handlers or links and sends the replies.

    Composed of: an `InFlight` set, a `LocalRunner` (local handlers) and a `Forwarder`
    (links; only with ``micro_services`` and ``tokens``). ``q`` is what application code gets.
    QEWD's message features (docs/handlers.md): ``ewd-fragment`` (a session built-in, read
    from ``web_root``), custom errors (``custom_errors``, filled through ``q``), ``lockSession``
    (``session_locks``, or in-process locks when only ``lock_timeout`` is given) and the
    application ``switch`` (``core.switch.ApplicationSwitch``).
    ``limits``: ``maxInFlight``, ``maxInFlightPerLink``, the handler and micro-service
    deadlines and the initial session timeout are read from it. ``node_id``: this node's id
    on the push buses (``origin`` is ``"<node id>/<process id>"``); the processes of one node
    share it, so a bus between nodes can skip what its own node sent; default: a random one.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        apps: Applications,
        pool: IWorkerPool,
        *,
        tokens: TokenCodec | None = None,
        sessions: ISessionStore | None = None,
        micro_services: IRoutes | None = None,
        limits: Limits = Limits(),
        web_root: str | None = None,
        session_locks: ISessionLocks | None = None,
        lock_timeout: float | None = None,
        switch: ApplicationSwitch | None = None,
        db: Any = None,
        node_id: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.apps = apps
        self.tokens = tokens
        self.sessions = sessions
        self.micro_services = micro_services
        self.limits = limits
        # read per message: kept as plain attributes
        self.initial_session_timeout = limits.initial_session_timeout
        self.max_in_flight = limits.max_in_flight
        self.max_in_flight_link = limits.max_in_flight_link
        self.connections: dict[str, IConnection] = {}
        # server push beyond this process (core.push): the buses, and this process's name on
        # them, "<node id>/<process id>" (the processes of one node share ``node_id``)
        self.push_buses: list[IPushBus] = []
        self.node_id = node_id or uuid.uuid4().hex
        self.origin = f"{self.node_id}/{uuid.uuid4().hex}"
        self.accepting = True
        self._all_closed: list[defer.Deferred[None]] = []
        # metrics, status page, request log (ops); the default does nothing
        self._observer: INodeObserver = NodeObserver()
        self.requests = InFlight(reactor, self._observer)
        self.custom_errors = CustomErrors()  # q.set_custom_error_response fills it
        # q.db: the document store (documents.DocumentStore), or None
        self.q = Q(self, db)
        self.local = LocalRunner(reactor, apps, pool, self.requests, self._send, self.q,
                                 tokens=tokens, handler_timeout=limits.handler_timeout,
                                 custom_errors=self.custom_errors)
        # lockSession (session-token mode): one request at a time per session
        self.session_locks = session_locks
        self.lock_timeout = lock_timeout
        if session_locks is None and lock_timeout:
            self.session_locks = MemorySessionLocks(reactor)
        self.forwarder: Forwarder | None = None
        if micro_services is not None and tokens is not None:
            self.forwarder = Forwarder(reactor, tokens, self.requests, self._send,
                                       limits.micro_service_timeout)
        self.builtins: dict[str, Builtin] = {
            "ewd-register": self._register,
            "ewd-reregister": self._reregister,
        }
        self.session_builtins: dict[str, SessionBuiltin] = {
            "ewd-fragment": FragmentBuiltin(reactor, web_root, apps, pool, self.requests,
                                            self._send, self.custom_errors),
        }
        self.switch = switch
        if switch is not None:
            self.local.switch = self._switch
        self._run_local = self.local.run  # per request: one bound method, looked up once
        self._express_local = self.local.express
        #: Take the common case in one pass (``_express``); False: every message through
        #: ``_receive`` (the tests compare the two).
        self.express = True

    @property
    def observer(self) -> INodeObserver:
        """What the node reports to (``INodeObserver``); ops replaces it."""
        return self._observer

    @observer.setter
    def observer(self, observer: INodeObserver) -> None:
        self._observer = observer
        self.requests.observer = observer

    # -- connections ---------------------------------------------------------------------

    def connection_opened(self, conn: IConnection) -> None:
        """A transport has a new client: it can be sent to (broadcasts, ``send_to_socket``)."""
        self.connections[conn.id] = conn
        self._observer.connection_opened(conn)

    def connection_lost(self, conn: IConnection) -> None:
        """The client has gone: nothing more is sent to it."""
        conn.open = False
        if self.connections.pop(conn.id, None) is not None:
            self._observer.connection_closed(conn)
        if not self.connections and self._all_closed:
            waiting, self._all_closed = self._all_closed, []
            for d in waiting:
                if not d.called:
                    d.callback(None)

    def to_all(self, obj: Any) -> None:
        """Send ``obj`` as is to every connected client (QEWD's ``q.io.toAll``), of every
        process and node the push buses reach."""
        self._broadcast(obj, list(self.connections.values()))
        self._publish("all", obj)

    def to_application(self, obj: Any, application: str) -> None:
        """Send ``obj`` to every client registered for ``application`` (``toApplication``),
        here and wherever the push buses reach."""
        self._broadcast(obj, [c for c in self.connections.values()
                              if c.application == application])
        self._publish("application", obj, application=application)

    def _publish(self, scope: str, obj: Any, **where: Any) -> None:
        if self.push_buses:
            push = make_push(scope, obj, self.origin, **where)
            for bus in self.push_buses:
                bus.publish(push)

    def deliver_push(self, push: dict[str, Any]) -> None:
        """A push from another process or node (``core.push``): this process's sockets only."""
        scope, obj = push["scope"], push["message"]
        if scope == "all":
            self._broadcast(obj, list(self.connections.values()))
        elif scope == "application":
            app = push["application"]
            self._broadcast(obj, [c for c in self.connections.values() if c.application == app])
        elif scope == "socket":
            conn = self.connections.get(push["socket_id"])
            if conn is not None:
                self._send(conn, obj)

    def _broadcast(self, obj: Any, conns: list[IConnection]) -> None:
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
        """Send ``obj`` to one socket by id. True when it was connected here, or when the push
        buses took it to the other processes and nodes (one of them may have it); False when it
        is not connected here and there is no bus."""
        conn = self.connections.get(socket_id)
        if conn is not None:
            self._send(conn, obj)
            return True
        if not self.push_buses:
            return False
        self._publish("socket", obj, socket_id=socket_id)
        return True

    # -- sending -------------------------------------------------------------------------

    def _send(self, conn: IConnection, frame: Any) -> None:
        if not conn.open:
            return
        try:
            conn.send(frame)
        except (TypeError, ValueError) as e:
            log.warn("reply to {conn} is not JSON-serialisable: {error}", conn=conn, error=e)
            conn.send(envelope.not_json(frame))

    def _elapsed(self, started: float) -> str:
        return envelope.response_time(started, self.reactor.seconds())

    def _reply(self, conn: IConnection, type: str, message: Any, started: float,
               rid: Any = None) -> None:
        self._send(conn, envelope.reply(type, message, self._elapsed(started), rid))

    def _error(self, conn: IConnection, type: str, text: str, started: float, rid: Any = None,
               disconnect: bool = False, status: int | None = None) -> None:
        self._send(conn, envelope.error(type, text, self._elapsed(started), rid,
                                        disconnect=disconnect, status=status))

    # -- the door ------------------------------------------------------------------------

    def receive(self, conn: IConnection, message: Any) -> None:
        """Handle one decoded ``message`` (any JSON value) from ``conn``, whatever carried
        it. Never raises: every failure is answered through ``conn``.

        The one entry for every transport: a WebSocket frame, an Engine.IO long-poll packet,
        a ``POST /ajax`` body or a REST request. An HTTP transport keeps one ``IConnection``
        per client (a polling session) or per request (``/ajax``, REST), opened with
        ``connection_opened``; its ``send(frame)`` queues the frame for, or writes it to, the
        pending HTTP response, and a one-shot request is answered once a final frame
        (``envelope.is_final``) has been sent, then ``connection_lost``. See the module
        docstring."""
        started = self.reactor.seconds()
        try:
            if not (self.express and self._express(conn, message, started)):
                self._receive(conn, message, started)
        except Exception:
            log.failure("unexpected error handling a message from {conn}", conn=conn)
            self._send(conn, envelope.internal_error(message))

    #: Deprecated name of `receive`, kept while callers move over.
    message_received = receive

    def _express(self, conn: IConnection, obj: Any, started: float) -> bool:
        """The common case in one pass: a JWT client's request with a token this node issued
        or verified before (``TokenCodec.known``), for a type that is neither built in nor
        reserved, under the in-flight limit, run by a local handler (``LocalRunner.express``)
        or forwarded (§4). What ``_receive`` would do for it, with the same frames, counts and
        deadlines (tests/test_express.py runs every case both ways); anything else returns
        False having done nothing, and ``_receive`` takes it."""
        if not conn.jwt or type(obj) is not dict:
            return False
        mtype = obj.get("type")
        token = obj.get("token")
        if (type(mtype) is not str or type(token) is not str or mtype in _NOT_EXPRESS
                or mtype in self.builtins or mtype in self.session_builtins
                or not self.accepting
                or conn.in_flight >= (self.max_in_flight_link if conn.is_link
                                      else self.max_in_flight)):
            return False
        rid = obj.get("ms_requestId")
        if rid is not None and type(rid) is not str and type(rid) is not int:
            return False
        tokens = self.tokens
        seen = tokens.known(token) if tokens is not None else None
        if seen is None:
            return False
        application = seen.flat.get("application")  # type: ignore[union-attr]
        if type(application) is not str or not application:
            return False
        if self.forwarder is not None:
            route = self.micro_services.route(application, mtype)  # type: ignore[union-attr]
            if route is not None:
                req = Request(conn, obj, mtype, started, rid, True,
                              dict(seen.flat), application)  # type: ignore[arg-type]
                self.forwarder.forward(req, *route)
                return True
        if self.switch is not None and "qewd_application" in obj:
            return False
        return self._express_local(conn, obj, mtype, started, rid, token, seen, application)

    def _receive(self, conn: IConnection, obj: Any, started: float) -> None:
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
            return self._error(conn, mtype, E.SHUTTING_DOWN, started, rid, status=E.STATUS_BUSY)
        limit = self.max_in_flight_link if conn.is_link else self.max_in_flight
        if conn.in_flight >= limit:
            return self._error(conn, mtype, E.TOO_MANY_IN_FLIGHT, started, rid,
                               status=E.STATUS_TOO_MANY)
        if mtype in self.builtins:
            return self.builtins[mtype](conn, obj, started, rid)

        token = obj.get("token")
        use_jwt = conn.jwt or bool(obj.get("jwt")) or looks_like_jwt(token)
        if use_jwt and self.tokens is None:
            if obj.get("jwt") or conn.jwt:
                return self._send(conn, envelope.jwt_rejection(mtype, E.JWT_NOT_CONFIGURED, rid))
            use_jwt = False
        if not token:
            return self._error(conn, mtype, E.MISSING_AUTH, started, rid, disconnect=True)
        if use_jwt:
            self._jwt_message(conn, obj, mtype, token, started, rid)
        else:
            self._session_message(conn, obj, mtype, token, started, rid)

    # -- authentication ------------------------------------------------------------------

    def _jwt_message(self, conn: IConnection, obj: dict, mtype: str, token: Any,
                     started: float, rid: Any) -> None:
        tokens: TokenCodec = self.tokens  # type: ignore[assignment]
        try:
            payload = tokens.decode(token)
            application = payload.get("application")
            if not isinstance(application, str) or not application:
                raise TokenError(NO_APPLICATION)
            if self.forwarder is not None and mtype not in self.session_builtins:
                route = self.micro_services.route(application, mtype)  # type: ignore[union-attr]
                if route is not None:
                    req = Request(conn, obj, mtype, started, rid, True, payload, application)
                    return self.forwarder.forward(req, *route)
            session = tokens.session_from_payload(payload, token)
        except TokenError as e:
            return self._not_authenticated(conn, envelope.jwt_rejection(mtype, str(e), rid))
        req = Request(conn, obj, mtype, started, rid, True, session, application)
        if self.session_builtins and mtype in self.session_builtins:
            return self.session_builtins[mtype](req)
        if self.switch is not None and "qewd_application" in obj:
            # the destination side of an application switch from a QEWD.js master (§2.5)
            req.application = self.switch.accepts(application, obj)
        self._run_local(req)

    def _session_message(self, conn: IConnection, obj: dict, mtype: str, token: Any,
                         started: float, rid: Any) -> None:
        try:
            session = self.sessions.authenticate(  # type: ignore[union-attr]
                token if isinstance(token, str) else "")
        except SessionError as e:
            return self._not_authenticated(conn, envelope.error(
                mtype, str(e), self._elapsed(started), rid, disconnect=True))
        if isinstance(session, defer.Deferred):  # a store in a database (documents/sessions.py)
            return self._when_session(
                session, conn, mtype, started, rid,
                lambda s: self._session_ready(conn, obj, mtype, s, started, rid))
        self._session_ready(conn, obj, mtype, session, started, rid)

    def _session_ready(self, conn: IConnection, obj: dict, mtype: str, session: Any,
                       started: float, rid: Any) -> None:
        req = Request(conn, obj, mtype, started, rid, False, session, session.application)
        if self.session_builtins and mtype in self.session_builtins:
            return self.session_builtins[mtype](req)
        if self.session_locks is not None:
            return self._locked(req)
        self._run_local(req)

    def _not_authenticated(self, conn: IConnection, frame: dict) -> None:
        """An authentication failure, with the custom ``sessionNotAuthenticated`` text and
        status of the application the connection registered for, if it set one."""
        if self.custom_errors:
            frame["message"] = self.custom_errors.apply(conn.application,
                                                        "sessionNotAuthenticated",
                                                        frame["message"])
        self._send(conn, frame)

    # -- lockSession (docs/protocol.md §5.5) --------------------------------------------

    def _locked(self, req: Request) -> None:
        """Run ``req`` once it holds its session's lock; the lock goes when it ends."""
        d = self.session_locks.acquire(req.session.id, self.lock_timeout)  # type: ignore

        def locked(release: Callable[[], None]) -> None:
            if not req.conn.open:
                return release()
            if not self.accepting:  # the node began to stop while this one waited
                release()
                self.requests.ended_early(req, "503")
                return self._error(req.conn, req.type, E.SHUTTING_DOWN, req.started,
                                   req.ms_request_id, status=E.STATUS_BUSY)
            self.requests.on_end(req, release)
            self._run_local(req)

        def failed(failure: Failure) -> None:
            if failure.check(LockTimedOut):
                log.warn("session {id} still locked after {s}s: refusing {type}",
                         id=req.session.id, s=self.lock_timeout, type=req.type)
                text = E.SESSION_LOCK_TIMEOUT
            else:
                log.failure("locking session {id}", failure, id=req.session.id)
                text = E.INTERNAL_ERROR
            self.requests.ended_early(req, "error")
            self._error(req.conn, req.type, text, req.started, req.ms_request_id)

        d.addCallbacks(locked, failed)
        d.addErrback(lambda f: log.failure("running {type} under its session lock", f,
                                           type=req.type))

    # -- application switch (docs/protocol.md §4.7) --------------------------------------

    def _switch(self, req: Request, result: dict) -> None:
        """A local handler's final reply asks to go on at another application: check it,
        forward it there, relay the answers (``core.switch``)."""
        switch: ApplicationSwitch = self.switch  # type: ignore[assignment]
        self.requests.end(req, "ok")
        try:
            if not req.jwt:
                raise SwitchRefused(E.SWITCH_NEEDS_JWT)
            link, target = switch.route(req.application, result)
            if self.forwarder is None:
                raise SwitchRefused(E.SWITCH_BAD_DESTINATION.format(
                    destination=result.get("qewd_destination")))
            token = self.tokens.issue(req.session)  # type: ignore[union-attr]
        except SwitchRefused as e:
            return self._error(req.conn, req.type, str(e), req.started, req.ms_request_id)
        except (TypeError, ValueError) as e:
            return self._error(req.conn, req.type, E.BAD_SESSION.format(type=req.type, reason=e),
                               req.started, req.ms_request_id)
        log.info("application switch: {source}/{type} to {target} at {link}",
                 source=req.application, type=req.type, target=target, link=link)
        out = Request(req.conn, switch.message(result, req.type, token), req.type, req.started,
                      req.ms_request_id, True, None, req.application)
        try:
            self.forwarder.forward(out, link, target)
        except Exception:
            log.failure("application switch of {type} to {target}", type=req.type,
                        target=target)
            if not out.done:
                self.requests.end(out, "error")
                self._error(req.conn, req.type, E.INTERNAL_ERROR, req.started,
                            req.ms_request_id)

    def _when_session(self, d: defer.Deferred, conn: IConnection, mtype: str, started: float,
                      rid: Any, then: Callable[[Any], None], disconnect: bool = True,
                      status: int | None = None) -> None:
        """Go on with ``then(session)`` once a session store that waits on a database answers
        (its methods return Deferreds); its SessionError is answered as a synchronous one
        would be, and a database that can't be reached with ``Session store unavailable``."""

        def failed(f: Any) -> None:
            if f.check(SessionError):
                frame = envelope.error(mtype, f.getErrorMessage(), self._elapsed(started), rid,
                                       disconnect=disconnect, status=status)
                if disconnect:  # an authentication failure
                    return self._not_authenticated(conn, frame)
                return self._send(conn, frame)
            log.warn("session store failed for {type}: {error}", type=mtype,
                     error=f.getErrorMessage())
            self._error(conn, mtype, E.SESSION_STORE_DOWN, started, rid,
                        status=E.STATUS_DATABASE_DOWN)

        def ready(session: Any) -> None:
            if conn.open:
                then(session)

        d.addCallbacks(ready, failed)
        d.addErrback(lambda f: log.failure("handling {type}", f, type=mtype))

    # -- built-ins (docs/protocol.md §2) -----------------------------------------------------

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
        else:
            try:
                session = self.sessions.create(
                    application, self.initial_session_timeout, conn.id, conn.ip)
            except SessionError as e:
                return self._error(conn, mtype, str(e), started, rid, status=E.STATUS_BUSY)
            if isinstance(session, defer.Deferred):
                return self._when_session(
                    session, conn, mtype, started, rid,
                    lambda s: self._registered(conn, obj, application, s.token, False,
                                               started, rid),
                    disconnect=False, status=E.STATUS_BUSY)
            token = session.token
        self._registered(conn, obj, application, token, bool(obj.get("jwt")), started, rid)

    def _registered(self, conn: IConnection, obj: dict, application: str, token: str,
                    jwt: bool, started: float, rid: Any) -> None:
        mtype = "ewd-register"
        conn.jwt = jwt
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
        if self.tokens is not None and (obj.get("jwt") or looks_like_jwt(token)):
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
            if isinstance(server_session, defer.Deferred):
                return self._when_session(
                    server_session, conn, mtype, started, rid,
                    lambda s: self._reregistered(conn, obj, message, s, started, rid))
            return self._reregistered(conn, obj, message, server_session, started, rid)
        self._reregistered_done(conn, obj, message, started, rid)

    def _reregistered(self, conn: IConnection, obj: dict, message: dict, server_session: Any,
                      started: float, rid: Any) -> None:
        server_session["socketId"] = conn.id
        conn.jwt = False
        conn.application = server_session.application
        self._reregistered_done(conn, obj, message, started, rid)

    def _reregistered_done(self, conn: IConnection, obj: dict, message: dict, started: float,
                           rid: Any) -> None:
        mtype = "ewd-reregister"
        if obj.get("qewd_twisted"):
            message["qewd_twisted"] = 1
            conn.is_link = True
        self.observer.registered(conn, conn.application, conn.jwt, True)
        self._reply(conn, mtype, message, started, rid)

    # -- in flight and shutdown ---------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """How many requests are in flight (running here or forwarded)."""
        return len(self.requests)

    def drain(self, grace: float) -> defer.Deferred[None]:
        """Stop accepting new requests; fire when in-flight ones end or after ``grace`` s
        (then those still running are ended with a 503)."""
        self.accepting = False
        d = self.requests.drain()
        if not d.called:
            d.addTimeout(grace, self.reactor, onTimeoutCancel=self._grace_over)
        return d

    def _grace_over(self, result: Any, timeout: float) -> None:
        log.warn("{n} request(s) still in flight after the grace period: ending them",
                 n=len(self.requests))
        self._abort_in_flight()

    def _abort_in_flight(self) -> None:
        """End every request still running: its client gets a 503 instead of silence."""
        for req in self.requests.abort("503"):
            self._error(req.conn, req.type, E.SHUTTING_DOWN, req.started, req.ms_request_id,
                        status=E.STATUS_BUSY)

    def close_all(self, code: int = 1001, reason: str = "server shutting down",
                  timeout: float = 5.0) -> defer.Deferred[None]:
        """Close every client connection; fire when all have closed or after ``timeout`` s.

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
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda result, timeout: None)
        return d
