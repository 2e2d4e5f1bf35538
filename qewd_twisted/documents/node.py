# -*- test-case-name: tests.documents.test_store -*-
"""
``DocumentNode``: one node of a persistent JSON document, QEWD's DocumentNode with Python names.

A DocumentNode is an address (document name + path of canonical subscripts) and the back-end
that holds it; it caches nothing, so every property reads the database when used. Every
method blocks on the database: call it from a sync handler (worker thread), or through
``DocumentStore.run`` from an ``async def`` handler (docs/documents.md). Imports collation and
interfaces.
"""

from __future__ import annotations

from typing import Any, Iterator

from qewd_twisted.documents.collation import (
    check_subscript,
    check_subscripts,
    convert,
    to_stored,
)

__all__ = ["DocumentLock", "DocumentNode"]


class DocumentLock:
    """A lock held on a node (``DocumentNode.lock``): a context manager, or ``release()``."""

    __slots__ = ("_backend", "_name", "_path", "_token")

    def __init__(self, backend: Any, name: str, path: tuple, token: str) -> None:
        self._backend, self._name, self._path, self._token = backend, name, path, token

    @property
    def held(self) -> bool:
        return self._token is not None

    def release(self) -> None:
        """Release the lock (again: nothing happens)."""
        token, self._token = self._token, None
        if token is not None:
            self._backend.unlock(self._name, self._path, token)

    def __enter__(self) -> DocumentLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _flatten(obj: Any, prefix: tuple, out: list) -> None:
    """``(relative path, stored value)`` for every scalar in ``obj``; checks everything first."""
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        raise TypeError(f"set_document() takes a dict or a list, not {type(obj).__name__}")
    for key, value in items:
        path = prefix + (check_subscript(key),)
        if isinstance(value, (dict, list, tuple)):
            _flatten(value, path, out)
        else:
            out.append((path, to_stored(value)))


def _build(tree: dict, use_arrays: bool) -> Any:
    if use_arrays and tree and all(type(s) is int for s in tree) and list(tree) == list(range(len(tree))):
        return [convert(v) if sub is None else _build(sub, True) for v, sub in tree.values()]
    return {str(s): (convert(v) if sub is None else _build(sub, use_arrays))
            for s, (v, sub) in tree.items()}


_new = object.__new__


