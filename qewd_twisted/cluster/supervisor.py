# -*- test-case-name: tests.test_cluster -*-
"""
`Supervisor`: the ``twistd qewd`` process when ``config["processes"]`` is more than 1.

It serves no client itself. On start it opens the node's listening sockets (``listen``, and
``metrics.listen``) and never accepts on them; it starts N node processes (child.py) that adopt
those sockets, so the port stays open while a process dies and restarts: the kernel queues new
connections on the one shared socket and whichever live process is free accepts them.

- A process that ends is started again after a bounded exponential backoff (`backoffPolicy`);
  the count starts again once a process has run for `STABLE_AFTER` seconds. A process that
  exits with `EX_CONFIG` (its configuration or a handler module cannot be loaded) is not
  restarted: the supervisor gives up and stops the node.
- The watchdog sends each ready process a heartbeat over its control channel; one that has
  not answered for ``processHeartbeatTimeout`` seconds (a reactor stuck in a busy handler) is
  killed (SIGKILL) and replaced. One not ready `START_TIMEOUT` seconds after it started, too.
  Each heartbeat carries the node's mean connections per process, each answer the process's
  own count: a process well above the mean stops accepting until it is back near it
  (child.py `Balance`), so long-lived connections end up spread over the processes.
- Server push: a process's `Publish` is relayed, as is, to every other process (`Deliver`),
  in the order received: each push reaches every process once, one sender's in order.
- Figures: a process's `Gather` is answered with every ready process's `Report` (aggregate.py
  merges them into the node's ``/metrics`` and status page; ``/health`` lists the processes).
- Stopping (SIGTERM): no more restarts, SIGTERM to every process (each drains as a single
  node does), the listening sockets closed, then every process waited for (SIGKILL to any
  still running ``shutdownGracePeriod`` + `KILL_MARGIN` seconds later).

The processes are started through an ``IProcessSpawner`` (`ProcessSpawner`: real processes;
tests pass a fake) and the time is the reactor's (tests pass a ``Clock``).

May import: ``config``, ``service`` (endpoint backlog), ``cluster``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import uuid
from typing import Any, Callable

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from zope.interface import Interface, implementer

from qewd_twisted.cluster.protocol import (
    Adopt,
    Deliver,
    Gather,
    HandOver,
    Heartbeat,
    NotServing,
    OneProtocolFactory,
    Publish,
    Ready,
    Report,
    declared,
)

__all__ = ["EX_CONFIG", "IProcessSpawner", "ProcessSpawner", "Supervisor", "open_shared"]

log = Logger()

#: A process's exit status when its configuration cannot be used (BSD sysexits' EX_CONFIG).
EX_CONFIG = 78
#: A process that has run this long since it was ready starts the backoff count again.
STABLE_AFTER = 30.0
#: A process not ready this long after it was started is killed (importing handler modules,
#: opening the database: what the single-process node does before it listens).
START_TIMEOUT = 60.0
#: SIGKILL to processes still running this long past ``shutdownGracePeriod`` on shutdown.
KILL_MARGIN = 10.0
#: A process's answer to `Report` is waited for this long.
REPORT_TIMEOUT = 5.0
#: The child's control channel is this file descriptor; the listening sockets follow it.
CONTROL_FD = 3


def restart_policy() -> Callable[[int], float]:
    """Seconds before the (n+1)th consecutive restart: 0.5, 1, 2, ... up to 30, plus up to a
    quarter second of jitter (processes killed together do not restart in lockstep)."""
    return backoffPolicy(initialDelay=0.5, maxDelay=30.0, factor=2.0,
                         jitter=lambda: random.uniform(0, 0.25))


class IProcessSpawner(Interface):
    """Starts one node process of a supervisor."""

    def spawn(index: int, channel: Any, ended: Callable[[Any], None]) -> Any:
        """Start process ``index``, connect its control channel to ``channel`` (an AMP
        protocol), and call ``ended(reason)`` (a Failure) when it has ended. Returns a handle
        with ``pid`` and ``signal(name)`` ("TERM", "KILL")."""


class Slot:
    """One of the node's N processes, across its restarts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.handle: Any = None  # the running process, or None
        self.channel: SupervisorControl | None = None  # connected control channel, or None
        self.pid: int | None = None
        self.ready = False
        self.started_at = 0.0
        self.ready_at = 0.0
        self.last_seen = 0.0  # when the process last sent anything on its channel
        self.beating = False  # a heartbeat is awaiting its answer
        self.connections = 0  # client connections, as its last heartbeat answer said
        self.killed: str | None = None  # why the watchdog killed it
        self.failures = 0  # consecutive ends without a stable run
        self.restarts = 0
        self.restart_call: Any = None
        self.ended: defer.Deferred[None] | None = None

    @property
    def state(self) -> str:
        if self.handle is None:
            return "restarting" if self.restart_call is not None else "stopped"
        return "ready" if self.ready else "starting"

    def describe(self, now: float) -> dict[str, Any]:
        return {"process": self.index, "pid": self.pid if self.handle is not None else None,
                "state": self.state, "restarts": self.restarts,
                "uptime_seconds": int(now - self.ready_at) if self.ready else 0}


