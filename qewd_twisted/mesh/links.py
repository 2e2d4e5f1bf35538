# -*- test-case-name: tests.test_links -*-
"""
Micro-service links: one self-healing WebSocket per remote QEWD node (docs/protocol.md §4.2),
its life cycle and registration, and `MicroServices`, the routes to them (§4.1), to a lone link
or to a ``replicas.ReplicaSet`` (a destination with several hosts).

``Link`` is a service around a ``ClientService``: reconnects with ``policy.link_retry_policy``,
Engine.IO 3 framing over Autobahn (``protocol``), and ``prepareConnection`` doing the
socket.io handshake and ``ewd-register`` / ``ewd-reregister``, so ``ClientService.whenConnected``
(and ``Link.when_up``) means "registered". Forwarded requests are correlated by a
``correlation.Correlator``, opened when the link is up and closed when it goes down.

The contract with a caller (``core.interfaces.ILink``): ``link.send_request(message, receiver,
timeout)``; ``receiver.frame(frame)`` gets every reply frame (``ms_requestId`` removed) and
``receiver.failed(outcome)`` a ``LinkOutcome`` (DOWN, TIMEOUT); exactly one final frame or one
``failed`` per request. What happens to the link (state changes, errors, timeouts, dropped
frames) goes to its ``ILinkObserver``s.

May import: ``qewd_twisted.core.envelope`` and ``core.interfaces`` (the contracts), the rest
of ``qewd_twisted.mesh``, ``qewd_twisted.transports`` (through ``protocol``) and Twisted.
Never the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from twisted.application.internet import ClientService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from qewd_twisted.core import envelope
from qewd_twisted.core.interfaces import (
    ILink,
    ILinkObserver,
    IReplyReceiver,
    IRoutes,
    LinkOutcome,
)
from qewd_twisted.mesh.correlation import Correlator
from qewd_twisted.mesh.policy import HandshakeGuardEndpoint, endpoint_for_url, link_retry_policy
from qewd_twisted.mesh.protocol import (
    EngineIOClientProtocol,
    ILinkTransportReceiver,
    LinkClientFactory,
)
from qewd_twisted.mesh.replicas import ReplicaSet

__all__ = ["Link", "LinkOutcome", "LinkState", "MicroServices", "RegistrationError",
           "ReplicaSet", "link_retry_policy"]

log = Logger()


class LinkState(str, Enum):
    """Where a link is. Only ``UP`` forwards requests."""

    STOPPED = "stopped"  # service not running
    DOWN = "down"  # connecting, or waiting to retry
    REGISTERING = "registering"  # connected: WebSocket, socket.io, ewd-(re)register
    UP = "up"  # registered: requests are forwarded


class RegistrationError(Exception):
    """The remote refused ``ewd-register`` (its error text, never a token)."""


@implementer(ILinkObserver)
class _StateCallback:
    """An ``on_state_change`` callback as an observer."""

    def __init__(self, callback: Callable[[Link, LinkState], None]) -> None:
        self.callback = callback

    def link_state_changed(self, link: Link, state: LinkState) -> None:
        self.callback(link, state)

    def link_event(self, link: Link, kind: str, text: str) -> None:
        pass


@implementer(ILink, ILinkTransportReceiver)
class Link(Service):
    """One persistent, self-healing WebSocket link to a remote QEWD node (Python or QEWD.js).

    ``url`` is the remote's base URL (``http(s)://host:port``), ``application`` the remote
    application it registers as (§4.2). ``refresh_token(token) -> str`` re-signs the stored
    registration token for ``ewd-reregister`` after a reconnect (the node passes
    ``TokenCodec``'s refresh; None sends the stored token as it is). ``reactor`` makes the
    connections; ``clock`` (default: ``reactor``) runs every timer: retries, pings, handshake
    and request deadlines. ``retry_policy`` defaults to ``link_retry_policy()``;
    ``handshake_timeout`` bounds connect-to-registered. ``resync_after``: a QEWD.js remote
    may still be running a request that timed out, and its id-less frames could be taken for
    the next one's, so the queue waits for that request's final frame, and reconnects (to
    start clean) if it has not come ``resync_after`` seconds later. ``endpoint`` replaces the
    one built from ``url`` (tests, UNIX sockets); ``tls_options`` replaces
    ``optionsForClientTLS(host)`` for ``https``.
    """

    def __init__(
        self,
        url: str,
        application: str,
        reactor: Any,
        *,
        refresh_token: Callable[[str], str] | None = None,
        clock: IReactorTime | None = None,
        retry_policy: Callable[[int], float] | None = None,
        handshake_timeout: float = 20.0,
        resync_after: float = 5.0,
        endpoint: IStreamClientEndpoint | None = None,
        tls_options: Any = None,
    ) -> None:
        self.url = url
        self.name = url
        self.application = application
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._refresh_token = refresh_token
        self._handshake_timeout = handshake_timeout
        built, self.ws_url = endpoint_for_url(url, reactor, tls_options)
        self._factory = LinkClientFactory(self.ws_url, reactor, self._clock, self)
        self._client = ClientService(
            HandshakeGuardEndpoint(
                endpoint or built, self._attempting, self._connect_failed, label=url
            ),
            self._factory,
            retryPolicy=retry_policy or link_retry_policy(),
            clock=self._clock,
            prepareConnection=self._prepare,
        )
        self._state = LinkState.STOPPED
        self._observers: list[ILinkObserver] = []
        self._proto: EngineIOClientProtocol | None = None
        self._token: str | None = None  # the remote-issued registration JWT: never logged
        self._attempts = 0
        self.registrations = 0  # ewd-register replies accepted (metrics read these)
        self.reregistrations = 0  # ewd-reregister replies accepted
        self._reg_wait: tuple[str, Deferred[dict[str, Any]]] | None = None  # type, reply
        self._correlator = Correlator(self._clock, self._transmit, resync=self._resync,
                                      resync_after=resync_after, report=self._report,
                                      label=url)

    def __repr__(self) -> str:
        return f"<Link {self.url} ({self.application}) {self._state.value}>"

    # -- observable state

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def is_up(self) -> bool:
        return self._state is LinkState.UP

    @property
    def echoes_request_ids(self) -> bool:
        """True when the remote said it echoes ``ms_requestId`` on every frame (our nodes)."""
        return self._correlator.echoes

    @property
    def in_flight(self) -> int:
        return self._correlator.in_flight

    @property
    def queued(self) -> int:
        return self._correlator.queued

    def add_observer(self, observer: ILinkObserver) -> Callable[[], None]:
        """Report state changes and events to ``observer``; returns an unsubscriber.

        Called synchronously, in the middle of the link's work: observe, don't stop the link
        from there (use ``when_up`` or a ``callLater`` for that)."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def on_state_change(self, callback: Callable[[Link, LinkState], None]) -> Callable[[], None]:
        """Call ``callback(link, state)`` on every state change; returns an unsubscriber
        (a shorthand for `add_observer`)."""
        return self.add_observer(_StateCallback(callback))

    def when_up(self, failAfterFailures: int | None = None) -> Deferred[Link]:
        """Fires with this link once it is registered (soon, if it is up now).

        ``ClientService.whenConnected`` fires inside its state machine's transition, where
        stopping the service raises; the result is handed on from a fresh reactor turn so a
        caller may do anything, including ``stopService``, in its callbacks.
        """
        d: Deferred[Link] = Deferred()

        def bounce(result: Any) -> None:
            failed = isinstance(result, Failure)
            self._reactor.callLater(0, d.errback if failed else d.callback,
                                    result if failed else self)

        self._client.whenConnected(failAfterFailures).addBoth(bounce)
        return d

    def _set_state(self, state: LinkState) -> None:
        if state is self._state:
            return
        self._state = state
        for observer in list(self._observers):
            try:
                observer.link_state_changed(self, state)
            except Exception:  # noqa: BLE001 - isolate observers
                log.failure("link {url}: state observer failed", url=self.url)

    def _report(self, kind: str, text: str) -> None:
        for observer in list(self._observers):
            try:
                observer.link_event(self, kind, text)
            except Exception:  # noqa: BLE001 - isolate observers
                log.failure("link {url}: event observer failed", url=self.url)

    def _problem(self, format: str, warn: bool = True, **fields: Any) -> None:
        """Log one problem and report it to the observers as an ``"error"`` event."""
        (log.warn if warn else log.info)(format, url=self.url, **fields)
        self._report("error", formatEvent({"log_format": format, "url": self.url, **fields}))

    # -- service

    def startService(self) -> None:
        super().startService()
        self._set_state(LinkState.DOWN)
        log.info("link {url} starting (application {application})",
                 url=self.url, application=self.application)
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Close the connection, end every pending and queued request as DOWN, and cancel
        every timer and retry; the Deferred fires when the connection is gone."""
        super().stopService()
        proto = self._proto
        self._correlator.close("link stopped")
        if proto is not None and self.is_up:
            proto.send_disconnect()
        waits = [self._client.stopService()]
        if proto is not None:
            waits.append(proto.when_lost())
        self._set_state(LinkState.STOPPED)
        log.info("link {url} stopped", url=self.url)
        return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    # -- ClientService hooks

    def _attempting(self) -> None:
        self._attempts += 1
        if self._attempts > 1:
            log.info("link {url}: reconnecting (attempt {attempt})",
                     url=self.url, attempt=self._attempts)

    def _connect_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self._problem("link {url}: connect failed: {why}", warn=False,
                          why=failure.getErrorMessage())

    def _prepare(self, connected: Any) -> Deferred[None]:
        """``prepareConnection``: socket.io handshake, then (re-)registration (§4.2)."""
        proto: EngineIOClientProtocol = connected.link_protocol
        self._proto = proto
        self._set_state(LinkState.REGISTERING)
        timer = self._clock.callLater(self._handshake_timeout, self._handshake_expired, proto)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d = Deferred.fromCoroutine(self._handshake(proto))
        d.addBoth(settled)
        d.addErrback(self._handshake_failed, proto)
        return d

    def _handshake_expired(self, proto: EngineIOClientProtocol) -> None:
        self._problem("link {url}: no registration within {timeout}s, dropping the connection",
                      timeout=self._handshake_timeout)
        proto.abort()

    async def _handshake(self, proto: EngineIOClientProtocol) -> None:
        await proto.when_ready()
        reply = None
        if self._token is not None:
            reply = await self._reregister(proto, self._token)
        if reply is None:
            reply = await self._exchange(proto, {
                "type": "ewd-register", "application": self.application,
                "jwt": True, "qewd_twisted": 1})
            message = reply.get("message")
            if (not isinstance(message, dict) or "error" in message
                    or not isinstance(message.get("token"), str)):
                raise RegistrationError(_error_text(message, "no token in the register reply"))
            self._token = message["token"]
            self.registrations += 1
            log.info("link {url}: registered as {application}",
                     url=self.url, application=self.application)
        echoes = reply["message"].get("qewd_twisted") == 1
        self._attempts = 0
        proto.established = True
        self._set_state(LinkState.UP)
        log.info("link {url} up (remote echoes request ids: {echoes})",
                 url=self.url, echoes=echoes)
        self._correlator.open(echoes)

    async def _reregister(
        self, proto: EngineIOClientProtocol, token: str
    ) -> dict[str, Any] | None:
        """``ewd-reregister`` with the refreshed token (§2.3, §4.2 item 5): the reply frame,
        or None when a fresh ``ewd-register`` is needed instead."""
        if self._refresh_token is not None:
            try:
                token = self._refresh_token(token)
            except Exception as e:  # noqa: BLE001 - isolate callers' code / refresh errors
                self._problem("link {url}: could not refresh the registration token ({error}); "
                              "registering afresh", error=type(e).__name__)
                return None
        reply = await self._exchange(proto, {
            "type": "ewd-reregister", "token": token, "jwt": True, "qewd_twisted": 1})
        message = reply.get("message")
        if isinstance(message, dict) and message.get("ok") and "error" not in message:
            if isinstance(message.get("token"), str):
                self._token = message["token"]
            self.reregistrations += 1
            log.info("link {url}: re-registered", url=self.url)
            return reply
        self._problem("link {url}: re-registration refused ({why}); registering afresh",
                      why=_error_text(message, "no ok in the reply"))
        return None

    def _exchange(self, proto: EngineIOClientProtocol, message: dict[str, Any]) -> Deferred[Any]:
        """Send one registration message; fires with the reply frame of the same type."""
        d: Deferred[dict[str, Any]] = Deferred()
        self._reg_wait = (message["type"], d)
        proto.send_event(message)
        return d

    def _handshake_failed(self, failure: Failure, proto: EngineIOClientProtocol) -> Failure:
        if proto is self._proto:
            self._proto = None
            self._reg_wait = None
            self._set_state(LinkState.DOWN if self.running else LinkState.STOPPED)
        proto.abort()
        if self.running and not failure.check(CancelledError):
            self._problem("link {url}: handshake failed: {why}", why=failure.getErrorMessage())
        return failure

    # -- ILinkTransportReceiver, for EngineIOClientProtocol

    def frame_received(self, proto: EngineIOClientProtocol, frame: Any) -> None:
        if proto is not self._proto:
            return
        if self._reg_wait is not None:
            self._registration_frame(self._reg_wait, frame)
        elif self.is_up:
            self._correlator.received(frame)

    def protocol_lost(self, proto: EngineIOClientProtocol, reason: Failure) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        waiting, self._reg_wait = self._reg_wait, None
        was_up = self.is_up
        self._set_state(LinkState.DOWN if self.running else LinkState.STOPPED)
        if was_up:
            self._problem("link {url} down: {why}", warn=False, why=reason.getErrorMessage())
            self._correlator.close("connection lost")
        if waiting is not None and not waiting[1].called:
            waiting[1].errback(reason)

    def problem(self, proto: EngineIOClientProtocol, text: str) -> None:
        if proto is self._proto:
            self._report("error", text)

    def _registration_frame(
        self, waiting: tuple[str, Deferred[dict[str, Any]]], frame: Any
    ) -> None:
        expected, d = waiting
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        message = frame.get("message")
        is_error = kind == "error" or (kind is None and isinstance(message, dict)
                                       and "error" in message)
        if kind != expected and not is_error:
            log.debug("link {url}: {type} frame ignored while registering",
                      url=self.url, type=kind)
            return
        self._reg_wait = None
        if kind == "error" and not isinstance(message, dict):
            frame = envelope.final_error(expected, str(message))
        d.callback(frame)

    # -- forwarding (ILink)

    def send_request(self, message: dict[str, Any], receiver: IReplyReceiver,
                     timeout: float | None = None) -> None:
        """Forward one already-authenticated message (left unchanged); ``receiver`` gets
        every reply frame (``ms_requestId`` removed) through ``frame`` and exactly one final
        frame (``envelope.is_final``) or one ``failed(LinkOutcome)``.

        Down: ``receiver.failed(LinkOutcome.DOWN)`` at once, before this returns. ``timeout``
        (seconds, None for none) ends the request with TIMEOUT; a dropped link ends it with
        DOWN. Nothing is ever re-sent.
        """
        self._correlator.submit(receiver, message.get("type"), message, timeout)

    def _transmit(self, request_id: int, message: dict[str, Any]) -> None:
        """The correlator's sender: one request on the wire, with its ``ms_requestId``."""
        proto = self._proto
        message["ms_requestId"] = request_id
        try:
            proto.send_event(message)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - e.g. a closing handshake under way
            # the coming protocol_lost answers it
            log.failure("link {url}: could not send {type}", url=self.url,
                        type=message.get("type"))
            if proto is not None:
                proto.abort()

    def _resync(self) -> None:
        if self._proto is not None:
            self._proto.abort()


def _error_text(message: Any, default: str) -> str:
    if isinstance(message, dict) and message.get("error") is not None:
        return str(message["error"])
    if isinstance(message, str):
        return message
    return default


@implementer(IRoutes)
class MicroServices(MultiService):
    """Routes (application, type) to a remote node, owning one ``Link`` per remote URL (§4.1).

    ``routes``: objects with ``application``, ``type``, ``url`` and ``remote_application``
    attributes (``config.Route``), and optionally ``urls`` (replicas: every host's URL), or a
    mapping whose values are such objects. Each URL's link registers as the
    ``remote_application`` of the first route to that URL, as QEWD does. A route with several
    URLs goes to a `ReplicaSet` of their links (one set per distinct list of URLs): each
    request to one live replica. ``endpoints``: ``{url: endpoint}`` for some links (tests);
    other keyword arguments go to every ``Link``.
    """

    def __init__(
        self,
        routes: Iterable[Any] | Mapping[Any, Any],
        reactor: Any,
        *,
        refresh_token: Callable[[str], str] | None = None,
        clock: IReactorTime | None = None,
        endpoints: Mapping[str, IStreamClientEndpoint] | None = None,
        **link_options: Any,
    ) -> None:
        super().__init__()
        self._links: dict[str, Link] = {}
        self._sets: dict[tuple[str, ...], ReplicaSet] = {}
        self._routes: dict[tuple[str, str], tuple[Link | ReplicaSet, str]] = {}
        self._reactor = reactor
        self._refresh_token = refresh_token
        self._clock = clock
        self._endpoints = dict(endpoints or {})
        self._link_options = link_options
        if isinstance(routes, Mapping):
            routes = routes.values()
        for route in routes:
            target = self.link_for(getattr(route, "urls", None) or route.url,
                                   route.remote_application)
            self._routes[(route.application, route.type)] = (target, route.remote_application)

    def link_for(self, urls: str | Sequence[str], application: str) -> Link | ReplicaSet:
        """The link to ``urls`` (one URL), or the `ReplicaSet` of the links to them (several),
        made now, registering as ``application``, if there is none: REST micro-service
        destinations share the links and sets of WebSocket routes (§4.1)."""
        if isinstance(urls, str):
            urls = (urls,)
        links = [self._link(url, application) for url in urls]
        if len(links) == 1:
            return links[0]
        key = tuple(urls)
        replicas = self._sets.get(key)
        if replicas is None:
            replicas = self._sets[key] = ReplicaSet(links)
        return replicas

    def _link(self, url: str, application: str) -> Link:
        link = self._links.get(url)
        if link is None:
            options = dict(self._link_options)
            if url in self._endpoints:
                options["endpoint"] = self._endpoints[url]
            link = Link(url, application, self._reactor, refresh_token=self._refresh_token,
                        clock=self._clock, **options)
            self._links[url] = link
            link.setServiceParent(self)
        return link

    @property
    def links(self) -> Mapping[str, Link]:
        """Every link, by remote URL (each replica's too)."""
        return dict(self._links)

    @property
    def replica_sets(self) -> list[ReplicaSet]:
        """Every replica set, in the order they were made."""
        return list(self._sets.values())

    def route(self, application: str, type: str) -> tuple[Link, str] | None:
        """The link and remote application for a message, or None if it is handled locally.
        For replicas, the link is the one member this request goes to (`ReplicaSet.pick`):
        call it once per request."""
        found = self._routes.get((application, type))
        if found is not None and isinstance(found[0], ReplicaSet):
            return found[0].pick(), found[1]
        return found  # type: ignore[return-value]
