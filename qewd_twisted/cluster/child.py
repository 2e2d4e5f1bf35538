# -*- test-case-name: tests.test_cluster -*-
"""
One node process of a supervised node: ``python -m qewd_twisted.cluster.child`` (started by
supervisor.py's `ProcessSpawner`, never by hand).

It loads the same startup file as the supervisor and builds the same ``QEWDService``, except
that its listeners adopt the sockets the supervisor opened (`SharedPortEndpoint`) instead of
listening, and that it talks to the supervisor over its control channel (`ChildControl`): it
answers heartbeats and ``Report``, publishes its server pushes there (`ProcessPushBus`) and
delivers the other processes' pushes to its own sockets. Its log events go to stdout, one line
each as ``<level> <text>``, for the supervisor to relay into its own log.

SIGTERM drains it as it drains a single node; SIGINT is ignored (a terminal's Ctrl-C reaches
the supervisor, which stops every process in order); when the supervisor goes away the process
drains and exits too. A configuration it cannot load exits with ``EX_CONFIG``.

May import: ``config``, ``core.push``, ``service``, ``_json``, ``cluster``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet import tcp, unix
from twisted.internet.tcp import Port
from twisted.logger import ILogObserver, Logger, LogLevel, eventAsText, globalLogBeginner
from twisted.protocols import amp
from twisted.python import usage
from zope.interface import implementer

from qewd_twisted import _json
from qewd_twisted.cluster.protocol import (
    Adopt,
    ControlError,
    Deliver,
    Gather,
    HandOver,
    Heartbeat,
    OneProtocolFactory,
    Publish,
    Ready,
    Report,
    declared,
)
from qewd_twisted.core.push import IPushBus, check_push

__all__ = ["ChildControl", "ProcessPushBus", "SharedPortEndpoint", "main"]

log = Logger()


class ChildControl(amp.AMP):
    """A node process's end of its control channel.

    ``node``: where the other processes' pushes are delivered (``Node.deliver_push``);
    ``reporter(what)``: this process's figures for ``Report`` (a dict, or a Deferred of one);
    ``lost()``: called when the supervisor has gone.
    """

    def __init__(self, node: Any = None, reporter: Callable[[str], Any] | None = None,
                 lost: Callable[[], None] | None = None,
                 adopt: Callable[[int, bytes], None] | None = None,
                 balance: Callable[[float], int] | None = None) -> None:
        super().__init__()
        self.node = node
        self.reporter = reporter
        self.lost = lost
        self.adopt = adopt  # serve a connection handed over by another process (handoff.py)
        self.balance = balance  # the node's mean connections -> this process's (Balance)
        self.delivered = 0
        self.refused = 0

    # Every responder fails only with its command's declared errors (protocol.declared):
    # AMP answers anything else by closing the channel, which would end this process.

    @Heartbeat.responder
    def heartbeat(self, share: float) -> dict[str, Any]:
        if self.balance is not None:
            try:
                return {"connections": self.balance(share)}
            except Exception:
                log.failure("balancing the connections")
        return {"connections": len(self.node.connections) if self.node is not None else 0}

    @Deliver.responder
    def deliver(self, push: bytes) -> dict[str, Any]:
        try:
            record = check_push(_json.loads(push.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as e:
            self.refused += 1
            log.warn("a push from another process was refused: {error}", error=e)
            return {}
        try:
            self.node.deliver_push(record)
            self.delivered += 1
        except Exception:
            log.failure("delivering a push from another process failed")
        return {}

    @Report.responder
    def report(self, what: str) -> defer.Deferred[dict[str, Any]]:
        d = defer.maybeDeferred(self.reporter, what)  # type: ignore[arg-type]
        d.addCallback(lambda data: {"report": _json.dumps(data).encode("utf-8")})

        def logged(failure: Any) -> Any:
            log.failure("reporting {what} to the supervisor", failure, what=what)
            return failure

        return declared(d.addErrback(logged))

    @Adopt.responder
    def adopted(self, data: bytes, fd: int) -> dict[str, Any]:
        try:
            self.adopt(data=data, fd=fd)  # type: ignore[misc]
        except Exception as e:
            log.failure("adopting a connection handed over by another process")
            raise ControlError(f"{type(e).__name__}: {e}") from e
        finally:
            os.close(fd)  # the received copy; the adopted transport holds its own
        return {}

    def hand_over(self, owner: int, fd: int, data: bytes) -> defer.Deferred[Any]:
        """Give a client connection to process ``owner`` (handoff.py), through the
        supervisor."""
        return self.callRemote(HandOver, owner=owner, data=data, fd=fd)

    def gather(self, what: str) -> defer.Deferred[dict[str, Any]]:
        """The whole node's figures of ``what`` (supervisor.py `Supervisor.gather`)."""
        d = self.callRemote(Gather, what=what)
        d.addCallback(lambda answer: _json.loads(answer["reports"].decode("utf-8")))
        return d

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.lost is not None:
            self.lost()


