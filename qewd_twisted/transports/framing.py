# -*- test-case-name: tests.test_framing -*-
"""
What our WebSocket protocols (server and link client) change in Autobahn's per-frame path.

* ``QuietFraming`` (server and link client): Autobahn's ``dataReceived`` and ``sendData`` build
  their debug-log arguments (coloured type and value names) on every call, even when nothing
  logs at debug level: about a tenth of the node's CPU per request in the profile
  (docs/performance.md). The mixin does the same work without them: the traffic counters
  (read by /metrics) and Autobahn's own send queue are kept as they are. Its ``onMessageEnd``
  skips firing Autobahn's "message" event (a Deferred per message) unless something
  subscribed to it.
* ``SmallFrameUnmasking`` (server only, with the factory option ``applyMask=False``): Autobahn
  unmasks every client frame through its native masker, whose set-up (a CFFI object and
  buffers per frame) costs three times the XOR itself for the few hundred bytes a QEWD message
  is. Frames up to ``SMALL_FRAME`` bytes are unmasked here with one integer XOR; larger ones
  still get Autobahn's own masker. Nothing else changes: with ``applyMask=False`` a server
  protocol only skips unmasking incoming frames (it never masks what it sends), and this
  mixin puts the unmasking back.
* ``DirectTextSend`` (server only): ``sendMessage`` for the common case (an unfragmented,
  uncompressed text message to an open socket) builds the frame header itself, with the same
  bytes and traffic counters as Autobahn's ``sendMessage`` + ``sendFrame`` and without their
  per-call assertions and generic framing; every other case goes to Autobahn.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.xormasker import create_xor_masker

_OPEN = WebSocketProtocol.STATE_OPEN
_PREOPEN = (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING)

#: Frames up to this many payload bytes are unmasked with an integer XOR (measured: 2.2 µs for
#: 520 bytes against 6.9 µs through the native masker; the native one wins from about 1.5 KB).
SMALL_FRAME = 1024


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

    def onMessageEnd(self: Any) -> None:
        # Autobahn's, minus firing its "message" event (a Deferred and callbacks per message)
        # when nobody subscribed to it, which is always the case for our protocols.
        if self._listeners is not None:
            return super().onMessageEnd()  # type: ignore[misc]
        if not self.failedByMe:
            payload = b"".join(self.message_data)
            if self.trackedTimings:
                self.trackedTimings.track("onMessage")
            self._onMessage(payload, self.message_is_binary)
        self.message_data = None


class _SmallUnmasker:
    """Autobahn's masker interface (``pointer``, ``reset``, ``process``) for one frame,
    which may arrive in several pieces: ``_ptr`` says where in the 4-byte mask a piece starts."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = mask
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        n = len(data)
        if not n:
            return data
        shift = self._ptr & 3
        mask = self._mask[shift:] + self._mask[:shift] if shift else self._mask
        key = int.from_bytes((mask * ((n + 3) >> 2))[:n], "big")
        self._ptr += n
        return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


class SmallFrameUnmasking:
    """Mix in before Autobahn's server protocol class; the factory sets ``applyMask=False``."""

    def onFrameBegin(self: Any) -> Any:
        frame = self.current_frame
        if not self.applyMask and frame.mask is not None and frame.length > 0:
            # Autobahn left a pass-through masker (applyMask=False): unmask here instead.
            if frame.length <= SMALL_FRAME:
                self.current_frame_masker = _SmallUnmasker(frame.mask)
            else:
                self.current_frame_masker = create_xor_masker(frame.mask, frame.length)
        return super().onFrameBegin()  # type: ignore[misc]


class DirectTextSend:
    """Mix in before Autobahn's server protocol class (see the module docstring)."""

    def sendMessage(self: Any, payload: bytes, isBinary: bool = False,
                    fragmentSize: int | None = None, sync: bool = False,
                    doNotCompress: bool = False) -> None:
        n = len(payload)
        if (isBinary or fragmentSize is not None or sync or type(payload) is not bytes
                or self.state != _OPEN or self._perMessageCompress is not None
                or self.autoFragmentSize > 0 or self.maskServerFrames or self.logFrames
                or self.trackedTimings or 0 < self.maxMessagePayloadSize < n):
            return super().sendMessage(  # type: ignore[misc]
                payload, isBinary, fragmentSize, sync, doNotCompress)
        if n <= 125:
            header = bytes((0x81, n))
        elif n <= 0xFFFF:
            header = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + n.to_bytes(8, "big")
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += n
        stats.outgoingOctetsWebSocketLevel += n
        stats.outgoingWebSocketFrames += 1
        self.sendData(header + payload)
