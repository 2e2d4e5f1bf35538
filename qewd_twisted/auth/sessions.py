# -*- test-case-name: tests.test_sessions -*-
"""
Session objects handed to handlers, and the server-side session store for session-token mode.

Two kinds of session, one handler contract (docs/handlers.md): a handler gets ``session``, a mutable
mapping with ``make_secret`` / ``is_secret`` / ``make_public`` and a writable ``timeout``.

* ``JWTSession``: the claims of a verified QEWD JWT (docs/protocol.md §3.4). Nothing is stored on the
  server; ``TokenCodec.issue`` turns the mapping back into a token after the reply (§3.5).
* ``ServerSession``: session-token mode (§2.1, §2.4). The state lives in an ``ISessionStore``
  and the client only holds an opaque uuid token. ``MemorySessionStore`` is the in-process
  default; a shared store (Redis, ...) can implement the same interface so that several nodes
  can serve one client.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from qewd_twisted import errors as E

__all__ = [
    "ISessionStore",
    "JWTSession",
    "MemorySessionStore",
    "ServerSession",
    "SessionError",
]

# The claims the token layer owns (§3.2): they stay public so that any node can verify and route
# a token without decrypting it, and they can never be made secret. ``qewd`` / ``qewd_list`` are
# QEWD's internal fields; here they never appear in the mapping at all.
INTERNAL_CLAIMS = frozenset({"qewd", "qewd_list"})
RESERVED_CLAIMS = (
    frozenset({"exp", "nbf", "iat", "iss", "application", "timeout"}) | INTERNAL_CLAIMS
)


def check_timeout(value: Any) -> float:
    """Return ``value`` if it is a usable session timeout (a positive, finite number of seconds).

    Raises ValueError otherwise. Booleans and numeric strings are refused: QEWD.js would turn
    ``"60"`` into a string-concatenated ``exp`` (a token that never expires).
    """
    if type(value) not in (int, float):
        raise ValueError(
            "session timeout must be a positive number of seconds, got " + type(value).__name__
        )
    if (type(value) is float and not math.isfinite(value)) or value <= 0:
        raise ValueError(f"session timeout must be a positive number of seconds, got {value!r}")
    return value


class _SessionMapping(dict):  # type: ignore[type-arg]
    """A dict whose claims are items. Attribute assignment to an unknown name is an error.

    Ported QEWD.js code writes ``session.username = 'rob'``; in Python that would silently set
    an attribute that never reaches the token, so it raises with a hint instead.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(type(self), name):
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"{type(self).__name__} has no attribute {name!r}: session data are items, use "
            f"session[{name!r}] = value"
        )