@implementer(IPushBus)
class ProcessPushBus:
    """The node's other processes, as an ``IPushBus``: each push goes to the supervisor on the
    control channel, which relays it to every other process (in order, once each)."""

    def __init__(self, control: ChildControl) -> None:
        self.control = control
        self.published = 0
        self.dropped = 0

    def publish(self, push: dict[str, Any]) -> None:
        if self.control.transport is None or self.control.transport.disconnecting:
            self.dropped += 1
            return
        try:
            data = _json.dumps(push).encode("utf-8")
        except (TypeError, ValueError) as e:
            self.dropped += 1
            log.warn("a push is not JSON-serialisable: not sent to the other processes: "
                     "{error}", error=e)
            return
        self.control.callRemote(Publish, push=data)
        self.published += 1


class Balance:
    """Accept only while this process holds about its share of the node's connections.

    Every process is woken for each new connection and the first awake takes it, so an idle
    node hands a trickle of connections mostly to one process, and long-lived WebSockets stay
    where they landed. At each heartbeat (``share``: the mean over the ready processes) a
    process more than ``ratio`` x the mean + ``slack`` stops reading its listening ports, and
    starts again once back under: the process with the fewest connections always accepts.
    """

    ratio = 1.1
    slack = 2

    def __init__(self, service: Any) -> None:
        self.service = service
        self.accepting = True

    def __call__(self, share: float) -> int:
        own = len(self.service.node.connections)
        accepting = own <= share * self.ratio + self.slack
        if accepting != self.accepting:
            self.accepting = accepting
            for port in self.service.ports:  # the node's listeners still running
                if not getattr(port, "connected", False):
                    continue
                if accepting:
                    port.startReading()
                else:
                    port.stopReading()
            log.debug("{connections} connections, the node's mean is {share:.1f}: "
                      "accepting {accepting}", connections=own, share=share,
                      accepting=accepting)
        return own


class SharedTCPPort(Port):
    """A TCP port adopted from the supervisor, accepting one connection per wake-up: every
    process is woken when a connection arrives, and a burst of them is spread over the
    processes instead of going all to the first one awake (Twisted accepts up to 100)."""

    def doRead(self) -> None:
        self.numberAccepts = 1
        super().doRead()


class SharedUNIXPort(unix.Port):
    """A UNIX port adopted from the supervisor: one accept per wake-up as `SharedTCPPort`;
    the socket file is the supervisor's (never unlinked here) and the socket is only closed,
    never shut down (the other processes still accept from it)."""

    _shouldShutdown = False

    def doRead(self) -> None:
        self.numberAccepts = 1
        super().doRead()

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)


def family_of(fd: int) -> int:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return int(probe.family)
    finally:
        probe.close()


@implementer(IStreamServerEndpoint)
class SharedPortEndpoint:
    """Listens by adopting ``fd``, a listening socket the supervisor opened (TLS on top with
    ``tls``, the context factory of the ``ssl:`` endpoint it was opened for)."""

    def __init__(self, reactor: Any, fd: int, tls: Any = None, backlog: int = 50) -> None:
        self.reactor = reactor
        self.fd = fd
        self.tls = tls
        self.backlog = backlog  # a UNIX port calls listen() again on an adopted socket

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.execute(self._adopt, factory)

    def _adopt(self, factory: Any) -> Any:
        if self.tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        family = family_of(self.fd)
        if family == socket.AF_UNIX:
            port = SharedUNIXPort._fromListeningDescriptor(self.reactor, self.fd, factory)
            port.backlog = self.backlog
        else:
            port = SharedTCPPort._fromListeningDescriptor(self.reactor, self.fd, family, factory)
        port.startListening()
        os.close(self.fd)  # the port holds its own duplicate
        return port


