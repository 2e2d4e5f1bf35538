# -*- test-case-name: tests.test_framing -*-
"""
Our changes to Autobahn's per-frame path (qewd_twisted/transports/framing.py), byte by byte: client
frames are unmasked by us up to SMALL_FRAME bytes and by Autobahn above, in whatever pieces TCP
delivers them, fragmented messages and control frames included.
"""

from __future__ import annotations

import base64
import json
import os
import struct

from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.transports import framing as _autobahn
from qewd_twisted.testing import NodeHarness
from qewd_twisted.transports.site import PlainProtocol, make_factory


def echo(messageObj, session, send, finished):
    finished({"you sent": messageObj.get("params")})


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes | None = None):
    mask = mask or os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + create_xor_masker(mask, n).process(payload)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        opcode, n, i = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            n, i = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, i = struct.unpack("!Q", data[2:10])[0], 10
        out.append((opcode, data[i:i + n]))
        data = data[i + n:]
    return out


class UnmaskerTests(SynchronousTestCase):
    def test_same_as_autobahn_in_any_pieces(self) -> None:
        for size in (1, 3, 4, 5, 131, 1024):
            mask, data = os.urandom(4), os.urandom(size)
            expected = create_xor_masker(mask, size).process(data)
            for piece in (1, 2, 3, 5, 7, size):
                ours = _autobahn._SmallUnmasker(mask)
                out = b"".join(ours.process(data[i:i + piece]) for i in range(0, size, piece))
                self.assertEqual(out, expected, (size, piece))
                self.assertEqual(ours.pointer(), size)


