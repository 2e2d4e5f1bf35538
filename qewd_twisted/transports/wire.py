# -*- test-case-name: tests.test_wire -*-
"""
Wire codecs: Engine.IO 3 / socket.io v2 framing (docs/protocol.md §1.1, §1.2) and plain JSON.

Pure functions, no I/O: the web server and the links both use them, and the node above them
only ever sees plain dict messages.

Engine.IO 3 text packets are a type digit and a payload:
``0`` open, ``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade, ``6`` noop.
A ``4`` message carries a socket.io packet: a type digit (``0`` connect, ``1`` disconnect,
``2`` event, ``3`` ack, ``4`` error, ``5`` binary event, ``6`` binary ack), an optional
``/namespace,``, an optional ack id, then JSON. QEWD uses one event name, ``ewdjs``, on the
default namespace: ``42["ewdjs",{...}]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qewd_twisted import _json

EVENT_NAME = "ewdjs"

# The peer's engine (socket.io 2.5 / engine.io 3.6) advertises these; docs/protocol.md §1.1 says
# 5000 for pingTimeout, the running QEWD.js peer sends 20000 (the peer wins).
PING_INTERVAL_MS = 25000
PING_TIMEOUT_MS = 20000

EIO_PING = "2"
EIO_PONG = "3"
SIO_CONNECT = "40"
SIO_DISCONNECT = "41"


def dumps(obj: Any) -> str:
    """JSON the way JavaScript's ``JSON.stringify`` writes it: compact, UTF-8 kept as is."""
    return _json.dumps(obj)


def event_bytes(message: Any, name: str = EVENT_NAME) -> bytes:
    """``encode_event`` as the bytes of a WebSocket text frame."""
    return b"42" + event_json(message, name)


def event_json(message: Any, name: str = EVENT_NAME) -> bytes:
    """The event's JSON array, ``["ewdjs",{...}]``, as UTF-8 (``_json.dumps_utf8``: a lone
    surrogate escaped, which parses back to the same value); a namespace puts its own
    ``42/path,`` before it."""
    return _json.dumps_utf8([name, message])


def plain_bytes(message: Any) -> bytes:
    """One ``/ws`` text frame."""
    return _json.dumps_utf8(message)


class WireError(ValueError):
    """A frame that cannot be decoded; ``str()`` is the text sent back to the client."""


def loads(text: str | bytes) -> Any:
    """Parse JSON, turning every failure (syntax, nesting too deep, bad UTF-8) into WireError."""
    try:
        return _json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError:
        raise WireError("Invalid JSON: nested too deeply") from None
    except (ValueError, TypeError) as e:
        raise WireError("Invalid JSON: " + str(e).split(":")[0]) from None


def open_packet(
    sid: str, ping_interval: int = PING_INTERVAL_MS, ping_timeout: int = PING_TIMEOUT_MS
) -> str:
    """The Engine.IO OPEN packet a server sends first, exactly as the QEWD.js peer does."""
    return "0" + dumps(
        {"sid": sid, "upgrades": [], "pingInterval": ping_interval, "pingTimeout": ping_timeout}
    )


def encode_event(message: Any, name: str = EVENT_NAME) -> str:
    """A socket.io EVENT on the default namespace: ``42["ewdjs",{...}]``."""
    return "42" + dumps([name, message])


@dataclass
class Packet:
    """One decoded Engine.IO text packet.

    ``kind`` is one of: ``open`` (data = handshake dict), ``close``, ``ping``, ``pong``
    (data = payload string, e.g. ``probe``), ``noop``, ``upgrade``, ``connect``,
    ``disconnect``, ``sio-error`` (data = error payload), ``event`` (name, args),
    ``ack``, ``binary`` (a binary event or ack: unsupported by QEWD).
    """

    kind: str
    data: Any = None
    name: str | None = None
    args: list[Any] = field(default_factory=list)
    namespace: str = "/"
    ack_id: int | None = None


_QEWD_EVENT = '42["' + EVENT_NAME + '",'
_SCAN = _json.scanner()


def qewd_event(text: str) -> list[Any] | None:
    """The arguments of ``42["ewdjs",...]`` (an event named ``ewdjs`` on the default namespace
    without an ack id: what QEWD's clients send all the time), what ``decode(text).args``
    would be; None for any other packet (``decode`` it). Raises WireError as ``decode`` does."""
    if not text.startswith(_QEWD_EVENT):
        return None
    try:  # the C scanner from offset 2: no copy of the text; anything unusual to loads
        array, end = _SCAN(text, 2)
    except Exception:
        array, end = None, -1
    if end != len(text):
        array = loads(text[2:])
    return array[1:]  # JSON that starts with ["ewdjs", can only be that array


def decode(text: str) -> Packet:
    """Decode one Engine.IO 3 text packet. Raises WireError with a client-readable reason."""
    if not isinstance(text, str) or not text:
        raise WireError("Empty Engine.IO packet")
    if text.startswith('42["'):
        # What QEWD's clients send all the time, ``42["ewdjs",{...}]``: an event on the default
        # namespace with no ack id. The same result as the general path below, sooner.
        data = loads(text[2:])
        if isinstance(data, list) and data and isinstance(data[0], str):
            return Packet("event", name=data[0], args=data[1:])
        raise WireError("socket.io event must be a JSON array starting with the event name")
    t, rest = text[0], text[1:]
    if t == "0":
        return Packet("open", loads(rest))
    if t == "1":
        return Packet("close")
    if t == "2":
        return Packet("ping", rest)
    if t == "3":
        return Packet("pong", rest)
    if t == "5":
        return Packet("upgrade")
    if t == "6":
        return Packet("noop")
    if t != "4":
        raise WireError("Unknown Engine.IO packet type: " + t[:8])
    return _decode_socketio(rest)


def _decode_socketio(s: str) -> Packet:
    if not s:
        raise WireError("Empty socket.io packet")
    t, i = s[0], 1
    if t not in "0123456":
        raise WireError("Unknown socket.io packet type: " + t[:8])
    if t in "56":
        return Packet("binary")
    namespace = "/"
    if s.startswith("/", i):
        comma = s.find(",", i)
        if comma == -1:
            namespace, i = s[i:], len(s)
        else:
            namespace, i = s[i:comma], comma + 1
    j = i
    while j < len(s) and s[j].isdigit() and j - i < 16:
        j += 1
    ack_id = int(s[i:j]) if j > i else None
    body = s[j:]
    if t == "0":
        return Packet("connect", namespace=namespace)
    if t == "1":
        return Packet("disconnect", namespace=namespace)
    data = loads(body) if body else None
    if t == "4":
        return Packet("sio-error", data, namespace=namespace)
    if t == "3":
        return Packet("ack", data, namespace=namespace, ack_id=ack_id)
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise WireError("socket.io event must be a JSON array starting with the event name")
    return Packet("event", name=data[0], args=data[1:], namespace=namespace, ack_id=ack_id)


def decode_plain(text: str | bytes) -> Any:
    """The ``/ws`` framing: one JSON message per text frame."""
    return loads(text)
