# -*- test-case-name: tests.test_config -*-
"""
`Limits`: every bound and deadline of a node, with its default written once.

``Config`` takes its defaults from here (and ``Config.limits`` gives them back as one object),
the node and ``testing.NodeHarness`` take a ``Limits``, and the site's factories default to
its values. The config key of each field is in `CONFIG_KEYS` (docs/configuration.md).

May import: nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONFIG_KEYS", "Limits"]


@dataclass(frozen=True)
class Limits:
    """A node's limits. Timeouts are seconds; None or 0 means no deadline."""

    max_connections: int = 20000  # clients at once; more are refused (HTTP 503)
    max_in_flight: int = 64  # requests in flight per client connection
    max_in_flight_link: int = 1024  # ... per connection from a master's link
    max_buffered_bytes: int = 4194304  # queued for a client that stopped reading
    max_message_size: int = 1048576  # one incoming message, bytes
    max_queue_length: int = 20000  # handler calls waiting for a pool thread
    handler_timeout: float | None = 60.0  # a local handler's deadline
    micro_service_timeout: float | None = 30.0  # a forwarded request's deadline
    initial_session_timeout: int = 300  # a new session's lifetime, seconds
    shutdown_grace: float = 20.0  # in-flight requests get this long on shutdown
    # Engine.IO (socket.io 2's names and defaults; the QEWD.js peer sends pingTimeout 20000)
    ping_interval: int = 25000  # ms between a socket.io client's pings
    ping_timeout: int = 20000  # ms: silent for ping_interval + ping_timeout -> closed
    max_pending_handshakes: int = 1000  # polling sessions that never polled after the handshake
    # -- the HTTP layer (transports/http.py; docs/reliability.md, "HTTP")
    header_timeout: float = 30.0  # request line + headers, from the connection (or last response)
    body_timeout: float = 60.0  # a whole request body, from its headers
    max_connections_per_address: int | None = None  # per client IP; None: no cap
    ws_ping_interval: float = 25.0  # /ws: a WebSocket ping this often ...
    ws_ping_timeout: float = 20.0  # ... and no answer within this long drops the client
    register_timeout: float = 60.0  # a WebSocket client not registered by then is closed
    stall_timeout: float = 60.0  # a response the client reads nothing of for this long: aborted
    max_ranges: int = 16  # byte ranges answered as multipart; more (or overlapping): whole file
    auth_failures: int = 10  # /status: wrong passwords per address within auth_window ...
    auth_window: float = 60.0  # ... past which it gets 429 for this long
    max_body_size: int = 1048576  # one REST or /ajax request body, bytes
    # -- processes of one node (qewd_twisted/cluster; docs/reliability.md, "Processes")
    process_heartbeat_timeout: float = 10.0  # a process silent this long is killed and replaced


#: Limits field -> its key in the startup file's ``config``.
CONFIG_KEYS = {
    "max_connections": "maxConnections",
    "max_in_flight": "maxInFlight",
    "max_in_flight_link": "maxInFlightPerLink",
    "max_buffered_bytes": "maxBufferedBytes",
    "max_message_size": "maxMessageSize",
    "max_queue_length": "max_queue_length",
    "handler_timeout": "handlerTimeout",
    "micro_service_timeout": "microServiceTimeout",
    "initial_session_timeout": "initialSessionTimeout",
    "shutdown_grace": "shutdownGracePeriod",
    "ping_interval": "pingInterval",
    "ping_timeout": "pingTimeout",
    "max_pending_handshakes": "maxPendingHandshakes",
    "header_timeout": "headerTimeout",
    "body_timeout": "bodyTimeout",
    "max_connections_per_address": "maxConnectionsPerAddress",
    "ws_ping_interval": "wsPingInterval",
    "ws_ping_timeout": "wsPingTimeout",
    "register_timeout": "registerTimeout",
    "stall_timeout": "stallTimeout",
    "max_ranges": "maxRanges",
    "auth_failures": "statusAuthFailures",
    "auth_window": "statusAuthWindow",
    "max_body_size": "maxBodySize",
    "process_heartbeat_timeout": "processHeartbeatTimeout",
}
