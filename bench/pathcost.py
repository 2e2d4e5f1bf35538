"""
What one request costs inside the node, without sockets: ``python -m bench.pathcost``.

Runs the node's path for the local async scenario (``bench`` ``echo``) in process, the way a
client drives it (each request carries the token from the previous reply), and times each step
on its own: the Engine.IO decode, token verification and session, the handler, re-issue, reply
encoding, and the whole ``receive``. The figures are the best of 5 repeats (µs per
call); they leave out Twisted and Autobahn, which the floor servers measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import timeit
from typing import Any

from twisted.internet.task import Clock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Reactor(Clock):
    def seconds(self) -> float:
        return time.time()

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--number", type=int, default=20000, help="calls per repeat")
    opts = p.parse_args(argv)
    sys.path.insert(0, os.path.join(REPO, "bench", "apps"))
    import bench_app  # noqa: E402

    from qewd_twisted.transports import wire
    from qewd_twisted.apps.modules import Applications
    from qewd_twisted.core.node import Connection, Node
    from qewd_twisted.testing import SyncPool
    from qewd_twisted.auth.tokens import TokenCodec

    class Conn(Connection):
        framing = "engine.io"
        last = b""

        def encode(self, frame: Any) -> bytes:
            return wire.event_bytes(frame)

        def send_encoded(self, data: bytes) -> None:
            self.last = data

    reactor = _Reactor()
    tokens = TokenCodec("someSecret123", clock=reactor)
    node = Node(reactor, Applications.from_objects({"bench": bench_app}), SyncPool(),
                tokens=tokens)
    conn = Conn("benchSocket0001", "127.0.0.1")
    node.connection_opened(conn)
    node.receive(conn, {"type": "ewd-register", "application": "bench", "jwt": True})
    state = {"token": json.loads(conn.last[2:])[1]["message"]["token"], "n": 0}

    def request() -> None:
        state["n"] += 1
        text = '42["ewdjs",{"type":"echo","token":"%s","params":{"text":"1.%d"}}]' % (
            state["token"], state["n"])
        node.receive(conn, wire.decode(text).args[0])
        state["token"] = json.loads(conn.last[2:])[1]["message"]["token"]

    for _ in range(2000):
        request()
    token = state["token"]
    text = '42["ewdjs",{"type":"echo","token":"%s","params":{"text":"1.5"}}]' % token
    payload = tokens.decode(token)
    reply = {"type": "echo", "finished": True, "responseTime": "0ms",
             "message": {"text": "You sent: 1.5", "token": token}}

    def handler_and_issue() -> None:
        # as a client drives it: the token from the previous reply each time
        current = state["token"]
        session = tokens.session_from_payload(tokens.decode(current), current)
        bench_app._reply({"params": {"text": "1.5"}}, session, lambda m: None)
        state["token"] = tokens.issue(session)

    steps = [
        ("wire.decode (Engine.IO + JSON)", lambda: wire.decode(text)),
        ("TokenCodec.decode (cached token)", lambda: tokens.decode(token)),
        ("session_from_payload", lambda: tokens.session_from_payload(payload, token)),
        ("decode + session + handler + issue", handler_and_issue),
        ("reply encoding (event_bytes)", lambda: wire.event_bytes(reply)),
        ("one whole request, decode to encoded reply", request),
    ]
    print(f"# in-process cost per call (best of 5 x {opts.number:,}), µs")
    for name, fn in steps:
        best = min(timeit.repeat(fn, number=opts.number, repeat=5)) / opts.number * 1e6
        print(f"{best:8.1f}  {name}")


if __name__ == "__main__":
    main()
