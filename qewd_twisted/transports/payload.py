# -*- test-case-name: tests.test_polling -*-
"""
Engine.IO 3 payload encoding: how several packets travel in one HTTP body (long-polling).

Pure functions, no I/O; imports nothing from the package but ``wire.WireError``.

Facts (engine.io-parser 2.x, the parser of the QEWD.js peer's engine.io 3.6; docs/protocol.md
§1.1):

* a text payload is ``<length>:<packet>`` repeated, where ``length`` counts the packet's
  characters as JavaScript does (UTF-16 code units: an emoji counts 2); an empty list of
  packets is ``0:``; a packet is its type digit and its data (``4`` + ``2["ewdjs",{...}]``);
* a packet ``b<type><base64>`` is a binary packet sent by a client that cannot send bytes
  (``b64=1``);
* a binary payload (``Content-Type: application/octet-stream``) is, per packet, a byte 0
  (text) or 1 (binary), the length's decimal digits as bytes 0-9, a byte 255, then the packet
  (a text packet in UTF-8, a binary one as its type byte and its bytes);
* JSONP (``j=<n>``) wraps the text payload as a JavaScript string: ``___eio[n]("...");`` and
  the client POSTs ``d=<payload>`` form-encoded, with newlines written as ``\\n``;
* any malformation (a length that is not a number or does not fit, an unknown packet type)
  makes the whole payload a parse error from that point on; engine.io then closes the session.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Iterator, Union
from urllib.parse import parse_qs

from qewd_twisted.transports.wire import WireError

__all__ = [
    "PayloadError", "BinaryPacket", "js_length", "encode_payload", "iter_payload",
    "iter_binary_payload", "jsonp_wrap", "jsonp_unwrap", "PACKET_TYPES",
]

PACKET_TYPES = "0123456"  # open close ping pong message upgrade noop
_DIGITS = re.compile(r"\d{1,16}")


class PayloadError(WireError):
    """A payload engine.io's parser refuses (its ``parser error``)."""


class BinaryPacket:
    """A binary packet (``b4...`` or a binary part): QEWD carries none; kept to be refused."""

    __slots__ = ("type", "data")

    def __init__(self, type: str, data: bytes) -> None:
        self.type = type
        self.data = data

    def __repr__(self) -> str:
        return f"<BinaryPacket {self.type} {len(self.data)} bytes>"


Packet = Union[str, BinaryPacket]


def js_length(text: str) -> int:
    """``text.length`` in JavaScript: UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _utf8_js_length(data: bytes) -> int:
    if data.isascii():
        return len(data)
    return js_length(data.decode("utf-8", "surrogatepass"))


def encode_payload(packets: list[bytes]) -> bytes:
    """Text packets (each UTF-8 bytes, type digit first) as one text payload (UTF-8)."""
    if not packets:
        return b"0:"
    parts = []
    for p in packets:
        parts.append(b"%d:" % _utf8_js_length(p))
        parts.append(p)
    return b"".join(parts)


def _check_packet(text: str) -> Packet:
    if text[0] == "b":
        if len(text) < 2 or text[1] not in PACKET_TYPES:
            raise PayloadError("parser error")
        try:
            return BinaryPacket(text[1], base64.b64decode(text[2:], validate=False))
        except (binascii.Error, ValueError):
            raise PayloadError("parser error") from None
    if text[0] not in PACKET_TYPES:
        raise PayloadError("parser error")
    return text


def iter_payload(text: str) -> Iterator[Packet]:
    """The packets of a text payload, in order; raises PayloadError where it goes wrong.

    Packets before the fault have been yielded by then (engine.io delivers them too)."""
    if text == "":
        raise PayloadError("parser error")
    if max(text) > "\uffff":
        # lengths count UTF-16 code units: walk the text in that unit
        yield from _iter_utf16(text)
        return
    i, end = 0, len(text)
    while i < end:
        colon = text.find(":", i)
        if colon == -1 or not _DIGITS.fullmatch(text, i, colon):
            raise PayloadError("parser error")
        n = int(text[i:colon])
        start = colon + 1
        if start + n > end:
            raise PayloadError("parser error")
        if n:
            yield _check_packet(text[start:start + n])
        i = start + n


def _iter_utf16(text: str) -> Iterator[Packet]:
    units = text.encode("utf-16-le", "surrogatepass")
    i, end = 0, len(units)
    while i < end:
        j = i
        digits = []
        while j < end:
            ch = units[j:j + 2].decode("utf-16-le", "surrogatepass")
            if ch == ":":
                break
            digits.append(ch)
            j += 2
        length = "".join(digits)
        if j >= end or not _DIGITS.fullmatch(length):
            raise PayloadError("parser error")
        n = int(length)
        start = j + 2
        if start + 2 * n > end:
            raise PayloadError("parser error")
        if n:
            packet = units[start:start + 2 * n].decode("utf-16-le", "surrogatepass")
            yield _check_packet(packet)
        i = start + 2 * n


def iter_binary_payload(data: bytes) -> Iterator[Packet]:
    """The packets of a binary (``application/octet-stream``) payload."""
    i, end = 0, len(data)
    while i < end:
        is_text = data[i] == 0
        if data[i] not in (0, 1):
            raise PayloadError("parser error")
        j = i + 1
        digits = bytearray()
        while j < end and data[j] != 255:
            if data[j] > 9 or len(digits) > 16:
                raise PayloadError("parser error")
            digits.append(0x30 + data[j])
            j += 1
        if j >= end or not digits:
            raise PayloadError("parser error")
        n = int(digits)
        start = j + 1
        if start + n > end or n == 0:
            raise PayloadError("parser error")
        body = data[start:start + n]
        if is_text:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise PayloadError("parser error") from None
            yield _check_packet(text)
        else:
            if body[0] > 6:
                raise PayloadError("parser error")
            yield BinaryPacket(str(body[0]), bytes(body[1:]))
        i = start + n


def jsonp_wrap(payload: bytes, index: str) -> bytes:
    """A text payload as the JSONP script engine.io writes: ``___eio[n]("...");``."""
    js = json.dumps(payload.decode("utf-8", "surrogatepass"), ensure_ascii=False)
    js = js.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return b"___eio[" + index.encode("ascii") + b"](" + js.encode("utf-8", "surrogatepass") + b");"


_SLASHES = re.compile(r"(\\)?\\n")


def jsonp_unwrap(body: bytes) -> str | None:
    """The text payload of a JSONP POST (form field ``d``), None when it has none."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("d")
    if not values:
        return None
    # The client escapes a newline as \n and an escaped newline as \\n (engine.io-client).
    data = _SLASHES.sub(lambda m: m.group(0) if m.group(1) else "\n", values[0])
    return data.replace("\\\\n", "\\n")


def index_of(j: str) -> str:
    """The JSONP callback index from ``j=``: its digits only, as engine.io keeps them."""
    return "".join(ch for ch in j if ch in "0123456789")