class SupervisorControl(amp.AMP):
    """The supervisor's end of one process's control channel."""

    def __init__(self, supervisor: Supervisor, slot: Slot) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.slot = slot

    def ampBoxReceived(self, box: Any) -> None:
        self.slot.last_seen = self.supervisor.clock.seconds()
        super().ampBoxReceived(box)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.slot.channel = self
        self.slot.last_seen = self.supervisor.clock.seconds()

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.slot.channel is self:
            self.slot.channel = None

    @Ready.responder
    def ready(self, pid: int) -> dict[str, Any]:
        self.supervisor.process_ready(self.slot, pid)
        return {}

    # Every responder fails only with its command's declared errors (protocol.declared):
    # AMP answers anything else by closing the channel.

    @Publish.responder
    def publish(self, push: bytes) -> dict[str, Any]:
        try:
            self.supervisor.relay(self.slot, push)
        except Exception:
            log.failure("relaying a push from process {process}", process=self.slot.index)
        return {}

    @Gather.responder
    def gather(self, what: str) -> defer.Deferred[dict[str, Any]]:
        d = defer.maybeDeferred(self.supervisor.gather, what)
        d.addCallback(lambda data: {"reports": json.dumps(data).encode("utf-8")})
        return declared(d)

    @HandOver.responder
    def hand_over(self, owner: int, data: bytes, fd: int) -> defer.Deferred[dict[str, Any]]:
        return declared(defer.maybeDeferred(self.supervisor.hand_over, owner, data, fd))


