# -*- test-case-name: tests.integration.test_service -*-
"""
``QEWDService``: one QEWD node as a Twisted ``MultiService``, built from a ``Config``.

Embedding: create it with your reactor and ``setServiceParent`` it under your application; the
library never imports or runs the global reactor itself. ``twistd qewd`` (tap.py) does the same.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

from qewd_twisted.apps.modules import Applications
from qewd_twisted.config import Config, ConfigError, own_files_in, web_root_problem
from qewd_twisted.core.node import Node
from qewd_twisted.auth.sessions import MemorySessionStore
from qewd_twisted.core.session_locks import StoreSessionLocks
from qewd_twisted.transports.http import NodeSite
from qewd_twisted.transports.site import build_site_root
from qewd_twisted.apps.pool import WorkerPool

log = Logger()


#: The listen queue for TCP and TLS endpoints that do not set one. Twisted's default is 50: when
#: thousands of clients reconnect at once (a node restarted), the kernel drops the SYNs past it
#: and each dropped one waits a 1 s retransmit (docs/performance.md). The kernel caps it at
#: net.core.somaxconn.
DEFAULT_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=DEFAULT_BACKLOG`` added for tcp/tcp6/ssl endpoints that
    have none (an explicit ``backlog=`` is kept)."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "ssl") or "backlog=" in description:
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


#: Open files a node needs besides its clients' sockets (listeners, logs, pool, links...).
FD_RESERVE = 64


def open_files_limit() -> int | None:
    """The process's soft limit on open files (None where it can't be read)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def fd_limit_warning(max_connections: int, soft_limit: int | None) -> str | None:
    """What to warn about when ``maxConnections`` cannot be reached before the process runs
    out of file descriptors (then slow clients exhaust the fds instead of meeting the limit)."""
    if soft_limit is None or max_connections + FD_RESERVE <= soft_limit:
        return None
    return (f"config.maxConnections is {max_connections} but this process may open only "
            f"{soft_limit} files: past about {max(soft_limit - FD_RESERVE, 0)} connections it "
            f"will fail to accept instead of answering 503; raise the limit (ulimit -n) or set "
            f"maxConnections to at most {max(soft_limit - FD_RESERVE, 1)}")


def own_files_of(config: Config) -> list[str]:
    """The files this node loads itself: the startup file, moduleMap modules (files, and the
    files of dotted modules once imported) and the TLS key. None of them is ever served."""
    files = list(config.own_files)
    for spec in config.module_map.values():
        module = sys.modules.get(spec.module) if spec.module else None
        if module is not None and getattr(module, "__file__", None):
            files.append(module.__file__)
    return files


def _no_link(url: str, application: str) -> Any:
    raise LookupError("no links: this node has no jwt or no u_services destinations")


class _Closer(Service):
    """Closes the document store when the node stops (after in-flight requests ended)."""

    name = "documents"

    def __init__(self, store: Any) -> None:
        self.store = store

    def stopService(self) -> Any:
        super().stopService()
        self.store.close()


