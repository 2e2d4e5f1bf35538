"""
Connection churn: does a node give back what a connection took?

Starts one node as a real ``twistd -n qewd`` child process on 127.0.0.1, then runs cycles of

    connect (WebSocket upgrade on /socket.io/) -> wait for ``0{sid}`` and ``40``
    -> ``ewd-register`` -> wait for the token -> close (1000) -> wait for the server to close

with ``--concurrency`` cycles at a time, and reports the node's resident memory
(``/proc/<pid>/status``: VmRSS, and VmHWM, the peak) after a warm-up and after each round,
together with what the node itself reports on ``/status.json`` (connections still open,
registrations counted). A node that keeps anything per connection after it closes grows with
every round; one that does not levels off after the warm-up.

    python -m bench.churn                       # JWT mode: 500 warm-up, then 10,000 cycles
    python -m bench.churn --rounds 3            # 3 x 10,000, to see whether growth levels off
    python -m bench.churn --session             # session-token mode (each cycle leaves a
                                                # server-side session until it expires)
    python -m bench.churn --polling             # Engine.IO long-polling sessions opened and
                                                # abandoned (below)

With ``--polling`` a cycle is one of, in turn: a handshake GET and nothing more (reaped by
maxPendingHandshakes); handshake, ``ewd-register`` POSTed, its reply fetched by a GET, then
silence (closed after pingInterval + pingTimeout, set to 1 s + 1 s here); the same, then a GET
left waiting and its TCP connection dropped (closed at once). The node must give all of it back.

Output: a table on stdout, and with ``--json`` one JSON object. Linux only (``/proc``).
This is a measurement, not a test: tests/integration/test_churn.py is the bounded smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from bench.loadgen import handshake_request, ws_frame

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "churnSecret123"
PASSWORD = "churn-status-password"


# -- the node ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One ``twistd -n qewd`` child process."""

    def __init__(self, workdir: str, port: int, **extra: Any) -> None:
        self.port = port
        self.startup = os.path.join(workdir, "startup.py")
        self.log_path = os.path.join(workdir, "node.log")
        config = {
            "listen": f"tcp:{port}:interface=127.0.0.1",
            "jwt": {"secret": SECRET},
            "moduleMap": {"bench": "bench.apps.bench_app"},
            "managementPassword": PASSWORD,  # for /status.json
            **extra,
        }
        with open(self.startup, "w") as f:
            f.write("config = " + repr(config) + "\n")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                 "--nodaemon", "--pidfile=", "--logfile=-", "qewd", "--config", self.startup],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the node exited:\n" + self.output())
            if "started: listening" in self.output():
                return
            time.sleep(0.1)
        raise SystemExit("the node did not start in time:\n" + self.output())

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in KiB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def status(self) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/status.json")
        auth = base64.b64encode(f"churn:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", "Basic " + auth)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one client cycle ------------------------------------------------------------------------