def shared_endpoints(reactor: Any, descriptions: list[str], fds: list[int]) -> dict[str, Any]:
    """``{description: SharedPortEndpoint}`` for the sockets the supervisor passed, in the
    order it opened them (``listen``, then ``metrics.listen``)."""
    endpoints = {}
    for description, fd in zip(descriptions, fds):
        tls, backlog = None, 50
        kind = description.split(":", 1)[0]
        if kind in ("ssl", "unix"):
            parsed = serverFromString(reactor, description)
            # no public accessors: the TLS context and the UNIX backlog the supervisor used
            if isinstance(parsed, SSL4ServerEndpoint):
                tls = parsed._sslContextFactory
            backlog = getattr(parsed, "_backlog", backlog)
        endpoints[description] = SharedPortEndpoint(reactor, fd, tls, backlog)
    return endpoints


@implementer(ILogObserver)
class LineObserver:
    """Log events (info and up) as ``<level> <text>`` lines, for the supervisor to relay."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info)
        if level < LogLevel.info:
            return
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        if not text:
            return
        try:
            self.out.write("".join(f"{level.name} {line}\n" for line in text.split("\n")))
            self.out.flush()
        except (OSError, ValueError):
            pass  # the supervisor is gone


def route_sessions(service: Any, control: ChildControl, index: int) -> None:
    """Long-polling sessions named after this process, requests for the other processes'
    sessions handed over to them, theirs adopted here (handoff.py)."""
    from qewd_twisted.cluster.handoff import ProcessRouter, sid_maker

    engine = service.engine
    if engine is None:
        return
    engine.sessions.new_id = sid_maker(index, engine.sessions.new_id)
    root = service.site.resource
    root.putChild(b"socket.io", ProcessRouter(root.children[b"socket.io"], index,
                                              control.hand_over,
                                              service.config.limits.max_message_size))
    reactor = service.reactor

    def adopt(data: bytes, fd: int) -> None:
        transport = reactor.adoptStreamConnection(fd, family_of(fd), service.site)
        if transport is not None:
            transport.protocol.dataReceived(data)

    control.adopt = adopt


class Options(usage.Options):
    optParameters = [
        ["config", None, None, "the startup file"],
        ["index", None, "0", "this process's index among the node's processes", int],
        ["control", None, "3", "the control channel's file descriptor", int],
        ["listen-fds", None, "", "the listening sockets' file descriptors, comma-separated"],
        ["node-id", None, None, "the node's id, shared by its processes (push origins)"],
    ]


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor

    from qewd_twisted.cluster.supervisor import EX_CONFIG
    from qewd_twisted.config import ConfigError, load_config
    from qewd_twisted.service import QEWDService

    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    globalLogBeginner.beginLoggingTo([LineObserver(sys.stdout)], redirectStandardIO=False)
    index = options["index"]
    fds = [int(x) for x in options["listen-fds"].split(",") if x]
    os.set_blocking(options["control"], False)

    stopping: list[bool] = []

    def supervisor_gone() -> None:
        if not stopping and reactor.running:
            log.warn("process {index}: the supervisor has gone: stopping", index=index)
            reactor.stop()

    control = ChildControl(lost=supervisor_gone)
    try:
        config = load_config(options["config"])
        descriptions = list(config.listen)
        if config.metrics_listen is not None:
            descriptions.append(config.metrics_listen)
        # the node id first: the push bus between nodes (pushbus/) skips its own node's pushes
        service = QEWDService(config, reactor,
                              shared=shared_endpoints(reactor, descriptions, fds),
                              node_id=options["node-id"] or None)
    except ConfigError as e:
        sys.stderr.write(f"qewd: {e}\n")
        sys.stderr.flush()
        raise SystemExit(EX_CONFIG)

    from qewd_twisted.cluster.aggregate import install

    if options["node-id"]:
        service.node.origin = f"{service.node.node_id}/{index}"
    control.node = service.node
    control.balance = Balance(service)
    control.reporter = install(service, control, index)
    route_sessions(service, control, index)
    service.node.push_buses.append(ProcessPushBus(control))
    reactor.adoptStreamConnection(options["control"], socket.AF_UNIX, OneProtocolFactory(control))
    os.close(options["control"])

    def start() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            service.startService()
        except Exception:
            log.failure("process {index} could not start", index=index)
            reactor.stop()
            return
        control.callRemote(Ready, pid=os.getpid()).addErrback(
            lambda f: log.failure("process {index}: telling the supervisor", f, index=index))

    def stop() -> Any:
        stopping.append(True)
        if service.running:
            return service.stopService()
        return None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()


if __name__ == "__main__":
    main()
