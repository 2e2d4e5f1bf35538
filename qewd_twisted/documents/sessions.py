# -*- test-case-name: tests.documents.test_sessions -*-
"""
Session-token mode sessions kept in a document store, in ewd-session's layout, so every node
(Python or QEWD.js) sharing the database serves the same sessions (docs/protocol.md §2.1, §2.4).

Under the document ``sessionDocumentName`` (QEWD's default ``CacheTempEWDSession``):

* ``["sessionNo"]``: the last session id (incremented atomically);
* ``["session", id, "ewd-session"]``: ``token``, ``id``, ``timeout``, ``expiry`` (whole
  seconds), ``application``, ``authenticated``, ``socketId``, ``ipAddress``;
* ``["session", id, name]``: the application's session data (``session[name]``);
* ``["sessionsByToken", token]``: the session id.

``DocumentSessionStore`` has ``MemorySessionStore``'s methods, but each returns a Deferred:
the database work runs in the document store's thread pool, never on the reactor (the node
accepts either kind of store). A handler's ``session`` is a ``DocumentSession``: its items are
the session data, written through to the database as they are assigned, and ``session.data``
is the session's DocumentNode (QEWD's ``session.data``). Imports auth.sessions and the
documents package.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import threadable
from zope.interface import Interface, implementer

from qewd_twisted.auth.sessions import (
    INVALID_TOKEN,
    MISSING_AUTHORIZATION,
    TOO_MANY_SESSIONS,
    ServerSession,
    SessionError,
    check_timeout,
)
from qewd_twisted.documents.node import DocumentNode

__all__ = ["DEFAULT_SESSION_DOCUMENT", "DocumentSession", "DocumentSessionStore",
           "IDeferredSessionStore"]

log = Logger()

#: QEWD's default ``sessionDocumentName`` (qewd/lib/master.js).
DEFAULT_SESSION_DOCUMENT = "CacheTempEWDSession"
# items of the handler's mapping that live in the "ewd-session" record, not in the data
_RECORD_ITEMS = ("socketId", "ipAddress", "authenticated")


class IDeferredSessionStore(Interface):
    """``ISessionStore`` with every method returning a Deferred (the store waits on a
    database). The node treats a Deferred result from any session-store call this way."""

    def create(application, timeout, socket_id, ip_address):
        """Deferred[ServerSession]; fails with SessionError(TOO_MANY_SESSIONS)."""

    def authenticate(token):
        """Deferred[ServerSession] with its expiry slid; fails with SessionError."""

    def get(token):
        """Deferred[ServerSession | None], the expiry unchanged."""

    def delete(token):
        """Deferred[bool]."""

    def collect_garbage():
        """Deferred[int]: how many expired sessions were removed."""


class DocumentSession(ServerSession):
    """A session-token session backed by its document (``data``).

    Assigning or deleting an item writes it to the database at once: from a worker thread
    directly, from the reactor thread through the store's pool (in order; ``flushed()`` fires
    when those writes are done).
    """

    __slots__ = ("data", "_run", "_pending", "_loading")

    def __init__(self, data: DocumentNode, run: Callable[..., Any], **kw: Any) -> None:
        object.__setattr__(self, "_loading", True)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_pending", None)
        super().__init__(**kw)

    def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loading:
            return
        if not threadable.isInIOThread():
            fn(*args)
            return
        pending = self._pending
        d = self._run(fn, *args) if pending is None else pending.addCallback(
            lambda _: self._run(fn, *args))

        def failed(f: Any) -> None:
            log.failure("writing session {id} failed", f, id=self.id)

        d.addErrback(failed)
        object.__setattr__(self, "_pending", d)

    def flushed(self) -> defer.Deferred[None]:
        """Fires once the writes made from the reactor thread so far are done."""
        pending = self._pending
        if pending is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        pending.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _node(self, name: str) -> DocumentNode:
        if name in _RECORD_ITEMS:
            return self.data.use("ewd-session", name)
        return self.data.use(name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name == "ewd-session":
            raise KeyError("'ewd-session' is the session's own record")
        node = self._node(name)  # checks the name as a subscript, in the handler
        super().__setitem__(name, value)
        if isinstance(value, (dict, list, tuple)):
            def store(node: DocumentNode = node, value: Any = value) -> None:
                node.delete()
                node.set_document(value)
            self._write(store)
        else:
            self._write(setattr, node, "value", value)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._write(self._node(name).delete)

    def pop(self, name: str, *default: Any) -> Any:
        if name in self:
            value = self[name]
            del self[name]
            return value
        return super().pop(name, *default)

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kw).items():
            self[k] = v

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = check_timeout(value)
        self._write(setattr, self.data.use("ewd-session", "timeout"), "value", value)


@implementer(IDeferredSessionStore)
class DocumentSessionStore:
    """Session-token sessions in ``store`` (a DocumentStore) under ``document_name``.

    ``clock`` gives the time (a Clock in tests); ``run`` runs a blocking call and returns a
    Deferred (default: the store's pool; tests may pass ``defer.maybeDeferred``).
    """

    def __init__(self, store: Any, clock: IReactorTime,
                 document_name: str = DEFAULT_SESSION_DOCUMENT, max_sessions: int = 100000,
                 run: Callable[..., Any] | None = None) -> None:
        self.store = store
        self._clock = clock
        self.document_name = document_name
        self.max_sessions = max_sessions
        self._run = run or store.run
        self._doc = store.use(document_name)
        self._count = 0

    def _session(self, sid: int, record: dict, data: dict) -> DocumentSession:
        session = DocumentSession(
            self._doc.use("session", sid), self._run,
            token=str(record.get("token", "")), id=sid,
            application=str(record.get("application", "")),
            timeout=record.get("timeout") if isinstance(record.get("timeout"), int)
            and record.get("timeout") > 0 else 300,
            expiry=float(record.get("expiry") or 0),
            socket_id=record.get("socketId") or None, ip_address=record.get("ipAddress") or None)
        dict.__setitem__(session, "authenticated", record.get("authenticated") is True)
        for name, value in data.items():
            dict.__setitem__(session, name, value)
        object.__setattr__(session, "_loading", False)
        return session

    # -- blocking halves (pool threads) ------------------------------------------------

    def _create(self, application: str, timeout: float, socket_id: str | None,
                ip_address: str | None, now: float) -> DocumentSession:
        timeout = math.ceil(timeout)  # ewd-session keeps whole seconds
        sessions = self._doc.use("session")
        if sessions.count_children() >= self.max_sessions:
            self._collect(now)
            if sessions.count_children() >= self.max_sessions:
                raise SessionError(TOO_MANY_SESSIONS)
        sid = self._doc.use("sessionNo").increment()
        token = str(uuid.uuid4())
        record = {"token": token, "id": sid, "timeout": timeout,
                  "expiry": math.floor(now) + timeout, "application": application,
                  "authenticated": False, "socketId": socket_id or "",
                  "ipAddress": ip_address or ""}
        node = sessions.use(sid)
        node.delete()
        node.set_document({"ewd-session": record})
        self._doc.use("sessionsByToken", token).value = sid
        self._count += 1
        return self._session(sid, record, {})

    def _load(self, token: Any, now: float, slide: bool) -> DocumentSession:
        if not token:
            raise SessionError(MISSING_AUTHORIZATION)
        if not isinstance(token, str) or "\x01" in token:
            raise SessionError(INVALID_TOKEN)
        index = self._doc.use("sessionsByToken", token)
        sid = index.value
        if sid == "" or type(sid) is not int:
            raise SessionError(INVALID_TOKEN)
        node = self._doc.use("session", sid)
        document = node.get_document(True)
        if not isinstance(document, dict):  # subscripts 0..n-1 only: no ewd-session record
            raise SessionError(INVALID_TOKEN)
        record = document.pop("ewd-session", None)
        if not isinstance(record, dict) or record.get("token") != token:
            raise SessionError(INVALID_TOKEN)
        expiry = record.get("expiry")
        if not isinstance(expiry, int) or now > expiry:
            node.delete()
            index.delete()
            # ewd-session's token lookup takes an expired session for none: the running
            # QEWD.js answers this, never "Session expired" (docs/protocol.md §2.4)
            raise SessionError(INVALID_TOKEN)
        if slide:
            timeout = record.get("timeout")
            if isinstance(timeout, int) and timeout > 0:
                record["expiry"] = math.floor(now) + timeout
                node.use("ewd-session", "expiry").value = record["expiry"]
        return self._session(sid, record, document)

    def _delete(self, token: Any) -> bool:
        if not isinstance(token, str) or not token or "\x01" in token:
            return False
        index = self._doc.use("sessionsByToken", token)
        sid = index.value
        index.delete()
        if type(sid) is not int:
            return False
        node = self._doc.use("session", sid)
        existed = node.exists
        node.delete()
        return existed

    def _collect(self, now: float) -> int:
        removed = 0
        sessions = self._doc.use("session")
        with sessions.lock(10):  # the lock QEWD.js's collector takes too
            for node in sessions.children():
                expiry = node.use("ewd-session", "expiry").value
                if not isinstance(expiry, int) or now > expiry:
                    node.delete()
                    removed += 1
            for entry in self._doc.use("sessionsByToken").children():
                sid = entry.value
                if type(sid) is not int or not sessions.use(sid).exists:
                    entry.delete()
            self._count = sessions.count_children()
        return removed

    # -- the store's interface (reactor thread) ----------------------------------------

    def create(self, application: str, timeout: float, socket_id: str | None = None,
               ip_address: str | None = None) -> defer.Deferred[DocumentSession]:
        check_timeout(timeout)
        return self._run(self._create, application, timeout, socket_id, ip_address,
                         self._clock.seconds())

    def authenticate(self, token: str | None) -> defer.Deferred[DocumentSession]:
        return self._run(self._load, token, self._clock.seconds(), True)

    def get(self, token: str) -> defer.Deferred[DocumentSession | None]:
        d = self._run(self._load, token, self._clock.seconds(), False)
        d.addErrback(lambda f: f.trap(SessionError) and None)
        return d

    def delete(self, token: str) -> defer.Deferred[bool]:
        return self._run(self._delete, token)

    def collect_garbage(self) -> defer.Deferred[int]:
        return self._run(self._collect, self._clock.seconds())

    def sweep(self) -> defer.Deferred[None]:
        """``collect_garbage`` for a timer: failures (database down...) are logged, so the
        periodic sweep goes on."""
        d = self.collect_garbage()

        def done(n: int) -> None:
            if n:
                log.info("{n} expired session(s) removed", n=n)

        def failed(f: Any) -> None:
            log.warn("session sweep failed: {error}", error=f.getErrorMessage())

        d.addCallbacks(done, failed)
        return d

    def __len__(self) -> int:
        """Sessions counted at the last sweep (the database is not asked on the reactor)."""
        return self._count
