# -*- test-case-name: tests.documents.test_store -*-
"""
``SQLiteStore``: the embedded back-end, one SQLite file in WAL mode (stdlib ``sqlite3``).

One row per node: ``(doc, parent, k, sub, value)`` where ``parent`` is the parent's path key
and ``k`` the node's own sort key (collation.py), so the primary key ``(doc, parent, k)``
keeps every node's children in M collation order: ``children`` with start/stop/prefix is an
index range, a subtree is the range of parents that start with its path key, and ``value``
is NULL for a node that only has children. A document's root row has parent ``x'ff'`` (no
path key starts with it).

Writes that touch more than one row (a new node's ancestors, ``set_document``, ``delete``,
``increment``) run in one ``BEGIN IMMEDIATE`` transaction: other threads and processes see
all of it or none, and ``increment`` is atomic across processes. ``lock`` is a row in a
``locks`` table, taken in such a transaction; a lock whose holder process has died is taken
over. Each thread gets its own connection. Imports collation and interfaces.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
import uuid
from typing import Any, Callable

from zope.interface import implementer

from qewd_twisted.documents.collation import leading_int, path_key, prefix_bounds, sort_key
from qewd_twisted.documents.interfaces import DatabaseUnavailable, IDocumentStore, LockTimeout

__all__ = ["SQLiteStore"]

ROOT_PARENT = b"\xff"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    doc TEXT NOT NULL,
    parent BLOB NOT NULL,
    k BLOB NOT NULL,
    sub,
    value TEXT,
    PRIMARY KEY (doc, parent, k)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (
    doc TEXT NOT NULL,
    path BLOB NOT NULL,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (doc, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
"""


def _loc(path: tuple) -> tuple[bytes, bytes]:
    """(parent, k) of the row for ``path``."""
    if not path:
        return ROOT_PARENT, b""
    return path_key(path[:-1]), sort_key(path[-1])


