# -*- test-case-name: tests.integration.test_haproxy -*-
"""
Issue 16 item 3: nodes behind a real load balancer. Debian's HAProxy (and nginx) on a loopback
port in front of separate ``twistd -n qewd`` processes that share one JWT secret and one real
redis-server (``config["database"]``), running docs/deployment.md's configurations.

- clients spread: WebSocket and Engine.IO long-polling clients land on different nodes (the
  ``lb`` handlers answer with the node's pid);
- sessions follow the user: a JWT and a session token from node A work on node B, on either
  transport; a real socket.io client (python-socketio 4) polls and upgrades through it;
- long-polling needs stickiness: with the documented stick table every request of a polling
  session reaches its node; without it the next request meets ``Session ID unknown``;
- ``kill -9`` of a node: every request in flight is either answered or its client saw the
  disconnect (each accounted for); the node's clients reconnect through HAProxy and
  ``ewd-reregister`` on a survivor, still logged in;
- the documented HAProxy and nginx blocks pass ``haproxy -c`` / ``nginx -t``, the systemd
  unit's stop timeout covers the drain.

HAProxy, nginx and redis-server missing FAIL these tests (tests/strict.py, area ``balancer``).
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from qewd_twisted.config.limits import Limits
from qewd_twisted.core.node import Node
from tests.documents.redisserver import RedisServer, redis_server_path
from tests.integration.balancers import (
    BalancerProcess, doc_block, haproxy_path, loopback_haproxy, loopback_nginx, nginx_path,
    nginx_wrapper, start_nodes, wait_http,
)
from tests.integration.processes import REPO
from tests.pollclient import PollClient
from tests.ports import reserve_port
from tests.strict import require
from tests.wsclient import Closed, EIOClient

SECRET = "lb-test-secret"
APP = "lb"

LIMITS = Limits()
#: what a socket.io client may stay silent for before a node closes it (seconds)
SILENCE = (LIMITS.ping_interval + LIMITS.ping_timeout) / 1000


class Disconnected(Exception):
    """The client saw its connection (WebSocket or polling session) end."""


class LBClient:
    """One client of the mesh through the balancer: a WebSocket (``ws``) or a long-polling
    (``poll``) Engine.IO client, JWT or session-token mode."""

    def __init__(self, test: TestCase, port: int, kind: str, jwt: bool) -> None:
        self.test, self.port, self.kind, self.jwt = test, port, kind, jwt
        self.token: str | None = None
        self.pid: int | None = None
        self.c: Any = None

    def __repr__(self) -> str:
        return f"<{self.kind} {'jwt' if self.jwt else 'session'} client on pid {self.pid}>"

    async def open(self) -> "LBClient":
        if self.kind == "ws":
            self.c = EIOClient(
                f"ws://127.0.0.1:{self.port}/socket.io/?EIO=3&transport=websocket")
            self.test.addCleanup(self.c.close)
            await self.c.handshake()
        else:
            self.c = PollClient(f"http://127.0.0.1:{self.port}")
            self.test.addCleanup(self.c.stop)
            await self.c.handshake()
            self.c.start()
        return self

    async def send(self, obj: dict) -> None:
        try:
            if self.kind == "ws":
                self.c.emit(obj)
            else:
                await self.c.emit(obj)
        except Exception as e:  # a POST the balancer or a new node refused
            raise Disconnected(repr(e)) from e

    async def next(self) -> dict:
        try:
            return await self.c.message()
        except (Closed, ConnectionError) as e:
            raise Disconnected(repr(e)) from e

    async def call(self, obj: dict) -> dict:
        """Send ``obj``; its final reply's ``message`` (intermediate frames skipped)."""
        await self.send(obj)
        while True:
            frame = await self.next()
            if frame.get("finished") is not False and frame["type"] == obj["type"]:
                message = frame["message"]
                if self.jwt and isinstance(message, dict) and message.get("token"):
                    self.token = message["token"]
                return message

    async def register(self) -> None:
        msg = {"type": "ewd-register", "application": APP}
        if self.jwt:
            msg["jwt"] = True
        self.token = (await self.call(msg))["token"]

    async def reregister(self) -> dict:
        msg = {"type": "ewd-reregister", "token": self.token}
        if self.jwt:
            msg["jwt"] = True
        return await self.call(msg)

    async def login(self) -> None:
        reply = await self.call({"type": "login", "token": self.token,
                                 "params": {"username": "rob", "password": "secret"}})
        self.test.assertIs(reply.get("ok"), True, reply)

    async def whoami(self) -> dict:
        reply = await self.call({"type": "whoami", "token": self.token})
        self.pid = reply["pid"]
        return reply