class QEWDService(MultiService):
    """A QEWD node: listeners, worker pool, micro-service links and the router between them.

    Handler modules named in ``moduleMap`` are imported here, when the service is built, so a
    broken module is reported before anything listens (as a ``ConfigError``).

    ``node_id``: the node's id on the push buses (``Node.node_id``); every process of one node
    is given the same one. Default: a random id.

    Stopping (SIGTERM under twistd) is graceful: stop listening, refuse new requests, let
    in-flight ones finish for ``shutdownGracePeriod`` seconds, close client sockets with 1001,
    then stop the links and the worker pool.
    """

    def __init__(self, config: Config, reactor: Any, *,
                 shared: dict[str, Any] | None = None, node_id: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        # One process of a supervised node (qewd_twisted/cluster): the listening sockets are
        # the supervisor's, adopted through these endpoints (by endpoint string).
        self.shared = shared
        if config.processes > 1 and shared is None:
            raise ConfigError([
                f"config.processes: {config.processes} processes are started and supervised "
                f"by `twistd qewd`; an embedded QEWDService is one node process in your own "
                f"program: set processes to 1 (or leave it out), or run the node with twistd "
                f"qewd (docs/embedding.md)"])

        # Documents (q.db) and, with a database configured, session-token sessions: opened
        # now so that an unusable database stops the node before it listens.
        from qewd_twisted.documents import DatabaseUnavailable, DocumentStore, open_backend

        try:
            backend = open_backend(config.database)
        except DatabaseUnavailable as e:
            raise ConfigError([f"config.database: {e}"]) from e
        self.documents = DocumentStore(backend, reactor)
        _Closer(self.documents).setServiceParent(self)  # first in, last stopped

        self.apps = Applications(config.module_map)

        limits = config.limits
        self.pool = WorkerPool(reactor, config.pool_size, limits.max_queue_length,
                               sched_batch=config.pool_sched_batch)
        self.pool.setServiceParent(self)

        self.tokens = None
        if config.jwt is not None:
            from qewd_twisted.auth.tokens import TokenCodec

            self.tokens = TokenCodec(
                config.jwt.secret,
                algorithms=config.jwt.algorithms,
                clock=reactor,
                initial_timeout=config.initial_session_timeout,
                previous_secrets=config.jwt.previous_secrets,
                cipher=config.jwt.cipher,
            )
        if config.database is None:
            self.sessions = MemorySessionStore(reactor)
            gc = TimerService(60, self.sessions.collect_garbage)
        else:
            from qewd_twisted.documents.sessions import DocumentSessionStore

            self.sessions = DocumentSessionStore(self.documents, reactor,
                                                 config.session_document_name)
            gc = TimerService(60, self.sessions.sweep)
        gc.clock = reactor
        gc.setServiceParent(self)

        self.micro_services = None
        routes = list(config.micro_services.routes.values()) if config.micro_services else []
        # an application switch reaches destinations no route names (§4.7)
        switching = bool(config.permit_application_switch and self.tokens is not None
                         and config.micro_services.destinations)
        if routes or switching or (config.micro_services and config.micro_services.rest_routes):
            from qewd_twisted.mesh.links import MicroServices

            self.micro_services = MicroServices(routes, reactor, refresh_token=self.tokens.refresh)
            self.micro_services.setServiceParent(self)
        switch = None
        if config.permit_application_switch:
            from qewd_twisted.core.switch import ApplicationSwitch

            # a destination too: accepts switches its permit_application_switch allows
            link_for = self.micro_services.link_for if switching else _no_link
            switch = ApplicationSwitch(config.micro_services.destinations,
                                       config.permit_application_switch, link_for)
            for dest in config.micro_services.destinations.values() if switching else ():
                link_for(dest.urls or dest.url, dest.application)  # up before use

        self.node = Node(
            reactor,
            self.apps,
            self.pool,
            tokens=self.tokens,
            sessions=self.sessions,
            micro_services=self.micro_services,
            limits=limits,
            web_root=config.web_server_root,
            lock_timeout=config.lock_session,
            # lockSession with sessions in a database: its lock, shared by every node on it
            session_locks=(StoreSessionLocks(self.documents, config.session_document_name)
                           if config.lock_session and config.database is not None else None),
            switch=switch,
            db=self.documents,
            node_id=node_id,
        )
        # handler modules are imported once the node exists: init(application, q) gets its q
        problems = [f"config.moduleMap.{e.application}: {e.reason}"
                    for e in self.apps.load_all(self.node.q)]
        if problems:
            self.documents.close()
            raise ConfigError(problems)
        # server push across the nodes sharing the database's Redis (pushbus/, ``push``)
        self.push_bus = None
        if config.push_redis and config.database is not None:
            from qewd_twisted.pushbus.redisbus import RedisPushBus

            params = config.database["params"]
            self.push_bus = RedisPushBus(
                reactor, self.node.node_id, self.node.deliver_push, host=params["host"],
                port=params["port"], password=params.get("password"),
                channel=config.push_channel, timeout=params["timeout"])
            self.push_bus.setServiceParent(self)
            self.node.push_buses.append(self.push_bus)
        own_files = own_files_of(config)
        if config.web_server_root is not None:
            served = own_files_in(config.web_server_root, own_files)
            if served:
                self.documents.close()
                raise ConfigError(["config.webServerRootPath: "
                                   + web_root_problem(config.web_server_root, served)])
        root = build_site_root(self.node, reactor, web_root=config.web_server_root,
                               max_message_size=limits.max_message_size,
                               max_connections=limits.max_connections,
                               max_buffered_bytes=limits.max_buffered_bytes,
                               limits=limits, allowed_origins=config.allowed_origins,
                               hidden=own_files, io_paths=config.io_paths)
        self.site = NodeSite(root, reactor=reactor, limits=limits,
                             max_connections=limits.max_connections,
                             connections=lambda: len(self.node.connections))
        # REST: the startup file's routes, the micro-service REST routes, POST /ajax
        from qewd_twisted.rest import install_rest
        from qewd_twisted.rest.resource import FormlessRequest

        self.rest = install_rest(self.node, root, reactor, config, self.micro_services)
        self.site.requestFactory = FormlessRequest
        # the Engine.IO polling sessions (transports/polling.py), finished on stop
        self.engine = getattr(root.getStaticEntity(b"socket.io"), "engine", None)
        self.listeners: list[Service] = []
        for description in config.listen:
            listener = self.listener(description, self.site)
            listener.setServiceParent(self)
            self.listeners.append(listener)
        # /health, /ready, /metrics, /status and the request log, as configured (ops.py)
        from qewd_twisted.ops.operations import Operations

        self.ops = Operations(self)

    def listener(self, description: str, factory: Any) -> Service:
        """The service listening on ``description`` with ``factory``: a fresh listening
        socket, or the supervisor's socket adopted (a node process of several)."""
        if self.shared is not None and description in self.shared:
            listener = StreamServerEndpointService(self.shared[description], factory)
        else:
            listener = strports.service(with_backlog(description), factory,
                                        reactor=self.reactor)
        # Fail startup on "address in use" instead of only logging it.
        listener._raiseSynchronously = True  # type: ignore[attr-defined]
        return listener

    def startService(self) -> None:
        for key in getattr(self.config, "ignored_keys", ()):
            log.warn("config.{key} is a QEWD.js setting this node does not use: ignored", key=key)
        warning = fd_limit_warning(self.config.limits.max_connections, open_files_limit())
        if warning:
            log.warn("{text}", text=warning)
        super().startService()
        log.info("{name} started: listening on {listen}", name=self.config.server_name,
                 listen=", ".join(self.config.listen))

    @property
    def ports(self) -> list[Any]:
        """The listening ports (IListeningPort), once started: ``.getHost().port`` etc."""
        out = []
        for listener in self.listeners:
            if not listener.running:
                continue
            port = getattr(listener, "_waitingForPort", None)
            if port is not None and port.called and not isinstance(port.result, Exception):
                out.append(port.result)
        return out

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        yield defer.DeferredList([defer.maybeDeferred(s.stopService) for s in self.listeners])
        yield self.node.drain(self.config.shutdown_grace)
        yield self.node.close_all()
        if self.engine is not None:
            self.engine.sessions.shutdown()
        others = [s for s in reversed(list(self)) if s not in self.listeners and s.running]
        yield defer.DeferredList([defer.maybeDeferred(s.stopService) for s in others])
        log.info("{name} stopped", name=self.config.server_name)
