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
import threading
import time
import uuid
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

__all__ = ["RedisStore", "decode_text", "encode_text"]

SEP = b"\x01"


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
    if m[:1] == SEP:
        return int(m[1:])
    s = decode_text(m)
    try:
        return check_subscript(s)
    except (TypeError, ValueError):
        return s  # written by someone else with a subscript we would refuse


# -- Lua scripts (each one atomic on the server) ----------------------------------------

# KEYS: leaf node, leaf children, leaves, then (node, children) of each ancestor, nearest first.
# ARGV: mode ("set" | "incr"), value | by, leaf path ("" for a root), then the member each
# ancestor's children set gets, nearest first. Returns the value written.
_SET = """
local value = ARGV[2]
if ARGV[1] == 'incr' then
  local cur = redis.call('HGET', KEYS[1], 'value') or ''
  local n = tonumber(string.match(cur, '^%s*([+-]?%d+)')) or 0
  value = string.format('%d', n + tonumber(ARGV[2]))
end
local d = redis.call('HGET', KEYS[1], 'data')
if d == '1' or d == '11' then
  -- it had a value: it is in the leaves set, and its ancestors exist
  redis.call('HSET', KEYS[1], 'value', value)
  return value
end
local kids = redis.call('EXISTS', KEYS[2]) == 1
redis.call('HSET', KEYS[1], 'data', kids and '11' or '1', 'value', value)
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
if d then return value end
local levels = (#KEYS - 3) / 2
for i = 1, levels do
  local nk, ck = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('ZADD', ck, 0, ARGV[3 + i])
  local d = redis.call('HGET', nk, 'data')
  if not d then
    redis.call('HSET', nk, 'data', '10')
  else
    if d == '1' then redis.call('HSET', nk, 'data', '11') end
    break
  end
end
return value
"""

# set_document: KEYS[1] leaves; then E children keys, I inner node keys, L (node, children)
# pairs. ARGV: E, I, L, then E members, then L (leaf path, value) pairs.
_SET_MANY = """
local e, n, l = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, e do redis.call('ZADD', KEYS[1 + i], 0, ARGV[3 + i]) end
for i = 1, n do
  local nk = KEYS[1 + e + i]
  local d = redis.call('HGET', nk, 'data')
  if not d then redis.call('HSET', nk, 'data', '10')
  elseif d == '1' then redis.call('HSET', nk, 'data', '11') end
end
for j = 1, l do
  local nk, ck = KEYS[1 + e + n + 2 * j - 1], KEYS[1 + e + n + 2 * j]
  local kids = redis.call('EXISTS', ck) == 1
  redis.call('HSET', nk, 'data', kids and '11' or '1', 'value', ARGV[3 + e + 2 * j])
  local leaf = ARGV[3 + e + 2 * j - 1]
  if leaf ~= '' then redis.call('ZADD', KEYS[1], 0, leaf) end
end
return 1
"""

# delete: KEYS: node, children, leaves, then (node, children) of each ancestor, nearest first.
# ARGV: leaf path ("" for a root), then the node's member in each ancestor, nearest first.
_DELETE = """
local function unpad(m)
  if string.byte(m, 1) == 1 then
    local s = string.gsub(string.sub(m, 2), '^0+', '')
    if s == '' then s = '0' end
    return s
  end
  return m
end
local function wipe(nk, ck)
  local members = redis.call('ZRANGE', ck, 0, -1)
  for _, m in ipairs(members) do
    local s = unpad(m)
    wipe(nk .. '\\1' .. s, ck .. '\\1' .. s)
  end
  redis.call('DEL', nk, ck)
end
wipe(KEYS[1], KEYS[2])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[3])
  return 1
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREMRANGEBYLEX', KEYS[3], '[' .. ARGV[1] .. '\\1', '(' .. ARGV[1] .. '\\2')
local levels = (#KEYS - 3) / 2
for i = 1, levels do
  local nk, ck = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('ZREM', ck, ARGV[1 + i])
  if redis.call('EXISTS', ck) == 1 then break end
  if redis.call('HEXISTS', nk, 'value') == 1 then
    redis.call('HSET', nk, 'data', '1')
    break
  end
  redis.call('DEL', nk)
end
return 1
"""

# tree: KEYS: node, children. Returns depth, member, has value, value for each node below,
# depth first in children-set order.
_TREE = """
local out = {}
local function walk(nk, ck, depth)
  local members = redis.call('ZRANGE', ck, 0, -1)
  for _, m in ipairs(members) do
    local s = m
    if string.byte(m, 1) == 1 then
      s = string.gsub(string.sub(m, 2), '^0+', '')
      if s == '' then s = '0' end
    end
    local cnk, cck = nk .. '\\1' .. s, ck .. '\\1' .. s
    local v = redis.call('HGET', cnk, 'value')
    out[#out + 1] = depth
    out[#out + 1] = m
    if v then out[#out + 1] = 1; out[#out + 1] = v else out[#out + 1] = 0; out[#out + 1] = '' end
    walk(cnk, cck, depth + 1)
  end
end
walk(KEYS[1], KEYS[2], 0)
return out
"""

