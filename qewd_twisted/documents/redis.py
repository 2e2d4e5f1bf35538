# -*- test-case-name: tests.documents.test_store -*-
"""
``RedisStore``: documents in Redis, in ewd-redis-globals' key layout, so QEWD.js nodes on the
same Redis read and write the same documents (docs/documents.md, docs/compatibility.md).

The layout, for document ``g`` and a node at subscripts ``s1, s2`` (``\\x01`` separates):

* ``node:g\\x01s1\\x01s2``: a hash, ``data`` (1 value, 10 children, 11 both) and ``value``;
  ``node:g`` is the document's root;
* ``children:g\\x01s1``: a sorted set (all scores 0, so byte order) of the child subscripts,
  integers ``>= 0`` as ``\\x01`` + at least 10 zero-padded digits so they sort first and
  numerically;
* ``leaves:g``: a sorted set of the paths (``s1\\x01s2``, unpadded) of nodes that have a value;
  QEWD.js treats a document without it as missing;
* ``locker:g\\x01...`` holds a lock's owner, ``lock:g\\x01...`` is the list its waiters block on.

Where ewd-redis-globals is lossy or racy we keep the layout and do it right: every multi-key
change is one Lua script (atomic, one round trip): ``increment`` is atomic, ``data`` is 11 for a
node with both a value and children, a delete walks the children sets instead of ``KEYS``
patterns (exact, and it keeps an ancestor's own value), and the lock is ``SET NX PX`` with a
token (a lease) that still wakes QEWD.js waiters. Text is written as Latin-1 bytes when that is
unambiguous (what QEWD.js's driver reads and writes) and UTF-8 otherwise; reads take UTF-8 when
the bytes are valid UTF-8, else Latin-1. Imports redis-py (the ``[redis]`` extra).
"""

from __future__ import annotations

import functools
import os
import select
import threading
import time
import uuid
import weakref
from typing import Any, Callable

import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry
from zope.interface import implementer

from qewd_twisted.documents.collation import check_subscript
from qewd_twisted.documents.interfaces import (
    DatabaseUnavailable,
    DocumentStoreError,
    IDocumentStore,
    LockTimeout,
)
from qewd_twisted.documents.redis_scripts import DELETE, SET, SET_MANY, TREE, UNLOCK

__all__ = ["RedisStore", "decode_text", "encode_text"]

SEP = b"\x01"
_REFS = 4096  # prepared nodes remembered per store


def encode_text(s: str) -> bytes:
    """Bytes for a string: Latin-1 where QEWD.js can read it and the bytes are not also valid
    UTF-8 (so reading back is unambiguous), else UTF-8."""
    if s.isascii():
        return s.encode("ascii")
    try:
        b = s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogatepass")
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return b
    return s.encode("utf-8")


def decode_text(b: bytes) -> str:
    """The string for stored bytes: UTF-8 when valid, else Latin-1 (QEWD.js's writes)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _sub_bytes(sub: Any) -> bytes:
    """A subscript as it appears in node keys and leaf paths (unpadded)."""
    return str(sub).encode("ascii") if type(sub) is int else encode_text(sub)


def _member(sub: Any) -> bytes:
    """A subscript as a member of its parent's children set (integers >= 0 padded)."""
    if type(sub) is int:
        return b"\x01%010d" % sub if sub >= 0 else str(sub).encode("ascii")
    return encode_text(sub)


def _from_member(m: bytes) -> Any:
    """The subscript a children-set member stands for."""
    c = m[0] if m else 0
    if c == 1:
        return int(m[1:])
    try:
        s = m.decode("utf-8")
    except UnicodeDecodeError:
        s = m.decode("latin-1")
    if 48 <= c <= 57 or c == 45:  # may be an integer written unpadded ("-3", or by others)
        try:
            return check_subscript(s)
        except (TypeError, ValueError):
            return s  # written by someone else with a subscript we would refuse
    # anything else is a string subscript as it stands (an empty member, or one holding the
    # separator, can only have been written by someone else: kept as it is, as before)
    return s


