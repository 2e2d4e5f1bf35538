# -*- test-case-name: tests.test_batch -*-
"""
Broadcast frames written once per reactor turn (qewd_twisted/transports/batch.py), on the node's
real WebSocket protocols over StringTransports: nothing is lost, reordered or written late
(before the reactor's next turn), a close frame still comes last, and the bytes and counters are
what writing each frame at once would give.
"""

from __future__ import annotations

import base64
import json
import os

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.testing import NodeHarness
from qewd_twisted.transports.batch import TurnBatch
from qewd_twisted.transports.site import PlainProtocol, make_factory
from tests.test_framing import client_frame, server_frames


def hello(messageObj, session, send, finished):
    finished({"hello": messageObj.get("params")})


class TurnBatchTests(SynchronousTestCase):
    def test_one_call_per_turn_and_early_flush(self) -> None:
        clock = Clock()
        batch = TurnBatch(clock)
        flushed = []

        class Conn:
            def __init__(self, name: str) -> None:
                self.name = name

            def flush(self) -> None:
                flushed.append(self.name)

        batch.add(Conn("a"))
        batch.add(Conn("b"))
        self.assertEqual((len(clock.getDelayedCalls()), batch.pending), (1, 2))
        clock.advance(0)
        self.assertEqual((flushed, batch.pending, clock.getDelayedCalls()), (["a", "b"], 0, []))
        batch.add(Conn("c"))
        batch.flush()  # early: the scheduled call goes away
        self.assertEqual((flushed[-1], clock.getDelayedCalls()), ("c", []))


class BroadcastBatchTests(SynchronousTestCase):
    """Three /ws clients of one node; broadcasts, replies and closes interleaved."""

    def setUp(self) -> None:
        self.h = NodeHarness({"demo": type("App", (), {"handlers": {"hello": hello}})})
        self.factory = make_factory(PlainProtocol, self.h.node, self.h.clock, 1 << 20)
        self.clients = [self.connect(40000 + i) for i in range(3)]

    def connect(self, port: int) -> tuple:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        proto.makeConnection(transport)
        key = base64.b64encode(os.urandom(16)).decode()
        proto.dataReceived((
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % key).encode())
        transport.clear()
        proto.dataReceived(client_frame(json.dumps(
            {"type": "ewd-register", "application": "demo", "jwt": True}).encode()))
        token = self.frames(transport)[0][1]["message"]["token"]
        return proto, transport, token

    def frames(self, transport: StringTransport) -> list:
        out = [(op, json.loads(p) if op == 1 else p)
               for op, p in server_frames(transport.value())]
        transport.clear()
        return out

    def request(self, i: int, text: str) -> None:
        proto, _, token = self.clients[i]
        proto.dataReceived(client_frame(json.dumps(
            {"type": "hello", "token": token, "params": text}).encode()))

    def test_written_at_the_end_of_the_turn_in_order(self) -> None:
        self.h.node.to_all({"n": 1})
        for _, transport, _ in self.clients:
            self.assertEqual(transport.value(), b"")  # not yet: the end of the turn
        self.request(0, "after 1")  # a reply goes behind the pending broadcast
        self.h.node.to_all({"n": 2})
        self.h.clock.advance(0)
        [(op1, b1), (op2, reply), (op3, b2)] = self.frames(self.clients[0][1])
        self.assertEqual((op1, op2, op3), (1, 1, 1))
        self.assertEqual((b1, reply["message"]["hello"], b2), ({"n": 1}, "after 1", {"n": 2}))
        for _, transport, _ in self.clients[1:]:
            self.assertEqual(self.frames(transport), [(1, {"n": 1}), (1, {"n": 2})])
        # with nothing pending a reply is written at once, as before
        self.request(1, "direct")
        [(_, reply)] = self.frames(self.clients[1][1])
        self.assertEqual(reply["message"]["hello"], "direct")

    def test_same_bytes_and_counters_as_writing_each_frame(self) -> None:
        proto, transport, _ = self.clients[2]
        before = dict(vars(proto.trafficStats))
        objs = [{"n": i, "pad": "x" * size} for i, size in enumerate((0, 200, 70000))]
        for obj in objs:
            self.h.node.to_all(obj)
        self.h.clock.advance(0)
        batched, batched_stats = transport.value(), dict(vars(proto.trafficStats))
        transport.clear()
        for k, v in before.items():
            setattr(proto.trafficStats, k, v)
        for obj in objs:  # Autobahn's own path, one message at a time
            from autobahn.websocket.protocol import WebSocketProtocol

            WebSocketProtocol.sendMessage(proto, self.clients[2][0].conn.encode(obj))
        self.assertEqual(batched, transport.value())
        self.assertEqual(batched_stats, dict(vars(proto.trafficStats)))

    def test_close_frame_comes_after_pending_broadcasts(self) -> None:
        proto, transport, _ = self.clients[0]
        self.h.node.to_all({"bye": 1})
        proto.conn.close(1000, "done")
        frames = self.frames(transport)
        self.assertEqual([op for op, _ in frames], [1, 8])
        self.assertEqual(frames[0][1], {"bye": 1})
        self.h.clock.advance(0)
        self.assertEqual(self.frames(transport), [])  # nothing after the close frame

    def test_client_close_flushes_first_and_closed_sockets_get_nothing(self) -> None:
        proto, transport, _ = self.clients[1]
        self.h.node.to_all({"last": 1})
        proto.dataReceived(client_frame(b"\x03\xe8", opcode=8))  # the client closes
        frames = self.frames(transport)
        self.assertEqual([op for op, _ in frames], [1, 8])  # pending broadcast, then close reply
        gone, gone_transport, _ = self.clients[2]
        self.h.node.to_all({"more": 1})
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        gone.connectionLost(Failure(ConnectionLost()))  # dropped before the end of the turn
        self.h.clock.advance(0)
        self.assertEqual(self.frames(transport), [])
        self.assertEqual([p for op, p in self.frames(gone_transport)], [])
        self.assertEqual(self.frames(self.clients[0][1]), [(1, {"last": 1}), (1, {"more": 1})])

    def test_a_message_over_the_limit_still_refused_after_what_waits(self) -> None:
        from autobahn.websocket.protocol import PayloadExceededError

        proto, transport, _ = self.clients[0]
        proto.maxMessagePayloadSize = 100
        self.h.node.to_all({"small": 1})
        self.assertRaises(PayloadExceededError, proto.conn.send_encoded, b"x" * 101)
        self.assertEqual(self.frames(transport), [(1, {"small": 1})])  # written first
        self.h.clock.advance(0)
        self.assertEqual(self.frames(transport), [])
