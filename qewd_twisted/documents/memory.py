# -*- test-case-name: tests.documents.test_store -*-
"""
``MemoryStore``: the in-process back-end (``config["database"]`` omitted).

Trees of ``_Node`` objects (a value and children kept in collation order by their sort keys),
guarded by one lock, so every operation is atomic with respect to the others in this process.
Nothing survives the process and nothing is shared with another one: locks are exclusive
between the threads of one process only. Imports collation and interfaces.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from typing import Any

from zope.interface import implementer

from qewd_twisted.documents.collation import leading_int, prefix_bounds, sort_key
from qewd_twisted.documents.interfaces import IDocumentStore, LockTimeout

__all__ = ["MemoryStore"]


class _Node:
    __slots__ = ("value", "kids", "keys", "subs")

    def __init__(self) -> None:
        self.value: str | None = None
        self.kids: dict[Any, _Node] = {}
        self.keys: list[bytes] = []  # sort keys of the children, sorted
        self.subs: list[Any] = []  # the subscripts, same order as keys

    def child(self, sub: Any, create: bool) -> _Node | None:
        node = self.kids.get(sub)
        if node is None and create:
            node = self.kids[sub] = _Node()
            key = sort_key(sub)
            i = bisect.bisect_left(self.keys, key)
            self.keys.insert(i, key)
            self.subs.insert(i, sub)
        return node

    def remove(self, sub: Any) -> None:
        del self.kids[sub]
        i = bisect.bisect_left(self.keys, sort_key(sub))
        del self.keys[i]
        del self.subs[i]


@implementer(IDocumentStore)
class MemoryStore:
    """Documents in this process's memory."""

    kind = "memory"
    promises = {"atomic_set_document": True, "shared": "process", "durable": False}

    def __init__(self) -> None:
        self._roots: dict[str, _Node] = {}
        self._mutex = threading.RLock()
        self._locks: dict[tuple, str] = {}
        self._lock_changed = threading.Condition(self._mutex)
        self._tokens = itertools.count(1)

    def _find(self, name: str, path: tuple) -> _Node | None:
        node = self._roots.get(name)
        for sub in path:
            if node is None:
                return None
            node = node.kids.get(sub)
        return node

    def _make(self, name: str, path: tuple) -> _Node:
        node = self._roots.get(name)
        if node is None:
            node = self._roots[name] = _Node()
        for sub in path:
            node = node.child(sub, True)  # type: ignore[union-attr]
        return node  # type: ignore[return-value]

    def get(self, name: str, path: tuple) -> str | None:
        with self._mutex:
            node = self._find(name, path)
            return None if node is None else node.value

    def defined(self, name: str, path: tuple) -> int:
        with self._mutex:
            node = self._find(name, path)
            if node is None:
                return 0
            return (1 if node.value is not None else 0) + (10 if node.kids else 0)

    def set(self, name: str, path: tuple, value: str) -> None:
        with self._mutex:
            self._make(name, path).value = value

    def set_many(self, name: str, path: tuple, items: list) -> None:
        with self._mutex:
            base = self._make(name, path) if items else None
            for rel, value in items:
                node = base
                for sub in rel:
                    node = node.child(sub, True)  # type: ignore[union-attr]
                node.value = value  # type: ignore[union-attr]

    def delete(self, name: str, path: tuple) -> None:
        with self._mutex:
            if not path:
                self._roots.pop(name, None)
                return
            chain = [self._roots.get(name)]
            for sub in path[:-1]:
                if chain[-1] is None:
                    return
                chain.append(chain[-1].kids.get(sub))
            parent = chain[-1]
            if parent is None or path[-1] not in parent.kids:
                return
            parent.remove(path[-1])
            # ancestors left with neither value nor children no longer exist
            for depth in range(len(chain) - 1, -1, -1):
                node = chain[depth]
                if node.kids or node.value is not None:  # type: ignore[union-attr]
                    break
                if depth == 0:
                    del self._roots[name]
                else:
                    chain[depth - 1].remove(path[depth - 1])  # type: ignore[union-attr]

    def increment(self, name: str, path: tuple, by: int) -> int:
        with self._mutex:
            node = self._make(name, path)
            n = leading_int(node.value) + by
            node.value = str(n)
            return n

    def children(self, name: str, path: tuple, reverse: bool = False, start: Any = None,
                 stop: Any = None, prefix: str | None = None, limit: int | None = None) -> list:
        with self._mutex:
            node = self._find(name, path)
            if node is None or not node.keys:
                return []
            keys = node.keys
            lo, hi = 0, len(keys)
            if prefix is not None:
                plo, phi = prefix_bounds(prefix)
                lo = max(lo, bisect.bisect_left(keys, plo))
                hi = min(hi, bisect.bisect_left(keys, phi))
            if not reverse:
                if start is not None:
                    lo = max(lo, bisect.bisect_left(keys, sort_key(start)))
                if stop is not None:
                    hi = min(hi, bisect.bisect_left(keys, sort_key(stop)))
                if lo >= hi:
                    return []
                end = hi if limit is None else min(hi, lo + limit)
                return node.subs[lo:end]
            if start is not None:
                hi = min(hi, bisect.bisect_right(keys, sort_key(start)))
            if stop is not None:
                lo = max(lo, bisect.bisect_right(keys, sort_key(stop)))
            if lo >= hi:
                return []
            begin = lo if limit is None else max(lo, hi - limit)
            return node.subs[begin:hi][::-1]

    def next_subscript(self, name: str, path: tuple, reverse: bool = False) -> Any:
        if not path:
            return None
        with self._mutex:
            parent = self._find(name, path[:-1])
            if parent is None:
                return None
            key = sort_key(path[-1])
            if reverse:
                i = bisect.bisect_left(parent.keys, key) - 1
                return parent.subs[i] if i >= 0 else None
            i = bisect.bisect_right(parent.keys, key)
            return parent.subs[i] if i < len(parent.subs) else None

    def count_children(self, name: str, path: tuple) -> int:
        with self._mutex:
            node = self._find(name, path)
            return 0 if node is None else len(node.kids)

    def tree(self, name: str, path: tuple) -> dict:
        def walk(node: _Node) -> dict:
            return {sub: [kid.value, walk(kid) if kid.kids else None]
                    for sub, kid in ((s, node.kids[s]) for s in node.subs)}

        with self._mutex:
            node = self._find(name, path)
            return {} if node is None else walk(node)

    def lock(self, name: str, path: tuple, timeout: float) -> str:
        key = (name, path)
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock_changed:
            while key in self._locks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockTimeout(f"lock on {name}{list(path)} not obtained in {timeout}s")
                self._lock_changed.wait(left)
            token = str(next(self._tokens))
            self._locks[key] = token
            return token

    def unlock(self, name: str, path: tuple, token: str) -> None:
        with self._lock_changed:
            if self._locks.get((name, path)) == token:
                del self._locks[(name, path)]
                self._lock_changed.notify_all()

    def names(self) -> list[str]:
        with self._mutex:
            return sorted(self._roots)

    def close(self) -> None:
        pass
