# -*- test-case-name: tests.documents.test_store -*-
"""
The three back-ends as test fixtures: ``BackendMixin`` subclasses give a fresh, empty store per
test (``self.backend`` / ``self.db``). Redis classes share one real redis-server per class.
"""

from __future__ import annotations

import atexit
import os
import tempfile

from qewd_twisted.documents import DocumentStore
from qewd_twisted.documents.memory import MemoryStore
from tests.documents.redisserver import RedisServer, redis_server_path

try:
    import redis as _redis_py
except ImportError:  # the [redis] extra is part of [test]; without it the Redis tests skip
    _redis_py = None

__all__ = ["MemoryBackend", "RedisBackend", "SQLiteBackend", "shared_redis_server"]

_shared: RedisServer | None = None


def shared_redis_server() -> RedisServer:
    """One redis-server for the whole test run (trial has no per-class set-up): started on
    first use, stopped when the test process exits. Tests that stop it (faults) restart it."""
    global _shared
    if _shared is None:
        _shared = RedisServer()
        _shared.start()
        atexit.register(_shared.cleanup)
    elif _shared.proc is None or _shared.proc.poll() is not None:
        _shared.start(_shared.port)
    return _shared


class MemoryBackend:
    kind = "memory"

    def make_backend(self):
        return MemoryStore()

    def setUp(self) -> None:
        self.backend = self.make_backend()
        self.db = DocumentStore(self.backend)
        self.addCleanup(self.db.close)


class SQLiteBackend:
    kind = "sqlite"

    def make_backend(self):
        from qewd_twisted.documents.sqlite import SQLiteStore
        return SQLiteStore(self.db_path)

    def setUp(self) -> None:
        fd, self.db_path = tempfile.mkstemp(suffix=".sqlite", prefix="qewd-docs-")
        os.close(fd)
        os.unlink(self.db_path)

        def remove() -> None:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.db_path + suffix):
                    os.unlink(self.db_path + suffix)

        self.addCleanup(remove)
        self.backend = self.make_backend()
        self.db = DocumentStore(self.backend)
        self.addCleanup(self.db.close)


class RedisBackend:
    kind = "redis"
    server: RedisServer | None = None

    if _redis_py is None or redis_server_path() is None:
        skip = "needs redis-py (pip install .[redis]) and redis-server (apt-get install redis-server)"

    def make_backend(self, **kw):
        from qewd_twisted.documents.redis import RedisStore
        return RedisStore(host="127.0.0.1", port=self.server.port, **kw)

    def setUp(self) -> None:
        self.server = shared_redis_server()
        client = _redis_py.Redis(host="127.0.0.1", port=self.server.port)
        client.flushall()
        client.close()
        self.backend = self.make_backend()
        self.db = DocumentStore(self.backend)
        self.addCleanup(self.db.close)
