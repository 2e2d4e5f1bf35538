# -*- test-case-name: tests.test_rest_forwarding -*-
"""
The REST micro-service router: HTTP requests matching a ``u_services`` REST route (object form,
docs/protocol.md §4.1 B) go to a remote node as ``restRequest`` messages over the node's links,
and the remote's reply comes back as HTTP (§4.5). A group destination fans out to every member
in parallel and answers with QEWD's aggregation (§4.6, `aggregate`).

What differs from QEWD.js (docs/compatibility.md): every forwarded request ends (link down:
503, no answer within ``microServiceTimeout``: 504, a remote crash or an id-less error frame:
that error); a request without a JWT is forwarded with a fresh unauthenticated session token
for the destination's application (QEWD.js re-signs its own registration token); a JWT is never
re-signed without being verified (with ``bypassJWTCheck`` an unverifiable one is passed on only
in the ``Authorization`` header, for the remote to check).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from twisted.logger import Logger

from zope.interface import implementer

from qewd_twisted import errors as E
from qewd_twisted.auth.tokens import TokenError
from qewd_twisted.core import envelope
from qewd_twisted.core.interfaces import IReplyReceiver, LinkOutcome
from qewd_twisted.core.requests import Request
from qewd_twisted.rest.bridge import NodeBridge
from qewd_twisted.rest.dispatch import REST_TYPE
from qewd_twisted.rest.mapping import bearer_token
from qewd_twisted.rest.routing import PathTemplate

__all__ = ["RestForwarder", "aggregate", "leaves"]

log = Logger()


def leaves(name: str, groups: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The physical destinations of ``name``, groups resolved recursively, in order, once
    each (config checking has refused cycles)."""
    out: list[str] = []

    def walk(n: str, trail: tuple[str, ...]) -> None:
        if n in groups:
            for member in groups[n]:
                if member not in trail:
                    walk(member, trail + (member,))
        elif n not in out:
            out.append(n)

    walk(name, (name,))
    return out


def aggregate(replies: Mapping[str, Any]) -> dict[str, Any]:
    """QEWD's group result (§4.6) from each leaf's final reply frame, in leaf order.

    At least one success: ``{"results": {leaf: message}, "token": <first leaf token>}`` (each
    leaf's token removed, failures as ``{error}`` entries). All failed with the same error:
    ``{"error": text}`` (with its status when every leaf had the same one; QEWD.js drops it);
    with different errors: ``{"error": {"destinations": {leaf: message}}}``.
    """
    composite: dict[str, Any] = {}
    token = None
    errors = 0
    for leaf, frame in replies.items():
        message = frame.get("message") if isinstance(frame, Mapping) else None
        if not isinstance(message, Mapping):
            message = {"error": str(message) if message is not None else E.BAD_REPLY}
        message = dict(message)
        if message.get("error"):
            errors += 1
        leaf_token = message.pop("token", None)
        if token is None and leaf_token:
            token = leaf_token
        composite[leaf] = message
    if composite and errors == len(composite):
        texts = [m.get("error") for m in composite.values()]
        if all(t == texts[0] for t in texts):
            out: dict[str, Any] = {"error": texts[0]}
            statuses = [m.get("status") for m in composite.values()]
            if statuses[0] is not None and all(s == statuses[0] for s in statuses):
                out["status"] = statuses[0]
            return out
        return {"error": {"destinations": composite}}
    result: dict[str, Any] = {"results": composite}
    if token is not None:
        result["token"] = token
    return result


