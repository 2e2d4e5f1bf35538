# -*- test-case-name: tests.documents -*-
"""
Documents: QEWD's persistent JSON store (ewd-document-store) for handlers and sessions.

``q.db.use(name, *subscripts)`` gives a ``DocumentNode``; ``config["database"]`` picks the
back-end: in memory (default), SQLite (one embedded file), or Redis in ewd-redis-globals' key
layout (shared with QEWD.js nodes). docs/documents.md is the guide.
"""

from qewd_twisted.documents.interfaces import (
    DatabaseUnavailable,
    DocumentStoreError,
    IDocumentStore,
    LockTimeout,
)
from qewd_twisted.documents.node import DocumentLock, DocumentNode
from qewd_twisted.documents.store import DocumentStore, open_backend

__all__ = [
    "DatabaseUnavailable",
    "DocumentLock",
    "DocumentNode",
    "DocumentStore",
    "DocumentStoreError",
    "IDocumentStore",
    "LockTimeout",
    "open_backend",
]
