"""
A load generator for QEWD nodes: many Engine.IO 3 / socket.io 2 WebSocket clients in one process.

Each client opens ``/socket.io/?EIO=3&transport=websocket``, waits for the server's ``0{sid}``
and ``40``, registers (``ewd-register`` with ``jwt: true``), optionally logs in once, and then
keeps ``--inflight`` requests outstanding in a closed loop, taking the re-issued token from each
final reply. It reports completed requests per second and latency percentiles over a measured
window, and counts errors, timeouts, intermediate frames, unsolicited frames (broadcasts) and
replies that reached the wrong client.

Misdelivery checks (a reply counts once, as the first check that fails):

* every request carries a unique nonce ``<client>.<seq>``: a local echo handler returns it in
  ``message.text`` (``You sent: <nonce>``), the bench micro-service returns it in
  ``message.nonce``; a nonce from another client is a misdelivery;
* every token in a reply is verified and decrypted with ``qewd_twisted.auth.tokens.TokenCodec``; its
  secret ``socketId`` must be this client's Engine.IO sid, and, when each client logs in as its
  own user, its secret ``username`` must be that user (intermediate frames' ``username`` too).

Speed matters more than generality here (it must outrun the bare floor server on one core): the
WebSocket client is a small asyncio Protocol (RFC 6455 client framing, masking with one big-int
XOR), replies are parsed with orjson when it is installed, uvloop is used when installed, and
token identities are cached per token string (a token is re-issued identically within a second).

Modes: ``load`` (the closed loop above), ``idle`` (open and register N connections, report the
time to do so, hold them until told to close), ``probe`` (one client sending a request every
``--interval`` without waiting for replies, recording each reply's time and outcome, for
link-recovery timing). Output is one JSON object on stdout (``idle`` also prints a
``{"event": "idle-ready", ...}`` line first and then waits for a line on stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

try:  # a fast JSON parser, when installed
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

SECRET = "someSecret123"
perf = time.perf_counter

_EVENT = b"42"
_TYPED = b'42["ewdjs",{"type":'
_PING = b"2"


# -- RFC 6455 client framing ------------------------------------------------------------------

def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final, masked client frame (a fresh random mask per frame, as RFC 6455 asks)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    mask = random.getrandbits(32).to_bytes(4, "little")
    if not n:
        return head + mask
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return head + mask + (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def handshake_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# -- identity of a token --------------------------------------------------------------------

class _WallClock:
    def seconds(self) -> float:
        return time.time()


class Identity:
    """``token -> (socketId, username)`` from its verified, decrypted ``qewd`` claim; cached.

    ``None`` for a token that does not verify (wrong secret, expired, bad qewd claim).
    """

    def __init__(self, secret: str = SECRET) -> None:
        # the node's own codec: the same bits as QEWD.js
        from qewd_twisted.auth.tokens import TokenCodec

        self._codec = TokenCodec(secret, clock=_WallClock())
        self._cache: dict[str, tuple[Any, Any] | None] = {}
        self.decoded = 0

    def __call__(self, token: str) -> tuple[Any, Any] | None:
        try:
            return self._cache[token]
        except KeyError:
            pass
        from qewd_twisted.auth.tokens import TokenError

        self.decoded += 1
        try:
            s = self._codec.session(token)
            ident: tuple[Any, Any] | None = (s.get("socketId"), s.get("username"))
        except (TokenError, TypeError, ValueError):
            ident = None
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[token] = ident
        return ident


# -- statistics --------------------------------------------------------------------------------

class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.completed = 0  # successful finals inside the measured window
        self.errors = 0  # error replies inside the window
        self.error_kinds: dict[str, int] = {}
        self.timeouts = 0
        self.intermediates = 0
        self.other_frames = 0  # unsolicited frames (broadcasts)
        self.misdelivered = 0
        self.misdelivery_kinds: dict[str, int] = {}
        self.invalid_tokens = 0
        self.unexpected = 0  # a final with no request outstanding / unknown own nonce
        self.connect_errors = 0
        self.connections_lost = 0
        self.total_finals = 0  # every final frame, any phase

    def error(self, text: str, in_window: bool) -> None:
        if in_window:
            self.errors += 1
        key = text[:80]
        self.error_kinds[key] = self.error_kinds.get(key, 0) + 1

    def misdelivery(self, kind: str) -> None:
        self.misdelivered += 1
        self.misdelivery_kinds[kind] = self.misdelivery_kinds.get(kind, 0) + 1


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max/mean in milliseconds (nearest-rank)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    v = sorted(values)
    n = len(v)

    def rank(p: float) -> float:
        return v[min(n - 1, max(0, int(p * n + 0.5) - 1))] * 1000.0

    return {"p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p99": round(rank(0.99), 3), "max": round(v[-1] * 1000.0, 3),
            "mean": round(sum(v) / n * 1000.0, 3)}


# -- one client ----------------------------------------------------------------------------------

class Client(asyncio.Protocol):
    """One Engine.IO WebSocket client; the generator drives it."""

    def __init__(self, gen: "Generator", idx: int) -> None:
        self.gen = gen
        self.idx = idx
        self.prefix = f"{idx}."
        self.user = f"bench{idx}" if gen.per_client_user else gen.user
        self.transport: asyncio.Transport | None = None
        self.handshaking = True
        self.buf = b""
        self.frag: list[bytes] | None = None
        self.sid: str | None = None
        self.token: str | None = None
        self.phase = "connecting"
        self.seq = 0
        self.pending: dict[str, float] = {}
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = False

    # transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        g = self.gen
        transport.write(handshake_request(g.host, g.port, g.path))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.phase not in ("closing", "done"):
            self.gen.stats.connections_lost += 1
            self.gen.client_failed(self, "connection lost")
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection lost before open"))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos = 0
        if self.handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.gen.client_failed(self, "handshake refused: " + status.decode("latin-1"))
                self.transport.close()
                return
            self.handshaking = False
            pos = end + 4
        n = len(data)
        while n - pos >= 2:
            b0 = data[pos]
            ln = data[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            payload = data[pos + hl : end]
            pos = end
            op = b0 & 0x0F
            if not b0 & 0x80:  # a fragment
                if op:
                    self.frag = [payload]
                elif self.frag is not None:
                    self.frag.append(payload)
                continue
            if op == 0 and self.frag is not None:
                self.frag.append(payload)
                payload, self.frag, op = b"".join(self.frag), None, 1
            if op == 1:
                self.on_text(payload)
            elif op == 8:
                self.phase = "done" if self.phase in ("closing", "done") else self.phase
                self.transport.close()
                return
            elif op == 9:
                self.transport.write(ws_frame(payload, 10))
        if pos < n:
            self.buf = data[pos:]

    def send_text(self, text: bytes) -> None:
        if not self.closed:
            self.transport.write(ws_frame(text))

    # Engine.IO / socket.io
    def on_text(self, payload: bytes) -> None:
        if payload[:2] == _EVENT:
            self.on_event(payload)
        elif payload[:1] == b"0":
            self.sid = _loads(payload[1:])["sid"]
        elif payload == b"40":
            if not self.opened.done():
                self.opened.set_result(None)
            self.phase = "registering"
            self.send_text(b'42["ewdjs",{"type":"ewd-register","application":"%s","jwt":true}]'
                           % self.gen.app.encode())
        # "3" (pong) and anything else: nothing to do

    def on_event(self, payload: bytes) -> None:
        g = self.gen
        st = g.stats
        if not payload.startswith(_TYPED) and b'"message"' not in payload:
            st.other_frames += 1  # a broadcast such as {"test":"message 2"}
            return
        try:
            arr = _loads(payload[2:])
            msg = arr[1]
            mtype = msg.get("type")
            message = msg.get("message")
        except Exception:
            st.error("unparseable frame", g.in_window())
            return
        finished = msg.get("finished")
        if finished is False:
            return self.on_intermediate(message)
        error = message.get("error") if isinstance(message, dict) else None
        if mtype == "ewd-register" and self.phase == "registering":
            return self.on_registered(message, error)
        st.total_finals += 1
        if self.phase == "setup":
            return self.on_setup_reply(message, error)
        if error is not None or not isinstance(message, dict):
            text = error if isinstance(error, str) else json.dumps(message)[:80]
            return self.complete(self.oldest(), ok=False, error=text)
        # A successful final: which request, and is it really ours?
        nonce = None
        if g.echo == "text":
            text = message.get("text")
            if isinstance(text, str) and text.startswith("You sent: "):
                nonce = text[10:]
        elif g.echo == "nonce":
            nonce = message.get("nonce")
        token = message.get("token")
        if token is not None:
            ident = g.identity(token)
            if ident is None:
                st.invalid_tokens += 1
                return self.complete(self.oldest(), ok=False, error="invalid token in reply")
            if g.check_identity:
                if ident[0] != self.sid:
                    return st.misdelivery("token socketId")
                if g.per_client_user and ident[1] != self.user:
                    return st.misdelivery("token username")
            self.token = token
        elif g.expect_token:
            return self.complete(self.oldest(), ok=False, error="no token in reply")
        if nonce is not None:
            if not isinstance(nonce, str) or not nonce.startswith(self.prefix):
                return st.misdelivery("nonce")
            if nonce not in self.pending:
                st.unexpected += 1
                return
            return self.complete(nonce, ok=True)
        if g.echo != "none":
            return st.misdelivery("missing nonce")
        self.complete(self.oldest(), ok=True)

    def on_intermediate(self, message: Any) -> None:
        g = self.gen
        g.stats.intermediates += 1
        if g.per_client_user and g.check_identity and isinstance(message, dict):
            if "username" in message and message["username"] != self.user:
                g.stats.misdelivery("intermediate username")

    def on_registered(self, message: Any, error: Any) -> None:
        g = self.gen
        token = message.get("token") if isinstance(message, dict) else None
        if error is not None or not isinstance(token, str):
            return g.client_failed(self, f"register failed: {error or message!r}"[:120])
        ident = g.identity(token)
        if ident is None:
            g.stats.invalid_tokens += 1
        elif ident[0] != self.sid:
            g.stats.misdelivery("register token socketId")
        self.token = token
        if g.setup_login:
            self.phase = "setup"
            g.queue_setup(self)
        else:
            self.phase = "ready"
            g.client_ready(self)

    def start_setup(self) -> None:
        g = self.gen
        self.send_text(self._login(g.setup_login[0], g.setup_login[1], "setup"))

    def on_setup_reply(self, message: Any, error: Any) -> None:
        g = self.gen
        token = message.get("token") if isinstance(message, dict) else None
        if error is not None or not isinstance(token, str):
            g.client_failed(self, f"setup login failed: {error or message!r}"[:120])
            return g.next_setup()
        ident = g.identity(token)
        if ident is None or ident[0] != self.sid:
            g.stats.misdelivery("setup token socketId")
        self.token = token
        self.phase = "ready"
        g.client_ready(self)
        g.next_setup()

    # requests
    def _login(self, user: str, password: str, nonce: str) -> bytes:
        return ('42["ewdjs",{"type":"%s","token":"%s","params":{"username":"%s",'
                '"password":"%s","nonce":"%s"}}]'
                % (self.gen.login_type, self.token, user, password, nonce)).encode()

    def send_request(self) -> None:
        g = self.gen
        self.seq += 1
        nonce = f"{self.prefix}{self.seq}"
        if g.request == "echo":
            text = ('42["ewdjs",{"type":"%s","token":"%s","params":{"text":"%s"}}]'
                    % (g.mtype, self.token, nonce)).encode()
        else:
            text = self._login(self.user, g.password, nonce)
        self.pending[nonce] = perf()
        self.send_text(text)

    def oldest(self) -> str | None:
        for nonce in self.pending:
            return nonce
        return None

    def complete(self, nonce: str | None, ok: bool, error: str = "") -> None:
        g = self.gen
        if nonce is None:
            g.stats.unexpected += 1
            if not ok:
                g.stats.error(error, g.in_window())
            return
        t0 = self.pending.pop(nonce)
        now = perf()
        inside = g.t0 <= now <= g.t1
        if ok:
            if inside:
                g.stats.completed += 1
                g.stats.latencies.append(now - t0)
        else:
            g.stats.error(error, inside)
        if g.running and not self.closed:
            if not ok and g.error_pause:
                asyncio.get_running_loop().call_later(g.error_pause, self._resend)
            else:
                self.send_request()

    def _resend(self) -> None:
        if self.gen.running and not self.closed:
            self.send_request()

    def close(self) -> None:
        if self.closed or self.transport is None:
            return
        self.phase = "closing"
        try:
            self.transport.write(ws_frame(b"41") + ws_frame(b"\x03\xe8", 8))
        except Exception:
            pass
        self.transport.close()


# -- the generator ------------------------------------------------------------------------------

class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        u = urlsplit(args.url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.app = args.app
        self.request = args.request
        self.mtype = args.type or ("echo" if args.request == "echo" else "login")
        self.login_type = args.login_type
        self.password = args.password
        self.user = args.user
        self.per_client_user = args.user == "per-client" and args.request == "login"
        self.echo = args.echo or ("text" if args.request == "echo" else "nonce")
        self.check_identity = not args.no_identity
        self.expect_token = not args.no_token
        self.setup_login = tuple(args.setup_login.split(":", 1)) if args.setup_login else None
        self.identity = Identity(args.secret)
        self.error_pause = args.error_pause
        self.timeout = args.timeout
        self.stats = Stats()
        self.clients: list[Client] = []
        self.running = False
        self.t0 = float("inf")
        self.t1 = float("-inf")
        self._ready = 0
        self._ready_target = 0
        self._all_ready: asyncio.Future[None] | None = None
        self.failures: dict[str, int] = {}
        self._setup_queue: list[Client] = []
        self._setup_busy = False
        self._pinger_task: asyncio.Future[None] | None = None

    def queue_setup(self, client: Client) -> None:
        # One setup login at a time: QEWD.js keeps one callback per message type per
        # micro-service link, so overlapping logins cross over (its README, surprise 3).
        self._setup_queue.append(client)
        if not self._setup_busy:
            self.next_setup()

    def next_setup(self) -> None:
        self._setup_busy = False
        while self._setup_queue:
            client = self._setup_queue.pop(0)
            if client.phase == "setup" and not client.closed:
                self._setup_busy = True
                client.start_setup()
                return

    def in_window(self) -> bool:
        return self.t0 <= perf() <= self.t1

    def client_ready(self, client: Client) -> None:
        self._ready += 1
        if self._all_ready is not None and self._ready >= self._ready_target \
                and not self._all_ready.done():
            self._all_ready.set_result(None)

    def client_failed(self, client: Client, why: str) -> None:
        self.failures[why[:80]] = self.failures.get(why[:80], 0) + 1
        if client.phase in ("connecting", "registering", "setup"):
            client.phase = "failed"
            self._ready_target -= 1
            if self._all_ready is not None and self._ready >= self._ready_target \
                    and not self._all_ready.done():
                self._all_ready.set_result(None)

    async def connect_all(self, n: int, concurrency: int, deadline: float) -> float:
        """Open and register ``n`` clients; the seconds it took."""
        loop = asyncio.get_running_loop()
        self._ready_target = n
        self._all_ready = loop.create_future()
        sem = asyncio.Semaphore(concurrency)
        started = perf()

        async def one(i: int) -> None:
            async with sem:
                client = self.client_class(self, i)
                self.clients.append(client)
                try:
                    await self.open_client(client)
                    await asyncio.wait_for(asyncio.shield(client.opened), 30)
                except Exception as e:
                    self.stats.connect_errors += 1
                    self.client_failed(client, f"connect: {type(e).__name__}: {e}")
                    client.close()

        if self._pinger_task is None:
            self._pinger_task = asyncio.ensure_future(self._pinger())
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        try:
            await asyncio.wait_for(asyncio.shield(self._all_ready), deadline)
        except asyncio.TimeoutError:
            pass
        elapsed = perf() - started
        for t in tasks:
            if not t.done():
                t.cancel()
        return elapsed

    client_class: Any = Client  # bench/pollgen.py: long-polling and upgraded clients

    async def open_client(self, client: Client) -> None:
        await asyncio.get_running_loop().create_connection(lambda: client, self.host, self.port)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = perf()
            for c in self.clients:
                if not c.pending:
                    continue
                nonce = c.oldest()
                if now - c.pending[nonce] > self.timeout:
                    del c.pending[nonce]
                    self.stats.timeouts += 1
                    if self.running and not c.closed:
                        c.send_request()

    async def _pinger(self) -> None:
        # The server drops a client silent for pingInterval + pingTimeout (45 s).
        while True:
            await asyncio.sleep(20)
            for c in self.clients:
                if not c.closed and not c.handshaking:
                    c.send_text(_PING)

    def ready_clients(self) -> list[Client]:
        return [c for c in self.clients if c.phase == "ready" and not c.closed]

    async def close_all(self) -> None:
        if self._pinger_task is not None:
            self._pinger_task.cancel()
        for c in self.clients:
            c.close()
        await asyncio.sleep(0.05)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes (all their threads), from /proc."""
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None
    return total


