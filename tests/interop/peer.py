"""
Helpers for the interop tests: find the QEWD.js reference peer, run extra peer nodes of our own,
drive QEWD.js's own socket.io-client, and wait for log lines (never for time).

The running peer is found through ``QEWD_PEER_MASTER`` and ``QEWD_PEER_MS`` (``host:port``),
which must be set: scripts/test.sh starts a private peer on ports of its own (``bash
scripts/peer.sh private-start``) and sets them, so the tests never use whatever happens to
listen on the default ports. Tests that stop, restart or crash a peer node start their own from
the peer's run folder (``QEWD_PEER_DIR``) on ports reserved for the test (tests/ports.py), so
they never disturb the running peer or each other.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url as our_eio_url
from tests.integration.nodes import start_node
from tests.fixtures import login_message
from tests.integration.processes import REPO, OutputWatcher
from tests.ports import reserve_port
from tests.strict import require
from tests.wsclient import EIOClient

KIT = os.path.abspath(
    os.environ.get("QEWD_PEER_KIT") or os.path.join(REPO, os.pardir, "shared", "qewd-peer"))
SECRET = "someSecret123"  # jwt.secret of both peer nodes (master/, microservice/)
REDIS_PORT = os.environ.get("QEWD_REDIS_PORT", "16379")
NODE = shutil.which("node")
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js", "sio_driver.js")

EXAMPLE = os.path.join(REPO, "examples", "jwt")
ROUTED = ("login", "msNoHandler", "crash")  # what the peer's own master routes to test-app
CRASH_TEXT = "Cannot read properties of null (reading 'boom')"  # the peer's test-app crash
WORKER_GONE = "master received exit event from worker process"


__all__ = [
    "CRASH_TEXT",
    "EXAMPLE",
    "PEER_MASTER",
    "PEER_MS",
    "ROUTED",
    "SECRET",
    "WORKER_GONE",
    "JSClient",
    "LogWatcher",
    "PeerProcess",
    "claims",
    "connect",
    "eio_url",
    "http_url",
    "login",
    "register",
    "request",
    "require_peer",
    "reserve_port",
    "start_master",
    "start_peer_master",
    "start_peer_ms",
]


def _address(var: str, default: str) -> tuple[str, int]:
    host, _, port = (os.environ.get(var) or default).rpartition(":")
    return host or "127.0.0.1", int(port)


PEER_MASTER = _address("QEWD_PEER_MASTER", "127.0.0.1:18080")  # app jwt, routes login... to MS
PEER_MS = _address("QEWD_PEER_MS", "127.0.0.1:13000")  # app test-app


def http_url(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


def eio_url(address: tuple[str, int]) -> str:
    return f"ws://{address[0]}:{address[1]}/socket.io/?EIO=3&transport=websocket"


def peer_home() -> str | None:
    """The folder run-peer.sh runs the peer from: it holds the installed node_modules."""
    tmp = os.path.join(os.environ.get("TMPDIR") or "/tmp", "qewd-peer")
    candidates = [os.environ.get("QEWD_PEER_DIR"), KIT if os.access(KIT, os.W_OK) else None,
                  os.environ.get("QEWD_PEER_HOME"), tmp, "/tmp/qewd-peer", KIT]
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, "node_modules", "qewd", "package.json")) \
                and os.path.isfile(os.path.join(d, "master", "qewd-jwt.js")):
            return os.path.abspath(d)
    return None


def run_folder(test: TestCase, home: str) -> str:
    """A folder of this test's own to run a QEWD.js node from: links to ``home``'s files, and
    a ``node_modules`` of links to ``home``'s packages. QEWD writes its worker loader
    (``node_modules/ewd-qoper8-worker.js``) into the folder it runs from and forks workers
    from that file later; nodes started by tests in other trial workers must not rewrite it
    under this one's feet."""
    folder = os.path.abspath(test.mktemp())
    os.makedirs(os.path.join(folder, "node_modules"))
    for name in os.listdir(home):
        if name not in ("node_modules", "run", "logs", "data"):
            os.symlink(os.path.join(home, name), os.path.join(folder, name))
    modules = os.path.join(home, "node_modules")
    for name in os.listdir(modules):
        if os.path.isdir(os.path.join(modules, name)):
            os.symlink(os.path.join(modules, name), os.path.join(folder, "node_modules", name))
    return folder


