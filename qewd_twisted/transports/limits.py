# -*- test-case-name: tests.test_http_hardening -*-
"""
The HTTP layer's limits and deadlines, each default written once (docs/reliability.md lists
them with what a client sees past each one).

`HTTPLimits` is what the Site, its channels, the static files, the WebSocket endpoints and the
status page read; `config` builds one from the startup file's keys and tests build their own.
Imports nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HTTPLimits:
    """Limits on every HTTP connection and what it may send."""

    #: ``headerTimeout``: the request line and headers must be complete within this many
    #: seconds of the connection opening (or of the previous response on a keep-alive one).
    header_timeout: float = 30.0
    #: ``bodyTimeout``: a request body must arrive in full within this many seconds of its
    #: headers, however it trickles in.
    body_timeout: float = 60.0
    #: ``maxConnectionsPerAddress``: connections (HTTP and WebSocket together) one client
    #: address may hold; None = no per-address cap (the default: behind a proxy every client
    #: has the proxy's address).
    max_connections_per_address: int | None = None
    #: A response the client stops reading (the socket's buffer stays full) is abandoned, and
    #: the connection aborted, after this many seconds without progress.
    stall_timeout: float = 60.0
    #: ``wsPingInterval``: seconds between the WebSocket pings sent on ``/ws``;
    #: ``wsPingTimeout``: a ``/ws`` client that has not answered within this many seconds of
    #: a ping is dropped. (``/socket.io/`` has Engine.IO's own heartbeat.)
    ws_ping_interval: float = 25.0
    ws_ping_timeout: float = 20.0
    #: ``registerTimeout``: a WebSocket client (either endpoint) that has not registered
    #: (``ewd-register`` / ``ewd-reregister``) within this many seconds is closed.
    register_timeout: float = 60.0
    #: The body a WebSocket upgrade (and every GET, static file and operator page) may carry.
    upgrade_max_body: int = 0
    #: Byte ranges answered in one multipart/byteranges response; more (or overlapping ones)
    #: get the whole file.
    max_ranges: int = 16
    #: ``/status``: failed Basic-auth attempts one address may make within ``auth_window``
    #: seconds; past it that address gets 429 until the window has passed.
    auth_failures: int = 10
    auth_window: float = 60.0
    #: Addresses the status page's throttle remembers at most (the oldest are forgotten).
    auth_tracked: int = 10000
    #: Characters of a client-supplied value (header, path, method) written to the log.
    log_value_chars: int = 120
    #: After a 4xx answered early (413, 408, ...), how long the node keeps reading and
    #: discarding what the client still sends, so that the answer is not lost to a reset.
    linger: float = 2.0


DEFAULT_LIMITS = HTTPLimits()


def clip(value: bytes | str | None, limits: HTTPLimits = DEFAULT_LIMITS) -> str:
    """A client-supplied value as it may be logged: decoded, repr-escaped, truncated."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    n = limits.log_value_chars
    text = repr(value[: n + 1])[1:-1]
    return text[:n] + "..." if len(value) > n else text
