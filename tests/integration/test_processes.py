"""
``twistd -n qewd`` with ``processes: 2`` on a reserved loopback port, as a user runs it: the
clients are spread over the two processes, server push reaches both exactly once and in order,
a process killed with SIGKILL (or stuck in a handler) is replaced while the port keeps
answering, ``/health`` and ``/metrics`` speak for the whole node, and SIGTERM drains every
process and leaves none behind.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any, Callable

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from qewd_twisted.cluster.handoff import sid_maker
from tests.integration.processes import TwistdProcess, write_startup
from tests.pollclient import PollClient
from tests.ports import reserve_port
from tests.wsclient import EIOClient

SECRET = "someSecret123"
DEADLINE = 30.0  # seconds: any one wait for the processes


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@defer.inlineCallbacks
def poll(what: str, condition: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Wait (bounded) for ``condition()`` to be true: real processes give no other signal."""
    waited = 0.0
    while True:
        result = condition()
        if isinstance(result, defer.Deferred):
            result = yield result
        if result:
            return result
        if waited >= timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        yield task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1


class ProcessesTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        self.port = reserve_port(self)
        self.pids: set[int] = set()
        self.addCleanup(self._kill_strays)

    def _kill_strays(self) -> None:
        for pid in self.pids:  # only processes this node reported as its own
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def start(self, **config: Any) -> TwistdProcess:
        startup = write_startup(self, repr({
            "listen": f"tcp:{self.port}:interface=127.0.0.1",
            "processes": 2,
            "processHeartbeatTimeout": 3,
            "shutdownGracePeriod": 2,
            "jwt": {"secret": SECRET},
            "moduleMap": {"procs": "tests.apps.procs"},
            "metrics": True,
            "managementPassword": "not the default",
            **config,
        }))
        return TwistdProcess(self, startup).start()

    def serving(self, node: TwistdProcess, n: int) -> defer.Deferred[Any]:
        return poll(f"{n} processes serving",
                    lambda: node.output.count(") is serving") >= n)

    @defer.inlineCallbacks
    def get(self, path: str, auth: bytes | None = None, port: int | None = None) -> Any:
        headers = Headers({b"authorization": [auth]} if auth else {})
        response = yield Agent(reactor).request(
            b"GET", b"http://127.0.0.1:%d%s" % (port or self.port, path.encode()), headers)
        body = yield readBody(response)
        return response.code, body

    @defer.inlineCallbacks
    def health(self) -> Any:
        code, body = yield self.get("/health")
        self.assertEqual(code, 200)
        health = json.loads(body)
        self.pids.update(p["pid"] for p in health["processes"] if p["pid"])
        return health

    @defer.inlineCallbacks
    def client(self) -> Any:
        c = EIOClient(f"ws://127.0.0.1:{self.port}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "procs", "jwt": True})
        reg = yield defer.ensureDeferred(c.message())
        c.token = reg["message"]["token"]
        c.emit({"type": "whoami", "token": c.token})
        me = yield defer.ensureDeferred(c.message())
        c.pid = me["message"]["pid"]
        self.pids.add(c.pid)
        return c

    @defer.inlineCallbacks
    def ask(self, c: Any, type: str) -> Any:
        """``type``'s reply to ``c`` (pushes that arrive first are skipped)."""
        c.emit({"type": type, "token": c.token})
        while True:
            msg = yield defer.ensureDeferred(c.message())
            if msg.get("type") == type and "message" in msg:
                return msg["message"]

    @defer.inlineCallbacks
    def one_per_process(self) -> Any:
        """Clients until two land on different processes (bounded): in bursts of 8, which
        the processes share (an idle node's first process awake takes a lone connection)."""
        by_pid: dict[int, Any] = {}
        for _ in range(5):
            burst = yield defer.gatherResults([self.client() for _ in range(8)])
            for c in burst:
                by_pid.setdefault(c.pid, c)
            if len(by_pid) == 2:
                return list(by_pid.values())
        self.fail(f"40 clients all landed on the processes {sorted(by_pid)}")

    @defer.inlineCallbacks
    def shouts(self, c: Any, tag: str) -> Any:
        """The pushes ``c`` received up to the one tagged ``tag``-end."""
        got = []
        while True:
            msg = yield defer.ensureDeferred(c.message())
            if "tag" not in msg:
                continue  # a reply, not a push
            if msg["tag"] == tag + "-end":
                return got
            got.append((msg["tag"], msg["seq"], msg["pid"]))

    @defer.inlineCallbacks
    def test_two_processes_push_restart_watchdog_and_drain(self) -> None:
        node = self.start()
        yield self.serving(node, 2)
        health = yield self.health()
        self.assertEqual([p["state"] for p in health["processes"]], ["ready", "ready"])
        supervised = {p["pid"] for p in health["processes"]}

        # clients land on both processes; /health answers for the whole node
        a, b = yield self.one_per_process()
        self.assertEqual({a.pid, b.pid}, supervised)

        # a push from a handler on one process reaches every socket of both, once, in order
        a.emit({"type": "shout", "token": a.token, "params": {"tag": "x", "count": 30}})
        a.emit({"type": "shout", "token": a.token, "params": {"tag": "x-end", "count": 1}})
        expected = [("x", i, a.pid) for i in range(30)]
        self.assertEqual((yield self.shouts(a, "x")), expected)
        self.assertEqual((yield self.shouts(b, "x")), expected)

        # one socket by id, and one application's sockets, on the other process
        me = yield self.ask(b, "whoami")
        a.emit({"type": "tell", "token": a.token,
                "params": {"socketId": me["socketId"], "application": "procs"}})
        self.assertEqual((yield self.shouts(b, "told")), [("told", 0, a.pid), ("app", 0, a.pid)])
        self.assertEqual((yield self.shouts(a, "told")), [("app", 0, a.pid)])
        a.emit({"type": "tell", "token": a.token,
                "params": {"socketId": me["socketId"], "application": "elsewhere"}})
        self.assertEqual((yield self.shouts(b, "told")), [("told", 0, a.pid)])

        # long-polling: each request on a new connection, whichever process accepts it; the
        # ones for the other process's session are handed over to it
        poller = PollClient(f"http://127.0.0.1:{self.port}")
        self.addCleanup(poller.stop)
        yield defer.ensureDeferred(poller.handshake())
        poller.start()
        yield defer.ensureDeferred(poller.emit({"type": "ewd-register", "application": "procs",
                                                "jwt": True}))
        token = (yield defer.ensureDeferred(poller.message()))["message"]["token"]
        served_by = set()
        for _ in range(8):
            yield defer.ensureDeferred(poller.emit({"type": "whoami", "token": token}))
            reply = yield defer.ensureDeferred(poller.message())
            served_by.add(reply["message"]["pid"])
        self.assertEqual(len(served_by), 1)
        a.emit({"type": "shout", "token": a.token, "params": {"tag": "p", "count": 3}})
        got = []
        while len(got) < 3:
            msg = yield defer.ensureDeferred(poller.message())
            if msg.get("tag") == "p":
                got.append(msg["seq"])
        self.assertEqual(got, [0, 1, 2])
        yield poller.stop()

        # the upgrade to WebSocket, on a new connection too (4 times: each lands anywhere)
        for _ in range(4):
            poller = PollClient(f"http://127.0.0.1:{self.port}")
            self.addCleanup(poller.stop)
            hs = yield defer.ensureDeferred(poller.handshake())
            poller.start()
            ws = EIOClient(f"ws://127.0.0.1:{self.port}/socket.io/?EIO=3&transport=websocket"
                           f"&sid={hs['sid']}")
            self.addCleanup(ws.close)
            yield ws.opened
            ws.send_text("2probe")
            self.assertEqual((yield ws.next()), "3probe")
            yield poller.finish()
            ws.send_text("5")
            ws.emit({"type": "ewd-register", "application": "procs", "jwt": True})
            reg = yield defer.ensureDeferred(ws.message())
            ws.emit({"type": "whoami", "token": reg["message"]["token"]})
            me = yield defer.ensureDeferred(ws.message())
            self.assertEqual(me["message"]["socketId"], hs["sid"])
            yield ws.close()

        # /metrics and the status page: both processes
        code, text = yield self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b'process="0"', text)
        self.assertIn(b'process="1"', text)
        self.assertIn(b'qewd_processes{state="ready"} 2.0', text)
        import base64

        code, body = yield self.get("/status.json",
                                    b"Basic " + base64.b64encode(b"op:not the default"))
        self.assertEqual(code, 200)
        status = json.loads(body)
        self.assertEqual(sorted(p["pid"] for p in status["processes"]), sorted(supervised))
        self.assertGreaterEqual(status["connections"]["total"], 2)

        # kill -9 one process: the port keeps answering, the process is replaced
        b_index = [p["process"] for p in health["processes"] if p["pid"] == b.pid][0]
        os.kill(b.pid, signal.SIGKILL)
        code, _ = yield self.get("/health")
        self.assertEqual(code, 200)
        # a poll for a session of the killed process: an unknown session, answered (400)
        sid = sid_maker(b_index, lambda: "x" * 20)()
        code, body = yield self.get(f"/socket.io/?EIO=3&transport=polling&sid={sid}")
        self.assertEqual((code, json.loads(body)["message"]), (400, "Session ID unknown"))
        c = yield self.client()
        self.assertNotEqual(c.pid, b.pid)  # a live process serves while the other restarts
        yield self.serving(node, 3)
        health = yield self.health()
        self.assertEqual([p["state"] for p in health["processes"]], ["ready", "ready"])
        self.assertEqual(sum(p["restarts"] for p in health["processes"]), 1)
        self.assertFalse(alive(b.pid))

        # a process stuck in a handler is killed by the watchdog and replaced
        a.emit({"type": "spin", "token": a.token, "params": {"seconds": 60}})
        yield poll("the watchdog kills the stuck process",
                   lambda: "no heartbeat answer" in node.output)
        code, _ = yield self.get("/health")  # answered by the other process meanwhile
        self.assertEqual(code, 200)
        yield self.serving(node, 4)
        yield poll("the stuck process is gone", lambda: not alive(a.pid))
        health = yield self.health()
        self.assertEqual([p["state"] for p in health["processes"]], ["ready", "ready"])
        self.assertEqual(sum(p["restarts"] for p in health["processes"]), 2)

        # SIGTERM: every process drains and exits, then the supervisor
        pids = {p["pid"] for p in health["processes"]}
        ended = node.signal("TERM")
        yield ended
        self.assertIn("every process has stopped", node.output)
        for pid in pids:
            yield poll(f"process {pid} exits", lambda pid=pid: not alive(pid), timeout=5)

    @defer.inlineCallbacks
    def test_processes_leave_when_the_supervisor_is_killed(self) -> None:
        node = self.start()
        yield self.serving(node, 2)
        pids = {p["pid"] for p in (yield self.health())["processes"]}
        self.assertEqual(len(pids), 2)
        yield node.kill()  # SIGKILL: no drain ordered; each process sees its channel close
        for pid in pids:
            yield poll(f"process {pid} exits", lambda pid=pid: not alive(pid), timeout=15)

    @defer.inlineCallbacks
    def test_metrics_on_their_own_endpoint(self) -> None:
        metrics_port = reserve_port(self)
        node = self.start(metrics={"listen": f"tcp:{metrics_port}:interface=127.0.0.1"})
        yield self.serving(node, 2)
        code, text = yield self.get("/metrics", port=metrics_port)
        self.assertEqual(code, 200)
        self.assertIn(b'qewd_requests_in_flight{process="0"}', text)
        self.assertIn(b'qewd_requests_in_flight{process="1"}', text)
        code, body = yield self.get("/health", port=metrics_port)
        self.assertEqual([p["state"] for p in json.loads(body)["processes"]], ["ready"] * 2)
        self.pids.update(p["pid"] for p in json.loads(body)["processes"])
        code, _ = yield self.get("/metrics")  # not on the node's port
        self.assertEqual(code, 404)
        yield node.signal("TERM")

    @defer.inlineCallbacks
    def test_a_node_that_cannot_load_stops_with_status_78(self) -> None:
        node = self.start(moduleMap={"procs": "tests.apps.no_such_module"})
        reason = yield node.ended
        self.assertEqual(reason.exitCode, 78)
        self.assertIn("cannot load the node's configuration", node.output)
        self.assertIn("no_such_module", node.output)

    @defer.inlineCallbacks
    def test_tls(self) -> None:
        import twisted.test
        from twisted.internet import ssl
        from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        node = self.start(listen=f"ssl:{self.port}:interface=127.0.0.1:privateKey={pem}")
        yield self.serving(node, 2)

        class Read(Protocol):
            def __init__(self) -> None:
                self.data = b""
                self.done: defer.Deferred[bytes] = defer.Deferred()

            def connectionMade(self) -> None:
                self.transport.write(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")

            def dataReceived(self, data: bytes) -> None:
                self.data += data

            def connectionLost(self, reason: Any) -> None:
                self.done.callback(self.data)

        proto = Read()
        yield connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", self.port,
                                                 ssl.CertificateOptions(verify=False)), proto)
        response = yield proto.done
        self.assertTrue(response.startswith(b"HTTP/1.0 200"), response[:100])
        health = json.loads(response.split(b"\r\n\r\n", 1)[1])
        self.assertEqual([p["state"] for p in health["processes"]], ["ready", "ready"])
        self.pids.update(p["pid"] for p in health["processes"])
        yield node.signal("TERM")
