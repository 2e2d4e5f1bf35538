# -*- test-case-name: tests.test_rest_node -*-
"""
QEWD's REST JWT helpers (``this.jwt.handlers``, docs/protocol.md §3.8-§3.9) with Python names,
for REST handlers: ``create_rest_session`` (a login route), ``issue_token`` (``setJWT``),
``get_rest_jwt``, ``get_claim`` (``getProperty``) and ``validate_rest_request``.

A REST handler's ``args`` is a `RestArgs`: a dict (route variables, ``req``, ``session``) that
also knows the node's token codec, so these helpers need nothing else. A session created or
validated here becomes ``args["session"]``; a successful reply then carries its re-issued
``token``, exactly as for a request that came with a valid ``Authorization`` header.

Imports auth and rest.mapping only.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

from qewd_twisted import errors as E
from qewd_twisted.auth.sessions import JWTSession
from qewd_twisted.auth.tokens import TokenError
from qewd_twisted.rest.mapping import bearer_token

__all__ = [
    "RestArgs",
    "create_rest_session",
    "get_claim",
    "get_rest_jwt",
    "issue_token",
    "validate_rest_request",
]

ISSUER = "qewd.jwt"


class RestArgs(dict):
    """A REST handler's ``args``: ``args["req"]`` (method, path, headers, query, body, ip...),
    ``args["session"]`` (a JWT session, or absent), path variables by name.

    ``tokens`` (the node's ``TokenCodec``, None without ``jwt`` config) and
    ``initial_timeout`` are attributes, not items, so the dict stays plain data."""

    tokens: Any = None
    initial_timeout: int = 300

    @property
    def req(self) -> dict[str, Any]:
        req = self.get("req")
        return req if isinstance(req, dict) else self


def _codec(args: Any) -> Any:
    tokens = getattr(args, "tokens", None)
    if tokens is None:
        raise RuntimeError("JWT helpers need config.jwt.secret (JWT mode) and a REST args dict")
    return tokens


def create_rest_session(args: RestArgs, timeout: int | None = None) -> JWTSession:
    """A new session for the request (QEWD's ``createRestSession``, §3.2): ``application``
    (the mount's), ``ipAddress`` and ``authenticated: false`` (both secret), ``timeout``
    (default: ``initialSessionTimeout``). It becomes ``args["session"]``: the reply carries
    its token. Set claims, ``make_secret`` some, then ``finished({...})``."""
    _codec(args)
    req = args.req
    session = JWTSession(
        {"iss": ISSUER, "application": req.get("application"),
         "timeout": timeout or getattr(args, "initial_timeout", 300),
         "ipAddress": req.get("ip"), "authenticated": False},
        secret_names=("ipAddress", "authenticated"),
    )
    args["session"] = session
    return session


def issue_token(args_or_session: Any) -> str:
    """The signed JWT for a session now (QEWD's ``setJWT`` / ``updateJWT``); with ``args``,
    its ``args["session"]``."""
    session = args_or_session
    if isinstance(args_or_session, RestArgs):
        session = args_or_session.get("session")
        tokens = _codec(args_or_session)
    else:
        raise TypeError("issue_token needs the handler's args (it knows the signing key)")
    if not isinstance(session, JWTSession):
        raise ValueError("the request has no session: create_rest_session(args) first")
    return tokens.issue(session)


def get_rest_jwt(args: Any, bearer: bool = True) -> str:
    """The JWT in the request's ``Authorization`` header ('' if none), QEWD's ``getRestJWT``."""
    req = args.req if isinstance(args, RestArgs) else args
    headers = req.get("headers") if isinstance(req, dict) else None
    return bearer_token(headers if isinstance(headers, dict) else {}, bearer)


def get_claim(args: Any, name: str, token: str | None = None) -> Any:
    """A public claim of the request's JWT (or of ``token``), read WITHOUT verifying it
    (QEWD's ``getProperty``): for routing decisions only, never for authorisation."""
    token = token if token is not None else get_rest_jwt(args)
    try:
        segment = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, AttributeError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def validate_rest_request(args: RestArgs, finished: Callable[[Any], None], bearer: bool = True,
                          check_authenticated: bool = True) -> bool:
    """QEWD's ``validateRestRequest``: the ``Authorization`` header's JWT must verify (and,
    unless ``check_authenticated`` is False, carry ``authenticated: true``); on a forwarded
    request that is the client's header, not the primary's ``token``. On failure it calls
    ``finished`` with QEWD's error and returns False; on success ``args["session"]`` is the
    session and it returns True."""
    token = get_rest_jwt(args, bearer)
    if not token:
        finished({"error": E.AUTH_HEADER_MISSING, "status": {"code": 401}})
        return False
    try:
        session = _codec(args).session(token)
    except TokenError as e:
        finished({"error": str(e), "status": {"code": 403}})
        return False
    args["session"] = session
    if check_authenticated and not session.get("authenticated"):
        finished({"error": E.NOT_AUTHENTICATED, "status": {"code": 403}})
        return False
    return True