def d(coro: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(coro)


class MeshTestCase(TestCase):
    timeout = 150

    def start_redis(self) -> int:
        if redis_server_path() is None:
            require(self, "balancer", "redis-server is not installed (apt-get install -y "
                                      "redis-server)")
        server = RedisServer()
        self.addCleanup(server.cleanup)
        return server.start()

    @defer.inlineCallbacks
    def start_mesh(self, count: int, **config: Any):
        """``count`` nodes sharing a secret and a Redis (``config``: other keys); fires with
        their ports and processes."""
        redis_port = self.start_redis()
        nodes = yield start_nodes(self, count, SECRET, redis_port, **config)
        return nodes

    @defer.inlineCallbacks
    def start_haproxy(self, node_ports: list[int], sticky: bool = True):
        """HAProxy running docs/deployment.md's block (or, ``sticky=False``, that block without
        its stick table, balancing round robin) in front of ``node_ports``; fires with its port
        once it answers ``/health`` through to a node."""
        exe = haproxy_path(self)
        port = reserve_port(self)
        cfg = loopback_haproxy(doc_block("haproxy"), port, node_ports)
        if not sticky:
            cfg = "\n".join(line for line in cfg.splitlines()
                            if not line.strip().startswith(("stick", "stick-table")))
            cfg = cfg.replace("balance leastconn", "balance roundrobin") + "\n"
        d_ = os.path.abspath(self.mktemp())
        os.makedirs(d_)
        path = os.path.join(d_, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        proc = BalancerProcess(self, "haproxy", [exe, "-db", "-f", path])
        yield wait_http(f"http://127.0.0.1:{port}/health", proc)
        return port

    @defer.inlineCallbacks
    def clients(self, port: int, kind: str, count: int):
        """``count`` clients of ``kind``, alternately JWT and session-token mode, registered,
        logged in as rob and asked ``whoami`` (so each knows its node's pid)."""
        out = []
        for i in range(count):
            c = LBClient(self, port, kind, jwt=(i % 2 == 0))
            yield d(c.open())
            yield d(c.register())
            yield d(c.login())
            who = yield d(c.whoami())
            self.assertEqual(who["username"], "rob")
            out.append(c)
        return out

    @defer.inlineCallbacks
    def python_socketio(self, port: int):
        """python-socketio 4's client with its defaults (polling, then the upgrade) through
        the balancer on ``port``: registers, logs in and echoes (psio_client.py)."""
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, [os.path.join(REPO, "tests", "integration", "psio_client.py"),
                             f"http://127.0.0.1:{port}"], env=env, path=REPO)
        self.assertEqual(code, 0, err.decode())
        lines = [json.loads(li) for li in out.decode().splitlines() if li.startswith("{")]
        self.assertEqual(lines[-1]["transport"], "websocket", lines)
        self.assertEqual([f["type"] for f in lines[:-1] if f.get("finished")],
                         ["ewd-register", "login", "echo"])


class ConfigCheckTests(TestCase):
    """The documented configurations are valid for the real programs, and their timeouts fit
    the node's defaults."""

    timeout = 60

    def write(self, name: str, text: str) -> str:
        d_ = os.path.abspath(self.mktemp())
        os.makedirs(d_)
        path = os.path.join(d_, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    @defer.inlineCallbacks
    def test_haproxy_block_is_valid(self):
        exe = haproxy_path(self)
        block = doc_block("haproxy")
        for cfg in (block, loopback_haproxy(block, 8080, [9001, 9002])):
            out, err, code = yield getProcessOutputAndValue(
                exe, ["-c", "-f", self.write("haproxy.cfg", cfg)], env=dict(os.environ))
            self.assertEqual(code, 0, (out + err).decode())
            self.assertIn(b"Configuration file is valid", out + err)
        # a broken line is refused: the check can fail
        out, err, code = yield getProcessOutputAndValue(
            exe, ["-c", "-f", self.write("bad.cfg", block.replace("balance", "balanse"))],
            env=dict(os.environ))
        self.assertNotEqual(code, 0)
        # timeouts: a held poll or a quiet WebSocket is not cut before the node would
        for key in ("timeout client", "timeout server"):
            line = next(li for li in block.splitlines() if li.strip().startswith(key))
            self.assertGreater(int(line.split()[-1].rstrip("s")), SILENCE, line)
        self.assertIn("stick store-response res.cook(io)", block)
        self.assertIn("stick match url_param(sid)", block)
        self.assertIn("option httpchk GET /ready", block)

    @defer.inlineCallbacks
    def test_nginx_block_is_valid(self):
        exe = nginx_path(self)
        prefix = os.path.abspath(self.mktemp())
        os.makedirs(prefix)
        block = doc_block("nginx")
        for http in (block, loopback_nginx(block, 8080, [9001, 9002])):
            conf = self.write("nginx.conf", nginx_wrapper(http, prefix))
            out, err, code = yield getProcessOutputAndValue(
                exe, ["-t", "-c", conf, "-p", prefix, "-e", "stderr"], env=dict(os.environ))
            self.assertEqual(code, 0, (out + err).decode())
            self.assertIn(b"test is successful", out + err)
        conf = self.write("bad.conf", nginx_wrapper(block.replace("least_conn;", "least_con;"),
                                                    prefix))
        out, err, code = yield getProcessOutputAndValue(
            exe, ["-t", "-c", conf, "-p", prefix, "-e", "stderr"], env=dict(os.environ))
        self.assertNotEqual(code, 0)
        for key in ("proxy_read_timeout", "proxy_send_timeout"):
            line = next(li for li in block.splitlines() if li.strip().startswith(key))
            self.assertGreater(int(line.split()[-1].rstrip("s;")), SILENCE, line)

    def test_systemd_unit(self):
        unit = configparser.ConfigParser(interpolation=None, strict=False)
        unit.optionxform = str  # keys are case-sensitive in systemd
        unit.read_string(doc_block("ini"))
        service = unit["Service"]
        argv = service["ExecStart"].split()
        self.assertTrue(argv[0].endswith("/twistd"), argv)
        self.assertIn("-n", argv)
        self.assertEqual(argv[argv.index("qewd"):], ["qewd", "--config", "/etc/qewd/startup.py"])
        self.assertIn(service["Restart"], ("on-failure", "always", "on-abnormal"))
        self.assertEqual(service["KillSignal"], "SIGTERM")
        # the drain (shutdownGracePeriod) and the close wait after it fit before SIGKILL
        close_wait = inspect.signature(Node.close_all).parameters["timeout"].default
        self.assertGreater(int(service["TimeoutStopSec"]), LIMITS.shutdown_grace + close_wait)


class HAProxyTests(MeshTestCase):

    @defer.inlineCallbacks
    def test_spread_and_sessions_on_any_node(self):
        """Clients spread over three nodes; a JWT and a session token from node A work on
        node B, over WebSocket and long-polling; polling sessions stick to their node."""
        nodes = yield self.start_mesh(3)
        port = yield self.start_haproxy([p for p, _ in nodes])
        pids = {proc.transport.pid for _, proc in nodes}

        ws = yield self.clients(port, "ws", 3)
        polls = yield self.clients(port, "poll", 3)
        self.assertEqual({c.pid for c in ws}, pids)  # leastconn: one WebSocket per node
        self.assertGreaterEqual(len({c.pid for c in polls}), 2, polls)
        self.assertLessEqual({c.pid for c in polls}, pids)

        for jwt in (True, False):
            a = next(c for c in ws if c.jwt == jwt)
            # the token used as is on every other node, on a fresh WebSocket
            seen = {a.pid}
            for _ in range(6):
                if seen == pids:
                    break
                b = LBClient(self, port, "ws", jwt)
                yield d(b.open())
                b.token = a.token
                who = yield d(b.whoami())
                self.assertEqual(who["username"], "rob", (jwt, who))
                # and after ewd-reregister, as a reconnecting client does
                ok = yield d(b.reregister())
                self.assertIs(ok["ok"], True)
                self.assertEqual(bool(ok.get("token")), jwt)
                self.assertEqual((yield d(b.whoami()))["username"], "rob")
                seen.add(b.pid)
            self.assertEqual(seen, pids, f"jwt={jwt}: the token was not used on every node")
            # over long-polling: reregister with node A's token, wherever the session lands
            p = LBClient(self, port, "poll", jwt)
            yield d(p.open())
            p.token = a.token
            yield d(p.reregister())
            self.assertEqual((yield d(p.whoami()))["username"], "rob")

        # stickiness: every request of a polling session reaches the node that made it
        for c in polls:
            for i in range(5):
                reply = yield d(c.call({"type": "echo", "token": c.token, "params": {"id": i}}))
                self.assertEqual((reply["pid"], reply["id"]), (c.pid, i))

        # a real socket.io client (polling, then the upgrade to WebSocket) through HAProxy
        yield self.python_socketio(port)

    @defer.inlineCallbacks
    def test_polling_without_stickiness_fails(self):
        """Why the stick table is there: without it a polling session's next request goes to
        another node, which does not know the session."""
        nodes = yield self.start_mesh(2)
        port = yield self.start_haproxy([p for p, _ in nodes], sticky=False)
        c = PollClient(f"http://127.0.0.1:{port}")
        self.addCleanup(c.stop)
        yield d(c.handshake())
        answers = []
        for _ in range(2):  # round robin over two nodes: one of two requests goes elsewhere
            answers.append((yield d(c.post(["2"]))))  # a ping, answered at once
        self.assertIn((400, b'{"code":1,"message":"Session ID unknown"}'), answers)

    @defer.inlineCallbacks
    def test_kill_9_one_node(self):
        """A node dies (SIGKILL) with requests in flight: each is answered or its client saw
        the disconnect; its clients reconnect through HAProxy and re-register on a survivor."""
        nodes = yield self.start_mesh(3)
        port = yield self.start_haproxy([p for p, _ in nodes])
        by_pid = {proc.transport.pid: proc for _, proc in nodes}

        ws = yield self.clients(port, "ws", 6)
        polls = yield self.clients(port, "poll", 3)
        everyone = ws + polls
        self.assertEqual({c.pid for c in ws}, set(by_pid))
        self.assertGreaterEqual(len({c.pid for c in polls}), 2, polls)

        # the victim holds a polling client (and, leastconn, two WebSockets)
        victim_pid = polls[0].pid
        victims = [c for c in everyone if c.pid == victim_pid]
        survivors = [c for c in everyone if c.pid != victim_pid]
        self.assertTrue(any(c.kind == "ws" for c in victims), victims)

        # requests in flight: one `hold` per client, running in its node, then three echoes;
        # all wait in the node (running or queued for a worker thread) until the release file
        # exists, which is after the kill
        release = os.path.join(os.path.abspath(self.mktemp()), "release")
        os.makedirs(os.path.dirname(release))
        for c in everyone:
            yield d(c.send({"type": "hold", "token": c.token, "params": {"release": release}}))
            first = yield d(c.next())
            self.assertEqual(first["message"], {"holding": c.pid})
        sent: dict[int, list[Any]] = {}
        for c in everyone:
            sent[id(c)] = ["hold"]
            for i in range(3):
                yield d(c.send({"type": "echo", "token": c.token,
                                "params": {"id": i, "release": release}}))
                sent[id(c)].append(i)
        in_flight = sum(len(v) for v in sent.values())
        self.assertEqual(in_flight, 4 * len(everyone))  # bounded, and each is accounted for

        yield by_pid[victim_pid].signal("KILL")
        with open(release, "w"):
            pass  # the survivors' holds finish now

        outcomes = yield defer.DeferredList(
            [d(self.outcome(c, sent[id(c)])).addTimeout(30, reactor) for c in everyone],
            consumeErrors=True)
        replied = lost_seen = 0
        for c, (ok, result) in zip(everyone, outcomes):
            if not ok:  # no reply and no disconnect within 30 s: silently lost
                self.fail(f"{c}: requests {sent[id(c)]} neither answered nor disconnected "
                          f"({result.value!r})")
            answered, disconnected = result
            if c in victims:
                self.assertTrue(disconnected, f"{c} never saw its node die")
                self.assertEqual(answered, set())  # all were waiting when the node died
            else:
                self.assertFalse(disconnected, c)
                self.assertEqual(answered, set(sent[id(c)]), c)
            replied += len(answered)
            lost_seen += len(set(sent[id(c)]) - answered)
        self.assertEqual(replied + lost_seen, in_flight)
        self.assertEqual(lost_seen, 4 * len(victims))

        # the victim's clients reconnect through HAProxy and re-register on a survivor
        alive = set(by_pid) - {victim_pid}
        for old in victims:
            c = LBClient(self, port, old.kind, old.jwt)
            c.token = old.token
            yield d(c.open())
            ok = yield d(c.reregister())
            self.assertIs(ok["ok"], True, ok)
            who = yield d(c.whoami())
            self.assertIn(c.pid, alive)
            self.assertEqual(who["username"], "rob")  # still logged in: no new login
            # what was lost is sent again, and answered
            for i in [x for x in sent[id(old)] if x != "hold"]:
                reply = yield d(c.call({"type": "echo", "token": c.token, "params": {"id": i}}))
                self.assertEqual((reply["id"], reply["pid"]), (i, c.pid))
        # the survivors' clients were not disturbed
        for c in survivors:
            reply = yield d(c.call({"type": "echo", "token": c.token, "params": {"id": 99}}))
            self.assertEqual(reply["pid"], c.pid)

    @defer.inlineCallbacks
    def test_sigterm_drains_behind_haproxy(self):
        """A node stopped gracefully (SIGTERM, as systemd stops it): it stops listening, so
        new connections go to the other node; the requests it is running are answered to its
        WebSocket clients, then they see the close; all its clients re-register on the other
        node."""
        nodes = yield self.start_mesh(2, shutdownGracePeriod=30)
        port = yield self.start_haproxy([p for p, _ in nodes])
        by_pid = {proc.transport.pid: (p, proc) for p, proc in nodes}
        ws = yield self.clients(port, "ws", 4)
        polls = yield self.clients(port, "poll", 2)
        self.assertEqual({c.pid for c in ws}, set(by_pid))
        stopping_pid = ws[0].pid
        leaving = [c for c in ws + polls if c.pid == stopping_pid]
        staying = [c for c in ws + polls if c.pid != stopping_pid]

        release = os.path.join(os.path.abspath(self.mktemp()), "release")
        os.makedirs(os.path.dirname(release))
        for c in leaving:
            yield d(c.send({"type": "hold", "token": c.token, "params": {"release": release}}))
            self.assertEqual((yield d(c.next()))["message"], {"holding": c.pid})
        node_port, proc = by_pid[stopping_pid]
        closed = proc.wait_for(f"Port {node_port} Closed")
        ended = proc.signal("TERM")
        yield closed  # it no longer listens: draining
        with open(release, "w"):
            pass
        for c in leaving:
            outcome = yield d(self.outcome(c, ["hold"])).addTimeout(30, reactor)
            if c.kind == "ws":  # the request it was running is answered, then the close
                self.assertEqual(outcome, ({"hold"}, False), c)
                with self.assertRaises(Disconnected):
                    yield d(c.next()).addTimeout(30, reactor)
            else:
                # a long-polling client collects its reply with its next GET, a new
                # connection, which a node that stopped listening no longer takes: answered
                # if that GET was already waiting, else it meets `Session ID unknown` on the
                # other node (docs/deployment.md); never silence
                self.assertIn(outcome, [({"hold"}, False), (set(), True)], c)
        yield ended
        other = (set(by_pid) - {stopping_pid}).pop()
        for old in leaving:
            c = LBClient(self, port, old.kind, old.jwt)
            c.token = old.token
            yield d(c.open())
            self.assertIs((yield d(c.reregister()))["ok"], True)
            self.assertEqual((yield d(c.whoami())), {"pid": other, "username": "rob",
                                                    **({"token": c.token} if c.jwt else {})})
        for c in staying:
            self.assertEqual((yield d(c.whoami()))["pid"], other)

    async def outcome(self, c: LBClient, expected: list[Any]) -> tuple[set[Any], bool]:
        """Read ``c``'s frames until every request in ``expected`` is answered or the client
        sees its connection end: (what was answered, whether it saw the disconnect)."""
        answered: set[Any] = set()
        while answered != set(expected):
            try:
                frame = await c.next()
            except Disconnected:
                return answered, True
            if frame["type"] == "echo":
                answered.add(frame["message"]["id"])
            elif frame["type"] == "hold" and frame.get("finished"):
                self.assertIs(frame["message"]["released"], True)
                answered.add("hold")
        return answered, False


class NginxTests(MeshTestCase):

    @defer.inlineCallbacks
    def test_nginx_in_front(self):
        """docs/deployment.md's nginx block in front of two nodes: WebSocket clients spread,
        a polling session sticks to its node (and upgrades), tokens work on either node."""
        exe = nginx_path(self)
        nodes = yield self.start_mesh(2)
        pids = {proc.transport.pid for _, proc in nodes}
        port = reserve_port(self)
        prefix = os.path.abspath(self.mktemp())
        os.makedirs(prefix)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_wrapper(loopback_nginx(doc_block("nginx"), port,
                                                 [p for p, _ in nodes]), prefix))
        proc = BalancerProcess(self, "nginx", [exe, "-c", conf, "-p", prefix, "-e", "stderr"])
        yield wait_http(f"http://127.0.0.1:{port}/health", proc)

        ws = yield self.clients(port, "ws", 4)
        self.assertEqual({c.pid for c in ws}, pids)  # least_conn over both nodes
        polls = yield self.clients(port, "poll", 2)
        for c in polls:
            for i in range(3):
                reply = yield d(c.call({"type": "echo", "token": c.token, "params": {"id": i}}))
                self.assertEqual(reply["pid"], c.pid)
        # a token from a polling session, used over WebSocket on the other node, and back
        for p in polls:
            other = next(c for c in ws if c.pid != p.pid and c.jwt == p.jwt)
            other.token = p.token
            self.assertEqual((yield d(other.whoami()))["username"], "rob")
            self.assertNotEqual(other.pid, p.pid)
        yield self.python_socketio(port)
