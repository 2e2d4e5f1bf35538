# -*- test-case-name: tests.documents.test_processes -*-
"""
Atomicity across processes (real subprocesses): two processes incrementing one counter 1,000
times each end at exactly 2,000, and a read-modify-write done under ``lock()`` loses no update,
on SQLite and on Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.documents.backends import RedisBackend, SQLiteBackend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import sys
from qewd_twisted.documents import DocumentStore, open_backend
import json
db = DocumentStore(open_backend(json.loads(sys.argv[1])))
mode, n = sys.argv[2], int(sys.argv[3])
counter = db.use("shared", "counter")
print("ready", flush=True)
sys.stdin.readline()  # both processes start together
if mode == "increment":
    for _ in range(n):
        counter.increment()
else:
    for _ in range(n):
        with counter.lock(30):
            v = counter.value or 0
            counter.value = v + 1
db.close()
print("done", flush=True)
"""


class ProcessesMixin:
    def database(self) -> dict:
        raise NotImplementedError

    def run_two(self, mode: str, n: int) -> None:
        import json
        env = dict(os.environ, PYTHONPATH=ROOT)
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(self.database()),
                                   mode, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=env, text=True) for _ in range(2)]
        try:
            for p in procs:
                self.assertEqual(p.stdout.readline().strip(), "ready")
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in procs:
                out, _ = p.communicate(timeout=120)
                self.assertEqual((p.returncode, out.strip()), (0, "done"))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    def test_increment(self) -> None:
        self.run_two("increment", 1000)
        self.assertEqual(self.db.use("shared", "counter").value, 2000)

    def test_lock(self) -> None:
        self.run_two("lock", 200)
        self.assertEqual(self.db.use("shared", "counter").value, 400)


class SQLiteProcessesTests(ProcessesMixin, SQLiteBackend, SynchronousTestCase):
    def database(self) -> dict:
        return {"type": "sqlite", "params": {"path": self.db_path}}


class RedisProcessesTests(ProcessesMixin, RedisBackend, SynchronousTestCase):
    def database(self) -> dict:
        return {"type": "redis", "params": {"host": "127.0.0.1", "port": self.server.port}}
