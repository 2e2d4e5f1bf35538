# -*- test-case-name: tests.test_bench_smoke -*-
"""
REST benchmark (issue 13 item 8): keep-alive HTTP clients against

- ``floor``: the node's own twisted.web Site class with a Resource answering canned JSON;
- ``node-async`` / ``node-sync``: a local REST route (bench/apps/rest_bench.py), ``async def``
  on the reactor / plain ``def`` in the worker pool;
- ``qewd-local``: a local QEWD.js REST route (tests/interop/js/rest_local.js ``item``);
- ``node-fwd``: our primary forwarding to our micro-service node;
- ``qewd-fwd``: a QEWD.js primary forwarding to a QEWD.js micro-service
  (tests/interop/js/rest_primary.js -> rest_ms.js), both on the peer's Redis.

Servers run on CPU ``BENCH_SERVER_CPU`` (1), this process (the load generator) on
``BENCH_GEN_CPU`` (0). Each round runs every cell once in the same order; the table shows the
median of the rounds. Afterwards 200 concurrent forwarded requests with distinct ids check that
every reply is the one asked for.

    bash bench/run.sh rest [--rounds 3] [--duration 2] [--clients 1 32] [--no-qewd]
    python -m bench.rest ...        (the same, without run.sh's set-up)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from .procs import GEN_CPU, SERVER_CPU, REPO, env, port_open, taskset

APPS = os.path.join(REPO, "bench", "apps")
JS = os.path.join(REPO, "tests", "interop", "js")
PEER = os.path.abspath(os.environ.get("QEWD_PEER_KIT") or os.path.join(REPO, os.pardir,
                                                                        "shared", "qewd-peer"))
CANNED = b'{"id":"1","ok":true}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers (run as ``python -m bench.rest serve KIND PORT [MS_URL]``) ----------------------

def floor_site(reactor: Any) -> Any:
    """The floor: the node's own Site class (``NodeSite``) with a Resource answering canned
    JSON, so the difference to the node is QEWD's REST work alone."""
    from twisted.web.resource import Resource

    from qewd_twisted.transports.http import NodeSite

    class Canned(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"x-responsetime", b"0ms")
            return CANNED

    return NodeSite(Canned(), reactor=reactor)


def serve(kind: str, port: int, ms_url: str | None) -> None:
    from twisted.internet import reactor

    from qewd_twisted import QEWDService, config_from_dict

    listen = f"tcp:{port}:interface=127.0.0.1"
    if kind == "floor":
        reactor.listenTCP(port, floor_site(reactor), interface="127.0.0.1", backlog=1024)
    else:
        config: dict[str, Any] = {"listen": listen, "jwt": {"secret": "someSecret123"},
                                  "poolSize": 2}
        routes: list[dict[str, str]] = []
        if kind == "node":  # a node serving /api locally, and application api to primaries
            routes = [{"path": "/api", "module": os.path.join(APPS, "rest_bench.py")}]
        elif kind == "primary":
            config["u_services"] = {
                "destinations": {"ms": {"host": ms_url, "application": "api"}},
                "routes": [{"path": "/fwd/users/:id", "method": "GET", "destination": "ms"}]}
        service = QEWDService(config_from_dict(config, APPS, routes=routes), reactor)
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    print("READY", port, flush=True)
    reactor.run()


# -- the load generator -----------------------------------------------------------------------

