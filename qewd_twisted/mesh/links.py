# -*- test-case-name: tests.test_links -*-
"""
Micro-service links: one self-healing WebSocket per remote QEWD node (PROTOCOL.md §4.2), and
per-request forwarding with correlation, deadlines and immediate failure (§4.4, §4.9, with the
fixes DESIGN.md lists).

``Link`` is a service around a ``ClientService``: jittered exponential backoff, Engine.IO 3
framing over Autobahn (``_linkproto``), and ``prepareConnection`` doing the socket.io
handshake and ``ewd-register`` / ``ewd-reregister``, so ``ClientService.whenConnected`` (and
``Link.when_up``) means "registered". ``MicroServices`` owns one ``Link`` per remote URL and
answers "where does (application, type) go?".

Correlation: every forwarded message carries ``ms_requestId`` (per link, from 1). Our nodes
echo it on every frame (they say so in the register reply: ``qewd_twisted: 1``). QEWD.js
echoes it only on ``finished: true`` frames (§4.5 item 6), so towards a QEWD.js remote the
link keeps one request in flight and queues the rest: an id-less frame is then never
ambiguous.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.application.internet import ClientService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from qewd_twisted.mesh.protocol import (
    DOWN_ERROR,
    TIMEOUT_ERROR,
    EngineIOClientProtocol,
    HandshakeGuardEndpoint,
    LinkClientFactory,
    OnFrame,
    down_frame,
    endpoint_for_url,
    is_final_frame,
    link_retry_policy,
    timeout_frame,
)

__all__ = ["DOWN_ERROR", "TIMEOUT_ERROR", "Link", "LinkState", "MicroServices",
           "RegistrationError", "is_final_frame", "link_retry_policy"]

log = Logger()


class LinkState(str, Enum):
    """Where a link is. Only ``UP`` forwards requests."""

    STOPPED = "stopped"  # service not running
    DOWN = "down"  # connecting, or waiting to retry
    REGISTERING = "registering"  # connected: WebSocket, socket.io, ewd-(re)register
    UP = "up"  # registered: requests are forwarded


class RegistrationError(Exception):
    """The remote refused ``ewd-register`` (its error text, never a token)."""


@dataclass(eq=False)
class _Request:
    id: int
    type: Any
    on_frame: OnFrame
    message: dict[str, Any] | None = None  # kept only while queued
    timer: IDelayedCall | None = None


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
        self._resync_after = resync_after
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
        self._observers: list[Callable[[Link, LinkState], None]] = []
        self._proto: EngineIOClientProtocol | None = None
        self._token: str | None = None  # the remote-issued registration JWT: never logged
        self._echoes = False
        self._attempts = 0
        self.registrations = 0  # ewd-register replies accepted (metrics read these)
        self.reregistrations = 0  # ewd-reregister replies accepted
        self._reg_wait: tuple[str, Deferred[dict[str, Any]]] | None = None  # type, reply
        self._next_id = 0
        self._pending: dict[int, _Request] = {}
        self._queue: deque[_Request] = deque()
        self._blocker: int | None = None  # a timed-out request a QEWD.js remote still runs
        self._resync_call: IDelayedCall | None = None

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
        return self._echoes

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def on_state_change(self, callback: Callable[[Link, LinkState], None]) -> Callable[[], None]:
        """Call ``callback(link, state)`` on every state change; returns an unsubscriber.

        Called synchronously, in the middle of the link's work: observe, don't stop the link
        from here (use ``when_up`` or a ``callLater`` for that)."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback) if callback in self._observers else None

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
        for callback in list(self._observers):
            try:
                callback(self, state)
            except Exception:  # noqa: BLE001 - isolate callers' code / refresh errors
                log.failure("link {url}: state observer failed", url=self.url)

    # -- service

    def startService(self) -> None:
        super().startService()
        self._set_state(LinkState.DOWN)
        log.info("link {url} starting (application {application})",
                 url=self.url, application=self.application)
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Close the connection, answer every pending and queued request with the 503, and
        cancel every timer and retry; the Deferred fires when the connection is gone."""
        super().stopService()
        proto = self._proto
        self._fail_all("link stopped")
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
            log.info("link {url}: connect failed: {why}",
                     url=self.url, why=failure.getErrorMessage())

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
        log.warn("link {url}: no registration within {timeout}s, dropping the connection",
                 url=self.url, timeout=self._handshake_timeout)
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
        message = reply["message"]
        self._echoes = message.get("qewd_twisted") == 1
        self._attempts = 0
        proto.established = True
        self._set_state(LinkState.UP)
        log.info("link {url} up (remote echoes request ids: {echoes})",
                 url=self.url, echoes=self._echoes)

    async def _reregister(
        self, proto: EngineIOClientProtocol, token: str
    ) -> dict[str, Any] | None:
        """``ewd-reregister`` with the refreshed token (§2.3, §4.2 item 5): the reply frame,
        or None when a fresh ``ewd-register`` is needed instead."""
        if self._refresh_token is not None:
            try:
                token = self._refresh_token(token)
            except Exception as e:  # noqa: BLE001 - isolate callers' code / refresh errors
                log.warn("link {url}: could not refresh the registration token ({error}); "
                         "registering afresh", url=self.url, error=type(e).__name__)
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
        log.warn("link {url}: re-registration refused ({why}); registering afresh",
                 url=self.url, why=_error_text(message, "no ok in the reply"))
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
            log.warn("link {url}: handshake failed: {why}",
                     url=self.url, why=failure.getErrorMessage())
        return failure

    # -- receiver interface for EngineIOClientProtocol

    def frame_received(self, proto: EngineIOClientProtocol, frame: Any) -> None:
        if proto is not self._proto:
            return
        if self._reg_wait is not None:
            self._registration_frame(self._reg_wait, frame)
        elif self.is_up:
            self._route(frame)

    def protocol_lost(self, proto: EngineIOClientProtocol, reason: Failure) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        waiting, self._reg_wait = self._reg_wait, None
        was_up = self.is_up
        self._set_state(LinkState.DOWN if self.running else LinkState.STOPPED)
        if was_up:
            log.info("link {url} down: {why}", url=self.url, why=reason.getErrorMessage())
            self._fail_all("connection lost")
        if waiting is not None and not waiting[1].called:
            waiting[1].errback(reason)

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
            frame = {"type": expected, "finished": True, "message": {"error": str(message)}}
        d.callback(frame)

    # -- forwarding

    def send_request(
        self, message: dict[str, Any], on_frame: OnFrame, timeout: float | None = None
    ) -> None:
        """Forward one already-authenticated message; ``on_frame(frame)`` gets every frame of
        the reply (``ms_requestId`` removed) and exactly one final frame (``is_final_frame``).

        Down: ``on_frame`` gets the 503 at once, before this returns. ``timeout`` (seconds,
        None for none) ends the request with a 504; a dropped link ends it with the 503.
        Nothing is ever re-sent.
        """
        request_type = message.get("type")
        if not self.is_up:
            self._answer(on_frame, down_frame(request_type), request_type)
            return
        self._next_id += 1
        request = _Request(self._next_id, request_type, on_frame, dict(message))
        if timeout is not None:
            request.timer = self._clock.callLater(timeout, self._expired, request)
        self._queue.append(request)
        self._pump()

    def _pump(self) -> None:
        """Send what may go now: everything to an echoing remote; to a QEWD.js remote one
        request at a time, and none while it may still answer a timed-out one."""
        while self._queue and self._proto is not None and self.is_up and (
            self._echoes or (not self._pending and self._blocker is None)
        ):
            self._transmit(self._proto, self._queue.popleft())

    def _transmit(self, proto: EngineIOClientProtocol, request: _Request) -> None:
        payload, request.message = dict(request.message or {}), None
        payload["ms_requestId"] = request.id
        self._pending[request.id] = request
        try:
            proto.send_event(payload)
        except Exception:  # noqa: BLE001 - isolate callers' code / refresh errors
            # e.g. a close handshake under way: the coming protocol_lost answers it.
            log.failure("link {url}: could not send {type}", url=self.url, type=request.type)
            proto.abort()

    def _route(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            log.debug("link {url}: non-object frame dropped", url=self.url)
            return
        message = frame.get("message")
        rid = frame.get("ms_requestId")
        if rid is None and isinstance(message, dict):
            rid = message.get("ms_requestId")
        if rid is not None:
            valid = isinstance(rid, int) and not isinstance(rid, bool)
            request = self._pending.get(rid) if valid else None
            if request is None:
                self._late(rid, frame)
                return
        else:
            request = self._attribute(frame)
            if request is None:
                return
        self._deliver(request, frame)

    def _attribute(self, frame: dict[str, Any]) -> _Request | None:
        """Owner of a frame without ``ms_requestId``: only when unambiguous (never by type
        alone when several could match, §4.4 item 9)."""
        kind = frame.get("type")
        message = frame.get("message")
        # A frame with no `finished` counts as final (is_final_frame); without an id it is
        # taken as a reply only if it is an error (a rejection). Other id-less unfinished
        # frames are broadcasts / socket pushes (§1.4), not part of any request.
        if "finished" not in frame and not (isinstance(message, dict) and "error" in message):
            log.debug("link {url}: unsolicited {type} frame dropped", url=self.url, type=kind)
            return None
        if not self._pending:
            if self._blocker is not None and is_final_frame(frame):
                log.info("link {url}: late final frame for timed-out request {id} dropped",
                         url=self.url, id=self._blocker)
                self._unblock()
            else:
                log.info("link {url}: {type} frame with no request in flight dropped",
                         url=self.url, type=kind)
            return None
        same_type = [r for r in self._pending.values() if r.type == kind]
        if len(same_type) == 1:
            return same_type[0]
        if len(self._pending) == 1:
            return next(iter(self._pending.values()))
        log.warn("link {url}: ambiguous {type} frame without ms_requestId dropped "
                 "({same} of {n} requests in flight have that type)",
                 url=self.url, type=kind, same=len(same_type), n=len(self._pending))
        return None

    def _deliver(self, request: _Request, frame: dict[str, Any]) -> None:
        final = is_final_frame(frame)
        out = {k: v for k, v in frame.items() if k != "ms_requestId"}
        message = out.get("message")
        if isinstance(message, dict) and "ms_requestId" in message:
            out["message"] = message = {k: v for k, v in message.items() if k != "ms_requestId"}
        if out.get("type") == "error" and final and request.type != "error":
            # A remote worker crash (§1.4, §5.4): the client must see it under its own type.
            if isinstance(message, dict):
                out["type"] = request.type
            else:
                out = {"type": request.type, "finished": True, "message": {"error": str(message)}}
        elif "type" not in out:
            out["type"] = request.type  # e.g. a chained QEWD.js master's type-less 503
        if final:
            self._finish(request)
        self._answer(request.on_frame, out, request.type)
        if final:
            self._pump()

    def _finish(self, request: _Request) -> None:
        self._pending.pop(request.id, None)
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None

    def _late(self, rid: Any, frame: dict[str, Any]) -> None:
        log.info("link {url}: frame for unknown or expired request {id} dropped",
                 url=self.url, id=rid)
        if rid == self._blocker and is_final_frame(frame):
            self._unblock()

    def _expired(self, request: _Request) -> None:
        request.timer = None
        if request in self._queue:
            self._queue.remove(request)
        elif self._pending.pop(request.id, None) is not None and not self._echoes:
            # QEWD.js may still send id-less frames for it: hold the queue until its final
            # frame comes, or reconnect to start clean if it never does.
            self._blocker = request.id
            self._resync_call = self._clock.callLater(self._resync_after, self._resync)
        log.warn("link {url}: {type} request {id} timed out", url=self.url,
                 type=request.type, id=request.id)
        self._answer(request.on_frame, timeout_frame(request.type), request.type)
        self._pump()

    def _unblock(self) -> None:
        self._clear_blocker()
        self._pump()

    def _clear_blocker(self) -> None:
        self._blocker = None
        if self._resync_call is not None and self._resync_call.active():
            self._resync_call.cancel()
        self._resync_call = None

    def _resync(self) -> None:
        self._resync_call = None
        log.warn("link {url}: remote never finished timed-out request {id}; reconnecting",
                 url=self.url, id=self._blocker)
        if self._proto is not None:
            self._proto.abort()

    def _fail_all(self, why: str) -> None:
        requests = list(self._pending.values()) + list(self._queue)
        self._pending.clear()
        self._queue.clear()
        self._clear_blocker()
        if requests:
            log.info("link {url}: {n} request(s) answered with 503 ({why})",
                     url=self.url, n=len(requests), why=why)
        for request in requests:
            self._finish(request)
            self._answer(request.on_frame, down_frame(request.type), request.type)

    def _answer(self, on_frame: OnFrame, frame: dict[str, Any], request_type: Any) -> None:
        try:
            on_frame(frame)
        except Exception:  # noqa: BLE001 - isolate callers' code / refresh errors
            log.failure("link {url}: on_frame failed for a {type} reply",
                        url=self.url, type=request_type)


def _error_text(message: Any, default: str) -> str:
    if isinstance(message, dict) and message.get("error") is not None:
        return str(message["error"])
    if isinstance(message, str):
        return message
    return default


class MicroServices(MultiService):
    """Routes (application, type) to a remote node, owning one ``Link`` per remote URL (§4.1).

    ``routes``: objects with ``application``, ``type``, ``url`` and ``remote_application``
    attributes (``config.Route``), or a mapping whose values are such objects. Each URL's
    link registers as the ``remote_application`` of the first route to that URL, as QEWD
    does. Other keyword arguments go to every ``Link``.
    """

    def __init__(
        self,
        routes: Iterable[Any] | Mapping[Any, Any],
        reactor: Any,
        *,
        refresh_token: Callable[[str], str] | None = None,
        clock: IReactorTime | None = None,
        **link_options: Any,
    ) -> None:
        super().__init__()
        self._links: dict[str, Link] = {}
        self._routes: dict[tuple[str, str], tuple[Link, str]] = {}
        self._reactor = reactor
        self._refresh_token = refresh_token
        self._clock = clock
        self._link_options = link_options
        if isinstance(routes, Mapping):
            routes = routes.values()
        for route in routes:
            link = self.link_for(route.url, route.remote_application)
            self._routes[(route.application, route.type)] = (link, route.remote_application)

    def link_for(self, url: str, application: str) -> Link:
        """The link to ``url`` (made now, registering as ``application``, if there is none):
        REST micro-service destinations share the links of WebSocket routes (§4.1)."""
        link = self._links.get(url)
        if link is None:
            link = Link(url, application, self._reactor, refresh_token=self._refresh_token,
                        clock=self._clock, **self._link_options)
            self._links[url] = link
            link.setServiceParent(self)
        return link

    @property
    def links(self) -> Mapping[str, Link]:
        """Every link, by remote URL."""
        return dict(self._links)

    def route(self, application: str, type: str) -> tuple[Link, str] | None:
        """The link and remote application for a message, or None if it is handled locally."""
        return self._routes.get((application, type))
