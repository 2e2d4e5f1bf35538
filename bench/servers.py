"""
The servers the benchmarks start, one per process (``python -m bench.servers KIND --port P``).

Floors (our own stack with nothing of QEWD in the request path):

* ``floor``: a twisted.web Site with Autobahn's ``WebSocketResource`` at ``/socket.io/``, made
  by ``qewd_twisted.transports.site.make_factory`` (the node's own protocol options), speaking
  the same Engine.IO 3 framing: it sends ``0{sid...}`` and ``40``, answers ``2`` with ``3``, answers the
  first event (the client's ``ewd-register``) with a token made once for the connection, and
  every later event with one canned final reply that carries that token. No JSON parsing, no
  JWT verification, no handler.
* ``floor-tuned``: the floor with the node's own changes to Autobahn's per-frame path
  (``qewd_twisted.transports.framing``: no debug-log formatting, small frames unmasked with
  one XOR, text frames built directly, whole text frames read directly). A second reference: the issue's floor is stock Autobahn, which pays
  costs our node has removed; against this one the ratio is the cost of QEWD's own work alone.
* ``floor-qewd`` (the essential floor): the tuned floor plus only the steps no QEWD node can
  skip for the bench's ``echo``: the message parsed, the token found in the codec's cache and
  its expiry checked (verified in full on first use), the session built, the handler run, the
  token re-issued, the reply envelope encoded. No admission, in-flight accounting, deadline or
  error handling: a ceiling for the node's ratio to the tuned floor, not a server to run.
* ``relay-back``: the same server, answering each frame ``<id>|...`` with two canned frames,
  ``<id>|I<intermediate>`` and ``<id>|F<final>`` (a micro-service that does no work).
* ``relay-front``: the floor, except that every event after registration is passed, prefixed
  with a request id, over one WebSocket link (an Autobahn client) to ``relay-back``, and the two
  frames that come back are written to the client that asked: a bare relay, no JSON, no JWT.

Our node: ``node-master`` (applications ``bench`` and the seed's ``jwt`` locally, ``login``
forwarded to ``--ms-url``) and ``node-ms`` (application ``bench-ms``), each a ``QEWDService``;
``node-docs`` (application ``docs``, bench/apps/docs_bench.py) with its documents in the Redis
at ``--redis-port``, for bench/documents.py.

The seed, unmodified: ``seed-master`` and ``seed-ms`` run examples/jwt/master.py and
examples/jwt/microservice.py's own ``config`` (their handlers ``jwt_app.py`` and
``test_app.py``, plain ``def``s in the worker pool, ``poolSize: 2``), changed only in where
they listen (127.0.0.1, ``--port``) and, for the master, the micro-service's URL (``--ms-url``):
the like-for-like rows against the QEWD.js peer, which runs the same example.

Each prints ``READY <port>`` on stdout once it listens (and, for relay-front, once its link is
open), runs until SIGTERM/SIGINT, and logs (twisted.logger, info and up) to stderr.
``--cprofile FILE`` profiles the whole process and writes pstats to FILE on exit.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
)
from twisted.web.resource import NoResource, Resource

from qewd_twisted.transports.http import NodeSite

SECRET = "someSecret123"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = 86400  # canned tokens must not expire during a run

_register_reply = b'42["ewdjs",{"type":"ewd-register","finished":true,"message":{"token":"%s"},' \
                  b'"responseTime":"0ms"}]'
_echo_reply = b'42["ewdjs",{"type":"echo","finished":true,"message":{"text":"You sent: floor",' \
              b'"token":"%s"},"responseTime":"0ms"}]'
_intermediate = b'42["ewdjs",{"type":"login","finished":false,"message":{"text":' \
                b'"checking credentials","username":"relay"},"responseTime":"0ms"}]'
_login_final = b'42["ewdjs",{"type":"login","finished":true,"message":{"ok":true,"token":"%s"},' \
               b'"responseTime":"0ms"}]'


def _codec(clock: Any = None) -> Any:
    from qewd_twisted.auth.tokens import TokenCodec

    return TokenCodec(SECRET, initial_timeout=LONG, clock=clock)


def _token(codec: Any, sid: str) -> bytes:
    claims = {"socketId": sid, "ipAddress": "127.0.0.1", "authenticated": False}
    return codec.register_token("bench", claims, timeout=LONG).encode()


class _SocketIO(Resource):
    isLeaf = False

    def __init__(self, ws: WebSocketResource) -> None:
        super().__init__()
        self._ws = ws

    def getChild(self, path: bytes, request: Any) -> Resource:
        return self._ws if path == b"" else NoResource()


def _site(protocol: type, reactor: Any, **attrs: Any) -> tuple[NodeSite, Any]:
    from qewd_twisted.transports.site import make_factory

    factory = make_factory(protocol, None, reactor, 1048576)  # the node's own options
    for k, v in attrs.items():
        setattr(factory, k, v)
    root = Resource()
    root.putChild(b"socket.io", _SocketIO(WebSocketResource(factory)))
    return NodeSite(root, reactor=reactor), factory


class FloorProtocol(WebSocketServerProtocol):
    """Engine.IO framing, one canned reply per frame."""

    reply: bytes | None = None

    def onConnect(self, request: Any) -> None:
        from qewd_twisted.transports.site import new_socket_id

        self.sid = new_socket_id()

    def onOpen(self) -> None:
        from qewd_twisted.transports import wire

        self.sendMessage(wire.open_packet(self.sid).encode())
        self.sendMessage(b"40")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload[:2] == b"42":
            if self.reply is None:
                token = _token(self.factory.codec, self.sid)
                self.reply = _echo_reply % token
                self.sendMessage(_register_reply % token)
            else:
                self.answer(payload)
        elif payload == b"2":
            self.sendMessage(b"3")

    def answer(self, payload: bytes) -> None:
        f = self.factory
        if f.cross:  # misdelivery on purpose: the previous other connection's reply
            last, f.last = f.last, (self, self.reply)
            if last is not None and last[0] is not self:
                self.sendMessage(last[1])
                return
        self.sendMessage(self.reply)


def _tuned(base: type) -> type:
    """``base`` with the node's own changes to Autobahn's per-frame path
    (qewd_twisted/transports/framing.py): the floor as our node's stack runs it, for the "tuned
    floor" reference."""
    from qewd_twisted.transports.framing import (
        DirectTextSend,
        QuietFraming,
        SmallFrameUnmasking,
        WholeFrameReading,
    )

    return type("Tuned" + base.__name__,
                (WholeFrameReading, DirectTextSend, SmallFrameUnmasking, QuietFraming, base), {})