def _base_result(args: argparse.Namespace, gen: Generator) -> dict[str, Any]:
    return {
        "mode": args.mode, "url": args.url, "clients": args.clients,
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def make_generator(args: argparse.Namespace) -> Generator:
    if args.transport == "websocket":
        return Generator(args)
    from .pollgen import PollingGenerator  # --transport polling | upgrade

    return PollingGenerator(args)


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    gen = make_generator(args)
    st = gen.stats
    setup_s = await gen.connect_all(args.clients, args.connect_concurrency, args.setup_timeout)
    clients = gen.ready_clients()
    watchdog = asyncio.ensure_future(gen._watchdog())
    gen.running = True
    now = perf()
    gen.t0 = now + args.warmup
    gen.t1 = gen.t0 + args.duration
    for c in clients:
        c.phase = "load"
        for _ in range(args.inflight):
            c.send_request()
    await asyncio.sleep(max(0.0, gen.t0 - perf()))
    cpu0, wall0, srv0 = _cpu(), perf(), _proc_cpu(args.server_pid)
    await asyncio.sleep(max(0.0, gen.t1 - perf()))
    cpu1, wall1, srv1 = _cpu(), perf(), _proc_cpu(args.server_pid)
    gen.running = False
    # let outstanding requests finish (not counted), then close
    drain_until = perf() + 2.0
    while perf() < drain_until and any(c.pending for c in clients):
        await asyncio.sleep(0.01)
    watchdog.cancel()
    await gen.close_all()
    cpu = cpu1 - cpu0
    wall = wall1 - wall0
    out = _base_result(args, gen)
    out.update({
        "inflight": args.inflight, "warmup_s": args.warmup, "duration_s": round(wall, 3),
        "ready_clients": len(clients), "setup_s": round(setup_s, 3),
        "completed": st.completed, "rps": round(st.completed / wall, 1) if wall else 0.0,
        "latency_ms": percentiles(st.latencies),
        "errors": st.errors, "error_kinds": st.error_kinds, "timeouts": st.timeouts,
        "intermediates": st.intermediates, "other_frames": st.other_frames,
        "misdelivered": st.misdelivered, "misdelivery_kinds": st.misdelivery_kinds,
        "invalid_tokens": st.invalid_tokens, "unexpected": st.unexpected,
        "connect_errors": st.connect_errors, "connections_lost": st.connections_lost,
        "client_failures": gen.failures, "finals_total": st.total_finals,
        "tokens_decoded": gen.identity.decoded,
        "gen_cpu_s": round(cpu, 3), "gen_cpu_frac": round(cpu / wall, 3) if wall else None,
        "gen_us_per_request": round(cpu / st.completed * 1e6, 1) if st.completed else None,
    })
    if args.server_pid and srv0 is not None and srv1 is not None:
        scpu = srv1 - srv0
        out["server_cpu_s"] = round(scpu, 3)
        out["server_cpu_frac"] = round(scpu / wall, 3) if wall else None
        out["server_us_per_request"] = (round(scpu / st.completed * 1e6, 1)
                                        if st.completed else None)
    return out


async def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    gen = make_generator(args)
    setup_s = await gen.connect_all(args.clients, args.connect_concurrency, args.setup_timeout)
    ready = gen.ready_clients()
    out = _base_result(args, gen)
    out.update({
        "ready_clients": len(ready), "accept_s": round(setup_s, 3),
        "connect_errors": gen.stats.connect_errors, "client_failures": gen.failures,
        "misdelivered": gen.stats.misdelivered, "invalid_tokens": gen.stats.invalid_tokens,
    })
    print(json.dumps({"event": "idle-ready", **out}), flush=True)
    # Hold until the runner has measured the server (a line on stdin) or the hold time ends.
    loop = asyncio.get_running_loop()
    reader = loop.run_in_executor(None, sys.stdin.readline)
    try:
        await asyncio.wait_for(reader, args.hold)
    except asyncio.TimeoutError:
        pass
    lost = gen.stats.connections_lost
    await gen.close_all()
    out["connections_lost_while_idle"] = lost
    return out


async def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    """One client sends a request every ``--interval`` seconds whether or not earlier ones
    have been answered (a lost request must not hide the recovery), for at most
    ``--duration`` seconds, and records (wall time, ok, error) for every final reply; it stops
    at the first success after a failure (a recovery)."""
    gen = make_generator(args)
    await gen.connect_all(1, 1, args.setup_timeout)
    clients = gen.ready_clients()
    if not clients:
        return {**_base_result(args, gen), "events": [], "client_failures": gen.failures}
    c = clients[0]
    events: list[tuple[float, bool, str]] = []
    state = {"failed": False, "recovered": False}

    def complete(nonce: str | None, ok: bool, error: str = "") -> None:
        if nonce is not None:
            c.pending.pop(nonce, None)
        events.append((time.time(), ok, error))
        if not ok:
            state["failed"] = True
        elif state["failed"]:
            state["recovered"] = True

    c.complete = complete  # type: ignore[method-assign]
    c.phase = "load"
    end = perf() + args.duration
    while perf() < end and not state["recovered"]:
        while len(c.pending) > 500:  # requests QEWD.js dropped: forget the oldest
            c.pending.pop(c.oldest())
        c.send_request()
        await asyncio.sleep(args.interval)
    await gen.close_all()
    out = _base_result(args, gen)
    out.update({"events": events, "recovered": state["recovered"],
                "misdelivered": gen.stats.misdelivered,
                "intermediates": gen.stats.intermediates})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True,
                   help="ws://127.0.0.1:PORT/socket.io/?EIO=3&transport=websocket")
    p.add_argument("--mode", choices=("load", "idle", "probe"), default="load")
    p.add_argument("--transport", choices=("websocket", "polling", "upgrade"),
                   default="websocket",
                   help="polling: Engine.IO long-polling only; upgrade: a polling handshake, "
                        "then the upgrade to WebSocket (bench/pollgen.py); --url stays ws://")
    p.add_argument("--app", default="bench", help="application to register")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--inflight", type=int, default=1, help="requests in flight per client")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--request", choices=("echo", "login"), default="echo",
                   help="echo: params.text=<nonce>; login: username/password/nonce")
    p.add_argument("--type", help="message type (default: echo / login)")
    p.add_argument("--login-type", default="login")
    p.add_argument("--user", default="per-client",
                   help="login username, or 'per-client' for bench<N> (checked in the token)")
    p.add_argument("--password", default="secret")
    p.add_argument("--setup-login", metavar="USER:PASSWORD",
                   help="log in once after registering (QEWD.js's `test` needs it)")
    p.add_argument("--echo", choices=("text", "nonce", "none"),
                   help="where replies echo the nonce (default: text for echo, nonce for login)")
    p.add_argument("--no-identity", action="store_true",
                   help="do not compare the reply token's socketId/username (canned replies)")
    p.add_argument("--no-token", action="store_true", help="finals carry no token")
    p.add_argument("--secret", default=SECRET)
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, s")
    p.add_argument("--error-pause", type=float, default=0.0,
                   help="wait this long after an error reply before the next request")
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--setup-timeout", type=float, default=120.0)
    p.add_argument("--hold", type=float, default=60.0, help="idle: hold at most this long")
    p.add_argument("--interval", type=float, default=0.02, help="probe: time between requests")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="report these processes' CPU time over the window (repeatable)")
    p.add_argument("--no-uvloop", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runner = {"load": run_load, "idle": run_idle, "probe": run_probe}[args.mode]
    run = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            run = uvloop.run
        except (ImportError, AttributeError):
            pass
    result = run(runner(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