class JWTSession(_SessionMapping):
    """The claims of a verified JWT as a mutable mapping, plus which of them are secret.

    Secret claims travel encrypted inside the token's ``qewd`` claim (§3.3); in the mapping they
    sit at the top level next to the public ones, as in QEWD (§3.4). Which names are secret is
    kept in an attribute, never in the mapping, so ``dict(session)`` is exactly the claims.

    Users can build one directly for their own handler tests::

        JWTSession({"application": "x", "timeout": 300}, secret_names={"username"})
    """

    __slots__ = ("_secrets", "_origin")
    _secrets: dict[str, None]
    # (token, its flat payload) when the session came from a token the codec could re-issue
    # unchanged (TokenCodec.session_from_payload / issue); None otherwise.
    _origin: tuple[str, dict[str, Any]] | None

    def __init__(
        self,
        claims: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        *,
        secret_names: Iterable[str] = (),
    ) -> None:
        super().__init__(claims)
        for name in INTERNAL_CLAIMS:
            self.pop(name, None)
        # An insertion-ordered dict used as an ordered set: the secrets are re-encrypted in the
        # order QEWD would write them, so an unchanged session gives a bit-identical ``qewd``.
        object.__setattr__(self, "_secrets", {})
        object.__setattr__(self, "_origin", None)
        for name in secret_names:
            self.make_secret(name)

    @classmethod
    def from_verified(cls, claims: dict[str, Any], secret_names: list[str]) -> JWTSession:
        """The token layer's constructor: ``claims`` hold no internal claim and
        ``secret_names`` no reserved name (both already filtered)."""
        session = cls.__new__(cls)
        dict.update(session, claims)
        _set_secrets(session, dict.fromkeys(secret_names))
        _set_origin(session, None)
        return session

    # QEWD's helpers (§3.4 step 4), with Python names and the camelCase ones ported code uses.

    def make_secret(self, name: str) -> None:
        """Mark ``name`` secret: on re-issue it goes into the encrypted ``qewd`` claim.

        The claim does not have to exist yet. Claims the token layer reads (``exp``,
        ``application``, ``timeout``...) cannot be secret: ValueError.
        """
        if not isinstance(name, str):
            raise TypeError("claim names are strings")
        if name in RESERVED_CLAIMS:
            raise ValueError(f"claim {name!r} is reserved and must stay public")
        self._secrets[name] = None

    def is_secret(self, name: str) -> bool:
        """Whether ``name`` will be written into the encrypted ``qewd`` claim."""
        return name in self._secrets

    def make_public(self, name: str) -> None:
        """Make ``name`` a public (readable by anyone holding the token) claim.

        Unlike QEWD.js, which leaves the old copy inside ``qewd`` (§3.4 step 4), the value is
        removed from the encrypted claim too: a claim made public is really public, and the
        next decode cannot bring back a stale secret value.
        """
        self._secrets.pop(name, None)

    makeSecret = make_secret
    isSecret = is_secret
    makePublic = make_public

    @property
    def secret_names(self) -> frozenset[str]:
        """The names marked secret (present in the mapping or not)."""
        return frozenset(self._secrets)

    def secret_claims(self) -> dict[str, Any]:
        """The secret claims present in the mapping, in the order they became secret.

        This is exactly what goes into the ``qewd`` claim: deleting a secret item from the
        session removes it from the token (QEWD.js would keep the old value).
        """
        return {name: self[name] for name in self._secrets if name in self}

    @property
    def timeout(self) -> float | None:
        """The sliding-expiry window in seconds (the public ``timeout`` claim, §3.7)."""
        return self.get("timeout")

    @timeout.setter
    def timeout(self, value: float) -> None:
        self["timeout"] = check_timeout(value)

    def copy(self) -> JWTSession:
        """A shallow copy that keeps the secret names."""
        return JWTSession(self, secret_names=self._secrets)

    def __repr__(self) -> str:
        # Sessions end up in logs and tracebacks: never show secret values.
        shown = {k: ("<secret>" if k in self._secrets else v) for k, v in self.items()}
        return f"JWTSession({shown!r}, secret_names={sorted(self._secrets)!r})"


# the slots' own setters: ``from_verified`` sets them without a lookup by name
_set_secrets = JWTSession._secrets.__set__  # type: ignore[attr-defined]
_set_origin = JWTSession._origin.__set__  # type: ignore[attr-defined]


SESSION_ERRORS = (E.MISSING_AUTH, E.INVALID_SESSION, E.SESSION_EXPIRED)  # QEWD's (§2.4)
MISSING_AUTHORIZATION, INVALID_TOKEN, SESSION_EXPIRED = SESSION_ERRORS
# Ours: the store is bounded (§9 item 7, registration is otherwise a free DB write).
TOO_MANY_SESSIONS = "Too many sessions"


class SessionError(Exception):
    """A session-token authentication failure; ``str()`` is the text sent to the client.

    QEWD's three texts (§2.4) are ``MISSING_AUTHORIZATION``, ``INVALID_TOKEN`` and
    ``SESSION_EXPIRED``; ``TOO_MANY_SESSIONS`` is ours.
    """