class DocumentNode:
    """A node of document ``document_name`` at ``path`` (a tuple of subscripts)."""

    __slots__ = ("_store", "_backend", "document_name", "path")

    def __init__(self, store: Any, document_name: str, path: tuple = ()) -> None:
        # ``path`` must already be canonical: use DocumentStore.use / DocumentNode.use.
        self._store = store
        self._backend = store.backend
        self.document_name = document_name
        self.path = path

    # -- identity ----------------------------------------------------------------------

    @property
    def name(self) -> Any:
        """The last subscript, or the document's name for its root (QEWD's ``name``)."""
        return self.path[-1] if self.path else self.document_name

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DocumentNode) and other._backend is self._backend
                and other.document_name == self.document_name and other.path == self.path)

    def __hash__(self) -> int:
        return hash((self.document_name, self.path))

    def __repr__(self) -> str:
        return f"<DocumentNode {self.document_name}{list(self.path)!r}>"

    # -- navigation ----------------------------------------------------------------------

    def use(self, *subscripts: Any) -> DocumentNode:
        """The descendant at ``subscripts`` below this node (QEWD's ``$``)."""
        if len(subscripts) == 1 and isinstance(subscripts[0], list):
            subscripts = tuple(subscripts[0])
        return DocumentNode(self._store, self.document_name,
                            self.path + check_subscripts(subscripts))

    def _at(self, path: tuple) -> DocumentNode:
        return DocumentNode(self._store, self.document_name, path)

    @property
    def parent(self) -> DocumentNode | None:
        """The parent node; None for a document's root."""
        return self._at(self.path[:-1]) if self.path else None

    def _one_child(self, reverse: bool) -> DocumentNode | None:
        subs = self._backend.children(self.document_name, self.path, reverse, None, None, None, 1)
        return self._at(self.path + (subs[0],)) if subs else None

    @property
    def first_child(self) -> DocumentNode | None:
        """The first child in collation order; None when there is none."""
        return self._one_child(False)

    @property
    def last_child(self) -> DocumentNode | None:
        """The last child in collation order; None when there is none."""
        return self._one_child(True)

    def _sibling(self, reverse: bool) -> DocumentNode | None:
        if not self.path:
            return None
        sub = self._backend.next_subscript(self.document_name, self.path, reverse)
        return None if sub is None else self._at(self.path[:-1] + (sub,))

    @property
    def next_sibling(self) -> DocumentNode | None:
        """The next sibling in collation order (this node need not exist); None past the end."""
        return self._sibling(False)

    @property
    def previous_sibling(self) -> DocumentNode | None:
        """The previous sibling in collation order; None before the first."""
        return self._sibling(True)

    def children(self, reverse: bool = False, start: Any = None, stop: Any = None,
                 prefix: str | None = None) -> list[DocumentNode]:
        """The child nodes in collation order (``reverse``: backwards). ``start`` is inclusive,
        ``stop`` exclusive, both in the direction of travel; ``prefix`` keeps the string
        subscripts that start with it (integer subscripts never match a prefix)."""
        if start is not None:
            start = check_subscript(start)
        if stop is not None:
            stop = check_subscript(stop)
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        subs = self._backend.children(self.document_name, self.path, bool(reverse), start,
                                      stop, prefix or None, None)
        return self._many(subs)

    def _many(self, subs: list) -> list[DocumentNode]:
        """Child nodes for ``subs``, made without __init__ (children() of big nodes)."""
        base, store, backend, name = self.path, self._store, self._backend, self.document_name
        new = _new
        out = []
        for s in subs:
            node = new(DocumentNode)
            node._store = store
            node._backend = backend
            node.document_name = name
            node.path = base + (s,)
            out.append(node)
        return out

    def __iter__(self) -> Iterator[DocumentNode]:
        return iter(self.children())

    def count_children(self) -> int:
        """How many children the node has."""
        return self._backend.count_children(self.document_name, self.path)

    def leaves(self) -> list[DocumentNode]:
        """Every node with a value in this subtree (this one included), depth first in
        collation order (QEWD's forEachLeafNode)."""
        out: list[DocumentNode] = []
        if self._backend.get(self.document_name, self.path) is not None:
            out.append(self)

        def walk(tree: dict, path: tuple) -> None:
            for sub, (value, kids) in tree.items():
                p = path + (sub,)
                if value is not None:
                    out.append(self._at(p))
                if kids:
                    walk(kids, p)

        walk(self._backend.tree(self.document_name, self.path), self.path)
        return out

    # -- state ---------------------------------------------------------------------------

    @property
    def value(self) -> Any:
        """The value, with QEWD's conversions ("true"/"false" to bool, safe-integer strings to
        int); ``""`` when the node has none. Assigning stores str/int/float/bool/None."""
        return convert(self._backend.get(self.document_name, self.path))

    @value.setter
    def value(self, value: Any) -> None:
        self._backend.set(self.document_name, self.path, to_stored(value))

    @property
    def exists(self) -> bool:
        """Whether the node has a value or children."""
        return self._backend.defined(self.document_name, self.path) != 0

    @property
    def has_value(self) -> bool:
        return self._backend.defined(self.document_name, self.path) in (1, 11)

    @property
    def has_children(self) -> bool:
        return self._backend.defined(self.document_name, self.path) >= 10

    @property
    def defined(self) -> int:
        """M's $DATA: 0, 1 (value), 10 (children) or 11 (both)."""
        return self._backend.defined(self.document_name, self.path)

    def delete(self) -> None:
        """Remove this node and everything below it."""
        self._backend.delete(self.document_name, self.path)

    def increment(self, by: int = 1) -> int:
        """Add ``by`` to the node's integer value atomically; return the new value."""
        if type(by) is not int:
            if isinstance(by, bool) or not isinstance(by, int):
                raise TypeError("increment(by) takes an int")
            by = int(by)
        return self._backend.increment(self.document_name, self.path, by)

    # -- documents -----------------------------------------------------------------------

    def get_document(self, use_arrays: bool = False) -> Any:
        """The subtree as JSON-like data: a dict (keys are strings), or with ``use_arrays``
        a list wherever the subscripts are exactly 0..n-1. A node with both a value and
        children shows its children (as QEWD). ``{}`` when there is nothing."""
        return _build(self._backend.tree(self.document_name, self.path), bool(use_arrays))

    def set_document(self, obj: Any) -> None:
        """Merge ``obj`` (a dict or list) into this subtree: lists become subscripts 0..n-1,
        None becomes "". Every key and value is checked before anything is written."""
        items: list = []
        _flatten(obj, (), items)
        if items:
            self._backend.set_many(self.document_name, self.path, items)

    def lock(self, timeout: float = 30) -> DocumentLock:
        """Take the lock named by this node, waiting up to ``timeout`` seconds (LockTimeout
        otherwise). Use as ``with node.lock(5): ...``."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError("lock(timeout) takes a number of seconds >= 0")
        token = self._backend.lock(self.document_name, self.path, float(timeout))
        return DocumentLock(self._backend, self.document_name, self.path, token)

    # QEWD's names, for ported code
    getDocument = get_document
    setDocument = set_document
    countChildren = count_children
    hasValue = has_value
    hasChildren = has_children
    firstChild = first_child
    lastChild = last_child
    nextSibling = next_sibling
    previousSibling = previous_sibling