class RestForwarder:
    """Forwards the HTTP requests that match a REST micro-service route (see the module
    docstring). ``node`` provides ``tokens``, ``reactor`` and the request bookkeeping;
    ``config`` is the ``MicroServicesConfig``; ``micro_services`` owns the links."""

    def __init__(self, node: Any, config: Any, micro_services: Any,
                 timeout: float | None) -> None:
        self.node = NodeBridge(node)
        self.config = config
        self.timeout = timeout
        self.routes = [(PathTemplate.compile(r.path), r) for r in config.rest_routes]
        self.links = {name: micro_services.link_for(d.urls, d.application)
                      for name, d in config.destinations.items()}

    def first_segments(self) -> set[str]:
        return {t.text.strip("/").split("/")[0].split("(")[0] for t, _ in self.routes
                if not t.text.strip("/").startswith(":")}

    def match(self, path: str, method: str) -> tuple[Any, dict[str, str]] | None:
        """The first route matching (qewd-router's ``hasRoute``: method compared exactly, a
        route without one matches any; HEAD matches a GET route)."""
        for template, route in self.routes:
            args = template.match(path)
            if args is not None and (route.method is None or route.method == method
                                     or (method == "HEAD" and route.method == "GET")):
                return route, args
        return None

    # -- the entry (from the dispatcher, for requests from HTTP) -----------------------------

    def handle(self, conn: Any, obj: dict, started: float) -> bool:
        """Forward ``obj`` if a route matches; False: not ours, serve it locally."""
        found = self.match(obj.get("path") or "/", obj.get("method") or "GET")
        if found is None:
            return False
        route, variables = found
        req = Request(conn, obj, REST_TYPE, started, None, False, None, "")
        self.node.begin(req)
        self._route(req, obj, route, variables, self._answerer(req))
        return True

    def use_microservice(self, req: Request, result: dict) -> None:
        """§4.7: ``result["request"]`` (``path``, ``method``, ``body``...) through the REST
        routes, with ``Authorization: Bearer <the reply's token>`` unless it has headers."""
        node = self.node
        request = result.get("request")
        if not isinstance(request, Mapping) or not isinstance(request.get("path"), str):
            return node.fail(req.conn, req.type, E.BAD_REST_REQUEST.format(
                reason="use_microservice needs request.path"), req.started, req.ms_request_id)
        headers = request.get("headers")
        if not isinstance(headers, Mapping):
            headers = {}
            if isinstance(result.get("token"), str):
                headers = {"authorization": "Bearer " + result["token"]}
        method = str(request.get("method") or "GET").upper()
        obj = {"type": REST_TYPE, "method": method, "path": request["path"],
               "headers": dict(headers), "query": request.get("query") or {},
               "body": request.get("body") or {}, "ip": req.conn.ip, "ips": [req.conn.ip]}
        found = self.match(obj["path"], method)
        if found is None:
            return node.fail(req.conn, req.type, E.REST_NOT_FOUND, req.started,
                             req.ms_request_id, status=404)
        fwd = Request(req.conn, obj, req.type, req.started, req.ms_request_id, False, None,
                      req.application)
        node.begin(fwd)

        def answer(frame: Any) -> None:
            if fwd.done:
                return
            node.end(fwd, "error" if _is_error(frame) else "ok")
            message = frame.get("message") if isinstance(frame, Mapping) else None
            if not isinstance(message, Mapping):
                message = {"error": str(message) if message is not None else E.BAD_REPLY}
            message = dict(message)
            if isinstance(message.get("token"), str):
                try:
                    message["token"] = node.tokens.rewrite(message["token"], req.application)
                except TokenError:
                    message = envelope.bad_ms_token()
            node.reply(req.conn, req.type, message, req.started, req.ms_request_id)

        self._route(fwd, obj, found[0], found[1], answer)

    def _answerer(self, req: Request) -> Callable[[Any], None]:
        def answer(frame: Any) -> None:
            if req.done:
                return
            self.node.end(req, "error" if _is_error(frame) else "ok")
            if isinstance(frame, dict):
                frame = dict(frame)
                frame.setdefault("type", REST_TYPE)
                frame["finished"] = True
                frame["responseTime"] = self.node.elapsed(req.started)
            self.node.send(req.conn, frame)
        return answer

    def _route(self, req: Request, obj: dict, route: Any, variables: dict[str, str],
               answer: Callable[[Any], None]) -> None:
        obj = dict(obj)
        obj["pathTemplate"] = route.path
        if route.on_request is not None:
            args = {"req": obj, **variables, "jwt": bearer_token(obj.get("headers") or {})}

            def send(message: Any, args_or_handler: Any = None,
                     handle_response: Any = None) -> None:
                # onRequest's send(message[, args], handleResponse) re-enters the router
                if handle_response is None:
                    handle_response = args_or_handler
                elif isinstance(args_or_handler, Mapping):
                    message = dict(message)
                    message["headers"] = {"authorization": f"Bearer {args_or_handler.get('jwt')}"}
                self._reenter(req, message, handle_response or answer)

            try:
                handled = route.on_request(args, send, answer)
            except Exception as e:
                log.failure("onRequest for {path} raised", path=route.path)
                return answer({"message": {"error": E.UNEXPECTED_EXCEPTION.format(error=e),
                                           "status": {"code": 500}}})
            if handled is not False:
                return
        destination = variables.get("destination") or route.destination
        if destination not in self.links and destination not in self.config.groups:
            return answer({"message": {"error": E.NO_SUCH_DESTINATION.format(
                destination=destination)}})
        if destination in self.config.groups:
            self._fan_out(req, obj, route, variables, destination, answer)
        else:
            self._forward(obj, route, variables, destination,
                          lambda frame: self._respond(req, obj, route, destination, frame,
                                                      answer))

    def _reenter(self, req: Request, message: Any, handle_response: Callable) -> None:
        if not isinstance(message, Mapping):
            return handle_response({"message": {"error": E.BAD_REPLY}})
        message = dict(message)
        message.setdefault("method", "GET")
        message.setdefault("headers", {})
        found = self.match(message.get("path") or "/", message["method"])
        if found is None:
            return handle_response({"message": {"error": E.REST_NOT_FOUND,
                                                "status": {"code": 404}}})
        self._route(req, message, found[0], found[1], handle_response)

    def _respond(self, req: Request, obj: dict, route: Any, destination: str, frame: Any,
                 answer: Callable[[Any], None]) -> None:
        if route.on_response is not None:
            try:
                handled = route.on_response({
                    "message": obj, "destination": destination, "responseObj": frame,
                    "handleResponse": answer,
                    "send": lambda m, h: self._reenter(req, m, h)})
            except Exception as e:
                log.failure("onResponse for {path} raised", path=route.path)
                handled = False
                frame = {"message": {"error": E.UNEXPECTED_EXCEPTION.format(error=e),
                                     "status": {"code": 500}}}
            if handled:
                return
        answer(frame)

    # -- one destination ---------------------------------------------------------------------

    def _token_for(self, obj: dict, destination: str, bypass: bool) -> str:
        """The ``token`` the remote validates (§4.5 step 3). Raises TokenError."""
        tokens = self.node.tokens
        application = self.config.destinations[destination].application
        jwt = bearer_token(obj.get("headers") or {})
        if jwt:
            try:
                return tokens.rewrite(jwt, application)
            except TokenError:
                if not bypass:
                    raise
        ip = obj.get("ip") or ""
        return tokens.register_token(application, {"ipAddress": ip, "authenticated": False})

    def _forward(self, obj: dict, route: Any, variables: dict[str, str], destination: str,
                 on_final: Callable[[Any], None]) -> None:
        try:
            token = self._token_for(obj, destination, route.bypass_jwt_check)
        except TokenError as e:
            return on_final({"message": {"error": str(e)}})
        dest = self.config.destinations[destination]
        message = {
            "application": dest.application, "type": REST_TYPE,
            "path": obj.get("path"), "pathTemplate": obj.get("pathTemplate"),
            # HEAD is forwarded as the GET it stands for (twisted.web drops the body)
            "method": "GET" if obj.get("method") == "HEAD" else obj.get("method"),
            "headers": obj.get("headers") or {},
            "params": dict(variables), "query": obj.get("query") or {},
            "body": obj.get("body"), "ip": obj.get("ip"), "ips": obj.get("ips"),
            "token": token, "args": dict(variables), "jwt": True,
        }

        self.links[destination].send_request(message, _Receiver(self, on_final), self.timeout)

    def _checked(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A remote's final frame, its token verified (never passed on unverified)."""
        message = frame.get("message")
        if isinstance(message, dict) and isinstance(message.get("token"), str):
            try:
                self.node.tokens.decode(message["token"])
            except TokenError as e:
                log.warn("REST micro-service reply carries a token that does not verify "
                         "here: {error}", error=e.reason)
                return {"type": REST_TYPE, "message": envelope.bad_ms_token()}
        return frame

    # -- a group -----------------------------------------------------------------------------

    def _fan_out(self, req: Request, obj: dict, route: Any, variables: dict[str, str],
                 group: str, answer: Callable[[Any], None]) -> None:
        members = leaves(group, self.config.groups)
        replies: dict[str, Any] = dict.fromkeys(members)
        pending = set(members)

        def collect(leaf: str, frame: Any) -> None:
            if leaf not in pending:
                return
            pending.discard(leaf)
            replies[leaf] = frame
            if not pending:
                result = {"type": REST_TYPE, "message": aggregate(replies)}
                self._respond(req, obj, route, group, result, answer)

        for leaf in members:
            if leaf not in self.links:
                collect(leaf, {"message": {"error": E.NO_SUCH_DESTINATION.format(
                    destination=leaf)}})
            else:
                self._forward(obj, route, variables, leaf,
                              lambda frame, leaf=leaf: collect(leaf, frame))


@implementer(IReplyReceiver)
class _Receiver:
    """What one forwarded REST request's link reports to: its final frame (intermediate
    ``send()`` frames are not carried over HTTP), or how it failed."""

    __slots__ = ("_router", "_on_final")

    def __init__(self, router: RestForwarder, on_final: Callable[[Any], None]) -> None:
        self._router = router
        self._on_final = on_final

    def frame(self, frame: dict[str, Any]) -> None:
        if envelope.is_final(frame):
            self._on_final(self._router._checked(frame))

    def failed(self, outcome: LinkOutcome) -> None:
        build = envelope.link_timeout if outcome is LinkOutcome.TIMEOUT else envelope.link_down
        self._on_final(build(REST_TYPE))


def _is_error(frame: Any) -> bool:
    message = frame.get("message") if isinstance(frame, Mapping) else None
    return not isinstance(message, Mapping) or bool(message.get("error"))

