# -*- test-case-name: tests.test_links -*-
"""
How a link reaches its remote and when it tries again: the ``ClientService`` plumbing.

- `endpoint_for_url`: the client endpoint (TCP, TLS, IPv4/IPv6 literals or host names) and the
  Engine.IO WebSocket URL for a remote node's base URL;
- `link_retry_policy`: jittered exponential backoff for reconnects;
- `HandshakeGuardEndpoint`: keeps ``ClientService`` from seeing a connection lost before
  ``prepareConnection`` (the link's handshake and registration) has finished.

May import: Twisted only.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["SOCKET_IO_PATH", "HandshakeGuardEndpoint", "endpoint_for_url", "link_retry_policy"]

SOCKET_IO_PATH = "/socket.io/?EIO=3&transport=websocket"


def endpoint_for_url(
    url: str, reactor: Any, tls_options: Any = None
) -> tuple[IStreamClientEndpoint, str]:
    """The client endpoint and the Engine.IO WebSocket URL for a remote node's base URL.

    ``http://`` and ``ws://`` are plain TCP; ``https://`` and ``wss://`` are TLS, verified
    against the URL's host name (``optionsForClientTLS``, service-identity) unless
    ``tls_options`` (an ``IOpenSSLClientConnectionCreator``) is given. IP literals get a TCP
    endpoint of their family, names a ``HostnameEndpoint``. The URL's path is ignored: QEWD
    always serves socket.io at ``/socket.io/`` (a path would be a namespace to socket.io).
    Raises ValueError for anything else.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "ws"):
        secure = False
    elif scheme in ("https", "wss"):
        secure = True
    else:
        raise ValueError("micro-service URL must be http://, https://, ws:// or wss://: " + url)
    host = parts.hostname
    if not host:
        raise ValueError("micro-service URL has no host: " + url)
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ValueError("micro-service URL has a bad port: " + url) from None

    endpoint: IStreamClientEndpoint
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        endpoint = HostnameEndpoint(reactor, host, port)
    else:
        cls = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        endpoint = cls(reactor, host, port)
    if secure:
        endpoint = wrapClientTLS(tls_options or optionsForClientTLS(host), endpoint)

    netloc = "[" + host + "]" if address is not None and address.version == 6 else host
    ws_url = "{}://{}:{}{}".format("wss" if secure else "ws", netloc, port, SOCKET_IO_PATH)
    return endpoint, ws_url


def link_retry_policy(
    rng: Callable[[], float] = random.random,
    initial: float = 0.5,
    maximum: float = 30.0,
    jitter: float = 1.0,
) -> Callable[[int], float]:
    """Reconnect delays for ``ClientService``: 0.5 s doubling to 30 s, plus up to ``jitter``
    seconds of noise so many masters do not reconnect to a restarted remote in step.

    ``backoffPolicy`` adds its jitter after capping, so the cap is set ``jitter`` below
    ``maximum``; every delay lies in ``[initial, maximum]``. ClientService counts attempts
    from 1, so the first retry waits ``initial`` (+ noise).
    """
    policy = backoffPolicy(
        initialDelay=initial, maxDelay=maximum - jitter, factor=2, jitter=lambda: rng() * jitter
    )
    return lambda attempt: min(max(policy(max(attempt - 1, 0)), initial), maximum)


class _GuardProtocol(Protocol):
    """Sits between the transport and ClientService's protocol proxy (see below)."""

    def __init__(self, inner: IProtocol) -> None:
        self.inner = inner

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.connected = True
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        real = getattr(self.inner, "link_protocol", None)
        if real is not None and not real.established:
            # Lost before prepareConnection succeeded: tell only our protocol, whose
            # failing handshake already counts as a failed attempt for ClientService.
            real.connectionLost(reason)
        else:
            self.inner.connectionLost(reason)


class _GuardFactory(Factory):
    noisy = False  # one "Starting factory" line per reconnect attempt is noise

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self.wrapped = wrapped

    def buildProtocol(self, addr: Any) -> Protocol | None:
        inner = self.wrapped.buildProtocol(addr)
        return None if inner is None else _GuardProtocol(inner)


@implementer(IStreamClientEndpoint)
class HandshakeGuardEndpoint:
    """Wraps the link's endpoint so ClientService never hears of a half-prepared connection.

    ClientService (Twisted 26) cannot take a disconnect while ``prepareConnection`` is still
    running, or after it failed: its state machine raises ``NoTransition`` from
    ``connectionLost``. A link loses connections in exactly those states (remote closes
    mid-handshake, registration refused, handshake timeout). Until the link marks its
    protocol ``established``, the guard delivers ``connectionLost`` to the link's protocol
    only; the failed handshake already told ClientService to back off and retry.
    It also logs each attempt and each connect failure for the link.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        on_attempt: Callable[[], None],
        on_failure: Callable[[Failure], None],
        label: str = "",
    ) -> None:
        self._endpoint = endpoint
        self._on_attempt = on_attempt
        self._on_failure = on_failure
        self._label = label

    def __repr__(self) -> str:
        return f"<link endpoint {self._label}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        self._on_attempt()
        d = self._endpoint.connect(_GuardFactory(protocolFactory))

        def unwrap(guard: _GuardProtocol) -> IProtocol:
            return guard.inner

        def failed(f: Failure) -> Failure:
            self._on_failure(f)
            return f

        return d.addCallbacks(unwrap, failed)