def _listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


def require_peer(test: TestCase, spawn: bool = False) -> None:
    """Fail ``test`` (skip it only under ``QEWD_TEST_ALLOW_SKIP=interop``: tests/strict.py)
    unless the QEWD.js peer is reachable and, with ``spawn``, node and the peer's installed run
    folder are there to start extra peer nodes."""
    problems = [f"{var} is not set (scripts/test.sh starts a private peer and sets it; to use "
                f"one you started yourself, set QEWD_PEER_MASTER and QEWD_PEER_MS)"
                for var in ("QEWD_PEER_MASTER", "QEWD_PEER_MS") if not os.environ.get(var)]
    problems += [f"{var}={a[0]}:{a[1]} is not reachable"
                 for var, a in (("QEWD_PEER_MASTER", PEER_MASTER), ("QEWD_PEER_MS", PEER_MS))
                 if os.environ.get(var) and not _listening(a)]
    if spawn and NODE is None:
        problems.append("node is not on PATH")
    if spawn and peer_home() is None:
        problems.append(f"no installed peer run folder (kit {KIT}; set QEWD_PEER_DIR)")
    if problems:
        require(test, "interop", "QEWD.js peer unavailable: " + "; ".join(problems)
                + " (start it with: bash scripts/peer.sh start)")