class _ServerBase(SynchronousTestCase):
    """A node's /ws protocol on a StringTransport, past the opening handshake and registered."""

    def setUp(self) -> None:
        self.h = NodeHarness({"demo": type("App", (), {"handlers": {"echo": echo}})})
        factory = make_factory(PlainProtocol, self.h.node, self.h.clock, 1 << 20)
        self.assertFalse(factory.applyMask)
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.proto.makeConnection(self.transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.proto.dataReceived((
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % key).encode())
        self.assertIn(b"101 Switching Protocols", self.transport.value())
        self.transport.clear()
        self.send_message({"type": "ewd-register", "application": "demo", "jwt": True})
        self.token = self.replies()[0]["message"]["token"]

    def deliver(self, data: bytes, piece: int | None = None) -> None:
        piece = piece or len(data)
        for i in range(0, len(data), piece):
            self.proto.dataReceived(data[i:i + piece])

    def send_message(self, obj, piece=None) -> None:
        self.deliver(client_frame(json.dumps(obj).encode()), piece)

    def replies(self) -> list:
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return [json.loads(p) for op, p in frames if op == 1]



class ServerFramingTests(_ServerBase):
    def test_small_and_large_frames_in_pieces(self) -> None:
        for size, piece in ((100, 1), (900, 7), (1500, 13), (70000, 4096)):
            text = "x" * size
            self.send_message({"type": "echo", "token": self.token, "params": text}, piece)
            [reply] = self.replies()
            self.assertEqual(reply["message"]["you sent"], text, (size, piece))

    def test_fragmented_message_with_a_ping_between(self) -> None:
        body = json.dumps({"type": "echo", "token": self.token, "params": "é" * 700}).encode()
        parts = [body[:10], body[10:1200], body[1200:]]
        data = client_frame(parts[0], opcode=1, fin=False)
        data += client_frame(b"ping-data", opcode=9)
        data += client_frame(parts[1], opcode=0, fin=False)
        data += client_frame(parts[2], opcode=0, fin=True)
        self.deliver(data, 5)
        frames = server_frames(self.transport.value())
        self.assertIn((10, b"ping-data"), frames)  # pong with the unmasked ping payload
        [reply] = [json.loads(p) for op, p in frames if op == 1]
        self.assertEqual(reply["message"]["you sent"], "é" * 700)

    def test_invalid_utf8_still_closes_1007(self) -> None:
        self.deliver(client_frame(b'{"type":"\xff"}'), 3)
        [(opcode, payload)] = server_frames(self.transport.value())
        self.assertEqual((opcode, struct.unpack("!H", payload[:2])[0]), (8, 1007))


class DirectTextSendTests(_ServerBase):
    """Our sendMessage writes what Autobahn's would, bytes and counters alike."""

    def autobahn_send(self, payload: bytes, **kw) -> tuple[bytes, dict]:
        from autobahn.websocket.protocol import WebSocketProtocol

        before = dict(vars(self.proto.trafficStats))
        WebSocketProtocol.sendMessage(self.proto, payload, **kw)
        return self.transport.value(), before

    def ours_send(self, payload: bytes, **kw) -> bytes:
        self.proto.sendMessage(payload, **kw)
        return self.transport.value()

    def test_same_bytes_and_counters(self) -> None:
        for n in (0, 1, 125, 126, 65535, 65536, 70000):
            payload = os.urandom(n).hex()[:n].encode()
            theirs, before = self.autobahn_send(payload)
            their_stats = dict(vars(self.proto.trafficStats))
            self.transport.clear()
            for k, v in before.items():
                setattr(self.proto.trafficStats, k, v)
            ours = self.ours_send(payload)
            self.transport.clear()
            self.assertEqual(ours, theirs, n)
            self.assertEqual(dict(vars(self.proto.trafficStats)), their_stats, n)
            self.assertEqual(server_frames(ours), [(1, payload)])

    def test_other_cases_go_to_autobahn(self) -> None:
        theirs, _ = self.autobahn_send(b"\x00\x01", isBinary=True)
        self.transport.clear()
        self.assertEqual(self.ours_send(b"\x00\x01", isBinary=True), theirs)
        self.transport.clear()
        self.assertEqual(server_frames(self.ours_send(b"abcdef", fragmentSize=4)),
                         [(1, b"abcd"), (0, b"ef")])
        self.transport.clear()
        self.proto.maxMessagePayloadSize = 10
        from autobahn.websocket.protocol import PayloadExceededError

        self.assertRaises(PayloadExceededError, self.proto.sendMessage, b"x" * 11)


class MessageEventTests(_ServerBase):
    def test_subscribers_to_autobahns_message_event_still_get_it(self) -> None:
        got = []
        self.proto.on("message", lambda payload, is_binary: got.append(payload))
        self.send_message({"type": "echo", "token": self.token, "params": "x"})
        [reply] = self.replies()
        self.assertEqual(reply["message"]["you sent"], "x")
        self.assertEqual(len(got), 1)


class FramedSendTests(DirectTextSendTests):
    """sendFramed(payload, text_frame(payload)) writes what sendMessage(payload) writes, bytes
    and counters alike, for every payload size class; the cases sendMessage hands to Autobahn
    go there too; FrameOnce reuses a frame only for the very same payload object."""

    def ours_send(self, payload: bytes, **kw) -> bytes:
        if kw:
            return super().ours_send(payload, **kw)
        self.proto.sendFramed(payload, _autobahn.text_frame(payload))
        return self.transport.value()

    def test_text_frame_any_size(self) -> None:
        import random

        rng = random.Random(19)
        sizes = [0, 1, 125, 126, 127, 65535, 65536, 70000] + [rng.randrange(0, 140000)
                                                             for _ in range(40)]
        for n in sizes:
            payload = bytes(rng.randrange(32, 127) for _ in range(n))
            self.assertEqual(server_frames(_autobahn.text_frame(payload)), [(1, payload)], n)
            theirs, before = self.autobahn_send(payload)
            self.transport.clear()
            self.assertEqual(_autobahn.text_frame(payload), theirs, n)

    def test_not_open_goes_to_sendMessage(self) -> None:
        calls = []
        self.proto.sendMessage = lambda payload, *a, **kw: calls.append(payload)
        self.proto.state = self.proto.STATE_CLOSING
        self.proto.sendFramed(b"late", _autobahn.text_frame(b"late"))
        self.assertEqual((calls, self.transport.value()), ([b"late"], b""))
        self.proto.state = self.proto.STATE_OPEN
        self.proto.send_queue.append((b"queued", False))
        self.proto.sendFramed(b"after", _autobahn.text_frame(b"after"))
        self.assertEqual(calls, [b"late", b"after"])  # behind Autobahn's own queue

    def test_frame_once(self) -> None:
        once = _autobahn.FrameOnce()
        a = b"x" * 300
        first = once(a)
        self.assertIs(once(a), first)  # the same object: the same frame, not rebuilt
        b = bytes(bytearray(a))  # equal, another object
        self.assertIsNot(b, a)
        self.assertEqual(once(b), first)
        self.assertIsNot(once(b), first)
        self.assertEqual(server_frames(once(b"")), [(1, b"")])


class TextSendTests(FramedSendTests):
    """sendText(payload): what sendMessage(payload) writes, bytes and counters alike; the
    cases sendFramed hands to sendMessage go there too."""

    def ours_send(self, payload: bytes, **kw) -> bytes:
        if kw:
            return DirectTextSendTests.ours_send(self, payload, **kw)
        self.proto.sendText(payload)
        return self.transport.value()

    def test_not_open_goes_to_sendMessage(self) -> None:
        calls = []
        self.proto.sendMessage = lambda payload, *a, **kw: calls.append(payload)
        self.proto.state = self.proto.STATE_CLOSING
        self.proto.sendText(b"late")
        self.assertEqual((calls, self.transport.value()), ([b"late"], b""))
        self.proto.state = self.proto.STATE_OPEN
        self.proto.send_queue.append((b"queued", False))
        self.proto.sendText(b"after")
        self.proto.send_queue.clear()
        self.proto.logFrames = True
        self.proto.sendText(b"logged")
        self.assertEqual(calls, [b"late", b"after", b"logged"])


class MaskedTextSendTests(SynchronousTestCase):
    """The link client's sendMessage: frames Autobahn's client would send (same header, a
    fresh mask per frame, the payload masked with it) and the same counters."""

    def setUp(self) -> None:
        import hashlib

        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

        from qewd_twisted.mesh.protocol import EngineIOClientProtocol

        self.assertTrue(issubclass(EngineIOClientProtocol, _autobahn.MaskedTextSend))
        proto_class = type("Client", (_autobahn.MaskedTextSend, _autobahn.QuietFraming,
                                      WebSocketClientProtocol), {})
        self.plain = WebSocketClientProtocol.sendMessage
        factory = WebSocketClientFactory("ws://127.0.0.1:9000/socket.io/")
        factory.protocol = proto_class
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9000))
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        request = self.transport.value().decode()
        key = [x.split(": ", 1)[1] for x in request.split("\r\n")
               if x.lower().startswith("sec-websocket-key")][0]
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.transport.clear()
        self.proto.dataReceived((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.assertEqual(self.proto.state, self.proto.STATE_OPEN)
        self.transport.clear()

    def client_frame_of(self, data: bytes) -> tuple[bytes, bytes, bytes]:
        """(header, mask, unmasked payload) of one masked frame."""
        n, i = data[1] & 0x7F, 2
        if n == 126:
            n, i = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, i = struct.unpack("!Q", data[2:10])[0], 10
        self.assertTrue(data[1] & 0x80, "client frames are masked")
        mask = data[i:i + 4]
        body = data[i + 4:]
        self.assertEqual(len(body), n)
        return data[:i], mask, create_xor_masker(mask, n).process(body) if n else b""

    def test_same_frames_and_counters_as_autobahn(self) -> None:
        import random

        rng = random.Random(5)
        sizes = [0, 1, 3, 4, 5, 125, 126, 1023, 1024, 1025, 70000]
        sizes += [rng.randrange(0, 1100) for _ in range(30)]
        masks = set()
        for n in sizes:
            payload = bytes(rng.randrange(32, 127) for _ in range(n))
            before = dict(vars(self.proto.trafficStats))
            self.plain(self.proto, payload)
            theirs = self.transport.value()
            their_stats = dict(vars(self.proto.trafficStats))
            self.transport.clear()
            for k, v in before.items():
                setattr(self.proto.trafficStats, k, v)
            self.proto.sendMessage(payload)
            ours = self.transport.value()
            self.transport.clear()
            self.assertEqual(dict(vars(self.proto.trafficStats)), their_stats, n)
            ours_h, ours_mask, ours_p = self.client_frame_of(ours)
            theirs_h, _, theirs_p = self.client_frame_of(theirs)
            self.assertEqual((ours_h, ours_p), (theirs_h, theirs_p), n)
            self.assertEqual(ours_p, payload, n)
            masks.add(ours_mask)
        self.assertGreater(len(masks), len(sizes) // 2)  # a fresh key per frame

    def test_other_cases_go_to_autobahn(self) -> None:
        self.proto.sendMessage(b"\x00\x01", isBinary=True)
        self.assertEqual(self.transport.value()[0], 0x82)
        self.transport.clear()
        self.proto.sendMessage(b"abcdef", fragmentSize=4)
        data = self.transport.value()
        self.assertEqual((data[0], data[1] & 0x7F), (0x01, 4))  # first fragment, not final
        self.proto.state = self.proto.STATE_CLOSING
        from autobahn.exception import Disconnected

        self.assertRaises(Disconnected, self.proto.sendMessage, b"late")


class _Transport(StringTransport):
    def unregisterProducer(self) -> None:  # Autobahn unregisters one it never registered
        self.producer = None


class WholeFrameReadingTests(SynchronousTestCase):
    """A server protocol with WholeFrameReading and one without, fed the same random byte
    streams (whole and cut text frames, fragments, pings, binary, invalid UTF-8, unmasked and
    non-minimal frames, closes) in the same random pieces, end up alike: the same messages,
    the same bytes written back, the same counters and the same state."""

    def pair(self, max_message: int = 1 << 20):
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

        def build(mixins):
            got = []
            cls = type("P", (*mixins, _autobahn.SmallFrameUnmasking, _autobahn.QuietFraming,
                             WebSocketServerProtocol),
                       {"onMessage": lambda self, payload, binary: got.append((payload, binary))})
            from twisted.internet.task import Clock

            from qewd_twisted.transports.site import _ReactorTimer

            clock = Clock()  # close-handshake timers stay off the global reactor
            factory = WebSocketServerFactory(reactor=clock)
            factory._batched_timer = _ReactorTimer(clock)
            factory.protocol = cls
            factory.setProtocolOptions(applyMask=False, maxMessagePayloadSize=max_message,
                                       maxFramePayloadSize=max_message, failByDrop=False)
            proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
            proto.makeConnection(transport)
            key = base64.b64encode(b"0123456789abcdef").decode()
            proto.dataReceived((
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13"
                "\r\n\r\n" % key).encode())
            transport.clear()
            return proto, transport, got

        return build((_autobahn.WholeFrameReading,)), build(())

    def stream(self, rng) -> bytes:
        def masked(payload, opcode=1, fin=True):
            return client_frame(payload, opcode, fin, mask=bytes(rng.randrange(256)
                                                                 for _ in range(4)))

        def text(lo, hi):
            return "".join(rng.choice("aé€😀{}\"x") for _ in range(rng.randrange(lo, hi)))

        parts = []
        for _ in range(rng.randrange(1, 12)):
            kind = rng.randrange(12)
            if kind < 5:
                parts.append(masked(text(0, 60).encode()))
            elif kind == 5:
                parts.append(masked(text(40, 400).encode()))  # 126-style lengths, some > 1 KiB
            elif kind == 6:
                body = text(2, 50).encode()
                cut = rng.randrange(1, len(body))
                parts.append(masked(body[:cut], 1, False) + masked(b"pi", 9)
                             + masked(body[cut:], 0, True))
            elif kind == 7:
                parts.append(masked(b"\x00\x01\x02", 2))
            elif kind == 8:
                parts.append(masked(b"ok" + b"\xc3\x28" + b"after"))  # invalid UTF-8
            elif kind == 9:
                parts.append(masked(b"ping!", 9))
            elif kind == 10:  # unmasked client frame, or a non-minimal 126 length
                if rng.random() < 0.5:
                    parts.append(b"\x81\x03abc")
                else:
                    parts.append(b"\x81\xfe\x00\x05" + b"\x00\x00\x00\x00" + b"hello")
            else:
                parts.append(masked(b"\x03\xe8bye", 8))
        return b"".join(parts)

    def test_same_as_autobahn_on_random_streams(self) -> None:
        import random

        for seed in range(300):
            rng = random.Random(seed)
            data = self.stream(rng)
            pieces, i = [], 0
            while i < len(data):
                step = rng.choice((1, 2, 3, 7, 64, 500, len(data)))
                pieces.append(data[i:i + step])
                i += step
            limit = rng.choice((1 << 20, 300))
            (fast, ft, fgot), (slow, st, sgot) = self.pair(limit)
            for piece in pieces:
                fast.dataReceived(piece)
                slow.dataReceived(piece)
            self.assertEqual(fgot, sgot, seed)
            self.assertEqual(ft.value(), st.value(), seed)
            self.assertEqual(vars(fast.trafficStats), vars(slow.trafficStats), seed)
            self.assertEqual((fast.state, fast.data, ft.disconnecting),
                             (slow.state, slow.data, st.disconnecting), seed)

    def test_whole_frames_take_the_direct_path(self) -> None:
        (fast, ft, got), _ = self.pair()
        calls = []
        fast.processData = lambda: calls.append(1) or False
        data = b"".join(client_frame(("m%d" % i).encode() * 50) for i in range(5))
        fast.dataReceived(data)
        self.assertEqual([p for p, _ in got], [("m%d" % i).encode() * 50 for i in range(5)])
        self.assertEqual(calls, [])  # Autobahn's frame machine was not needed