class Supervisor(Service):
    """Runs and watches the ``processes`` node processes of one node (see the module)."""

    name = "supervisor"

    def __init__(self, config: Any, reactor: Any, spawner: IProcessSpawner | None = None, *,
                 config_path: str | None = None,
                 policy: Callable[[int], float] | None = None,
                 on_give_up: Callable[[], None] | None = None) -> None:
        self.config = config
        self.clock = reactor
        self.reactor = reactor
        self.spawner = spawner
        self.config_path = config_path
        self.policy = policy or restart_policy()
        self.on_give_up = on_give_up
        self.heartbeat_timeout = config.process_heartbeat_timeout
        self.slots = [Slot(i) for i in range(config.processes)]
        self.ports: list[Any] = []  # the listening sockets, opened in startService
        self.stopping = False
        self.relayed = 0  # pushes relayed to the processes (one per push and recipient)
        # the node's id in its processes' push origins, "<node id>/<index>" (core/push.py): a
        # bus between nodes (Redis) knows its own node's pushes by it, whichever process sent
        self.node_id = uuid.uuid4().hex
        self._watchdog = LoopingCall(self._check)
        self._watchdog.clock = reactor

    # -- life cycle

    def startService(self) -> None:
        super().startService()
        if self.spawner is None:
            descriptions = list(self.config.listen)
            if self.config.metrics_listen is not None:
                descriptions.append(self.config.metrics_listen)
            self.ports = [open_shared(self.reactor, d) for d in descriptions]
            self.spawner = ProcessSpawner(self.reactor, self.config_path or "",
                                          [p.fileno() for p in self.ports], self.node_id)
            hosts = ", ".join(str(p.getHost()) for p in self.ports)
            log.info("{name}: supervisor (pid {pid}) listening on {hosts}, starting "
                     "{n} processes", name=self.config.server_name, pid=os.getpid(),
                     hosts=hosts, n=len(self.slots))
        if self.config.database is None:
            log.warn("{n} processes, each with its own in-memory documents (q.db) and "
                     "session-token sessions: set config.database (sqlite or redis) for them "
                     "to share one store", n=len(self.slots))
        for slot in self.slots:
            self._start(slot)
        interval = max(0.05, min(1.0, self.heartbeat_timeout / 4))
        self._watchdog.start(interval, now=False)

    def _start(self, slot: Slot) -> None:
        slot.restart_call = None
        slot.ready = False
        slot.beating = False
        slot.connections = 0
        slot.killed = None
        slot.started_at = slot.last_seen = self.clock.seconds()
        slot.ended = defer.Deferred()
        channel = SupervisorControl(self, slot)
        assert self.spawner is not None
        try:
            slot.handle = self.spawner.spawn(slot.index, channel,
                                             lambda reason: self._ended(slot, reason))
        except Exception:
            log.failure("process {process}: could not be started", process=slot.index)
            slot.handle = None
            slot.ended.callback(None)
            self._schedule_restart(slot, "could not be started")
            return
        slot.pid = slot.handle.pid
        log.info("process {process} started (pid {pid})", process=slot.index, pid=slot.pid)

    def process_ready(self, slot: Slot, pid: int) -> None:
        slot.ready = True
        slot.ready_at = self.clock.seconds()
        log.info("process {process} (pid {pid}) is serving", process=slot.index, pid=pid)

    def _ended(self, slot: Slot, reason: Any) -> None:
        was_ready, ran = slot.ready, self.clock.seconds() - slot.ready_at
        pid, killed = slot.pid, slot.killed
        slot.handle = None
        slot.ready = False
        if slot.channel is not None:
            slot.channel.transport.loseConnection()
            slot.channel = None
        ended, slot.ended = slot.ended, None
        how = _how_it_ended(reason)
        if self.stopping or not self.running:
            log.info("process {process} (pid {pid}) stopped: {how}", process=slot.index,
                     pid=pid, how=how)
        if ended is not None:
            ended.callback(None)
        if self.stopping or not self.running:
            return
        if getattr(reason.value, "exitCode", None) == EX_CONFIG:
            log.critical("process {process} (pid {pid}) cannot load the node's configuration "
                         "(its log above says why): the supervisor stops", process=slot.index,
                         pid=pid)
            self._give_up()
            return
        if was_ready and ran >= STABLE_AFTER:
            slot.failures = 0
        self._schedule_restart(slot, f"{how} (killed: {killed})" if killed else how, pid)

    def _schedule_restart(self, slot: Slot, why: str, pid: int | None = None) -> None:
        delay = self.policy(slot.failures)
        slot.failures += 1
        slot.restarts += 1
        log.warn("process {process} (pid {pid}) ended: {why}; restarting it in {delay:.2f} s "
                 "(restart {restarts})", process=slot.index, pid=pid, why=why, delay=delay,
                 restarts=slot.restarts)
        slot.restart_call = self.clock.callLater(delay, self._start, slot)

    def _give_up(self) -> None:
        for slot in self.slots:
            if slot.restart_call is not None:
                slot.restart_call.cancel()
                slot.restart_call = None
        if self.on_give_up is not None:
            self.on_give_up()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Drain every process (SIGTERM: each one's graceful shutdown), close the sockets."""
        Service.stopService(self)
        self.stopping = True
        if self._watchdog.running:
            self._watchdog.stop()
        for slot in self.slots:
            if slot.restart_call is not None:
                slot.restart_call.cancel()
                slot.restart_call = None
        live = [slot for slot in self.slots if slot.handle is not None]
        log.info("stopping {n} processes", n=len(live))
        waiting = [slot.ended for slot in live if slot.ended is not None]
        for slot in live:
            _signal(slot, "TERM")
        # No new connection waits on a socket nobody will accept from: the processes stop
        # listening first thing in their drain, and the supervisor closes its own copy now.
        ports, self.ports = self.ports, []
        yield defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        deadline = self.clock.callLater(self.config.shutdown_grace + KILL_MARGIN, self._kill_all)
        yield defer.DeferredList(waiting)
        if deadline.active():
            deadline.cancel()
        log.info("{name}: every process has stopped", name=self.config.server_name)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                log.warn("process {process} (pid {pid}) still running after the grace "
                         "period: killed", process=slot.index, pid=slot.pid)
                _signal(slot, "KILL")

    # -- the watchdog

    def _check(self) -> None:
        now = self.clock.seconds()
        ready = [slot.connections for slot in self.slots if slot.ready]
        share = sum(ready) / len(ready) if ready else 0.0
        for slot in self.slots:
            if slot.handle is None or slot.killed is not None:
                continue
            if not slot.ready:
                if now - slot.started_at > START_TIMEOUT:
                    self._kill(slot, f"not ready {START_TIMEOUT:g} s after it started")
            elif now - slot.last_seen > self.heartbeat_timeout:
                self._kill(slot, f"no heartbeat answer for {now - slot.last_seen:.1f} s "
                                 f"(processHeartbeatTimeout {self.heartbeat_timeout:g} s)")
            elif not slot.beating and slot.channel is not None:
                slot.beating = True
                d = slot.channel.callRemote(Heartbeat, share=share)
                d.addBoth(_beaten, slot)

    def _kill(self, slot: Slot, why: str) -> None:
        log.warn("process {process} (pid {pid}): {why}: killing it", process=slot.index,
                 pid=slot.pid, why=why)
        slot.killed = why
        _signal(slot, "KILL")

    # -- the node's work between processes

    def relay(self, source: Slot, push: bytes) -> None:
        """A push published by ``source``'s process, to every other process once, as is."""
        for slot in self.slots:
            if slot is not source and slot.channel is not None:
                slot.channel.callRemote(Deliver, push=push)
                self.relayed += 1

    def hand_over(self, owner: int, data: bytes, fd: int) -> defer.Deferred[dict[str, Any]]:
        """A client connection (``fd``, received over a control channel) for process
        ``owner``, whose long-polling session it is (handoff.py)."""
        slot = self.slots[owner] if 0 <= owner < len(self.slots) else None
        if slot is None or not slot.ready or slot.channel is None:
            os.close(fd)
            return defer.fail(NotServing(f"process {owner} is not serving"))
        d = slot.channel.callRemote(Adopt, data=data, fd=fd)
        d.addTimeout(REPORT_TIMEOUT, self.clock)

        def sent(result: Any) -> Any:
            os.close(fd)  # ours: the owner has its own copy now
            return result

        def lost(failure: Any) -> Any:
            raise NotServing(f"process {owner} did not take it: {failure.getErrorMessage()}")

        d.addBoth(sent)
        d.addCallbacks(lambda _: {}, lost)
        return d

    def processes(self) -> list[dict[str, Any]]:
        """Each process as ``/health`` and the status page list it."""
        now = self.clock.seconds()
        return [slot.describe(now) for slot in self.slots]

    def gather(self, what: str) -> defer.Deferred[dict[str, Any]]:
        """``{"processes": [...], "reports": [{"process", "pid", "report" | "error"}]}``:
        every ready process's `Report` of ``what`` (none for ``"health"``)."""
        result: dict[str, Any] = {"processes": self.processes(), "reports": []}
        if what == "health":
            return defer.succeed(result)
        asked = []
        for slot in self.slots:
            if slot.ready and slot.channel is not None:
                d = slot.channel.callRemote(Report, what=what)
                d.addTimeout(REPORT_TIMEOUT, self.clock)
                d.addCallbacks(_report_of, _no_report, callbackArgs=(slot.index, slot.pid),
                               errbackArgs=(slot.index, slot.pid))
                asked.append(d)
        d = defer.gatherResults(asked)
        d.addCallback(lambda reports: dict(result, reports=reports))
        return d


def _beaten(result: Any, slot: Slot) -> None:
    slot.beating = False  # an answer updated last_seen; a lost channel is the watchdog's
    if isinstance(result, dict):
        slot.connections = result["connections"]


def _report_of(answer: dict[str, Any], index: int, pid: int | None) -> dict[str, Any]:
    try:
        return {"process": index, "pid": pid, "report": json.loads(answer["report"])}
    except ValueError as e:
        return {"process": index, "pid": pid, "error": f"unreadable report: {e}"}


def _no_report(failure: Any, index: int, pid: int | None) -> dict[str, Any]:
    why = ("no answer within %g s" % REPORT_TIMEOUT
           if failure.check(defer.TimeoutError, defer.CancelledError)
           else failure.getErrorMessage())
    return {"process": index, "pid": pid, "error": why}


def _signal(slot: Slot, name: str) -> None:
    try:
        slot.handle.signal(name)
    except (error.ProcessExitedAlready, OSError):
        pass


def _how_it_ended(reason: Any) -> str:
    value = reason.value
    if getattr(value, "signal", None):
        return f"killed by signal {value.signal}"
    return f"exit status {getattr(value, 'exitCode', None)}"


# -- the listening sockets


def open_shared(reactor: Any, description: str) -> Any:
    """Listen on ``description`` (as the single-process node would, backlog included) without
    ever accepting: the node's processes adopt the socket and accept from it."""
    from qewd_twisted.service import with_backlog

    endpoint = serverFromString(reactor, with_backlog(description))
    ports: list[Any] = []
    never = Factory.forProtocol(Protocol)
    never.noisy = False
    d = endpoint.listen(never)
    d.addBoth(ports.append)
    port = ports[0]
    if not hasattr(port, "stopReading"):  # a Failure: "address in use" and the like
        port.raiseException()
    port.stopReading()
    # Closing it later must only close the supervisor's copy: a shutdown() of the socket would
    # stop it for every process too, which may not have stopped listening yet.
    port._shouldShutdown = False
    return port


# -- real processes


class _Handle:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.pid = transport.pid

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)


