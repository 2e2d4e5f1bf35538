# -*- test-case-name: tests.test_rest_node -*-
"""
The REST dispatcher: what the node does with a ``restRequest`` message.

Every REST request reaches the node through its one door as a ``restRequest`` message (an HTTP
request, made into one by rest/resource.py; or one forwarded by a QEWD primary, Python or
QEWD.js, docs/protocol.md §4.5). The node hands it here:

- from HTTP (the connection's framing is ``http``): a micro-service REST route in
  ``u_services`` forwards it (rest/forwarding.py); else the mount point's application serves
  it from its module's ``routes`` table (or, QEWD's simpler form, its ``handlers`` by the path
  segment after the mount). A ``Authorization: Bearer`` JWT is verified first; the handler gets
  its session as ``args["session"]`` and a successful reply carries the re-issued token.
- from a primary (any other connection): the ``token`` is verified, the application is the
  JWT's, and the request goes to the route whose ``url`` is the primary's ``pathTemplate``,
  by method with ``ANY`` as the fallback (qewd-router's ``addMicroServiceHandler``).

Handlers run where WebSocket handlers run (the node's ``run_handler``: sync ones in the worker
pool, ``async def`` on the reactor) and are called ``handler(args, finished)`` or
``handler(args, finished, q)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from twisted.logger import Logger

from qewd_twisted import errors as E
from qewd_twisted.apps.modules import AppLoadError, Application
from qewd_twisted.auth.sessions import JWTSession
from qewd_twisted.auth.tokens import NO_APPLICATION, TokenError
from qewd_twisted.core.requests import Request, positional_arity
from qewd_twisted.rest.bridge import NodeBridge
from qewd_twisted.rest.jwt import RestArgs
from qewd_twisted.rest.mapping import bearer_token
from qewd_twisted.rest.routing import (
    Matched,
    MountTable,
    NoRoute,
    RestRoute,
    RouteError,
    RouteTable,
    WrongMethod,
    strip_query,
)

__all__ = ["HTTP_FRAMING", "RestDispatcher", "REST_TYPE"]

log = Logger()

REST_TYPE = "restRequest"
HTTP_FRAMING = "http"  # the framing of rest/resource.py's connections

_SIMPLE = object()  # a module without ``routes``: its handlers by path segment


class RestDispatcher:
    """Dispatches ``restRequest`` messages for one node (see the module docstring).

    ``node`` provides ``apps``, ``tokens``, ``initial_session_timeout``, ``run_handler`` and the
    reply helpers; ``mounts`` the startup file's ``routes``; ``forwarder`` (optional) the
    micro-service REST routes of ``u_services``.
    """

    def __init__(self, node: Any, mounts: MountTable | None = None,
                 forwarder: Any = None) -> None:
        self.node = NodeBridge(node)
        self.mounts = mounts or MountTable(())
        self.forwarder = forwarder
        self._tables: dict[str, tuple[Any, Any]] = {}  # application -> (module, table)
        self._arity: dict[Any, int] = {}

    # -- the entry ------------------------------------------------------------------------

    def receive(self, conn: Any, obj: dict, started: float, rid: Any) -> None:
        if getattr(conn, "framing", None) == HTTP_FRAMING:
            self._from_http(conn, obj, started)
        else:
            self._from_primary(conn, obj, started, rid)

    def _fail(self, conn: Any, text: str, started: float, rid: Any = None,
              status: int = 400, **extra: Any) -> None:
        self.node.fail(conn, REST_TYPE, text, started, rid, status=status, **extra)

    def _fail_as(self, error_type: str, application: Any, conn: Any, text: str, started: float,
                 rid: Any = None, status: int = 400, **extra: Any) -> None:
        """`_fail`, with the application's custom text and status for ``error_type`` (QEWD's
        ``setCustomErrorResponse``, docs/handlers.md) when it set one."""
        custom = self.node.custom_error(application, error_type)
        if custom is not None:
            text, code = custom
            status = code if isinstance(code, int) else status
        self._fail(conn, text, started, rid, status=status, **extra)

    # -- route tables ---------------------------------------------------------------------

    def table_for(self, app: Application, mount: str | None = None) -> Any:
        """The app module's RouteTable, ``_SIMPLE`` for a handlers-only module; RouteError."""
        module = app.module
        cached = self._tables.get(app.name)
        if cached is not None and cached[0] is module:
            return cached[1]
        routes = getattr(module, "routes", None) if module is not None else None
        table: Any = _SIMPLE if routes is None else RouteTable.from_table(routes, mount)
        self._tables[app.name] = (module, table)
        return table

    # -- a request from HTTP ----------------------------------------------------------------

    def _from_http(self, conn: Any, obj: dict, started: float) -> None:
        path = obj.get("path", "/")
        method = obj.get("method", "GET")
        if self.forwarder is not None and self.forwarder.handle(conn, obj, started):
            return
        mount = self.mounts.find(path)
        if mount is None:
            return self._fail(conn, E.REST_NOT_FOUND, started, status=404)
        obj["application"] = mount.application
        try:
            app = self.node.apps.get(mount.application)
        except AppLoadError as e:
            return self._fail_as("moduleLoadError", mount.application, conn, str(e), started,
                                 status=500, reason=e.reason)
        try:
            table = self.table_for(app, mount.path)
        except RouteError as e:
            log.error("REST routes of {application} are unusable: {why}",
                      application=app.name, why=str(e))
            return self._fail(conn, E.NO_REST_ROUTES.format(application=app.name, reason=e),
                              started, status=500)
        args = self._args()
        if table is _SIMPLE:
            rest = strip_query(path)[len(mount.path.rstrip("/")):].strip("/")
            rtype = rest.split("/")[0]
            handler = app.handlers.get(rtype) if rtype else None
            if handler is None:
                return self._fail_as("noTypeHandler", app.name, conn, E.NO_HANDLER_REST.format(
                    application=app.name, type=rtype), started, status=404)
            obj["expressType"] = rtype
            args.update(obj)
            args["req"] = obj
            route = RestRoute(None, None, handler)  # type: ignore[arg-type]
        else:
            found = table.match(path, method)
            if isinstance(found, NoRoute):
                return self._fail_as("noTypeHandler", app.name, conn, found.text, started,
                                     status=found.status)
            if isinstance(found, WrongMethod):
                return self._fail(conn, E.METHOD_NOT_ALLOWED.format(
                    method=method, path=strip_query(path)), started, status=405,
                    allow=list(found.allowed))
            assert isinstance(found, Matched)
            route = found.route
            args.update(found.args)
            args["req"] = obj
        session = None
        token = bearer_token(obj.get("headers") or {})
        if token:
            if self.node.tokens is None:
                return self._fail(conn, E.JWT_NOT_CONFIGURED, started, status=403)
            try:
                session = self.node.tokens.session(token)
            except TokenError as e:
                return self._fail_as("sessionNotAuthenticated", app.name, conn, str(e), started,
                                     status=403)
            if session.get("application") != app.name:
                return self._fail(conn, E.WRONG_APPLICATION.format(
                    application=session.get("application")), started, status=403)
            args["session"] = session
        elif route.authenticate:
            return self._fail_as("sessionNotAuthenticated", app.name, conn,
                                 E.AUTH_HEADER_MISSING, started, status=401)
        req = Request(conn, obj, REST_TYPE, started, None, session is not None, session,
                      app.name)
        req.app = app
        self._run(req, route.handler, args)

    # -- a request forwarded by a primary ---------------------------------------------------

    def _from_primary(self, conn: Any, obj: dict, started: float, rid: Any) -> None:
        tokens = self.node.tokens
        if tokens is None:
            return self._fail(conn, E.JWT_NOT_CONFIGURED, started, rid, status=403)
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            return self._fail(conn, E.MISSING_AUTH, started, rid, status=401)
        try:
            payload = tokens.decode(token)
            application = payload.get("application")
            if not isinstance(application, str) or not application:
                raise TokenError(NO_APPLICATION)
            session = tokens.session_from_payload(payload, token)
        except TokenError as e:
            return self._fail(conn, str(e), started, rid, status=403)
        try:
            app = self.node.apps.get(application)
        except AppLoadError as e:
            return self._fail(conn, str(e), started, rid, status=500, reason=e.reason)
        req = Request(conn, obj, REST_TYPE, started, rid, True, session, application)
        req.app = app
        try:
            table = self.table_for(app)
        except RouteError as e:
            return self._fail(conn, E.NO_REST_ROUTES.format(application=app.name, reason=e),
                              started, rid, status=500)
        if table is _SIMPLE:
            # a module with its own handlers.restRequest(messageObj, session, send, finished)
            return self.node.run_local(req)
        template = obj.get("pathTemplate")
        method = obj.get("method")
        if isinstance(template, str) and template:
            route = table.by_template(template, method)
            if isinstance(route, str):
                status = 404 if route == E.MS_NO_ROUTES else 405
                return self._fail(conn, route, started, rid, status=status)
            variables = obj.get("args")
            variables = variables if isinstance(variables, dict) else {}
        else:  # no template: match the path itself
            path = obj.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                return self._fail(conn, E.BAD_REST_REQUEST.format(
                    reason="pathTemplate or path is needed"), started, rid)
            found = table.match(path, method if isinstance(method, str) else "GET")
            if not isinstance(found, Matched):
                return self._fail(conn, E.MS_NO_ROUTES, started, rid, status=404)
            route, variables = found.route, found.args
        args = self._args()
        args.update(variables)
        args["req"] = {k: v for k, v in obj.items() if k != "args"}
        args["session"] = session
        before = getattr(app.module, "beforeMicroServiceHandler", None)
        self._run(req, route.handler, args,
                  before=before if callable(before) else None)

    # -- use_microservice (§4.7) -------------------------------------------------------------

    def use_microservice(self, req: Request, result: dict) -> None:
        """A WebSocket handler's ``finished({use_microservice: True, request: {...}})``: the
        request goes through the REST micro-service routes; the reply reaches the client
        under the original type, its token back in the original application."""
        if self.forwarder is None:
            return self.node.fail(req.conn, req.type, E.BAD_REST_REQUEST.format(
                reason="use_microservice needs REST routes in u_services"), req.started,
                req.ms_request_id)
        self.forwarder.use_microservice(req, result)

    # -- running a handler ------------------------------------------------------------------

    def _args(self) -> RestArgs:
        args = RestArgs()
        args.tokens = self.node.tokens
        args.initial_timeout = self.node.initial_session_timeout
        return args

    def _run(self, req: Request, handler: Callable, args: RestArgs,
             before: Callable | None = None) -> None:
        n = self._arity.get(handler)
        if n is None:
            n = self._arity[handler] = positional_arity(handler)
        q = self.node.q

        def call(send: Callable, finished: Callable) -> Any:
            def fin(result: Any = None) -> None:
                session = args.get("session")
                if isinstance(session, JWTSession):
                    req.session, req.jwt = session, True
                # (an empty reply is still sent: the HTTP connection needs_reply)
                finished({} if result is None else result)

            def crashed(e: BaseException) -> None:
                log.failure("REST handler for {path} raised", path=args.req.get("path"))
                fin({"error": E.UNEXPECTED_EXCEPTION.format(error=str(e) or type(e).__name__),
                     "status": {"code": 500}})

            try:
                # a module's beforeMicroServiceHandler(args, finished): False stops (§5.2)
                if before is not None and before(args, fin) is False:
                    return None
                result = handler(args, fin, q) if n >= 3 else handler(args, fin)
            except Exception as e:
                return crashed(e)
            if inspect.isawaitable(result):
                async def guarded() -> None:
                    try:
                        await result
                    except Exception as e:
                        crashed(e)
                return guarded()
            return None

        self.node.run_handler(req, handler, call)
