# -*- test-case-name: tests.test_cluster -*-
"""
The control channel between the supervisor and each node process: AMP commands.

One AMP connection per process, over a UNIX socket pair the supervisor makes when it starts
the process (the process gets its end as file descriptor 3). AMP keeps one connection's boxes
in order, which is what makes server push ordered: a process's pushes reach the supervisor in
the order published, and the supervisor relays each to every other process before reading the
next.

May import: nothing from ``qewd_twisted``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols import amp

__all__ = ["Adopt", "Chunked", "ControlError", "Deliver", "Gather", "HandOver", "Heartbeat",
           "NotServing", "OneProtocolFactory", "Publish", "Ready", "Report", "declared"]

#: AMP limits each value to 65535 bytes; a `Chunked` value is split into pieces of this size.
CHUNK = 0xFFFF


class Chunked(amp.Argument):
    """Bytes of any length, sent as several AMP values (``name`` holds the count, ``name.0``,
    ``name.1``, ... the pieces): a push or a metrics exposition may exceed one value's limit."""

    def toBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any],
              proto: Any) -> None:
        data = objects.pop(name.decode("ascii"))
        pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        strings[name] = b"%d" % len(pieces)
        for i, piece in enumerate(pieces):
            strings[name + b".%d" % i] = piece

    def fromBox(self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any],
                proto: Any) -> None:
        count = int(strings.pop(name))
        objects[name.decode("ascii")] = b"".join(strings.pop(name + b".%d" % i)
                                                 for i in range(count))


class NotServing(Exception):
    """The process a connection was handed over to is not serving (restarting)."""


class ControlError(Exception):
    """A command could not be carried out (its text says why).

    Every responder fails only with the errors its command declares: AMP answers any other
    failure by closing the connection, which would cut a process off from its supervisor."""


def declared(d: Any) -> Any:
    """``d`` with any failure that is not a declared error turned into a `ControlError`."""

    def convert(failure: Any) -> Any:
        if failure.check(NotServing, ControlError):
            return failure
        raise ControlError(f"{failure.type.__name__}: {failure.getErrorMessage()}")

    return d.addErrback(convert)


_ERRORS = {NotServing: b"NOT_SERVING", ControlError: b"CONTROL_ERROR"}


class Ready(amp.Command):
    """process → supervisor: the node is built and serves the adopted sockets."""

    arguments = [(b"pid", amp.Integer())]
    response: list[Any] = []


class Heartbeat(amp.Command):
    """supervisor → process: answered by the process's reactor; no answer means it is stuck.

    ``share``: the mean number of client connections of the node's ready processes; the
    answer's ``connections``: this process's (child.py balances on them)."""

    arguments = [(b"share", amp.Float())]
    response = [(b"connections", amp.Integer())]


class Publish(amp.Command):
    """process → supervisor: a push record (JSON, core/push.py) for every other process."""

    arguments = [(b"push", Chunked())]
    requiresAnswer = False


class Deliver(amp.Command):
    """supervisor → process: a push record published by another process of the node."""

    arguments = [(b"push", Chunked())]
    requiresAnswer = False


class Gather(amp.Command):
    """process → supervisor: the whole node's figures of one kind (``"health"``,
    ``"metrics"``, ``"status"``): a JSON object (aggregate.py)."""

    arguments = [(b"what", amp.Unicode())]
    response = [(b"reports", Chunked())]
    errors = _ERRORS


class Report(amp.Command):
    """supervisor → process: this process's figures of one kind, as JSON."""

    arguments = [(b"what", amp.Unicode())]
    response = [(b"report", Chunked())]
    errors = _ERRORS



class HandOver(amp.Command):
    """process → supervisor: a connection (its socket, and the request already read from it)
    for process ``owner``, whose long-polling session it is (handoff.py)."""

    arguments = [(b"owner", amp.Integer()), (b"data", Chunked()), (b"fd", amp.Descriptor())]
    response: list[Any] = []
    errors = _ERRORS


class Adopt(amp.Command):
    """supervisor → process: serve this connection, starting with ``data`` (HandOver)."""

    arguments = [(b"data", Chunked()), (b"fd", amp.Descriptor())]
    response: list[Any] = []
    errors = _ERRORS


class OneProtocolFactory(Factory):
    """A factory for one connection with an existing protocol: a control channel's end is
    made before the socket pair is adopted (``adoptStreamConnection``)."""

    def __init__(self, protocol: Any) -> None:
        self.one = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self.one