class EssentialProtocol(FloorProtocol):
    """``floor-qewd``: the tuned floor plus only what no QEWD node can skip for the bench's
    ``echo``: the message parsed as JSON, its token found in the codec's cache and its expiry
    checked (a first use verified in full), the handler's session built, the ``echo`` handler
    run, the token re-issued and the reply envelope encoded. No admission, no in-flight count,
    no deadline, no error handling: not a server anyone should run, a ceiling for the node."""

    def answer(self, payload: bytes) -> None:
        f = self.factory
        obj = f.scan(payload.decode("utf-8"), 2)[0][1]
        token = obj["token"]
        codec = f.codec
        seen = codec.known(token)
        session = codec.session(token) if seen is None else codec.session_of(token, seen)
        started = f.clock.seconds()
        out: list[Any] = []
        coro = f.handler(obj, session, None, out.append)
        try:
            coro.send(None)
        except StopIteration:
            pass
        result = dict(out[0])
        result["token"] = codec.issue(session)
        frame = f.reply_since(obj["type"], result, started, f.clock.seconds())
        self.sendMessage(f.event_bytes(frame))


class RelayFrontProtocol(FloorProtocol):
    def answer(self, payload: bytes) -> None:
        f = self.factory
        rid = next(f.ids)
        f.pending[rid] = self
        f.link.sendMessage(b"%d|%s" % (rid, payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        pending = self.factory.pending
        for rid in [r for r, p in pending.items() if p is self]:
            del pending[rid]


class RelayLinkProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.front.link = self
        d, self.factory.ready = self.factory.ready, None
        if d is not None:
            d.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        i = payload.find(b"|")
        if i < 0:
            return  # the backend's Engine.IO greeting ("0{...}", "40")
        rid = int(payload[:i])
        pending = self.factory.front.pending
        conn = pending.pop(rid, None) if payload[i + 1 : i + 2] == b"F" else pending.get(rid)
        if conn is not None:
            conn.sendMessage(payload[i + 2 :])

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        print("relay link closed", code, reason, file=sys.stderr, flush=True)


class RelayBackProtocol(FloorProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        i = payload.find(b"|")
        if i < 0:  # an ordinary Engine.IO client: behave as the floor
            return super().onMessage(payload, isBinary)
        head = payload[: i + 1]
        self.sendMessage(head + b"I" + _intermediate)
        self.sendMessage(head + b"F" + self.factory.final)


def _listen(reactor: Any, site: NodeSite, port: int) -> int:
    return reactor.listenTCP(port, site, interface="127.0.0.1").getHost().port


def start_floor(reactor: Any, port: int, cross: bool = False, tuned: bool = False) -> Any:
    protocol = _tuned(FloorProtocol) if tuned else FloorProtocol
    site, _ = _site(protocol, reactor, codec=_codec(), cross=cross, last=None)
    return _listen(reactor, site, port)


def start_essential(reactor: Any, port: int) -> Any:
    from qewd_twisted import _json
    from qewd_twisted.core.envelope import reply_since
    from qewd_twisted.transports.wire import event_bytes

    sys.path.insert(0, os.path.join(REPO, "bench", "apps"))
    import bench_app

    codec = _codec(reactor)  # the node's codec reads the reactor's clock too
    site, _ = _site(_tuned(EssentialProtocol), reactor, codec=codec, cross=False, last=None,
                    scan=_json.scanner(), reply_since=reply_since, event_bytes=event_bytes,
                    handler=bench_app.echo, clock=reactor)
    return _listen(reactor, site, port)


def start_relay_back(reactor: Any, port: int) -> Any:
    codec = _codec()
    site, _ = _site(RelayBackProtocol, reactor, codec=codec, cross=False, last=None,
                 final=_login_final % _token(codec, "relay"))
    return _listen(reactor, site, port)


def start_relay_front(reactor: Any, port: int, backend: str) -> Any:
    from twisted.internet import defer

    site, front = _site(RelayFrontProtocol, reactor, codec=_codec(), cross=False, last=None,
                        pending={}, ids=itertools.count(1), link=None)
    link = WebSocketClientFactory(backend, reactor=reactor)
    link.protocol = RelayLinkProtocol
    link.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=30)
    link.front = front
    link.ready = defer.Deferred()
    host, _, rest = backend.split("//", 1)[1].partition(":")
    reactor.connectTCP(host, int(rest.split("/", 1)[0]), link)
    listening = _listen(reactor, site, port)
    return link.ready.addCallback(lambda _: listening)


def node_config(kind: str, port: int, ms_url: str | None, pool_size: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "serverName": f"bench {kind}",
        "listen": [f"tcp:{port}:interface=127.0.0.1"],
        "poolSize": pool_size,
        "jwt": {"secret": SECRET},
    }
    if kind == "node-docs":
        config["moduleMap"] = {"docs": "bench.apps.docs_bench"}
    elif kind == "node-master":
        config["moduleMap"] = {
            "bench": "bench.apps.bench_app",
            "jwt": os.path.join(REPO, "examples", "jwt", "jwt_app.py"),
        }
        if ms_url:
            route = {"login": {"url": ms_url, "application": "bench-ms"}}
            config["u_services"] = [{"application": "bench", "types": route},
                                    {"application": "jwt", "types": route}]
    else:
        config["moduleMap"] = {"bench-ms": "bench.apps.bench_ms"}
    return config


def seed_config(kind: str, port: int, ms_url: str | None) -> tuple[dict[str, Any], str]:
    """examples/jwt's own startup ``config`` for ``seed-master`` / ``seed-ms``, listening on
    127.0.0.1:``port`` and (master) routing to ``ms_url``; and the directory its relative
    paths are resolved against."""
    import runpy

    here = os.path.join(REPO, "examples", "jwt")
    name = "master.py" if kind == "seed-master" else "microservice.py"
    config = dict(runpy.run_path(os.path.join(here, name))["config"])
    config.pop("port", None)
    config["listen"] = [f"tcp:{port}:interface=127.0.0.1"]
    if kind == "seed-master" and ms_url:
        config["u_services"] = [
            {**route, "types": {t: {**dest, "url": ms_url} for t, dest in route["types"].items()}}
            for route in config["u_services"]]
    return config, here


def workers_above_reactor() -> None:
    """Under the bench's real-time policy (SCHED_RR, bench/procs.py), put the worker pool's
    threads one priority above the reactor thread, as the runner does for QEWD.js's worker
    processes (``Peer.pin``). Every server shares one CPU: at equal real-time priority a woken
    worker waits until the reactor thread blocks, which it does not while clients keep it
    busy, for up to a whole round-robin slice (100 ms); the normal scheduler would let the
    woken worker in at once. Nothing changes at normal priority."""
    import threading

    try:
        if os.sched_getscheduler(0) != os.SCHED_RR:
            return
        prio = os.sched_getparam(0).sched_priority + 1
        for t in threading.enumerate():
            if t.name.startswith("qewd-worker") and t.native_id is not None:
                os.sched_setscheduler(t.native_id, os.SCHED_RR, os.sched_param(prio))
    except (AttributeError, OSError) as e:
        print(f"worker priority not raised: {e}", file=sys.stderr, flush=True)


def start_node(reactor: Any, kind: str, port: int, ms_url: str | None, pool_size: int,
               redis_port: int | None = None) -> Any:
    from qewd_twisted import QEWDService, config_from_dict

    if kind.startswith("seed-"):
        config, base = seed_config(kind, port, ms_url)
    else:
        config, base = node_config(kind, port, ms_url, pool_size), REPO
    if redis_port:
        config["database"] = {"type": "redis", "params": {"host": "127.0.0.1",
                                                          "port": redis_port}}
    service = QEWDService(config_from_dict(config, base), reactor)
    service.startService()
    workers_above_reactor()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return service.ports[0].getHost().port


def start_supervised(reactor: Any, kind: str, port: int, ms_url: str | None, pool_size: int,
                     processes: int) -> Any:
    """``kind`` (node-master / node-ms) as ``twistd qewd`` runs it with ``processes`` > 1: a
    supervisor (qewd_twisted/cluster) of that many node processes on one port. Ready (the
    port) once every process serves."""
    import tempfile

    from twisted.internet import defer, task

    from qewd_twisted.cluster.supervisor import Supervisor
    from qewd_twisted.config import load_config

    config = dict(node_config(kind, port, ms_url, pool_size), processes=processes)
    folder = tempfile.mkdtemp(prefix="qewd-bench-")
    path = os.path.join(folder, "startup.py")
    with open(path, "w") as f:
        f.write(f"config = {config!r}\n")
    supervisor = Supervisor(load_config(path), reactor, config_path=path,
                            on_give_up=reactor.stop)
    supervisor.startService()
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stopService)
    ready: defer.Deferred[int] = defer.Deferred()

    def check() -> None:
        if all(slot.ready for slot in supervisor.slots):
            poll.stop()
            ready.callback(supervisor.ports[0].getHost().port)

    poll = task.LoopingCall(check)
    poll.clock = reactor
    poll.start(0.1)
    return ready


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="bench servers")
    p.add_argument("kind", choices=("floor", "floor-tuned", "floor-qewd", "relay-back",
                                    "relay-front",
                                    "node-master", "node-ms", "node-docs", "seed-master",
                                    "seed-ms"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--backend", help="relay-front: ws://127.0.0.1:PORT/socket.io/")
    p.add_argument("--ms-url", help="node-master / seed-master: http://127.0.0.1:PORT of "
                                    "node-ms / seed-ms")
    p.add_argument("--pool-size", type=int, default=2)
    p.add_argument("--redis-port", type=int,
                   help="the node's documents in this Redis (node-docs: required)")
    p.add_argument("--processes", type=int, default=1,
                   help="node-master / node-ms: node processes under a supervisor "
                        "(config.processes)")
    p.add_argument("--cross", action="store_true",
                   help="floor: deliver replies to the wrong client (to test the checker)")
    p.add_argument("--cprofile", metavar="FILE")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)

    from twisted.internet import defer, reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)

    def started() -> Any:
        if args.kind in ("floor", "floor-tuned"):
            return start_floor(reactor, args.port, args.cross, args.kind == "floor-tuned")
        if args.kind == "floor-qewd":
            return start_essential(reactor, args.port)
        if args.kind == "relay-back":
            return start_relay_back(reactor, args.port)
        if args.kind == "relay-front":
            return start_relay_front(reactor, args.port, args.backend)
        if args.processes > 1 and args.kind in ("node-master", "node-ms"):
            return start_supervised(reactor, args.kind, args.port, args.ms_url,
                                    args.pool_size, args.processes)
        return start_node(reactor, args.kind, args.port, args.ms_url, args.pool_size,
                          args.redis_port)

    def ready(port: int) -> None:
        print(f"READY {port}", flush=True)

    def failed(f: Any) -> None:
        print(f"FAILED {f.getErrorMessage()}", flush=True)
        f.printTraceback(file=sys.stderr)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.maybeDeferred(started).addCallbacks(ready, failed))
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            reactor.run()
        finally:
            prof.disable()
            prof.dump_stats(args.cprofile)
    else:
        reactor.run()


if __name__ == "__main__":
    main()