class LogWatcher(OutputWatcher):
    """Our in-process nodes' twisted.logger events, as text, for ``wait_for``."""

    label = "our log"

    def __init__(self, test: TestCase) -> None:
        super().__init__()
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        self._append((formatEvent(event) or "") + "\n")


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (QEWD's forked worker processes)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _kill_worker(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"ewd-qoper8-worker" not in f.read():
                return  # gone, and the pid reused: not ours
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class PeerProcess(OutputWatcher, protocol.ProcessProtocol):
    """A QEWD.js node we start (``node <script>`` in the peer's run folder) and stop, with its
    worker processes. Its stdout and stderr are collected for ``wait_for``.

    QEWD's workers (``child_process.fork``) inherit the node's stdout and stderr, so the
    pipes stay open until they are gone too: once the node process exits, its workers are
    killed, and only then do the pipes close (``processEnded``)."""

    def __init__(self, test: TestCase, script: str, env: dict[str, str], label: str) -> None:
        OutputWatcher.__init__(self)
        self.test = test
        self.script = script
        self.env = env
        self.label = label
        self.transport: Any = None
        self.pid: int | None = None
        self._workers: set[int] = set()
        self._exited = False
        self.ended: defer.Deferred[None] = defer.Deferred()

    def start(self) -> PeerProcess:
        home = peer_home()
        assert NODE is not None and home is not None  # require_peer(spawn=True) checked
        env = dict(os.environ, QEWD_REDIS_PORT=REDIS_PORT, **self.env)
        reactor.spawnProcess(self, NODE, [NODE, self.script], env=env,
                             path=run_folder(self.test, home))
        self.pid = self.transport.pid
        self.test.addCleanup(self.stop, "KILL")
        return self

    @property
    def running(self) -> bool:
        return not self._exited and self.pid is not None

    def outReceived(self, data: bytes) -> None:
        if self.running:  # new workers are forked on demand: note them while we can
            self._workers.update(_children(self.pid))
        self._append(data.decode("utf-8", "replace"))

    errReceived = outReceived

    def processExited(self, reason: Any) -> None:
        self._exited = True
        for worker in self._workers:
            _kill_worker(worker)

    def processEnded(self, reason: Any) -> None:
        self.transport = None
        self._fail_waiters("process ended")
        self.ended.callback(None)

    def stop(self, how: str = "TERM") -> defer.Deferred[None]:
        """SIGTERM (QEWD stops its workers, then exits) or SIGKILL; any worker left over is
        killed when the node has exited. Fires once the node and its pipes are gone."""
        if self.ended.called:
            return defer.succeed(None)
        if self.running:
            self._workers.update(_children(self.pid))
            self.transport.signalProcess(how)
            backstop = reactor.callLater(10, self._kill)
            self.ended.addBoth(lambda r: (backstop.cancel() if backstop.active() else None, r)[1])
        d: defer.Deferred[None] = defer.Deferred()
        self.ended.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _kill(self) -> None:
        if self.running:
            self.transport.signalProcess("KILL")
        for worker in self._workers:
            _kill_worker(worker)


#: How a QEWD.js micro-service dies of a request it hands to a worker whose IPC channel has just
#: closed (ewd-qoper8's ``sendRequestToWorker`` has no callback and no ``error`` listener):
#: Node.js throws one or the other, depending on where in the worker's exit the write lands.
CLOSED_CHANNEL_ERRORS = ("ERR_IPC_CHANNEL_CLOSED", "EPIPE")


def start_peer_ms(test: TestCase, port: int) -> tuple[PeerProcess, defer.Deferred[None]]:
    """Our own QEWD.js micro-service node (microservice/qewd-ms.js, app ``test-app``) on
    ``port``; the Deferred fires when it listens."""
    ms = PeerProcess(test, "microservice/qewd-ms.js", {"QEWD_MS_PORT": str(port)},
                     f"QEWD.js micro-service :{port}")
    ready = ms.wait_for(f"QEWD.js is listening on port {port}")
    return ms.start(), ready


def start_peer_master(
    test: TestCase, port: int, ms_url: str
) -> tuple[PeerProcess, defer.Deferred[None]]:
    """Our own QEWD.js master (master/qewd-jwt.js, app ``jwt``) on ``port``, routing
    ``login``/``msNoHandler``/``crash`` to ``ms_url``; the Deferred fires on its
    ``micro-service ready`` line (it has registered with the micro-service)."""
    master = PeerProcess(test, "master/qewd-jwt.js",
                         {"QEWD_MASTER_PORT": str(port), "QEWD_MS_URL": ms_url},
                         f"QEWD.js master :{port}")
    ready = master.wait_for(f"{ms_url} micro-service ready")
    return master.start(), ready


class JSClient(protocol.ProcessProtocol):
    """QEWD.js's own client library (socket.io-client 2.x) in a node process, driven by the
    test (tests/interop/js/sio_driver.js). ``emit(obj)`` sends; ``message()`` is the next
    ``ewdjs`` payload; ``events`` holds every event in order."""

    def __init__(self, test: TestCase, url: str) -> None:
        self.test = test
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.ready: defer.Deferred[str] = defer.Deferred()
        self._frames: defer.DeferredQueue[Any] = defer.DeferredQueue()
        self._buffer = b""
        self._stderr = b""
        self.transport: Any = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def start(self) -> JSClient:
        home = peer_home()
        paths = [os.path.join(REPO, "tests", "js", "node_modules")]
        if home is not None:
            paths.append(os.path.join(home, "node_modules"))
        env = dict(os.environ, NODE_PATH=os.pathsep.join(paths))
        reactor.spawnProcess(self, NODE, [NODE, DRIVER, self.url], env=env)
        self.test.addCleanup(self.close)
        return self

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            self.events.append(event)
            kind = event["event"]
            if kind == "connect" and not self.ready.called:
                self.ready.callback(event["id"])
            elif kind == "connect_error" and not self.ready.called:
                self.ready.errback(ConnectionError(event["error"]))
            elif kind == "ewdjs":
                self._frames.put(event["data"])

    def errReceived(self, data: bytes) -> None:
        self._stderr += data

    def processEnded(self, reason: Any) -> None:
        self.transport = None
        if not self.ready.called:
            self.ready.errback(RuntimeError(
                "socket.io-client driver ended: " + self._stderr.decode(errors="replace")))
        self.ended.callback(None)

    def emit(self, obj: dict[str, Any]) -> None:
        self.transport.write(json.dumps({"emit": obj}).encode() + b"\n")

    def message(self) -> defer.Deferred[Any]:
        return self._frames.get()

    @property
    def pending(self) -> list[Any]:
        """Frames received and not yet taken with ``message()``."""
        return list(self._frames.pending)

    def close(self) -> defer.Deferred[None]:
        if self.transport is None:
            return defer.succeed(None)
        self.transport.closeStdin()  # the driver closes its socket and exits
        backstop = reactor.callLater(5, self._kill)
        d: defer.Deferred[None] = defer.Deferred()
        self.ended.addBoth(lambda r: (backstop.cancel() if backstop.active() else None,
                                      d.callback(None), r)[2])
        return d

    def _kill(self) -> None:
        if self.transport is not None:
            self.transport.signalProcess("KILL")


# -- a QEWD client on a raw Engine.IO WebSocket (tests/wsclient.py), for exact frames

async def register(c: EIOClient, application: str = "jwt") -> str:
    """Engine.IO handshake + ``ewd-register`` in JWT mode; returns the token."""
    await c.handshake()
    c.emit({"type": "ewd-register", "application": application, "jwt": True})
    reply = await c.message()
    while is_broadcast(reply):  # another client's toAll can come first
        reply = await c.message()
    assert reply["type"] == "ewd-register", reply
    return reply["message"]["token"]


def is_broadcast(frame: Any) -> bool:
    """A push to every client (``io.toAll``, e.g. ``{"test": "message 2"}``): no ``type``, no
    ``message``; it belongs to no request (docs/protocol.md §1.4)."""
    return isinstance(frame, dict) and "type" not in frame and "message" not in frame


def is_final(frame: Any) -> bool:
    """A reply frame that ends its request: it has a ``message`` and ``finished`` is not false
    (a rejection has no ``finished``, QEWD's 503 no ``type``: docs/protocol.md §1.4). Broadcasts
    such as ``{"test": "message 2"}`` have no ``message``."""
    return isinstance(frame, dict) and "message" in frame and frame.get("finished") is not False


async def request(
    c: Any, message: dict[str, Any], broadcasts: bool = False
) -> list[dict[str, Any]]:
    """Send one message; every frame up to and including the final one. Broadcasts that come
    meanwhile are left out unless ``broadcasts`` (another test's client on the same peer
    master can cause one at any time)."""
    c.emit(message)
    frames: list[dict[str, Any]] = []
    while not frames or not is_final(frames[-1]):
        frame = await c.message()
        if broadcasts or not is_broadcast(frame):
            frames.append(frame)
    return frames


# -- our side: a master routed like the peer's, and its clients

def claims(token: str) -> dict[str, Any]:
    """A JWT's payload as it is on the wire (public claims only: secrets stay in ``qewd``)."""
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def start_master(test: TestCase, ms_url: str, **config: Any):
    """Our master: the seed example's local ``jwt`` app (examples/jwt/jwt_app.py: ``test``
    needs a logged-in session), ``login``/``msNoHandler``/``crash`` routed to ``ms_url``."""
    config.setdefault("jwt", {"secret": SECRET})
    config.setdefault("u_services", [{"application": "jwt", "types": {
        t: {"url": ms_url, "application": "test-app"} for t in ROUTED}}])
    return start_node(test, base_dir=EXAMPLE, moduleMap={"jwt": "jwt_app.py"}, **config)


async def connect(test: TestCase, node) -> tuple[EIOClient, str]:
    c = EIOClient(our_eio_url(node))
    test.addCleanup(c.close)
    return c, await register(c)


def login(token: str, password: str = "secret") -> dict[str, Any]:
    """rob's ``login`` message (the shared fixture, tests/fixtures.py)."""
    return login_message(token, password=password)