class ServerSession(_SessionMapping):
    """A server-side session in session-token mode (§2.1).

    The mapping is the application's data, starting as ``socketId``, ``ipAddress`` and
    ``authenticated: False`` like ewd-session's record; ``token``, ``id``, ``application``,
    ``expiry`` and ``timeout`` are attributes, so handler data can never overwrite them.
    """

    __slots__ = ("_timeout", "application", "expiry", "id", "token")

    def __init__(
        self,
        token: str,
        id: int,
        application: str,
        timeout: float,
        expiry: float,
        socket_id: str | None = None,
        ip_address: str | None = None,
    ) -> None:
        super().__init__(socketId=socket_id, ipAddress=ip_address, authenticated=False)
        self.token = token
        self.id = id
        self.application = application
        self.timeout = timeout
        self.expiry = expiry

    @property
    def timeout(self) -> float:
        """Seconds of inactivity before the session expires; the next authentication slides
        the expiry by this much (§2.4)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = check_timeout(value)

    # The JWT helpers exist so that one handler works in both modes. Server-side data never
    # leaves the server, so everything is already private: there is nothing to make secret.

    def make_secret(self, name: str) -> None:
        """No-op: server-side session data is never sent to the client."""

    def is_secret(self, name: str) -> bool:
        """Always False: there is no encrypted claim in session-token mode."""
        return False

    def make_public(self, name: str) -> None:
        """No-op: see ``make_secret``."""

    makeSecret = make_secret
    isSecret = is_secret
    makePublic = make_public

    def __repr__(self) -> str:
        # The token is a bearer credential: keep it out of logs.
        return f"<ServerSession id={self.id} application={self.application!r} {dict(self)!r}>"


class ISessionStore(Interface):
    """Where session-token mode keeps its sessions (§2.1, §2.4).

    All methods are synchronous and called on the reactor thread. ``len(store)`` is the number
    of sessions held, expired ones not yet collected included.
    """

    def create(
        application: str, timeout: float, socket_id: str | None, ip_address: str | None
    ) -> ServerSession:
        """Create a session with a fresh uuid4 token and ``expiry = now + timeout``.

        Raises SessionError(TOO_MANY_SESSIONS) when the store is full.
        """

    def authenticate(token: str | None) -> ServerSession:
        """Return the session for ``token`` and slide its expiry (``now + timeout``).

        Raises SessionError: ``Missing authorization header`` (no token), ``Invalid token or
        session expired`` (unknown token, or past expiry: the session is deleted; the running
        QEWD.js never sends its ``Session expired``).
        """

    def get(token: str) -> ServerSession | None:
        """The live session for ``token``, or None; does not slide the expiry."""

    def delete(token: str) -> bool:
        """Remove a session; True if it existed."""

    def collect_garbage() -> int:
        """Remove every expired session; return how many were removed."""

    def __len__() -> int:
        """Number of sessions held."""


@implementer(ISessionStore)
class MemorySessionStore:
    """``ISessionStore`` in a dict, for one node. Bounded by ``max_sessions``.

    ``clock`` is an ``IReactorTime`` (a ``twisted.internet.task.Clock`` in tests). Expired
    sessions are removed when touched and by ``collect_garbage``, which the owner calls
    periodically (QEWD.js does it every 60 s per worker, §2.4).
    """

    def __init__(self, clock: IReactorTime, max_sessions: int = 100000) -> None:
        if type(max_sessions) is not int or max_sessions < 1:
            raise ValueError("max_sessions must be a positive integer")
        self._clock = clock
        self.max_sessions = max_sessions
        self._sessions: dict[str, ServerSession] = {}
        self._last_id = 0

    def create(
        self,
        application: str,
        timeout: float,
        socket_id: str | None = None,
        ip_address: str | None = None,
    ) -> ServerSession:
        check_timeout(timeout)
        if len(self._sessions) >= self.max_sessions:
            self.collect_garbage()
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(TOO_MANY_SESSIONS)
        self._last_id += 1
        session = ServerSession(
            str(uuid.uuid4()),
            self._last_id,
            application,
            timeout,
            self._clock.seconds() + timeout,
            socket_id,
            ip_address,
        )
        self._sessions[session.token] = session
        return session

    def authenticate(self, token: str | None) -> ServerSession:
        if not token:
            raise SessionError(MISSING_AUTHORIZATION)
        session = self._sessions.get(token) if isinstance(token, str) else None
        if session is None:
            raise SessionError(INVALID_TOKEN)
        now = self._clock.seconds()
        if now > session.expiry:
            # ewd-session's token lookup treats an expired session as no session, so the
            # running QEWD.js answers this, never its "Session expired" (docs/protocol.md §2.4)
            del self._sessions[token]
            raise SessionError(INVALID_TOKEN)
        session.expiry = now + session.timeout
        return session

    def get(self, token: str) -> ServerSession | None:
        session = self._sessions.get(token) if isinstance(token, str) else None
        if session is not None and self._clock.seconds() > session.expiry:
            del self._sessions[token]
            return None
        return session

    def delete(self, token: str) -> bool:
        return isinstance(token, str) and self._sessions.pop(token, None) is not None

    def collect_garbage(self) -> int:
        now = self._clock.seconds()
        expired = [token for token, s in self._sessions.items() if now > s.expiry]
        for token in expired:
            del self._sessions[token]
        return len(expired)

    def __len__(self) -> int:
        return len(self._sessions)
