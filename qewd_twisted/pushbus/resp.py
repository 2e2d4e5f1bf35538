# -*- test-case-name: tests.test_resp -*-
"""
A small Redis client on Twisted: RESP2 (the Redis serialization protocol) and two protocols,
for what the push bus needs (PUBLISH, SUBSCRIBE, AUTH, PING) and no more.

* ``encode_command(*args)``: a command as RESP (an array of bulk strings);
* ``ReplyParser``: RESP replies from a byte stream, incrementally (``feed`` returns the replies
  complete so far). Simple strings and bulk strings are ``bytes``, integers ``int``, a nil
  bulk or array ``None``, an array a ``list``, an error reply a ``RedisError`` *value* (the
  caller decides whether to raise it). A malformed stream, or a bulk string or array past the
  parser's bounds, is a ``RESPProtocolError``;
* ``RedisProtocol``: commands answered in order (``execute(*args)`` gives a Deferred of the
  reply; an error reply fails it with ``RedisError``), with an optional reply deadline
  (``reply_timeout``: no reply for that long to the oldest outstanding command aborts the
  connection, so a Redis that stopped answering is noticed) and an optional keep-alive PING
  when idle;
* ``SubscriberProtocol``: the same in subscribed mode: ``message_received(channel, data)`` is
  called for each ``message`` push, everything else (the ``subscribe`` confirmation, ``pong``)
  answers the commands in order.

Both report ``connectionMade`` to ``on_connected`` and ``connectionLost`` to ``on_lost``, and
fail every outstanding command with ``ConnectionLost`` when the connection goes. Everything runs on the reactor thread; the clock is passed in.
May import: nothing from ``qewd_twisted``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "RESPProtocolError",
    "RedisError",
    "RedisProtocol",
    "ReplyParser",
    "SubscriberProtocol",
    "encode_command",
]

log = Logger()

#: Bounds on what the parser accepts from the server: a push record larger than this is
#: refused before it is published (pushbus.redisbus), so a longer bulk string is a fault.
MAX_BULK = 64 * 1024 * 1024
MAX_ARRAY = 1024 * 1024
MAX_DEPTH = 8
#: A header line (type byte, length or simple string, CRLF) longer than this is a fault.
MAX_LINE = 64 * 1024


class RedisError(Exception):
    """An error reply (``-ERR ...``): ``str(e)`` is its text."""


class RESPProtocolError(Exception):
    """The byte stream is not RESP, or is past the parser's bounds."""


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"a Redis command argument is bytes, str or int, not {type(value).__name__}")