# unlock: KEYS locker, lock list; ARGV token, lease ms for the wake-up list.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[2], 'unlocked by ' .. ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


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
        self._set = self.client.register_script(_SET)
        self._set_many = self.client.register_script(_SET_MANY)
        self._delete = self.client.register_script(_DELETE)
        self._tree = self.client.register_script(_TREE)
        self._unlock = self.client.register_script(_UNLOCK)
        self._names: dict[str, bytes] = {}
        self._suffixes: dict[tuple, bytes] = {}
        self._set_args: dict[tuple, tuple[list, list]] = {}  # (name, path) -> script keys, args
        self._guard = threading.Lock()

    def ping(self) -> None:
        """Raise DatabaseUnavailable unless the server answers."""
        _translated(lambda self: self.client.ping())(self)

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
            if len(cache) >= 4096:
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

    # -- IDocumentStore ----------------------------------------------------------------

    def get(self, name: str, path: tuple) -> str | None:
        try:
            v = self.client.hget(b"node:" + self._suffix(name, path), b"value")
        except (redis_py.ConnectionError, redis_py.TimeoutError) as e:
            raise DatabaseUnavailable(
                f"Redis at {self.host}:{self.port} is unavailable: {e}") from e
        except redis_py.RedisError as e:
            raise DocumentStoreError(f"Redis at {self.host}:{self.port}: {e}") from e
        return None if v is None else decode_text(v)

    @_translated
    def defined(self, name: str, path: tuple) -> int:
        suffix = self._suffix(name, path)
        pipe = self.client.pipeline(transaction=False)
        pipe.hexists(b"node:" + suffix, b"value")
        pipe.exists(b"children:" + suffix)
        has_value, has_kids = pipe.execute()
        return (1 if has_value else 0) + (10 if has_kids else 0)

    def _write(self, mode: str, name: str, path: tuple, arg: str) -> bytes:
        cache = self._set_args
        found = cache.get((name, path))
        if found is None:
            if len(cache) >= 4096:
                cache.clear()
            suffix = self._suffix(name, path)
            keys, members = self._ancestry(name, path)
            found = cache[(name, path)] = (
                [b"node:" + suffix, b"children:" + suffix, b"leaves:" + self._name(name), *keys],
                [self._leaf(path), *members])
        keys, tail = found
        return self._set(keys=keys, args=[mode, encode_text(arg), *tail])

    @_translated
    def set(self, name: str, path: tuple, value: str) -> None:
        self._write("set", name, path, value)

    @_translated
    def increment(self, name: str, path: tuple, by: int) -> int:
        return int(self._write("incr", name, path, str(by)))

    @_translated
    def set_many(self, name: str, path: tuple, items: list) -> None:
        edges: dict[tuple[bytes, bytes], None] = {}
        inner: dict[bytes, None] = {}
        keys, members = self._ancestry(name, path)
        for i, member in enumerate(members):
            edges[(keys[2 * i + 1], member)] = None
            inner[keys[2 * i]] = None
        leaves: list[tuple[bytes, bytes, bytes, bytes]] = []
        for rel, value in items:
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
        self._set_many(keys=script_keys, args=args)

    @_translated
    def delete(self, name: str, path: tuple) -> None:
        suffix = self._suffix(name, path)
        keys, members = self._ancestry(name, path)
        self._delete(keys=[b"node:" + suffix, b"children:" + suffix,
                           b"leaves:" + self._name(name), *keys],
                     args=[self._leaf(path), *members])

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
        kw = {} if limit is None else {"start": 0, "num": limit}
        if reverse:
            found = self.client.zrevrangebylex(ck, hi_arg, lo_arg, **kw)
        else:
            found = self.client.zrangebylex(ck, lo_arg, hi_arg, **kw)
        return [_from_member(m) for m in found]

    @_translated
    def next_subscript(self, name: str, path: tuple, reverse: bool = False) -> Any:
        if not path:
            return None
        ck = b"children:" + self._suffix(name, path[:-1])
        m = b"(" + _member(path[-1])
        found = (self.client.zrevrangebylex(ck, m, b"-", start=0, num=1) if reverse
                 else self.client.zrangebylex(ck, m, b"+", start=0, num=1))
        return _from_member(found[0]) if found else None

    @_translated
    def count_children(self, name: str, path: tuple) -> int:
        return self.client.zcard(b"children:" + self._suffix(name, path))

    @_translated
    def tree(self, name: str, path: tuple) -> dict:
        suffix = self._suffix(name, path)
        flat = self._tree(keys=[b"node:" + suffix, b"children:" + suffix])
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
        try:
            self.client.close()
        except redis_py.RedisError:
            pass
