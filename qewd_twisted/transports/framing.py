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
  per-call assertions and generic framing; every other case goes to Autobahn. Its
  ``sendFramed(payload, frame)`` writes a frame already built by ``text_frame`` (a broadcast
  frames its payload once for every socket, ``FrameOnce``) straight to the transport.
* ``WholeFrameReading`` (server and link client): a text message that arrives as one whole,
  unfragmented frame (what QEWD's clients send) is read straight from the bytes received:
  header, unmasking (one XOR), UTF-8 check, the traffic counters and Autobahn's own message
  hooks (``onMessageBegin`` ... ``onMessageEnd``, with their size limits), without Autobahn's
  general frame machine and its per-frame objects. Anything else (control frames, fragments,
  binary, a frame cut by TCP, invalid UTF-8, compression, frame logging) goes to Autobahn
  from that byte on.
* ``MaskedTextSend`` (link client): the same for what a client sends, masked as RFC 6455 §5.3
  requires with a fresh key per frame (drawn as Autobahn draws it), small payloads masked with
  one integer XOR instead of a native masker set up per frame; every other case to Autobahn.
"""

from __future__ import annotations

import random
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


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, unfragmented text frame (RFC 6455 §5.2): what a server's
    ``sendMessage(payload)`` writes."""
    n = len(payload)
    if n <= 125:
        return bytes((0x81, n)) + payload
    if n <= 0xFFFF:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class FrameOnce:
    """``text_frame`` remembering its last payload: a broadcast hands the same bytes object
    to every socket, which then share one frame. Keyed by identity, holding a reference to the
    payload (so its identity cannot be reused while remembered); bytes are immutable, so a hit
    is always the right frame. One per reactor thread (not thread-safe)."""

    __slots__ = ("_payload", "_frame")

    def __init__(self) -> None:
        self._payload = b""
        self._frame = text_frame(b"")

    def __call__(self, payload: bytes) -> bytes:
        if payload is self._payload:
            return self._frame
        frame = text_frame(payload)
        self._payload, self._frame = payload, frame
        return frame


class DirectTextSend:
    """Mix in before Autobahn's server protocol class (see the module docstring)."""

    def sendFramed(self: Any, payload: bytes, frame: bytes) -> None:
        """Send the text message ``payload`` as ``frame`` (``text_frame(payload)``, built once
        for many sockets): the bytes and traffic counters of ``sendMessage(payload)``, with no
        per-socket framing. Any case ``sendMessage`` would not write directly (not open,
        compression, fragmentation, frame logging, a send queue, over the size limit) goes to
        ``sendMessage``."""
        if not self.canSendFramed(payload):
            return self.sendMessage(payload)
        self.countFramed(len(payload), len(frame))
        self.transport.write(frame)

    def sendText(self: Any, payload: bytes) -> None:
        """``sendMessage(payload)`` for one text message to one socket (a reply): the frame
        built here and written at once when ``sendFramed`` would write it directly, else
        ``sendMessage``. The same bytes and counters either way."""
        if not self.canSendFramed(payload):
            return self.sendMessage(payload)
        frame = text_frame(payload)
        self.countFramed(len(payload), len(frame))
        self.transport.write(frame)

    def canSendFramed(self: Any, payload: bytes) -> bool:
        """Whether ``sendFramed(payload, ...)`` writes the frame itself now (else it hands the
        payload to ``sendMessage``)."""
        return not (self.state != _OPEN or self.send_queue or self._perMessageCompress is not None
                    or self.autoFragmentSize > 0 or self.maskServerFrames or self.logFrames
                    or self.logOctets or self.trackedTimings
                    or 0 < self.maxMessagePayloadSize < len(payload)
                    or type(payload) is not bytes)

    def countFramed(self: Any, n: int, wire: int) -> None:
        """The traffic counters of one text message of ``n`` bytes sent as ``wire`` bytes."""
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += n
        stats.outgoingOctetsWebSocketLevel += n
        stats.outgoingWebSocketFrames += 1
        stats.outgoingOctetsWireLevel += wire

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


class MaskedTextSend:
    """Mix in before Autobahn's client protocol class (see the module docstring)."""

    def sendMessage(self: Any, payload: bytes, isBinary: bool = False,
                    fragmentSize: int | None = None, sync: bool = False,
                    doNotCompress: bool = False) -> None:
        n = len(payload)
        if (isBinary or fragmentSize is not None or sync or type(payload) is not bytes
                or n > SMALL_FRAME or self.state != _OPEN or self._perMessageCompress is not None
                or self.autoFragmentSize > 0 or not self.maskClientFrames or not self.applyMask
                or self.logFrames or self.trackedTimings or 0 < self.maxMessagePayloadSize < n):
            return super().sendMessage(  # type: ignore[misc]
                payload, isBinary, fragmentSize, sync, doNotCompress)
        mask = random.getrandbits(32).to_bytes(4, "big")  # Autobahn's own draw (sendFrame)
        masked = (int.from_bytes(payload, "big")
                  ^ int.from_bytes((mask * ((n + 3) >> 2))[:n], "big")).to_bytes(n, "big")
        if n <= 125:
            header = bytes((0x81, 0x80 | n))
        else:  # n <= SMALL_FRAME < 65536
            header = b"\x81\xfe" + n.to_bytes(2, "big")
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += n
        stats.outgoingOctetsWebSocketLevel += n
        stats.outgoingWebSocketFrames += 1
        self.sendData(header + mask + masked)


class WholeFrameReading:
    """Mix in first, before ``QuietFraming`` (see the module docstring)."""

    def dataReceived(self: Any, data: bytes) -> None:
        if (self.state == _OPEN and not self.data and self.current_frame is None
                and not self.inside_message and self._perMessageCompress is None
                and not self.logFrames and not self.logOctets and not self.trackedTimings
                and self.utf8validateIncoming and self.websocket_version != 0):
            self.trafficStats.incomingOctetsWireLevel += len(data)  # as Autobahn: all of it
            rest = self._whole_frames(data)
            if rest:
                self.data = rest
                self.consumeData()  # Autobahn, from the first byte that is not for us
            return
        super().dataReceived(data)  # type: ignore[misc]

    def _whole_frames(self: Any, data: bytes) -> bytes:
        """Handle the whole single-frame text messages at the start of ``data``; return the
        bytes from the first thing that is not one (for Autobahn)."""
        masked = 0x80 if self.factory.isServer else 0  # clients mask, servers do not (RFC 6455 §5.1)
        limit = SMALL_FRAME if masked else 0xFFFF
        stats = self.trafficStats
        n = len(data)
        pos = 0
        while n - pos >= 2 and self.state == _OPEN:
            b1 = data[pos + 1]
            if data[pos] != 0x81 or b1 & 0x80 != masked:
                break  # not a final, uncompressed text frame masked as it must be
            size = b1 & 0x7F
            head = pos + 2
            if size == 126:
                if n - pos < 4:
                    break
                size = int.from_bytes(data[pos + 2:pos + 4], "big")
                if size < 126:
                    break  # not the minimal length encoding: Autobahn fails the connection
                head += 2
            elif size == 127:
                break
            if size > limit:
                break
            if masked:
                key = data[head:head + 4]
                head += 4
            end = head + size
            if end > n:
                break  # cut by TCP: Autobahn keeps the piece
            payload = data[head:end]
            if masked and size:
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(
                    (key * ((size + 3) >> 2))[:size], "big")).to_bytes(size, "big")
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # Autobahn's validator fails it (1007)
            pos = end
            # what Autobahn's onFrameBegin / onFrameData / onFrameEnd do for such a frame,
            # counters included (a size limit may fail the connection in onMessageFrameBegin)
            self.inside_message = True
            self._isMessageCompressed = False
            self.utf8validateIncomingCurrentMessage = False
            self._onMessageBegin(False)
            self._onMessageFrameBegin(size)
            if self.state == _OPEN:
                stats.incomingOctetsWebSocketLevel += size
                stats.incomingOctetsAppLevel += size
            self._onMessageFrameData(payload)
            if self.state == _OPEN:
                stats.incomingWebSocketFrames += 1
            self._onMessageFrameEnd()
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()
            if self.state == _OPEN:
                stats.incomingWebSocketMessages += 1
            self._onMessageEnd()
            self.inside_message = False
        return data[pos:] if pos else data
