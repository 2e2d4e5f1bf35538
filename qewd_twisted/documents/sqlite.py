# -*- test-case-name: tests.documents.test_store -*-
"""
``SQLiteStore``: the embedded back-end, one SQLite file in WAL mode (stdlib ``sqlite3``).

One row per node: ``(key, parent, sub, value)``. ``key`` is the document name's sort key
followed by the path's (collation.py), so key order is M collation, depth first: a node's
subtree is the key range ``[key, key || x'ff')``, and the index on ``(parent, key, sub)``
lists a node's children in collation order (``children`` with start/stop/prefix is an index
range). ``value`` is NULL for a node that only has children; a document's root row has
parent ``x''`` and the document's name as ``sub``. A get or an update of an existing node is
one statement with one key.

Writes that touch more than one row (a new node's ancestors, ``set_document``, ``delete``)
run in one ``BEGIN IMMEDIATE`` transaction: other threads and processes see all of it or
none. ``increment`` of an existing node is one atomic ``UPDATE ... RETURNING``. ``lock`` is a row in a
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

SCHEMA_VERSION = 2
_KEY_CACHE = 4096  # node keys remembered per store (their encoding is the costly part)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    key BLOB PRIMARY KEY,
    parent BLOB NOT NULL,
    sub,
    value TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nodes_children ON nodes (parent, key, sub);
CREATE TABLE IF NOT EXISTS locks (
    key BLOB PRIMARY KEY,
    token TEXT NOT NULL,
    pid INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
"""


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
        self._keys: dict[tuple, bytes] = {}
        # Fail now, with the file's name, when it cannot be created or written.
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is not None and row[0] != SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise sqlite3.DatabaseError(
                    f"its documents are in layout {row[0]}, this version reads {SCHEMA_VERSION}")
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
            # the cursor ``get`` reuses; it reads with fetchall, which steps the statement to
            # its end, so no statement is left open (no read transaction held between calls)
            self._local.cursor = conn.cursor()
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    # -- keys ----------------------------------------------------------------------------

    def _key(self, name: str, path: tuple) -> bytes:
        """The node's key: the document's sort key, then the path's (collation.py)."""
        cache = self._keys
        key = cache.get((name, path))
        if key is None:
            if len(cache) >= _KEY_CACHE:
                cache.clear()
            key = cache[(name, path)] = sort_key(name) + path_key(path)
        return key

    # -- writes (callers hold a transaction) -------------------------------------------

    def _ensure_ancestors(self, c: sqlite3.Connection, name: str, path: tuple) -> None:
        """Rows for every ancestor of ``path`` that has none (stops at the first that has)."""
        for i in range(len(path) - 1, -1, -1):
            anc = path[:i]
            cur = c.execute("INSERT OR IGNORE INTO nodes VALUES (?,?,?,NULL)",
                            (self._key(name, anc), self._key(name, anc[:-1]) if anc else b"",
                             anc[-1] if anc else name))
            if cur.rowcount == 0:
                return

    def _insert(self, c: sqlite3.Connection, name: str, path: tuple, key: bytes,
                value: str) -> None:
        c.execute("INSERT INTO nodes VALUES (?,?,?,?)",
                  (key, self._key(name, path[:-1]) if path else b"",
                   path[-1] if path else name, value))
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

    # get, set and increment are the hot calls: the key and this thread's connection are
    # looked up inline (no method calls) before the one statement.

    def get(self, name: str, path: tuple) -> str | None:
        key = self._keys.get((name, path)) or self._key(name, path)
        try:
            cursor = self._local.cursor
        except AttributeError:
            self._conn()
            cursor = self._local.cursor
        try:
            rows = cursor.execute("SELECT value FROM nodes WHERE key=?", (key,)).fetchall()
        except sqlite3.Error as e:
            raise DatabaseUnavailable(f"SQLite database {self.path}: {e}") from e
        return rows[0][0] if rows else None

    @_translated
    def defined(self, name: str, path: tuple) -> int:
        has_value, has_kids = self._conn().execute(
            "SELECT (SELECT value IS NOT NULL FROM nodes WHERE key=?1),"
            " EXISTS (SELECT 1 FROM nodes WHERE parent=?1)", (self._key(name, path),)).fetchone()
        return (1 if has_value else 0) + (10 if has_kids else 0)

    def set(self, name: str, path: tuple, value: str) -> None:
        key = self._keys.get((name, path)) or self._key(name, path)
        try:
            try:
                c = self._local.conn
            except AttributeError:
                c = self._conn()
            # The common case, an existing node, is one statement (its own transaction).
            if c.execute("UPDATE nodes SET value=? WHERE key=?", (value, key)).rowcount:
                return

            def body(c: sqlite3.Connection) -> None:
                if not c.execute("UPDATE nodes SET value=? WHERE key=?", (value, key)).rowcount:
                    self._insert(c, name, path, key, value)

            self._transaction(body)
        except sqlite3.Error as e:
            raise DatabaseUnavailable(f"SQLite database {self.path}: {e}") from e

    @_translated
    def set_many(self, name: str, path: tuple, items: list) -> None:
        base = self._key(name, path)
        # keys relative to ``path``: every (sub)path's key computed once
        rel_keys: dict[tuple, bytes] = {(): base}

        def key_of(rel: tuple) -> bytes:
            k = rel_keys.get(rel)
            if k is None:
                k = rel_keys[rel] = key_of(rel[:-1]) + sort_key(rel[-1])
            return k

        leaves = []
        inner: dict[tuple, None] = {}
        for rel, value in items:
            sub = rel[-1]
            if len(rel) == 1:  # the common case: a child of ``path`` itself
                leaves.append((base + sort_key(sub), base, sub, value))
                continue
            parent = key_of(rel[:-1])
            leaves.append((parent + sort_key(sub), parent, sub, value))
            for i in range(1, len(rel)):
                inner[rel[:i]] = None
        rows = [(key_of(r), key_of(r[:-1]), r[-1]) for r in inner]

        def body(c: sqlite3.Connection) -> None:
            if c.execute("INSERT OR IGNORE INTO nodes VALUES (?,?,?,NULL)",
                         (base, self._key(name, path[:-1]) if path else b"",
                          path[-1] if path else name)).rowcount:
                self._ensure_ancestors(c, name, path)
            if rows:
                c.executemany("INSERT OR IGNORE INTO nodes VALUES (?,?,?,NULL)", rows)
            c.executemany("INSERT INTO nodes VALUES (?,?,?,?) ON CONFLICT (key)"
                          " DO UPDATE SET value=excluded.value", leaves)

        self._transaction(body)

    @_translated
    def delete(self, name: str, path: tuple) -> None:
        key = self._key(name, path)

        def body(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM nodes WHERE key>=? AND key<?", (key, key + b"\xff"))
            # ancestors left with neither value nor children no longer exist
            for i in range(len(path) - 1, -1, -1):
                anc = self._key(name, path[:i])
                cur = c.execute(
                    "DELETE FROM nodes WHERE key=?1 AND value IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM nodes WHERE parent=?1)", (anc,))
                if cur.rowcount == 0:
                    break

        self._transaction(body)

    @_translated
    def increment(self, name: str, path: tuple, by: int) -> int:
        key = self._keys.get((name, path)) or self._key(name, path)
        try:
            c = self._local.conn
        except AttributeError:
            c = self._conn()
        # One statement, atomic by itself: CAST takes the leading integer, as parseInt does.
        row = c.execute("UPDATE nodes SET value=CAST(COALESCE(CAST(value AS INTEGER), 0) + ?"
                        " AS TEXT) WHERE key=? RETURNING value", (by, key)).fetchone()
        if row is not None:
            return int(row[0])

        def body(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT value FROM nodes WHERE key=?", (key,)).fetchone()
            n = leading_int(row[0] if row else None) + by
            if row is None:
                self._insert(c, name, path, key, str(n))
            else:
                c.execute("UPDATE nodes SET value=? WHERE key=?", (str(n), key))
            return n

        return self._transaction(body)

    @_translated
    def children(self, name: str, path: tuple, reverse: bool = False, start: Any = None,
                 stop: Any = None, prefix: str | None = None,
                 limit: int | None = None) -> list:
        parent = self._key(name, path)
        sql = ["SELECT sub FROM nodes WHERE parent=?"]
        args: list[Any] = [parent]
        if prefix is not None:
            lo, hi = prefix_bounds(prefix)
            sql.append("AND key>=? AND key<?")
            args += [parent + lo, parent + hi]
        if start is not None:
            sql.append("AND key<=?" if reverse else "AND key>=?")
            args.append(parent + sort_key(start))
        if stop is not None:
            sql.append("AND key>?" if reverse else "AND key<?")
            args.append(parent + sort_key(stop))
        sql.append("ORDER BY key DESC" if reverse else "ORDER BY key")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(limit)
        return [r[0] for r in self._conn().execute(" ".join(sql), args)]

    @_translated
    def next_subscript(self, name: str, path: tuple, reverse: bool = False) -> Any:
        if not path:
            return None
        sql = ("SELECT sub FROM nodes WHERE parent=? AND key<? ORDER BY key DESC LIMIT 1"
               if reverse else
               "SELECT sub FROM nodes WHERE parent=? AND key>? ORDER BY key LIMIT 1")
        row = self._conn().execute(
            sql, (self._key(name, path[:-1]), self._key(name, path))).fetchone()
        return None if row is None else row[0]

    @_translated
    def count_children(self, name: str, path: tuple) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM nodes WHERE parent=?",
                                    (self._key(name, path),)).fetchone()[0]

    @_translated
    def tree(self, name: str, path: tuple) -> dict:
        top_key = self._key(name, path)
        top: dict = {}
        entries: dict[bytes, list] = {}
        # key order is depth-first, collation order: every parent comes before its children
        rows = self._conn().execute(
            "SELECT key, parent, sub, value FROM nodes WHERE key>? AND key<? ORDER BY key",
            (top_key, top_key + b"\xff"))
        for key, parent, sub, value in rows:
            if parent == top_key:
                container = top
            else:
                owner = entries.get(parent)
                if owner is None:  # an orphan (cannot happen in a consistent file)
                    continue
                container = owner[1]
                if container is None:
                    container = owner[1] = {}
            entry = container[sub] = [value, None]
            entries[key] = entry
        return top

    @_translated
    def lock(self, name: str, path: tuple, timeout: float) -> str:
        key = self._key(name, path)
        token = uuid.uuid4().hex
        pid = os.getpid()
        deadline = time.monotonic() + timeout
        delay = 0.001

        def attempt(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT pid FROM locks WHERE key=?", (key,)).fetchone()
            if row is not None and _pid_alive(row[0]):
                return False
            c.execute("INSERT OR REPLACE INTO locks VALUES (?,?,?)", (key, token, pid))
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
        self._conn().execute("DELETE FROM locks WHERE key=? AND token=?",
                             (self._key(name, path), token))

    @_translated
    def names(self) -> list[str]:
        # a document's root row has parent x'' and the document's name as its subscript
        return sorted(r[0] for r in self._conn().execute(
            "SELECT sub FROM nodes WHERE parent=x''"))

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
