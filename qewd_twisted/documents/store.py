# -*- test-case-name: tests.documents.test_store -*-
"""
``DocumentStore`` (what handlers get as ``q.db``) and ``open_backend`` (``config["database"]``
to a back-end).

``DocumentStore.use(name, *subscripts)`` gives DocumentNodes; ``DocumentStore.run(fn, ...)``
runs blocking document code in the store's own small thread pool and returns a Deferred, the
way for ``async def`` handlers and reactor code to use documents without blocking the reactor.
Imports the back-ends lazily (redis-py is an optional extra).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface.verify import verifyObject

from qewd_twisted.documents.collation import check_document_name, check_subscripts
from qewd_twisted.documents.interfaces import IDocumentStore
from qewd_twisted.documents.node import DocumentNode

__all__ = ["DocumentStore", "open_backend"]


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    t = threading.Thread(*args, **kwargs)
    t.daemon = True
    return t


def open_backend(database: dict | None) -> Any:
    """The back-end for a (validated) ``config["database"]``: None is in memory."""
    if not database:
        from qewd_twisted.documents.memory import MemoryStore
        return MemoryStore()
    kind = database.get("type")
    params = database.get("params") or {}
    if kind == "memory":
        from qewd_twisted.documents.memory import MemoryStore
        return MemoryStore()
    if kind == "sqlite":
        from qewd_twisted.documents.sqlite import SQLiteStore
        return SQLiteStore(params.get("path", "qewd.sqlite"),
                           busy_timeout=params.get("busyTimeout", 5.0))
    if kind == "redis":
        from qewd_twisted.documents.redis import RedisStore
        return RedisStore(host=params.get("host", "127.0.0.1"), port=params.get("port", 6379),
                          password=params.get("password"), db=params.get("db", 0),
                          timeout=params.get("timeout", 5.0))
    raise ValueError(f"unknown database type {kind!r}")


class DocumentStore:
    """QEWD's document store (``this.documentStore`` / ``q.db``) over one back-end.

    ``reactor`` and ``threads`` matter only for ``run``: its pool starts on first use and stops
    in ``close``.
    """

    def __init__(self, backend: Any, reactor: Any = None, threads: int = 4) -> None:
        verifyObject(IDocumentStore, backend)
        self.backend = backend
        self._reactor = reactor
        self._threads = threads
        self._pool: ThreadPool | None = None

    @property
    def kind(self) -> str:
        return self.backend.kind

    def use(self, name: str, *subscripts: Any) -> DocumentNode:
        """The node ``name[subscripts...]`` (the document's root without subscripts).

        ``use("person", 1, "name")``; a single list is taken as the subscripts, as QEWD does.
        """
        if len(subscripts) == 1 and isinstance(subscripts[0], list):
            subscripts = tuple(subscripts[0])
        return DocumentNode(self, check_document_name(name), check_subscripts(subscripts))

    def names(self) -> list[str]:
        """The names of the documents that exist (QEWD's ``list()``)."""
        return self.backend.names()

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the store's thread pool; a Deferred of its result.

        From an ``async def`` handler: ``n = await q.db.run(lambda: q.db.use("c").increment())``.
        Must be called on the reactor thread.
        """
        if self._reactor is None:
            raise RuntimeError("this DocumentStore was made without a reactor: run() needs one")
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self._threads, name="qewd-db")
            self._pool.threadFactory = _daemon_thread
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)

    def close(self) -> None:
        """Stop the pool (waiting for its running calls) and close the back-end."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        self.backend.close()

    def __repr__(self) -> str:
        return f"<DocumentStore {self.backend.kind}>"
