# -*- test-case-name: tests.test_resp -*-
"""
The small Redis client under the push bus (qewd_twisted/pushbus/resp.py): the RESP2 codec,
and the two protocols on in-memory transports with a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.pushbus.resp import (
    RedisError,
    RedisProtocol,
    ReplyParser,
    RESPProtocolError,
    SubscriberProtocol,
    encode_command,
)

# Replies as Redis 7 writes them, and what the parser makes of each.
SAMPLES: list[tuple[bytes, Any]] = [
    (b"+OK\r\n", b"OK"),
    (b"+\r\n", b""),
    (b":0\r\n", 0),
    (b":-42\r\n", -42),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string may hold CRLF
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\n{}\r\n", [b"message", b"ch", b"{}"]),
    (b"*2\r\n*1\r\n:1\r\n$-1\r\n", [[1], None]),
    (b"*2\r\n$4\r\npong\r\n$0\r\n\r\n", [b"pong", b""]),
]


class EncodeTests(SynchronousTestCase):
    def test_commands_are_arrays_of_bulk_strings(self) -> None:
        self.assertEqual(encode_command("PUBLISH", b"ch", "caf\u00e9"),
                         b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$5\r\ncaf\xc3\xa9\r\n")
        self.assertEqual(encode_command(b"PING"), b"*1\r\n$4\r\nPING\r\n")
        self.assertEqual(encode_command("SELECT", 12), b"*2\r\n$6\r\nSELECT\r\n$2\r\n12\r\n")
        self.assertEqual(encode_command("SET", b"k", b""), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n")

    def test_refuses_what_it_cannot_send(self) -> None:
        self.assertRaises(ValueError, encode_command)
        self.assertRaises(TypeError, encode_command, "SET", None)
        self.assertRaises(TypeError, encode_command, "SET", True)
        self.assertRaises(TypeError, encode_command, "SET", 1.5)

    def test_an_encoded_command_parses_back(self) -> None:
        args = [b"PUBLISH", b"qewd-twisted:push:db0", b'{"scope":"all"}' * 500]
        self.assertEqual(ReplyParser().feed(encode_command(*args)), [args])


class ParserTests(SynchronousTestCase):
    def test_every_reply_type(self) -> None:
        for raw, value in SAMPLES:
            self.assertEqual(ReplyParser().feed(raw), [value], raw)

    def test_error_replies_are_values(self) -> None:
        [err] = ReplyParser().feed(b"-WRONGPASS invalid username-password pair\r\n")
        self.assertIsInstance(err, RedisError)
        self.assertEqual(str(err), "WRONGPASS invalid username-password pair")

    def test_many_replies_in_one_chunk_and_one_reply_byte_by_byte(self) -> None:
        stream = b"".join(raw for raw, _ in SAMPLES)
        expected = [value for _, value in SAMPLES]
        self.assertEqual(ReplyParser().feed(stream), expected)
        parser, got = ReplyParser(), []
        for i in range(len(stream)):
            got.extend(parser.feed(stream[i:i + 1]))
        self.assertEqual(got, expected)
        # and split at every point into two chunks
        for cut in range(len(stream) + 1):
            parser = ReplyParser()
            self.assertEqual(parser.feed(stream[:cut]) + parser.feed(stream[cut:]), expected)

    def test_a_large_bulk_in_chunks_is_not_rescanned_per_chunk(self) -> None:
        body = b"x" * 100_000
        raw = b"$%d\r\n%s\r\n" % (len(body), body)
        parser = ReplyParser()
        calls = []
        real = parser._parse

        def counting(*args: Any) -> Any:
            calls.append(1)
            return real(*args)

        parser._parse = counting  # type: ignore[method-assign]
        got = []
        for i in range(0, len(raw), 1000):
            got.extend(parser.feed(raw[i:i + 1000]))
        self.assertEqual(got, [body])
        self.assertLessEqual(len(calls), 3)  # the header, then once complete

    def test_malformed_streams_are_protocol_errors(self) -> None:
        for raw in (b"?what\r\n", b":12x\r\n", b"$3\r\nabcXY", b"$-2\r\n", b"*-5\r\n",
                    b"$abc\r\n", b"+" + b"x" * 70_000):
            self.assertRaises(RESPProtocolError, ReplyParser().feed, raw)

    def test_bounds(self) -> None:
        parser = ReplyParser(max_bulk=10, max_array=2)
        self.assertEqual(parser.feed(b"$10\r\n0123456789\r\n"), [b"0123456789"])
        self.assertRaises(RESPProtocolError, ReplyParser(max_bulk=10).feed, b"$11\r\n")
        self.assertRaises(RESPProtocolError, ReplyParser(max_array=2).feed, b"*3\r\n")
        self.assertRaises(RESPProtocolError, ReplyParser().feed, b"*1\r\n" * 9 + b":1\r\n")


def connect(proto: RedisProtocol) -> StringTransport:
    transport = StringTransport()
    proto.makeConnection(transport)
    return transport


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lost: list[Failure] = []
        self.proto = RedisProtocol(self.clock, reply_timeout=5, keepalive=15,
                                   on_lost=lambda p, why: self.lost.append(why))
        self.transport = connect(self.proto)

    def test_replies_answer_commands_in_order(self) -> None:
        got: list[Any] = []
        self.proto.execute("PUBLISH", "ch", "a").addCallback(got.append)
        self.proto.execute("PUBLISH", "ch", "b").addCallback(got.append)
        failed = self.proto.execute("AUTH", "nope")
        self.assertEqual(self.transport.value(), encode_command("PUBLISH", "ch", "a")
                         + encode_command("PUBLISH", "ch", "b") + encode_command("AUTH", "nope"))
        self.proto.dataReceived(b":2\r\n:")
        self.assertEqual(got, [2])
        self.proto.dataReceived(b"0\r\n-ERR no password\r\n")
        self.assertEqual(got, [2, 0])
        self.assertEqual(str(self.failureResultOf(failed, RedisError).value), "ERR no password")
        self.assertEqual(self.proto.pending, type(self.proto.pending)())

    def test_connection_lost_fails_what_is_outstanding_and_reports(self) -> None:
        d = self.proto.execute("PUBLISH", "ch", "a")
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(len(self.lost), 1)
        self.failureResultOf(self.proto.execute("PING"), ConnectionLost)  # after: at once
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_reply_within_the_deadline_aborts(self) -> None:
        self.proto.execute("PUBLISH", "ch", "a")
        self.clock.advance(4)
        self.proto.dataReceived(b":1\r\n")  # answered in time
        self.proto.execute("PUBLISH", "ch", "b")
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)  # abortConnection

    def test_each_reply_gives_the_rest_another_full_deadline(self) -> None:
        self.proto.execute("PUBLISH", "ch", "a")
        self.clock.advance(3)
        self.proto.execute("PUBLISH", "ch", "b")
        self.clock.advance(1.5)
        self.proto.dataReceived(b":1\r\n")  # the first, at 4.5 s: the second has until 9.5
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_one_timer_however_many_commands(self) -> None:
        for n in range(100):
            self.proto.execute("PUBLISH", "ch", str(n))
            self.proto.dataReceived(b":1\r\n")
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # the deadline and keep-alive

    def test_keepalive_pings_only_when_idle(self) -> None:
        self.clock.advance(10)
        self.proto.execute("PUBLISH", "ch", "a")
        self.proto.dataReceived(b":1\r\n")
        self.transport.clear()
        self.clock.advance(14)  # 14 s since the last command: nothing yet
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(1.5)
        self.assertEqual(self.transport.value(), encode_command("PING"))
        self.proto.dataReceived(b"+PONG\r\n")
        self.clock.advance(5.5)
        self.assertFalse(self.transport.disconnecting)
        # an unanswered PING: the reply deadline drops the connection
        self.clock.advance(10)
        self.clock.advance(5.1)
        self.assertTrue(self.transport.disconnecting)

    def test_a_reply_nobody_asked_for_or_garbage_aborts(self) -> None:
        self.proto.dataReceived(b"+OK\r\n")
        self.assertTrue(self.transport.disconnecting)
        proto = RedisProtocol(self.clock)
        transport = connect(proto)
        proto.execute("PING")
        proto.dataReceived(b"!nonsense\r\n")
        self.assertTrue(transport.disconnecting)


class SubscriberTests(SynchronousTestCase):
    def test_messages_go_to_the_callback_and_confirmations_to_commands(self) -> None:
        clock = Clock()
        messages: list[tuple[bytes, bytes]] = []
        proto = SubscriberProtocol(clock, lambda ch, data: messages.append((ch, data)),
                                   reply_timeout=5, keepalive=15)
        transport = connect(proto)
        d = proto.subscribe(b"qewd-twisted:push:db0")
        self.assertEqual(transport.value(), encode_command("SUBSCRIBE", "qewd-twisted:push:db0"))
        proto.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$21\r\nqewd-twisted:push:db0\r\n:1\r\n"
                           b"*3\r\n$7\r\nmessage\r\n$21\r\nqewd-twisted:push:db0\r\n$3\r\n[1]\r\n")
        self.assertEqual(self.successResultOf(d), [b"subscribe", b"qewd-twisted:push:db0", 1])
        self.assertEqual(messages, [(b"qewd-twisted:push:db0", b"[1]")])
        # a PING in subscribed mode is answered in order, between messages
        ping = proto.execute("PING")
        proto.dataReceived(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\n[2]\r\n"
                           b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        self.assertEqual(self.successResultOf(ping), [b"pong", b""])
        self.assertEqual(messages[-1], (b"c", b"[2]"))

    def test_a_wrong_confirmation_fails_the_subscription(self) -> None:
        proto = SubscriberProtocol(Clock(), lambda ch, data: None)
        connect(proto)
        d = proto.subscribe(b"a")
        proto.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:1\r\n")
        self.failureResultOf(d, RESPProtocolError)
        d = proto.subscribe(b"a")
        proto.dataReceived(b"-NOAUTH Authentication required.\r\n")
        self.failureResultOf(d, RedisError)