def encode_command(*args: Any) -> bytes:
    """``SET k v`` as RESP: ``*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n``."""
    if not args:
        raise ValueError("a Redis command has at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    """Not enough bytes yet; ``need`` is a lower bound on the buffer length that could help."""

    def __init__(self, need: int) -> None:
        self.need = need


class ReplyParser:
    """RESP2 replies from a stream of bytes (see the module docstring for the value types).

    A reply split over many ``feed`` calls is parsed once its bytes are all there: a partial
    reply is re-read from its start, but not before the buffer has grown past what it was
    known to need (a large bulk string is not re-scanned per chunk).
    """

    def __init__(self, max_bulk: int = MAX_BULK, max_array: int = MAX_ARRAY) -> None:
        self.max_bulk = max_bulk
        self.max_array = max_array
        self._buf = bytearray()
        self._need = 0

    def feed(self, data: bytes) -> list[Any]:
        """The replies completed by ``data`` (possibly none), in order."""
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        out: list[Any] = []
        pos = 0
        try:
            while pos < len(buf):
                try:
                    reply, pos2 = self._parse(buf, pos, 0)
                except _Incomplete as e:
                    self._need = e.need - pos
                    break
                out.append(reply)
                pos = pos2
            else:
                self._need = 0
        finally:
            if pos:
                del buf[:pos]
        return out

    def _line_end(self, buf: bytearray, pos: int) -> int:
        """Where the header line starting at ``pos`` ends (its CR)."""
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_LINE:
                raise RESPProtocolError("a RESP header line is too long")
            raise _Incomplete(len(buf) + 1)
        return end

    def _int(self, raw: bytearray) -> int:
        try:
            return int(raw)
        except ValueError:
            raise RESPProtocolError(f"not a RESP integer: {bytes(raw[:40])!r}") from None

    def _bulk(self, buf: bytearray, pos: int) -> tuple[bytes | None, int]:
        """The bulk string whose ``$`` is at ``pos``."""
        end = self._line_end(buf, pos + 1)
        n = self._int(buf[pos + 1:end])
        pos = end + 2
        if n == -1:
            return None, pos
        if n < 0 or n > self.max_bulk:
            raise RESPProtocolError(f"RESP bulk string length {n} out of bounds")
        end = pos + n
        if len(buf) < end + 2:
            raise _Incomplete(end + 2)
        if buf[end] != 0x0D or buf[end + 1] != 0x0A:
            raise RESPProtocolError("RESP bulk string not followed by CRLF")
        return bytes(buf[pos:end]), end + 2

    def _parse(self, buf: bytearray, pos: int, depth: int) -> tuple[Any, int]:
        if pos >= len(buf):
            raise _Incomplete(pos + 1)
        kind = buf[pos]
        if kind == 0x24:  # $ bulk string
            return self._bulk(buf, pos)
        end = self._line_end(buf, pos + 1)
        line = buf[pos + 1:end]
        pos = end + 2
        if kind == 0x2A:  # * array; its bulk strings (pub/sub messages) parsed in line
            n = self._int(line)
            if n == -1:
                return None, pos
            if n < 0 or n > self.max_array:
                raise RESPProtocolError(f"RESP array length {n} out of bounds")
            if depth >= MAX_DEPTH:
                raise RESPProtocolError("RESP arrays nested too deeply")
            items = []
            for _ in range(n):
                if pos < len(buf) and buf[pos] == 0x24:
                    item, pos = self._bulk(buf, pos)
                else:
                    item, pos = self._parse(buf, pos, depth + 1)
                items.append(item)
            return items, pos
        if kind == 0x3A:  # : integer
            return self._int(line), pos
        if kind == 0x2B:  # + simple string
            return bytes(line), pos
        if kind == 0x2D:  # - error
            return RedisError(line.decode("utf-8", "replace")), pos
        raise RESPProtocolError(f"unknown RESP type byte {bytes([kind])!r}")


class RedisProtocol(Protocol):
    """One connection to Redis: commands and their replies, in order.

    ``clock`` and ``reply_timeout`` (seconds, or None): a connection that has commands
    outstanding and has had no reply for ``reply_timeout`` is aborted. ``keepalive`` (seconds, or None):
    send ``PING`` after that long without a command, so a dead peer is noticed while idle.
    ``on_connected(protocol)`` is called once connected (to authenticate, subscribe...),
    ``on_lost(protocol, reason)`` once the connection is gone.
    """

    def __init__(self, clock: IReactorTime, *, reply_timeout: float | None = None,
                 keepalive: float | None = None,
                 on_connected: Callable[[RedisProtocol], None] | None = None,
                 on_lost: Callable[[RedisProtocol, Failure], None] | None = None) -> None:
        self.clock = clock
        self.reply_timeout = reply_timeout
        self.keepalive = keepalive
        self.on_connected = on_connected
        self.on_lost = on_lost
        self.parser = ReplyParser()
        self.pending: deque[defer.Deferred[Any]] = deque()
        self.connected = False
        self._deadline: IDelayedCall | None = None
        self._idle: IDelayedCall | None = None
        self._active = 0.0  # when a command was last sent or a push last received
        self._progress = 0.0  # when a reply last came, or waiting for one began

    # -- life cycle

    def connectionMade(self) -> None:
        self.connected = True
        self._arm_idle()
        if self.on_connected is not None:
            self.on_connected(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        for call in (self._deadline, self._idle):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._idle = None
        pending, self.pending = self.pending, deque()
        for d in pending:
            d.errback(Failure(ConnectionLost(f"Redis connection lost: "
                                             f"{reason.getErrorMessage()}")))
        if self.on_lost is not None:
            self.on_lost(self, reason)

    def abort(self, why: str) -> None:
        """Drop the connection at once (outstanding commands fail with ConnectionLost)."""
        log.warn("dropping the Redis connection: {why}", why=why)
        if self.transport is not None:
            self.transport.abortConnection()

    # -- commands

    def execute(self, *args: Any) -> defer.Deferred[Any]:
        """Send one command; a Deferred of its reply (``RedisError`` for an error reply,
        ``ConnectionLost`` when the connection goes before the reply)."""
        if not self.connected:
            return defer.fail(ConnectionLost("not connected to Redis"))
        d: defer.Deferred[Any] = defer.Deferred()
        self.transport.write(encode_command(*args))
        if self.reply_timeout is not None:
            if not self.pending:
                self._progress = self.clock.seconds()  # waiting starts now
            if self._deadline is None:
                self._deadline = self.clock.callLater(self.reply_timeout, self._check_deadline)
        self.pending.append(d)
        self._arm_idle()
        return d

    # -- replies

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except RESPProtocolError as e:
            return self.abort(str(e))
        for reply in replies:
            self.reply_received(reply)
            if not self.connected:
                return

    def reply_received(self, reply: Any) -> None:
        """One complete reply: it answers the oldest outstanding command."""
        if not self.pending:
            return self.abort(f"a reply nobody asked for: {reply!r:.80}")
        d = self.pending.popleft()
        if self._deadline is not None:
            self._progress = self.clock.seconds()
        if isinstance(reply, RedisError):
            d.errback(reply)
        else:
            d.callback(reply)

    # -- deadlines

    def _check_deadline(self) -> None:
        # one timer while commands are outstanding, not one per command: when it fires it
        # looks at the time of the last reply (or of the first command waited for since)
        self._deadline = None
        if not self.pending or self.reply_timeout is None:
            return
        rest = self._progress + self.reply_timeout - self.clock.seconds()
        if rest > 0:
            self._deadline = self.clock.callLater(rest, self._check_deadline)
            return
        self.abort(f"no reply from Redis in {self.reply_timeout} s")

    def _arm_idle(self) -> None:
        # one timer per idle period, not one reset per command: the timer checks the time of
        # the last activity when it fires and waits again for the rest of the period
        if self.keepalive is None or not self.connected:
            return
        self._active = self.clock.seconds()
        if self._idle is None:
            self._idle = self.clock.callLater(self.keepalive, self._ping)

    def _ping(self) -> None:
        self._idle = None
        rest = self._active + (self.keepalive or 0.0) - self.clock.seconds()
        if rest > 0:
            self._idle = self.clock.callLater(rest, self._ping)
            return
        # a PING's failure is the connection's: the reply deadline aborts it
        self.execute(b"PING").addErrback(lambda f: None)


class SubscriberProtocol(RedisProtocol):
    """A connection in subscribed mode: ``message`` pushes go to ``message_received``.

    ``subscribe(channel)`` sends SUBSCRIBE and gives a Deferred that fires with the
    confirmation. In subscribed mode Redis accepts only (P)(UN)SUBSCRIBE, PING and QUIT;
    a PING is answered ``["pong", ""]``, in order, so the keep-alive works as on any connection.
    """

    def __init__(self, clock: IReactorTime, message_received: Callable[[bytes, bytes], None],
                 **kwargs: Any) -> None:
        super().__init__(clock, **kwargs)
        self.message_received = message_received

    def subscribe(self, channel: bytes) -> defer.Deferred[Any]:
        def confirmed(reply: Any) -> Any:
            if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"subscribe"
                    and reply[1] == channel):
                raise RESPProtocolError(f"unexpected reply to SUBSCRIBE: {reply!r:.80}")
            return reply

        return self.execute(b"SUBSCRIBE", channel).addCallback(confirmed)

    def reply_received(self, reply: Any) -> None:
        if (type(reply) is list and len(reply) == 3 and reply[0] == b"message"
                and type(reply[1]) is bytes and type(reply[2]) is bytes):
            self._arm_idle()
            self.message_received(reply[1], reply[2])
        else:
            super().reply_received(reply)