async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def cycle(port: int, jwt: bool) -> None:
    """connect, handshake, ewd-register, close; raises on anything unexpected."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(handshake_request("127.0.0.1", port, "/socket.io/?EIO=3&transport=websocket"))
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
        opcode, data = await _read_frame(reader)
        assert opcode == 1 and data.startswith(b"0{"), data
        opcode, data = await _read_frame(reader)
        assert data == b"40", data
        register = {"type": "ewd-register", "application": "bench", "jwt": jwt}
        writer.write(ws_frame(b"42" + json.dumps(["ewdjs", register]).encode()))
        opcode, data = await _read_frame(reader)
        reply = json.loads(data[2:])[1]
        assert reply["type"] == "ewd-register" and "token" in reply["message"], reply
        writer.write(ws_frame((1000).to_bytes(2, "big"), opcode=8))
        while True:  # until the server's close frame, then its end of the TCP connection
            opcode, data = await _read_frame(reader)
            if opcode == 8:
                break
        await reader.read()  # EOF: the server closes first (RFC 6455 §7.1.1)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _http(port: int, method: str, path: str, body: bytes = b"",
                drop: bool = False) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection; ``drop``: send it, then cut the connection
    without reading the answer (a client that went away while its GET waited)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        if drop:
            await writer.drain()
            return 0, b""
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def _payload(body: bytes) -> list[str]:
    text, out = body.decode(), []
    while text:
        n, _, rest = text.partition(":")
        out.append(rest[:int(n)])
        text = rest[int(n):]
    return out


async def polling_cycle(port: int, jwt: bool, kind: int, bare: bool = False) -> None:
    """Open a long-polling session and abandon it in one of three ways (module docstring);
    ``bare``: a ping and its pong instead of ``ewd-register`` (the transport alone)."""
    path = "/socket.io/?EIO=3&transport=polling"
    status, body = await _http(port, "GET", path)
    assert status == 200, (status, body)
    opening = _payload(body)[0]
    sid = json.loads(opening[1:])["sid"]
    if kind == 0:
        return
    path += "&sid=" + sid
    register = "42" + json.dumps(["ewdjs", {"type": "ewd-register", "application": "bench",
                                            "jwt": jwt}])
    sent = "2" if bare else register
    status, body = await _http(port, "POST", path, f"{len(sent)}:{sent}".encode())
    assert (status, body) == (200, b"ok"), (status, body)
    status, body = await _http(port, "GET", path)
    if bare:
        assert _payload(body) == ["3"], body
    else:
        reply = json.loads(_payload(body)[0][2:])[1]
        assert reply["type"] == "ewd-register" and "token" in reply["message"], reply
    if kind == 2:
        await _http(port, "GET", path, drop=True)


async def run_cycles(port: int, n: int, concurrency: int, jwt: bool,
                     polling: bool = False, bare: bool = False) -> dict[str, Any]:
    errors: dict[str, int] = {}
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            try:
                work = polling_cycle(port, jwt, i % 3, bare) if polling else cycle(port, jwt)
                await asyncio.wait_for(work, 30)
            # OSError includes TimeoutError; EOFError, asyncio.IncompleteReadError
            except (OSError, EOFError, AssertionError, KeyError, ValueError, IndexError) as e:
                key = f"{type(e).__name__}: {e}"[:100]
                errors[key] = errors.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"cycles": n, "seconds": time.perf_counter() - started, "errors": errors}


# -- the measurement ------------------------------------------------------------------------------

def snapshot(node: Node, label: str, run: dict[str, Any] | None) -> dict[str, Any]:
    status = node.status()
    registrations = sum(r["count"] for r in status.get("registrations", []))
    return {"phase": label, **node.memory(),
            "cycles": run["cycles"] if run else 0,
            "seconds": round(run["seconds"], 2) if run else 0.0,
            "errors": sum(run["errors"].values()) if run else 0,
            "error_kinds": run["errors"] if run else {},
            "open_connections": status["connections"]["total"],
            "registrations": registrations}


def settle(node: Node, timeout: float = 10) -> None:
    """Wait (briefly) until the node reports no open connections: the last closes are
    processed asynchronously after our side of each connection has gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and node.status()["connections"]["total"]:
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=10_000, help="cycles per round (10000)")
    p.add_argument("--warmup", type=int, default=500, help="warm-up cycles (500)")
    p.add_argument("--rounds", type=int, default=1, help="measured rounds (1)")
    p.add_argument("--concurrency", type=int, default=50, help="cycles at a time (50)")
    p.add_argument("--session", action="store_true", help="session-token mode, not JWT")
    p.add_argument("--polling", action="store_true",
                   help="long-polling sessions opened and abandoned, not WebSockets")
    p.add_argument("--bare", action="store_true",
                   help="with --polling: a ping instead of ewd-register (no token caches)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    random.seed(args.seed)
    jwt = not args.session

    with tempfile.TemporaryDirectory(prefix="qewd-churn-") as workdir:
        extra = ({"pingInterval": 1000, "pingTimeout": 1000, "maxPendingHandshakes": 100}
                 if args.polling else {})
        node = Node(workdir, free_port(), **extra)
        try:
            node.wait_ready()
            rows = [snapshot(node, "started", None)]
            run = asyncio.run(run_cycles(node.port, args.warmup, args.concurrency, jwt,
                                        args.polling, args.bare))
            settle(node)
            rows.append(snapshot(node, f"after {args.warmup} warm-up cycles", run))
            for i in range(args.rounds):
                run = asyncio.run(run_cycles(node.port, args.cycles, args.concurrency, jwt,
                                            args.polling, args.bare))
                settle(node)
                rows.append(snapshot(node, f"after round {i + 1} ({args.cycles} cycles)", run))
        finally:
            node.stop()

    base = rows[1]["VmRSS"]
    result = {"mode": ("jwt" if jwt else "session") + (" polling" if args.polling else "")
              + (" bare" if args.bare else ""),
              "concurrency": args.concurrency,
              "python": sys.version.split()[0], "rows": rows,
              "growth_kib": rows[-1]["VmRSS"] - base,
              "growth_bytes_per_cycle": round((rows[-1]["VmRSS"] - base) * 1024
                                              / max(1, args.cycles * args.rounds), 1)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"mode={result['mode']} concurrency={args.concurrency} python={result['python']}")
    print(f"{'phase':<34} {'VmRSS MiB':>9} {'VmHWM MiB':>9} {'cycles/s':>9} {'errors':>6} "
          f"{'open conns':>10} {'registered':>10}")
    for r in rows:
        rate = f"{r['cycles'] / r['seconds']:.0f}" if r["seconds"] else "-"
        print(f"{r['phase']:<34} {r['VmRSS'] / 1024:>9.1f} {r['VmHWM'] / 1024:>9.1f} "
              f"{rate:>9} {r['errors']:>6} {r['open_connections']:>10} "
              f"{r['registrations']:>10}")
    print(f"RSS growth after warm-up: {result['growth_kib'] / 1024:.1f} MiB "
          f"({result['growth_bytes_per_cycle']} bytes per cycle)")
    for r in rows:
        for kind, n in r["error_kinds"].items():
            print(f"  {r['phase']}: {n} x {kind}")


if __name__ == "__main__":
    main()