def _translated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """sqlite3 errors become DatabaseUnavailable with the file's name in the text."""

    @functools.wraps(fn)
    def wrapper(self: SQLiteStore, *args: Any) -> Any:
        try:
            return fn(self, *args)
        except sqlite3.Error as e:
            raise DatabaseUnavailable(f"SQLite database {self.path}: {e}") from e

    return wrapper


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@implementer(IDocumentStore)
class SQLiteStore:
    """Documents in one SQLite file; safe for many threads and processes on one host."""

    kind = "sqlite"
    promises = {"atomic_set_document": True, "shared": "host", "durable": True}

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        # Fail now, with the file's name, when it cannot be created or written.
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self.close()
            raise DatabaseUnavailable(
                f"SQLite database {path!r} cannot be opened for writing: {e}") from e

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise DatabaseUnavailable(f"SQLite database {self.path}: the store is closed")
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    # -- writes (callers hold a transaction) -------------------------------------------

    @staticmethod
    def _ensure_ancestors(c: sqlite3.Connection, name: str, path: tuple) -> None:
        """Rows for every ancestor of ``path`` that has none (stops at the first that has)."""
        for i in range(len(path) - 1, -1, -1):
            anc = path[:i]
            parent, k = _loc(anc)
            cur = c.execute("INSERT OR IGNORE INTO nodes VALUES (?,?,?,?,NULL)",
                            (name, parent, k, anc[-1] if anc else None))
            if cur.rowcount == 0:
                return

    def _write(self, c: sqlite3.Connection, name: str, path: tuple, value: str) -> None:
        parent, k = _loc(path)
        cur = c.execute("UPDATE nodes SET value=? WHERE doc=? AND parent=? AND k=?",
                        (value, name, parent, k))
        if cur.rowcount == 0:
            c.execute("INSERT INTO nodes VALUES (?,?,?,?,?)",
                      (name, parent, k, path[-1] if path else None, value))
            self._ensure_ancestors(c, name, path)

    def _transaction(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            result = body(c)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        return result

    # -- IDocumentStore ----------------------------------------------------------------

    @_translated
    def get(self, name: str, path: tuple) -> str | None:
        parent, k = _loc(path)
        row = self._conn().execute(
            "SELECT value FROM nodes WHERE doc=? AND parent=? AND k=?", (name, parent, k)
        ).fetchone()
        return None if row is None else row[0]

    @_translated
    def defined(self, name: str, path: tuple) -> int:
        parent, k = _loc(path)
        has_value, has_kids = self._conn().execute(
            "SELECT (SELECT value IS NOT NULL FROM nodes WHERE doc=?1 AND parent=?2 AND k=?3),"
            " EXISTS (SELECT 1 FROM nodes WHERE doc=?1 AND parent=?4)",
            (name, parent, k, path_key(path))).fetchone()
        return (1 if has_value else 0) + (10 if has_kids else 0)

    @_translated
    def set(self, name: str, path: tuple, value: str) -> None:
        parent, k = _loc(path)
        c = self._conn()
        # The common case, an existing node, is one statement (its own transaction).
        if c.execute("UPDATE nodes SET value=? WHERE doc=? AND parent=? AND k=?",
                     (value, name, parent, k)).rowcount:
            return
        self._transaction(lambda c: self._write(c, name, path, value))

    @_translated
    def set_many(self, name: str, path: tuple, items: list) -> None:
        leaves = []
        inner: dict[tuple, None] = {}
        for rel, value in items:
            full = path + rel
            parent, k = _loc(full)
            leaves.append((name, parent, k, full[-1] if full else None, value))
            for i in range(len(path) + 1, len(full)):
                inner[full[:i]] = None
        rows = [(name, *_loc(p), p[-1]) for p in inner]

        def body(c: sqlite3.Connection) -> None:
            parent, k = _loc(path)
            if c.execute("INSERT OR IGNORE INTO nodes VALUES (?,?,?,?,NULL)",
                         (name, parent, k, path[-1] if path else None)).rowcount:
                self._ensure_ancestors(c, name, path)
            c.executemany("INSERT OR IGNORE INTO nodes VALUES (?,?,?,?,NULL)", rows)
            c.executemany("INSERT INTO nodes VALUES (?,?,?,?,?) ON CONFLICT (doc, parent, k)"
                          " DO UPDATE SET value=excluded.value", leaves)

        self._transaction(body)

    @_translated
    def delete(self, name: str, path: tuple) -> None:
        def body(c: sqlite3.Connection) -> None:
            if not path:
                c.execute("DELETE FROM nodes WHERE doc=?", (name,))
                return
            parent, k = _loc(path)
            pk = parent + k
            c.execute("DELETE FROM nodes WHERE doc=? AND parent=? AND k=?", (name, parent, k))
            c.execute("DELETE FROM nodes WHERE doc=? AND parent>=? AND parent<?",
                      (name, pk, pk + b"\xff"))
            # ancestors left with neither value nor children no longer exist
            for i in range(len(path) - 1, -1, -1):
                anc = path[:i]
                ap, ak = _loc(anc)
                cur = c.execute(
                    "DELETE FROM nodes WHERE doc=?1 AND parent=?2 AND k=?3 AND value IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM nodes WHERE doc=?1 AND parent=?4)",
                    (name, ap, ak, path_key(anc)))
                if cur.rowcount == 0:
                    break

        self._transaction(body)

    @_translated
    def increment(self, name: str, path: tuple, by: int) -> int:
        parent, k = _loc(path)

        def body(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT value FROM nodes WHERE doc=? AND parent=? AND k=?",
                            (name, parent, k)).fetchone()
            n = leading_int(row[0] if row else None) + by
            self._write(c, name, path, str(n))
            return n

        return self._transaction(body)

    @_translated
    def children(self, name: str, path: tuple, reverse: bool = False, start: Any = None,
                 stop: Any = None, prefix: str | None = None,
                 limit: int | None = None) -> list:
        sql = ["SELECT sub FROM nodes WHERE doc=? AND parent=?"]
        args: list[Any] = [name, path_key(path)]
        if prefix is not None:
            lo, hi = prefix_bounds(prefix)
            sql.append("AND k>=? AND k<?")
            args += [lo, hi]
        if start is not None:
            sql.append("AND k<=?" if reverse else "AND k>=?")
            args.append(sort_key(start))
        if stop is not None:
            sql.append("AND k>?" if reverse else "AND k<?")
            args.append(sort_key(stop))
        sql.append("ORDER BY k DESC" if reverse else "ORDER BY k")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(limit)
        return [r[0] for r in self._conn().execute(" ".join(sql), args)]

    @_translated
    def next_subscript(self, name: str, path: tuple, reverse: bool = False) -> Any:
        if not path:
            return None
        parent, k = _loc(path)
        sql = ("SELECT sub FROM nodes WHERE doc=? AND parent=? AND k<? ORDER BY k DESC LIMIT 1"
               if reverse else
               "SELECT sub FROM nodes WHERE doc=? AND parent=? AND k>? ORDER BY k LIMIT 1")
        row = self._conn().execute(sql, (name, parent, k)).fetchone()
        return None if row is None else row[0]

    @_translated
    def count_children(self, name: str, path: tuple) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM nodes WHERE doc=? AND parent=?",
                                    (name, path_key(path))).fetchone()[0]

    @_translated
    def tree(self, name: str, path: tuple) -> dict:
        pk = path_key(path)
        top: dict = {}
        entries: dict[bytes, list] = {}
        rows = self._conn().execute(
            "SELECT parent, k, sub, value FROM nodes WHERE doc=? AND parent>=? AND parent<?"
            " ORDER BY parent, k", (name, pk, pk + b"\xff"))
        for parent, k, sub, value in rows:
            if parent == pk:
                container = top
            else:
                owner = entries.get(parent)
                if owner is None:  # an orphan (cannot happen in a consistent file)
                    continue
                container = owner[1]
                if container is None:
                    container = owner[1] = {}
            entry = container[sub] = [value, None]
            entries[parent + k] = entry
        return top

    @_translated
    def lock(self, name: str, path: tuple, timeout: float) -> str:
        key = path_key(path)
        token = uuid.uuid4().hex
        pid = os.getpid()
        deadline = time.monotonic() + timeout
        delay = 0.001

        def attempt(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT pid FROM locks WHERE doc=? AND path=?", (name, key)).fetchone()
            if row is not None and _pid_alive(row[0]):
                return False
            c.execute("INSERT OR REPLACE INTO locks VALUES (?,?,?,?)", (name, key, token, pid))
            return True

        while not self._transaction(attempt):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(f"lock on {name}{list(path)} not obtained in {timeout}s")
            time.sleep(min(delay, left))  # no notification across processes: back off
            delay = min(delay * 2, 0.05)
        return token

    @_translated
    def unlock(self, name: str, path: tuple, token: str) -> None:
        self._conn().execute("DELETE FROM locks WHERE doc=? AND path=? AND token=?",
                             (name, path_key(path), token))

    @_translated
    def names(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT doc FROM nodes ORDER BY doc")]

    def close(self) -> None:
        self._closed = True
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
