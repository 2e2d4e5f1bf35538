# -*- test-case-name: tests.test_polling -*-
"""
Engine.IO 3 long-polling in memory: the payload codec (transports/payload.py) and the session
state machine (transports/engineio.py) with a Clock, a recording node, fake polls and sockets.
Facts checked against engine.io 3.6 / engine.io-parser 2.2 (docs/protocol.md §1.1).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted.core.requests import Connection
from qewd_twisted.transports import payload as P
from qewd_twisted.transports.engineio import (
    EngineSessions, IEngineSocket, IPoll, SessionConnection,
)


class PayloadTests(TestCase):
    def test_encode_counts_utf16_units(self):
        self.assertEqual(P.encode_payload([]), b"0:")
        self.assertEqual(P.encode_payload([b"3", b"40"]), b"1:32:40")
        # engine.io-parser writes message.length: "é" is 1 unit, an emoji 2 (UTF-16)
        self.assertEqual(P.encode_payload(["4é".encode()]), "2:4é".encode())
        self.assertEqual(P.encode_payload(["4😀".encode()]), "3:4😀".encode())

    def test_decode_round_trip(self):
        packets = ["2", '42["ewdjs",{"a":"😀é"}]', "6", "3probe"]
        body = P.encode_payload([p.encode() for p in packets]).decode()
        self.assertEqual(list(P.iter_payload(body)), packets)
        self.assertEqual(list(P.iter_payload("0:1:2")), ["2"])  # empty packets skipped

    def test_malformed_payloads_are_parser_errors(self):
        for bad in ["", "x:2", ":2", "2:2", "1:2junk", "1:9", "3:4a", "1:2 1", "99999999999999999:2"]:
            with self.assertRaises(P.PayloadError, msg=bad):
                list(P.iter_payload(bad))
        # packets before the fault come out first, as engine.io delivers them
        it = P.iter_payload("1:21:9")
        self.assertEqual(next(it), "2")
        self.assertRaises(P.PayloadError, next, it)

    def test_base64_packet_is_binary(self):
        [pkt] = list(P.iter_payload("6:b4AQID"))
        self.assertIsInstance(pkt, P.BinaryPacket)
        self.assertEqual((pkt.type, pkt.data), ("4", b"\x01\x02\x03"))
        self.assertRaises(P.PayloadError, list, P.iter_payload("2:b9"))

    def test_binary_payload(self):
        text = '42["ewdjs",{"é":1}]'.encode()
        body = (bytes([0]) + bytes(int(d) for d in str(len(text))) + b"\xff" + text
                + bytes([1, 4, 0xFF, 4, 1, 2, 3]))
        a, b = list(P.iter_binary_payload(body))
        self.assertEqual(a, text.decode())
        self.assertEqual((b.type, b.data), ("4", b"\x01\x02\x03"))
        for bad in [b"\x02\x01\xff2", b"\x00\x01", b"\x00\x09\xff2", b"\x00\x0a\xff2",
                    b"\x00\x01\xff\xff", b"\x01\x01\xff\x09"]:
            self.assertRaises(P.PayloadError, list, P.iter_binary_payload(bad))

    def test_jsonp(self):
        body = P.encode_payload([b'42["ewdjs","a\\"b\\nc\xe2\x80\xa8"]'])
        js = P.jsonp_wrap(body, "3").decode()
        self.assertTrue(js.startswith('___eio[3]("') and js.endswith('");'))
        self.assertIn("\\u2028", js)
        self.assertEqual(json.loads(js[len("___eio[3]("):-2]), body.decode())
        self.assertEqual(P.index_of("1x2"), "12")
        # engine.io-client escapes newlines in the d field as \n, escaped ones as \\n
        self.assertEqual(P.jsonp_unwrap(b"d=4%3A42ab%5Cn"), "4:42ab\n")
        self.assertEqual(P.jsonp_unwrap(b"d=3%3Aa%5C%5Cn"), "3:a\\n")
        self.assertIsNone(P.jsonp_unwrap(b"x=1"))


class RecordingNode:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.messages: list[tuple[Connection, Any]] = []
        self.lost: list[Connection] = []

    def connection_opened(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def connection_lost(self, conn: Connection) -> None:
        conn.open = False
        self.connections.pop(conn.id, None)
        self.lost.append(conn)

    def receive(self, conn: Connection, obj: Any) -> None:
        self.messages.append((conn, obj))
        conn.send({"type": obj.get("type"), "finished": True, "message": {"echo": obj}})


@implementer(IPoll)
class FakePoll:
    def __init__(self) -> None:
        self.answer: list[bytes] | None = None
        self.refused = False

    def deliver(self, packets: list[bytes]) -> None:
        assert self.answer is None and not self.refused, "answered twice"
        self.answer = packets

    def refuse(self) -> None:
        self.refused = True


@implementer(IEngineSocket)
class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def send_text(self, data: bytes) -> None:
        assert not self.closed
        self.sent.append(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


def ev(obj: Any) -> str:
    return "42" + json.dumps(["ewdjs", obj], separators=(",", ":"))


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.node = RecordingNode()
        self.sessions = EngineSessions(self.node, self.clock, max_pending=3,
                                       max_buffered_bytes=1000)

    def open(self):
        session, packets = self.sessions.open("10.0.0.1")
        return session, packets

    def test_interfaces(self):
        from qewd_twisted.core.interfaces import IConnection

        verifyObject(IPoll, FakePoll())
        verifyObject(IEngineSocket, FakeSocket())
        session, _ = self.open()
        verifyObject(IConnection, session.conn)

    def test_handshake_packets(self):
        session, packets = self.open()
        self.assertEqual(packets[1], b"40")
        self.assertEqual(packets[0][:1], b"0")
        hs = json.loads(packets[0][1:])
        self.assertEqual(hs, {"sid": session.sid, "upgrades": ["websocket"],
                              "pingInterval": 25000, "pingTimeout": 20000})
        self.assertEqual(len(session.sid), 20)
        self.assertIs(self.node.connections[session.sid], session.conn)
        self.assertIsInstance(session.conn, SessionConnection)
        self.assertEqual(session.conn.framing, "engine.io")

    def test_get_held_until_a_packet_then_all_queued_at_once(self):
        session, _ = self.open()
        poll = FakePoll()
        session.attach_poll(poll)
        self.assertIsNone(poll.answer)
        session.receive_payload(iter(["2probe"]))
        self.assertIsNone(poll.answer)  # sent at the end of the reactor turn, with the rest
        self.clock.advance(0)
        self.assertEqual(poll.answer, [b"3probe"])
        session.receive_payload(iter(["2", ev({"type": "a"}), ev({"type": "b"})]))
        self.assertEqual([m[1]["type"] for m in self.node.messages], ["a", "b"])
        poll2 = FakePoll()
        session.attach_poll(poll2)
        self.assertEqual(len(poll2.answer), 3)
        self.assertEqual(poll2.answer[0], b"3")
        self.assertTrue(poll2.answer[1].startswith(b'42["ewdjs",{"type":"a"'))
        self.assertTrue(poll2.answer[2].startswith(b'42["ewdjs",{"type":"b"'))

    def test_one_payload_per_reactor_turn(self):
        """A reply and the broadcasts it caused reach a waiting GET together."""
        session, _ = self.open()
        poll = FakePoll()
        session.attach_poll(poll)
        for i in range(3):
            session.conn.send({"type": "x", "n": i})
        self.assertIsNone(poll.answer)
        self.clock.advance(0)
        self.assertEqual(len(poll.answer), 3)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 45)  # only the ping timer

    def test_socketio_errors(self):
        session, _ = self.open()
        session.receive_payload(iter(['42["other",{}]', "42{", '42/x,["ewdjs",{}]', "40/x",
                                      P.BinaryPacket("4", b"\x00")]))
        poll = FakePoll()
        session.attach_poll(poll)
        texts = [p.decode() for p in poll.answer]
        self.assertIn("Unknown socket.io event other", texts[0])
        self.assertIn("Invalid JSON", texts[1])
        self.assertEqual(texts[2:4], ['44/x,"Invalid namespace"'] * 2)
        self.assertIn("Binary frames are not supported", texts[4])
        self.assertEqual(session.state, "open")

    def test_parse_error_closes_session_after_earlier_packets(self):
        session, _ = self.open()
        poll = FakePoll()
        session.attach_poll(poll)
        session.receive_payload(P.iter_payload("1:21:9"))
        self.assertEqual(poll.answer, [b"3", b"1"])  # the pong, then the close packet
        self.assertEqual(session.reason, "parse error")
        self.assertIsNone(self.sessions.get(session.sid))
        self.assertEqual(self.node.lost, [session.conn])

    def test_second_get_closes_the_session(self):
        """engine.io 3: 'overlap from client': first GET gets 1, second a bare 500."""
        session, _ = self.open()
        first, second = FakePoll(), FakePoll()
        session.attach_poll(first)
        session.attach_poll(second)
        self.assertTrue(second.refused)
        self.assertEqual(first.answer, [b"1"])
        self.assertEqual(session.reason, "transport error")
        self.assertNotIn(session.sid, self.node.connections)

    def test_silent_session_closes_after_interval_plus_timeout(self):
        session, _ = self.open()
        session.attach_poll(FakePoll())  # answered below
        self.clock.advance(44)
        session.receive_payload(iter(["2"]))  # a ping resets the timer (the GET returns pong)
        self.clock.advance(0)
        poll = FakePoll()
        session.attach_poll(poll)
        self.clock.advance(44.9)
        self.assertIsNone(poll.answer)
        self.clock.advance(0.2)
        self.assertEqual(poll.answer, [b"1"])
        self.assertEqual(session.reason, "ping timeout")
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abandoned_session_freed_without_get(self):
        session, _ = self.open()
        session.attach_poll(FakePoll())
        session.receive_payload(iter(["2"]))
        self.clock.advance(45.1)
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.node.connections, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_get_connection_lost_closes(self):
        session, _ = self.open()
        poll = FakePoll()
        session.attach_poll(poll)
        session.poll_lost(poll)
        self.assertEqual(session.state, "closed")

    def test_client_close_packet(self):
        session, _ = self.open()
        session.receive_payload(iter(["1"]))
        self.assertEqual(session.reason, "transport close")
        self.assertEqual(len(self.sessions), 0)

    def test_server_close_waits_for_next_get(self):
        session, _ = self.open()
        session.conn.send({"type": "bye"})
        session.conn.close(1001, "server shutting down")
        self.assertNotIn(session.sid, self.node.connections)
        session.conn.send({"type": "lost"})  # after close: dropped
        poll = FakePoll()
        session.attach_poll(poll)
        self.assertEqual(len(poll.answer), 2)
        self.assertEqual(poll.answer[1], b"1")
        self.assertEqual(len(self.sessions), 0)
        # and with no GET at all, it is forgotten after engine.io's closeTimeout
        s2, _ = self.open()
        s2.conn.close()
        self.clock.advance(30)
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_register_timeout(self):
        sessions = EngineSessions(self.node, self.clock, register_timeout=5)
        quiet, _ = sessions.open("10.0.0.2")
        known, _ = sessions.open("10.0.0.3")
        known.conn.application = "demo"  # the node sets it on ewd-register
        self.clock.advance(5)
        self.assertEqual(quiet.reason, "not registered")
        self.assertEqual(known.state, "open")

    def test_buffer_bound(self):
        session, _ = self.open()
        for i in range(40):
            session.conn.send({"type": "x", "n": i})
        self.assertEqual(session.reason, "buffer full")
        self.assertEqual(len(self.sessions), 0)

    def test_handshake_flood_is_bounded(self):
        first, _ = self.open()
        kept = [self.open()[0] for _ in range(2)]
        kept[0].attach_poll(FakePoll())  # confirmed: not counted any more
        more = [self.open()[0] for _ in range(2)]
        self.assertEqual(first.reason, "handshake limit")
        self.assertEqual(kept[1].reason, None)
        self.assertEqual(kept[0].state, "open")
        self.open()
        self.assertEqual(kept[1].reason, "handshake limit")
        self.assertEqual(len(self.sessions), 4)
        self.assertTrue(all(s.state == "open" for s in more))

    def test_upgrade_no_loss_no_duplicate(self):
        session, _ = self.open()
        poll = FakePoll()
        session.attach_poll(poll)
        ws = FakeSocket()
        session.start_upgrade(ws)
        session.conn.send({"type": "r1"})  # in flight on polling
        self.clock.advance(0)
        self.assertEqual(len(poll.answer), 1)
        session.socket_message(ws, "2probe")
        self.assertEqual(ws.sent, [b"3probe"])
        poll = FakePoll()
        session.attach_poll(poll)  # the client's last poll: answered at once with a noop
        self.assertEqual(poll.answer, [b"6"])
        session.conn.send({"type": "r2"})  # no GET now: queued
        session.receive_payload(iter([ev({"type": "q1"})]))  # last POST before the switch
        session.socket_message(ws, "5")
        self.assertIs(session.ws, ws)
        self.assertEqual([p[:20] for p in ws.sent[1:]],
                         [b'42["ewdjs",{"type":"', b'42["ewdjs",{"type":"'])
        self.assertIn(b'"r2"', ws.sent[1])
        self.assertIn(b'"q1"', ws.sent[2])
        session.socket_message(ws, ev({"type": "q2"}))
        session.socket_message(ws, "2")
        self.assertIn(b'"q2"', ws.sent[3])
        self.assertEqual(ws.sent[4], b"3")
        self.assertEqual([m[1]["type"] for m in self.node.messages], ["q1", "q2"])
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 45)  # no upgrade timer
        session.socket_closed(ws)
        self.assertEqual(session.reason, "transport close")
        self.assertEqual(len(self.sessions), 0)

    def test_server_close_of_an_upgraded_session(self):
        session, _ = self.open()
        ws = FakeSocket()
        session.start_upgrade(ws)
        session.socket_message(ws, "2probe")
        session.socket_message(ws, "5")
        session.conn.close(1001, "server shutting down")
        self.assertEqual(ws.closed, (1001, "server shutting down"))
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.node.lost, [session.conn])

    def test_upgrade_timeout_and_bad_probe(self):
        session, _ = self.open()
        ws = FakeSocket()
        session.start_upgrade(ws)
        self.assertFalse(session.can_upgrade())
        self.clock.advance(10)
        self.assertTrue(ws.closed)
        self.assertTrue(session.can_upgrade())
        ws2 = FakeSocket()
        session.start_upgrade(ws2)
        session.socket_message(ws2, "5")  # upgrade before probe: refused
        self.assertTrue(ws2.closed)
        self.assertIsNone(session.ws)
        ws3 = FakeSocket()
        session.start_upgrade(ws3)
        session.socket_closed(ws3)
        self.assertTrue(session.can_upgrade())
        self.assertEqual(session.state, "open")


class ConfigTests(TestCase):
    def test_engine_io_keys(self):
        from qewd_twisted import config_from_dict
        from qewd_twisted.config import ConfigError

        c = config_from_dict({"pingInterval": 5000, "pingTimeout": 3000,
                              "maxPendingHandshakes": 7})
        self.assertEqual((c.ping_interval, c.ping_timeout, c.max_pending_handshakes),
                         (5000, 3000, 7))
        d = config_from_dict({})
        self.assertEqual((d.ping_interval, d.ping_timeout, d.max_pending_handshakes),
                         (25000, 20000, 1000))
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"pingInterval": 10, "pingTimeout": "x"})
        self.assertIn("config.pingInterval", str(e.exception))
        self.assertIn("config.pingTimeout", str(e.exception))
