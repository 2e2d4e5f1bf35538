# -*- test-case-name: tests.documents.test_store -*-
"""
The global-storage contract every back-end (memory, SQLite, Redis) provides, and its errors.

A back-end stores trees of string values addressed by ``(document name, path)``, where a path
is a tuple of canonical subscripts (collation.py has already checked them). Every method is
synchronous and may block: ``DocumentStore`` calls them from worker threads, never from the
reactor. Imports zope.interface and qewd_twisted.errors.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

from qewd_twisted.errors import ServiceUnavailable

__all__ = [
    "DatabaseUnavailable",
    "DocumentStoreError",
    "IDocumentStore",
    "LockTimeout",
]


class DocumentStoreError(Exception):
    """A document store could not do what was asked (the text says why)."""


class DatabaseUnavailable(DocumentStoreError, ServiceUnavailable):
    """The database cannot be reached now (Redis down, SQLite file unwritable...). A handler
    that lets it through gets a 503 reply (errors.DATABASE_DOWN), not a crash frame."""


class LockTimeout(DocumentStoreError, TimeoutError):
    """``lock(timeout)`` did not get the lock within ``timeout`` seconds."""


class IDocumentStore(Interface):
    """Global storage: M-style sparse trees of string values, shared per back-end."""

    kind = Attribute("'memory', 'sqlite' or 'redis'")
    promises = Attribute(
        "What the back-end guarantees, in words, for docs and errors: "
        "{'atomic_set_document': bool, 'shared': 'process'|'host'|'network', 'durable': bool}")

    def get(name, path):
        """The node's value (a str), or None when it has none."""

    def defined(name, path):
        """M's $DATA: 0 nothing, 1 a value only, 10 children only, 11 both."""

    def set(name, path, value):
        """Set the node's value (a str), creating its ancestors."""

    def set_many(name, path, items):
        """Set several ``(relative path, str value)`` under ``path``: all or none where the
        back-end can promise it (``promises['atomic_set_document']``)."""

    def delete(name, path):
        """Remove the node and its subtree; ancestors left with nothing are removed too."""

    def increment(name, path, by):
        """Add ``by`` to the node's integer value atomically (a missing or non-numeric value
        counts as its leading integer, or 0) and return the new int."""

    def children(name, path, reverse, start, stop, prefix, limit):
        """The child subscripts in collation order (or reversed): ``start`` inclusive and
        ``stop`` exclusive in the direction of travel, ``prefix`` keeps string subscripts
        starting with it, ``limit`` caps the count (None: all)."""

    def next_subscript(name, path, reverse):
        """M's $ORDER: the sibling subscript after (before) the last one of ``path``, or None."""

    def count_children(name, path):
        """How many children the node has."""

    def tree(name, path):
        """The subtree below ``path``: ``{subscript: [value or None, subtree dict or None]}``,
        in collation order at every level."""

    def lock(name, path, timeout):
        """Take the exclusive lock named by the node, waiting up to ``timeout`` seconds.
        Returns a token for ``unlock``; raises LockTimeout."""

    def unlock(name, path, token):
        """Release a lock taken with ``token`` (nothing happens if it is not held by it)."""

    def names():
        """The names of the documents that exist (sorted)."""

    def close():
        """Release connections and files. Idempotent."""