class _ChildOutput(ProcessProtocol):
    """A node process's stdout and stderr, relayed line by line into the supervisor's log
    (child.py writes each event as ``<level> <text>``), and its end."""

    def __init__(self, index: int, ended: Callable[[Any], None]) -> None:
        self.index = index
        self.ended = ended
        self.pid: int | None = None
        self._partial: dict[int, bytes] = {}
        self._level: dict[int, LogLevel] = {}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        if lines[-1]:
            self._partial[fd] = lines[-1]
        for line in lines[:-1]:
            self._line(fd, line.decode("utf-8", "replace"))

    def _line(self, fd: int, line: str) -> None:
        name, _, text = line.partition(" ")
        try:
            level = self._level[fd] = LogLevel.levelWithName(name)
        except Exception:
            level, text = self._level.get(fd, LogLevel.info), line
        log.emit(level, "process {process} (pid {pid}): {line}", process=self.index,
                 pid=self.pid, line=text)

    def processEnded(self, reason: Any) -> None:
        for fd, rest in sorted(self._partial.items()):
            self._line(fd, rest.decode("utf-8", "replace"))
        self._partial.clear()
        self.ended(reason)


@implementer(IProcessSpawner)
class ProcessSpawner:
    """Real node processes: ``python -m qewd_twisted.cluster.child``, with the control
    channel (a UNIX socket pair) as fd 3 and the listening sockets as fds 4, 5, ..."""

    def __init__(self, reactor: Any, config_path: str, fds: list[int], node_id: str, *,
                 executable: str = sys.executable) -> None:
        self.reactor = reactor
        self.config_path = config_path
        self.fds = fds
        self.node_id = node_id
        self.executable = executable

    def spawn(self, index: int, channel: Any, ended: Callable[[Any], None]) -> Any:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r", CONTROL_FD: theirs.fileno()}
        for i, fd in enumerate(self.fds):
            child_fds[CONTROL_FD + 1 + i] = fd
        listen = ",".join(str(CONTROL_FD + 1 + i) for i in range(len(self.fds)))
        args = [self.executable, "-m", "qewd_twisted.cluster.child", "--config",
                self.config_path, "--index", str(index), "--control", str(CONTROL_FD),
                "--listen-fds", listen, "--node-id", self.node_id]
        try:
            transport = self.reactor.spawnProcess(_ChildOutput(index, ended), self.executable,
                                                  args, env=dict(os.environ),
                                                  path=os.getcwd(), childFDs=child_fds)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        transport.closeStdin()
        try:
            self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX,
                                               OneProtocolFactory(channel))
        finally:
            ours.close()
        return _Handle(transport)