async def _connection(path_of: Any, deadline: float, lat: list[float], errors: list[int]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", _PORT)
    n = 0
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(b"GET " + path_of(n) + b" HTTP/1.1\r\nHost: b\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200") or b'"ok":true' not in body:
                errors.append(1)
            n += 1
    finally:
        writer.close()
    return n


_PORT = 0


def _run(coro: Any) -> Any:
    """asyncio.run, on uvloop when it is installed (bench/run.sh installs it): a faster
    generator."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def load(port: int, path: str, clients: int, duration: float) -> dict[str, float]:
    global _PORT
    _PORT = port
    base = path.encode()

    async def main() -> dict[str, float]:
        lat: list[float] = []
        errors: list[int] = []
        deadline = time.perf_counter() + duration
        start = time.perf_counter()
        counts = await asyncio.gather(*[
            _connection(lambda n, c=c: base + str(c).encode(), deadline, lat, errors)
            for c in range(clients)])
        elapsed = time.perf_counter() - start
        lat.sort()
        return {"rps": sum(counts) / elapsed, "p50": lat[len(lat) // 2] * 1000,
                "p99": lat[int(len(lat) * 0.99)] * 1000, "errors": len(errors)}

    return _run(main())


def misdelivered(port: int, path: str, n: int = 200) -> int:
    async def one(i: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path}{i} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int([x for x in head.split(b"\r\n")
                      if x.lower().startswith(b"content-length:")][0][15:])
        body = json.loads(await reader.readexactly(length))
        writer.close()
        return body.get("id") == str(i)

    async def main() -> int:
        return sum(not ok for ok in await asyncio.gather(*[one(i) for i in range(n)]))

    return _run(main())


# -- the run -----------------------------------------------------------------------------------

class Proc:
    def __init__(self, cmd: list[str], port: int, cwd: str = REPO,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = port
        e = env()
        e.update(extra_env or {})
        self.p = subprocess.Popen(taskset(SERVER_CPU, False) + cmd, cwd=cwd, env=e,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        t = time.time() + 60
        while not port_open(port):
            if time.time() > t or self.p.poll() is not None:
                raise RuntimeError(f"{cmd} did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.p.pid, signal.SIGKILL)


def py_server(kind: str, ms_url: str | None = None) -> Proc:
    port = free_port()
    return Proc([sys.executable, "-m", "bench.rest", "serve", kind, str(port)]
                + ([ms_url] if ms_url else []), port)


def js_server(script: str, env_: dict[str, str], port: int) -> Proc:
    home = PEER
    node_env = {"NODE_PATH": os.path.join(home, "node_modules"), **env_}
    return Proc(["node", os.path.join(JS, script)], port, cwd=home, extra_env=node_env)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--no-qewd", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(GEN_CPU)})
    procs: list[Proc] = []
    try:
        floor = py_server("floor")
        node = py_server("node")
        ms = py_server("node")
        primary = py_server("primary", f"http://127.0.0.1:{ms.port}")
        procs += [floor, node, ms, primary]
        systems = [("floor", floor.port, "/users/"), ("node-async", node.port, "/api/users/"),
                   ("node-sync", node.port, "/api/sync/"), ("node-fwd", primary.port,
                                                             "/fwd/users/")]
        if not args.no_qewd:
            qms_port, qp_port = free_port(), free_port()
            qms = js_server("rest_ms.js", {"QEWD_REST_MS_PORT": str(qms_port)}, qms_port)
            procs.append(qms)
            qp = js_server("rest_primary.js", {"QEWD_REST_PRIMARY_PORT": str(qp_port),
                                               "QEWD_REST_MS_URL": f"http://127.0.0.1:{qms_port}"},
                           qp_port)
            procs.append(qp)
            systems += [("qewd-local", qp.port, "/api/item/"), ("qewd-fwd", qp.port,
                                                                "/qjs/users/")]
        # warm up (QEWD.js forks its workers lazily; links register)
        for name, port, path in systems:
            for _ in range(3):
                try:
                    load(port, path, 4, 0.5)
                    break
                except (OSError, asyncio.IncompleteReadError):
                    time.sleep(1)
        results: dict[str, list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for n in args.clients:
                for name, port, path in systems:
                    results.setdefault(f"{name}/{n}", []).append(
                        load(port, path, n, args.duration))
            print(f"round {r + 1} done", file=sys.stderr, flush=True)
        mis = {"node-fwd": misdelivered(primary.port, "/fwd/users/")}
        if not args.no_qewd:
            mis["qewd-fwd"] = misdelivered(qp.port, "/qjs/users/")
    finally:
        for p in reversed(procs):
            p.stop()
    print(report(results, args, mis))


def report(results: dict[str, list[dict[str, float]]], args: Any, mis: dict[str, int]) -> str:
    def med(key: str, field: str) -> float:
        return statistics.median(x[field] for x in results[key])

    names = sorted({k.split("/")[0] for k in results}, key=lambda s: [
        "floor", "node-async", "node-sync", "qewd-local", "node-fwd", "qewd-fwd"].index(s))
    lines = [f"REST, keep-alive clients, {args.rounds} rounds x {args.duration:g} s, medians "
             "(req/s; p50 / p99 ms; errors summed)", "",
             "| system | " + " | ".join(f"{n} client{'s' * (n > 1)}" for n in args.clients) + " |",
             "|---|" + "---|" * len(args.clients)]
    for name in names:
        cells = []
        for n in args.clients:
            key = f"{name}/{n}"
            errs = sum(x["errors"] for x in results[key])
            cells.append(f"{med(key, 'rps'):.0f} ({med(key, 'p50'):.1f} / {med(key, 'p99'):.1f})"
                         + (f", {errs} errors" if errs else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in args.clients:
        f = med(f"floor/{n}", "rps")
        def rps(name: str) -> float:
            return med(f"{name}/{n}", "rps")

        parts = [f"node-async/floor {rps('node-async') / f:.2f}x"]
        if f"qewd-local/{n}" in results:
            parts.append(f"node-async/qewd-local {rps('node-async') / rps('qewd-local'):.2f}x")
            parts.append(f"node-fwd/qewd-fwd {rps('node-fwd') / rps('qewd-fwd'):.2f}x")
        lines.append(f"- {n} client{'s' * (n > 1)}: " + ", ".join(parts))
    lines.append("- misdelivered replies at 200 concurrent forwarded requests: "
                 + ", ".join(f"{k} {v}" for k, v in mis.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        main()