def _from_members(ms: list) -> list:
    """``_from_member`` of each (``children`` of a big node: one loop, no calls for the common
    members)."""
    out = []
    append = out.append
    for m in ms:
        c = m[0] if m else 0
        if c == 1:
            append(int(m[1:]))
        elif 48 <= c <= 57 or c == 45:
            append(_from_member(m))
        else:
            try:
                append(m.decode("utf-8"))
            except UnicodeDecodeError:
                append(m.decode("latin-1"))
    return out


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _packed(*args: bytes) -> bytes:
    """One command in RESP, ready to send."""
    return b"*%d\r\n" % len(args) + b"".join([_bulk(a) for a in args])


_SET_MODE = _bulk(b"set")
_INCR_MODE = _bulk(b"incr")


class _Ref:
    """A node's commands, encoded once (``RedisStore._ref``): its key suffix, its value's
    ``HGET``, and the set/increment script call around the value (``head`` + mode + value +
    ``tail``)."""

    __slots__ = ("suffix", "get", "head", "tail")

    def __init__(self, suffix: bytes, get: bytes, head: bytes, tail: bytes) -> None:
        self.suffix, self.get, self.head, self.tail = suffix, get, head, tail


# Every store, so that a forked child drops the connections it shares with its parent.
_stores: weakref.WeakSet = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_stores):
        store._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _translated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Connection problems become DatabaseUnavailable, server errors DocumentStoreError."""

    @functools.wraps(fn)
    def wrapper(self: RedisStore, *args: Any) -> Any:
        try:
            return fn(self, *args)
        except (redis_py.ConnectionError, redis_py.TimeoutError) as e:
            raise DatabaseUnavailable(
                f"Redis at {self.host}:{self.port} is unavailable: {e}") from e
        except redis_py.RedisError as e:
            raise DocumentStoreError(f"Redis at {self.host}:{self.port}: {e}") from e

    return wrapper


@implementer(IDocumentStore)
class RedisStore:
    """Documents in a Redis server shared by every node (Python or QEWD.js) that uses it.

    ``timeout`` bounds every command and connection attempt (seconds): with Redis down a
    document call fails with DatabaseUnavailable within about that long, and the next call
    after Redis is back reconnects. ``lock_lease`` is how long a lock outlives a holder that
    died without releasing it.

    Document commands go over one connection per thread (redis-py's ``Connection``, made with
    the client's settings), written as prepared RESP and read with redis-py's parser: no pool
    lock, no per-command packing of keys already encoded. A connection that has anything to
    read before a command is sent (the server closed it, or a reply arrived after a timeout)
    is re-made first, as redis-py's pool does; a failed command closes its connection.
    """

    kind = "redis"
    promises = {"atomic_set_document": True, "shared": "network", "durable": False}

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, password: str | None = None,
                 db: int = 0, timeout: float = 5.0, lock_lease: float = 60.0) -> None:
        self.host, self.port = host, port
        self.lock_lease = lock_lease
        self.client = redis_py.Redis(
            host=host, port=port, password=password, db=db, socket_timeout=timeout,
            socket_connect_timeout=timeout, decode_responses=False, max_connections=64,
            # No silent retries: a retried script could run twice (an increment counted twice),
            # and with Redis down the caller should hear so at once. Connections found dead
            # when taken from the pool are re-made, so a Redis that is back is used at once.
            retry=Retry(NoBackoff(), 0))
        self._set = self.client.register_script(SET)
        self._set_many = self.client.register_script(SET_MANY)
        self._delete = self.client.register_script(DELETE)
        self._tree = self.client.register_script(TREE)
        self._unlock = self.client.register_script(UNLOCK)
        self._names: dict[str, bytes] = {}
        self._suffixes: dict[tuple, bytes] = {}
        self._refs: dict[tuple, _Ref] = {}
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, Any]] = []
        self._conns_guard = threading.Lock()
        self._closed = False
        _stores.add(self)

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the server answers."""
        _translated(lambda self: self.client.ping())(self)

    # -- connections -------------------------------------------------------------------

    def _connection(self) -> Any:
        """This thread's connection, clean (nothing left to read) and ready to send on."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = self._new_connection()
        sock = conn._sock
        if sock is not None:
            if sock is not local.sock:
                local.poller = select.poll()
                local.poller.register(sock, select.POLLIN)
                local.sock = sock
            if local.poller.poll(0):  # a reply nobody read, or the server closed it
                conn.disconnect()
        return conn

    def _new_connection(self) -> Any:
        if self._closed:
            raise DatabaseUnavailable(f"Redis at {self.host}:{self.port}: the store is closed")
        conn = redis_py.Connection(**self.client.connection_pool.connection_kwargs)
        me = threading.current_thread()
        with self._conns_guard:
            live = []
            for thread, other in self._conns:
                if thread.is_alive():
                    live.append((thread, other))
                else:  # its thread has ended: nobody will use it again
                    other.disconnect()
            live.append((me, conn))
            self._conns = live
        self._local.conn, self._local.sock, self._local.poller = conn, None, None
        return conn

    def _forget_connections(self) -> None:
        """In a forked child: the sockets are the parent's; make new ones when needed."""
        self._local = threading.local()
        self._conns = []
        self._conns_guard = threading.Lock()

    def _send(self, packed: bytes) -> Any:
        """Send one prepared command on this thread's connection; its reply."""
        conn = self._connection()
        conn.send_packed_command((packed,), check_health=False)
        return conn.read_response()

    def _command(self, *args: Any) -> Any:
        """Send one command (bytes, str or int arguments); its reply."""
        parts = [b"*%d\r\n" % len(args)]
        append = parts.append
        for a in args:
            t = type(a)
            if t is int:
                a = b"%d" % a
            elif t is str:
                a = a.encode("utf-8")
            append(b"$%d\r\n%s\r\n" % (len(a), a))
        return self._send(b"".join(parts))

    def _script(self, script: Any, keys: list, args: list) -> Any:
        """EVALSHA on this thread's connection; a server that lost its script cache
        (restarted) is given the script again, once."""
        try:
            return self._command(b"EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_py.exceptions.NoScriptError:
            self._command(b"SCRIPT", b"LOAD", script.script)
            return self._command(b"EVALSHA", script.sha, len(keys), *keys, *args)

    # -- keys --------------------------------------------------------------------------

    def _name(self, name: str) -> bytes:
        b = self._names.get(name)
        if b is None:
            b = self._names[name] = encode_text(name)
        return b

    def _suffix(self, name: str, path: tuple) -> bytes:
        """``g\x01s1\x01s2``: the part of a node's keys after ``node:`` / ``children:``."""
        cache = self._suffixes
        suffix = cache.get((name, path))
        if suffix is None:
            if len(cache) >= _REFS:
                cache.clear()
            suffix = self._name(name)
            if path:
                suffix += SEP + SEP.join([_sub_bytes(s) for s in path])
            cache[(name, path)] = suffix
        return suffix

    def _ancestry(self, name: str, path: tuple) -> tuple[list[bytes], list[bytes]]:
        """(keys, members) of every ancestor, nearest first: node key, children key pairs."""
        keys: list[bytes] = []
        members: list[bytes] = []
        for i in range(len(path) - 1, -1, -1):
            suffix = self._suffix(name, path[:i])
            keys += [b"node:" + suffix, b"children:" + suffix]
            members.append(_member(path[i]))
        return keys, members

    def _leaf(self, path: tuple) -> bytes:
        return SEP.join([_sub_bytes(s) for s in path])

    def _ref(self, name: str, path: tuple) -> _Ref:
        """The node's prepared commands (made once per node, then looked up)."""
        refs = self._refs
        ref = refs.get((name, path))
        if ref is None:
            if len(refs) >= _REFS:
                refs.clear()
            suffix = self._suffix(name, path)
            node = b"node:" + suffix
            keys, members = self._ancestry(name, path)
            keys = [node, b"children:" + suffix, b"leaves:" + self._name(name), *keys]
            tail = [self._leaf(path), *members]
            # EVALSHA sha numkeys keys... mode value tail...
            count = 3 + len(keys) + 2 + len(tail)
            head = b"*%d\r\n" % count + b"".join(
                [_bulk(a) for a in (b"EVALSHA", self._set.sha.encode(), b"%d" % len(keys),
                                    *keys)])
            ref = refs[(name, path)] = _Ref(suffix, _packed(b"HGET", node, b"value"), head,
                                            b"".join([_bulk(a) for a in tail]))
        return ref

    # -- IDocumentStore ----------------------------------------------------------------

    def get(self, name: str, path: tuple) -> str | None:
        try:
            v = self._send((self._refs.get((name, path)) or self._ref(name, path)).get)
        except (redis_py.ConnectionError, redis_py.TimeoutError) as e:
            raise DatabaseUnavailable(
                f"Redis at {self.host}:{self.port} is unavailable: {e}") from e
        except redis_py.RedisError as e:
            raise DocumentStoreError(f"Redis at {self.host}:{self.port}: {e}") from e
        return None if v is None else decode_text(v)

    @_translated
    def defined(self, name: str, path: tuple) -> int:
        suffix = self._suffix(name, path)
        conn = self._connection()
        # two commands, one round trip
        conn.send_packed_command((_packed(b"HEXISTS", b"node:" + suffix, b"value"),
                                  _packed(b"EXISTS", b"children:" + suffix)),
                                 check_health=False)
        has_value = conn.read_response()
        has_kids = conn.read_response()
        return (1 if has_value else 0) + (10 if has_kids else 0)

    def _write(self, mode: bytes, name: str, path: tuple, arg: str) -> bytes:
        ref = self._refs.get((name, path)) or self._ref(name, path)
        packed = ref.head + mode + _bulk(encode_text(arg)) + ref.tail
        try:
            return self._send(packed)
        except redis_py.exceptions.NoScriptError:
            # a server that lost its script cache (restarted): give it the script, once
            self._command(b"SCRIPT", b"LOAD", SET)
            return self._send(packed)

    @_translated
    def set(self, name: str, path: tuple, value: str) -> None:
        self._write(_SET_MODE, name, path, value)

    @_translated
    def increment(self, name: str, path: tuple, by: int) -> int:
        return int(self._write(_INCR_MODE, name, path, str(by)))

    @_translated
    def set_many(self, name: str, path: tuple, items: list) -> None:
        edges: dict[tuple[bytes, bytes], None] = {}
        inner: dict[bytes, None] = {}
        keys, members = self._ancestry(name, path)
        for i, member in enumerate(members):
            edges[(keys[2 * i + 1], member)] = None
            inner[keys[2 * i]] = None
        leaves: list[tuple[bytes, bytes, bytes, bytes]] = []
        base = self._suffix(name, path)
        base_leaf = self._leaf(path) + SEP if path else b""
        parent_node, parent_kids = b"node:" + base, b"children:" + base
        for rel, value in items:
            if len(rel) == 1:  # the common case: a child of ``path`` itself
                sub = rel[0]
                sb = _sub_bytes(sub)
                edges[(parent_kids, _member(sub))] = None
                inner[parent_node] = None
                suffix = base + SEP + sb
                leaves.append((b"node:" + suffix, b"children:" + suffix, base_leaf + sb,
                               encode_text(value)))
                continue
            full = path + rel
            for depth in range(len(path), len(full)):
                parent = self._suffix(name, full[:depth])
                edges[(b"children:" + parent, _member(full[depth]))] = None
                inner[b"node:" + parent] = None
            suffix = self._suffix(name, full)
            leaves.append((b"node:" + suffix, b"children:" + suffix, self._leaf(full),
                           encode_text(value)))
        leaf_keys = {lk for lk, _, _, _ in leaves}
        # a node set as a leaf in this call and also a parent in it is handled as a leaf
        # (its data becomes 11 there); every other parent is an inner node
        inner_keys = [k for k in inner if k not in leaf_keys]
        script_keys: list[bytes] = [b"leaves:" + self._name(name)]
        script_keys += [ck for ck, _ in edges]
        script_keys += inner_keys
        args: list[Any] = [len(edges), len(inner_keys), len(leaves)]
        args += [m for _, m in edges]
        for nk, ck, leaf, value in leaves:
            script_keys += [nk, ck]
            args += [leaf, value]
        self._script(self._set_many, script_keys, args)

    @_translated
    def delete(self, name: str, path: tuple) -> None:
        suffix = self._suffix(name, path)
        keys, members = self._ancestry(name, path)
        self._script(self._delete, [b"node:" + suffix, b"children:" + suffix,
                                    b"leaves:" + self._name(name), *keys],
                     [self._leaf(path), *members])

    @_translated
    def children(self, name: str, path: tuple, reverse: bool = False, start: Any = None,
                 stop: Any = None, prefix: str | None = None,
                 limit: int | None = None) -> list:
        lows: list[tuple[bytes, bool]] = []  # (bound, inclusive)
        highs: list[tuple[bytes, bool]] = []
        if prefix is not None:
            p = encode_text(prefix)
            lows.append((p, True))
            highs.append((p + b"\xff", False))
        if start is not None:
            (highs if reverse else lows).append((_member(start), True))
        if stop is not None:
            (lows if reverse else highs).append((_member(stop), False))
        lo = max(lows, key=lambda b: (b[0], not b[1]), default=None)
        hi = min(highs, key=lambda b: (b[0], b[1]), default=None)
        lo_arg = b"-" if lo is None else (b"[" if lo[1] else b"(") + lo[0]
        hi_arg = b"+" if hi is None else (b"[" if hi[1] else b"(") + hi[0]
        if lo is not None and hi is not None and lo[0] > hi[0]:
            return []
        ck = b"children:" + self._suffix(name, path)
        tail = () if limit is None else (b"LIMIT", 0, limit)
        if reverse:
            found = self._command(b"ZREVRANGEBYLEX", ck, hi_arg, lo_arg, *tail)
        else:
            found = self._command(b"ZRANGEBYLEX", ck, lo_arg, hi_arg, *tail)
        return _from_members(found)

    @_translated
    def next_subscript(self, name: str, path: tuple, reverse: bool = False) -> Any:
        if not path:
            return None
        ck = b"children:" + self._suffix(name, path[:-1])
        m = b"(" + _member(path[-1])
        found = (self._command(b"ZREVRANGEBYLEX", ck, m, b"-", b"LIMIT", 0, 1) if reverse
                 else self._command(b"ZRANGEBYLEX", ck, m, b"+", b"LIMIT", 0, 1))
        return _from_member(found[0]) if found else None

    @_translated
    def count_children(self, name: str, path: tuple) -> int:
        return self._command(b"ZCARD", b"children:" + self._suffix(name, path))

    @_translated
    def tree(self, name: str, path: tuple) -> dict:
        suffix = self._suffix(name, path)
        flat = self._script(self._tree, [b"node:" + suffix, b"children:" + suffix], [])
        top: dict = {}
        last: list[list] = []  # last[d]: the entry most recently added at depth d
        for i in range(0, len(flat), 4):
            depth, member, has_value, value = flat[i:i + 4]
            if depth == 0:
                container = top
            else:
                owner = last[depth - 1]
                if owner[1] is None:
                    owner[1] = {}
                container = owner[1]
            entry = container[_from_member(member)] = [
                decode_text(value) if has_value else None, None]
            del last[depth:]
            last.append(entry)
        return top

    @_translated
    def lock(self, name: str, path: tuple, timeout: float) -> str:
        suffix = self._suffix(name, path)
        locker, waitlist = b"locker:" + suffix, b"lock:" + suffix
        token = "py:" + uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        lease = int(self.lock_lease * 1000)
        while not self.client.set(locker, token, nx=True, px=lease):
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(f"lock on {name}{list(path)} not obtained in {timeout}s")
            # An unlock (ours or QEWD.js's) pushes onto the list; the short wait also covers
            # a holder whose lease ran out.
            self.client.blpop([waitlist], timeout=max(0.01, min(left, 0.1)))
        return token

    @_translated
    def unlock(self, name: str, path: tuple, token: str) -> None:
        suffix = self._suffix(name, path)
        self._unlock(keys=[b"locker:" + suffix, b"lock:" + suffix], args=[token, 10000])

    @_translated
    def names(self) -> list[str]:
        found = set()
        for key in self.client.scan_iter(match=b"node:*", count=1000):
            if SEP not in key:
                found.add(decode_text(key[5:]))
        return sorted(found)

    def close(self) -> None:
        self._closed = True
        with self._conns_guard:
            conns, self._conns = self._conns, []
        for _, conn in conns:
            try:
                conn.disconnect()
            except (redis_py.RedisError, OSError):
                pass
        self._local = threading.local()
        try:
            self.client.close()
        except redis_py.RedisError:
            pass
