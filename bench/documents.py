"""
Per-operation cost of the document store (issue 15 item 7), in one run:

* ours (``DocumentNode``) on each back-end: memory, SQLite (a temporary WAL file), Redis (a
  private redis-server on a free loopback port);
* the raw client doing the same work on the same server: stdlib ``sqlite3`` on a plain
  key/value table with the same pragmas, ``redis-py`` with the plainest commands (HSET, HGET,
  HINCRBY, a 50-field HSET / HGETALL, ZRANGE);
* QEWD.js's handlers (ewd-document-store over ewd-redis-globals, the peer kit's installed
  qewd) on the peer's Redis, each operation timed inside the worker (tests/interop/js/).

Operations: ``value`` set and get, ``set_document`` / ``get_document`` of a 50-leaf document,
``increment``, and ``children`` of a node with 1,000 children. Prints a table and writes
bench/results/documents.json.

    python -m bench.documents            # ~1 min
    python -m bench.documents --quick    # a few seconds per row
    python -m bench.documents --no-js    # without the QEWD.js rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from qewd_twisted.documents import DocumentStore  # noqa: E402
from qewd_twisted.documents.memory import MemoryStore  # noqa: E402
from qewd_twisted.documents.sqlite import SQLiteStore  # noqa: E402

OPS = ("set", "get", "set_document", "get_document", "increment", "children")
DOC = {f"field{k}": f"value {k}" for k in range(50)}


def timed(fn: Callable[[], Any], n: int) -> float:
    """Microseconds per call of ``fn`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def compare(systems: dict[str, dict[str, Callable[[], Any]]], counts: dict[str, int],
            rounds: int = 5) -> dict[str, dict[str, float]]:
    """Each operation timed on every system in turn, ``rounds`` times, keeping each one's
    best round: the machine is shared, and interleaving gives the systems the same load."""
    best: dict[str, dict[str, float]] = {name: {} for name in systems}
    for op in OPS:
        m = max(1, counts[op] // rounds)
        for fns in systems.values():
            for _ in range(min(20, m)):
                fns[op]()  # warm-up
        for _ in range(rounds):
            for name, fns in systems.items():
                us = timed(fns[op], m)
                best[name][op] = min(best[name].get(op, us), us)
    return best


def ours(db: DocumentStore) -> dict[str, Callable[[], Any]]:
    base = db.use("bench")
    base.delete()
    kids = base.use("kids")
    kids.set_document({f"k{i}": i for i in range(1000)})
    leaf, doc, counter = base.use("value"), base.use("doc"), base.use("counter")
    doc.set_document(DOC)
    leaf.value = "x"
    i = [0]

    def set_value() -> None:
        i[0] += 1
        leaf.value = i[0]

    return {"set": set_value, "get": lambda: leaf.value,
            "set_document": lambda: doc.set_document(DOC),
            "get_document": lambda: doc.get_document(True),
            "increment": counter.increment, "children": kids.children}


def raw_sqlite(path: str) -> dict[str, Callable[[], Any]]:
    c = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE kv (parent TEXT, k TEXT, v, PRIMARY KEY (parent, k)) WITHOUT ROWID")
    c.executemany("INSERT INTO kv VALUES ('kids', ?, ?)", [(f"k{i}", i) for i in range(1000)])
    c.executemany("INSERT INTO kv VALUES ('doc', ?, ?)", list(DOC.items()))
    c.execute("INSERT INTO kv VALUES ('', 'value', 'x')")
    c.execute("INSERT INTO kv VALUES ('', 'counter', 0)")
    i = [0]

    def set_value() -> None:
        i[0] += 1
        c.execute("UPDATE kv SET v=? WHERE parent=? AND k=?", (str(i[0]), "", "value"))

    def set_document() -> None:
        c.execute("BEGIN IMMEDIATE")
        c.executemany("INSERT OR REPLACE INTO kv VALUES ('doc', ?, ?)", list(DOC.items()))
        c.execute("COMMIT")

    return {
        "set": set_value,
        "get": lambda: c.execute(
            "SELECT v FROM kv WHERE parent=? AND k=?", ("", "value")).fetchone(),
        "set_document": set_document,
        "get_document": lambda: dict(c.execute(
            "SELECT k, v FROM kv WHERE parent=? ORDER BY k", ("doc",))),
        "increment": lambda: c.execute(
            "UPDATE kv SET v=v+1 WHERE parent=? AND k=? RETURNING v", ("", "counter")).fetchone(),
        "children": lambda: [r[0] for r in c.execute(
            "SELECT k FROM kv WHERE parent=? ORDER BY k", ("kids",))],
    }


def raw_redis(port: int) -> dict[str, Callable[[], Any]]:
    import redis

    r = redis.Redis(port=port)
    r.delete("raw:value", "raw:doc", "raw:kids", "raw:counter")
    r.zadd("raw:kids", {f"k{i}": 0 for i in range(1000)})
    r.hset("raw:doc", mapping=DOC)
    i = [0]

    def set_value() -> None:
        i[0] += 1
        r.hset("raw:value", "value", i[0])

    return {
        "set": set_value,
        "get": lambda: r.hget("raw:value", "value"),
        "set_document": lambda: r.hset("raw:doc", mapping=DOC),
        "get_document": lambda: r.hgetall("raw:doc"),
        "increment": lambda: r.hincrby("raw:counter", "value", 1),
        "children": lambda: r.zrange("raw:kids", 0, -1),
    }


class JSNode:
    """Our QEWD.js documents node (tests/interop/js/qewd-docs.js) and a socket.io client."""

    def __init__(self, home: str, redis_port: int, port: int) -> None:
        env = dict(os.environ, QEWD_DOCS_PORT=str(port), QEWD_REDIS_PORT=str(redis_port),
                   NODE_PATH=os.path.join(home, "node_modules"))
        js = os.path.join(REPO, "tests", "interop", "js")
        self.node = subprocess.Popen(["node", os.path.join(js, "qewd-docs.js")], cwd=home,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        for line in self.node.stdout:
            if f"listening on port {port}" in line:
                break
        else:
            raise RuntimeError("the QEWD.js node did not start")
        self.client = subprocess.Popen(
            ["node", os.path.join(js, "sio_driver.js"), f"http://127.0.0.1:{port}"],
            cwd=home, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._event()  # connect
        reply = self.request({"type": "ewd-register", "application": "docs", "jwt": True})
        self.token = reply["token"]

    def _event(self) -> dict:
        return json.loads(self.client.stdout.readline())

    def request(self, message: dict) -> dict:
        self.client.stdin.write(json.dumps({"emit": message}) + "\n")
        self.client.stdin.flush()
        while True:
            event = self._event()
            data = event.get("data") or {}
            if event.get("event") == "ewdjs" and data.get("finished", True) is not False:
                return data.get("message")

    def bench(self, name: str, op: str, n: int) -> dict:
        return self.request({"type": "bench", "token": self.token,
                             "params": {"name": name, "op": op, "n": n}})

    def close(self) -> None:
        for p in (self.client, self.node):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9) if p is self.node else p.kill()
                except ProcessLookupError:
                    pass
                p.wait()


def qewd_js(redis_port: int, counts: dict[str, int]) -> dict[str, float] | None:
    home = os.environ.get("QEWD_PEER_DIR") or os.path.join(REPO, os.pardir, "shared",
                                                            "qewd-peer")
    if not shutil.which("node") or not os.path.isdir(os.path.join(home, "node_modules", "qewd")):
        print("[bench] QEWD.js rows skipped: no node or no installed peer kit", file=sys.stderr)
        return None
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    js = JSNode(home, redis_port, port)
    name = "benchJS" + str(os.getpid())
    try:
        js.bench(name, "prepare", 0)
        js.bench(name, "get", 20)  # the worker is forked on the first message
        out = {}
        for op in OPS:
            n = max(5, counts[op] // 10)  # QEWD.js is slower: fewer rounds, same op
            reply = js.bench(name, op, n)
            out[op] = reply["ns"] / reply["n"] / 1000
        js.request({"type": "remove", "token": js.token, "params": {"name": name}})
        return out
    finally:
        js.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-js", action="store_true")
    ap.add_argument("--peer-redis", type=int,
                    default=int(os.environ.get("QEWD_REDIS_PORT", "16379")),
                    help="the peer's Redis, for the QEWD.js rows")
    args = ap.parse_args()
    scale = 1 if args.quick else 5
    counts = {"set": 2000 * scale, "get": 2000 * scale, "set_document": 100 * scale,
              "get_document": 100 * scale, "increment": 2000 * scale, "children": 20 * scale}
    results: dict[str, dict[str, float] | None] = {}
    tmp = tempfile.mkdtemp(prefix="qewd-bench-docs-")
    from tests.documents.redisserver import RedisServer

    server = RedisServer()
    try:
        server.start()
        from qewd_twisted.documents.redis import RedisStore

        results.update(compare({"ours memory": ours(DocumentStore(MemoryStore()))}, counts))
        results.update(compare({
            "ours sqlite": ours(DocumentStore(SQLiteStore(os.path.join(tmp, "ours.sqlite")))),
            "raw sqlite3": raw_sqlite(os.path.join(tmp, "raw.sqlite"))}, counts))
        results.update(compare({
            "ours redis": ours(DocumentStore(RedisStore(port=server.port))),
            "raw redis-py": raw_redis(server.port)}, counts))
        if not args.no_js:
            results["QEWD.js redis"] = qewd_js(args.peer_redis, counts)
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [k for k, v in results.items() if v]
    print("µs per operation (lower is better)")
    print(f"{'':16}" + "".join(f"{op:>14}" for op in OPS))
    for row in rows:
        print(f"{row:16}" + "".join(f"{results[row][op]:14.1f}" for op in OPS))
    ratios = {}
    for mine, raw in (("ours sqlite", "raw sqlite3"), ("ours redis", "raw redis-py")):
        ratios[f"{mine} / {raw} (throughput)"] = {
            op: results[raw][op] / results[mine][op] for op in OPS}
    if results.get("QEWD.js redis"):
        ratios["ours redis / QEWD.js (throughput)"] = {
            op: results["QEWD.js redis"][op] / results["ours redis"][op] for op in OPS}
    for name, r in ratios.items():
        print(f"{name}: " + ", ".join(f"{op} {v:.2f}x" for op, v in r.items()))
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "results", "documents.json"), "w") as f:
        json.dump({"us_per_op": results, "ratios": ratios, "counts": counts}, f, indent=1)


if __name__ == "__main__":
    main()
