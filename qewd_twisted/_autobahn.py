"""
What our WebSocket protocols (server and link client) change in Autobahn's per-frame path.

Autobahn's ``dataReceived`` and ``sendData`` build their debug-log arguments (coloured type and
value names) on every call, even when nothing logs at debug level: about a tenth of the node's
CPU per request in the profile (docs/performance.md). This mixin does the same work without
them: the traffic counters (read by /metrics) and Autobahn's own send queue are kept as they are.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

_OPEN = WebSocketProtocol.STATE_OPEN
_PREOPEN = (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING)


class QuietFraming:
    """Mix in before Autobahn's protocol class."""

    def dataReceived(self: Any, data: bytes) -> None:
        self._dataReceived(data)

    def sendData(self: Any, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:
            return super().sendData(data, sync, chopsize)  # type: ignore[misc]
        self.transport.write(data)
        if self.state == _OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in _PREOPEN:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)
