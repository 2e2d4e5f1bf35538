"""
What one local request costs the node through its own WebSocket protocol, in process:
``python -m bench.wscost [--number N] [--observers]``.

A client frame (``42["ewdjs",{"type":"echo",...}]``, masked, with the token from the previous
reply) goes into the node's ``EngineIOProtocol`` on a StringTransport, and the reply frame
comes out: Autobahn's frame reading (as the node runs it), the Engine.IO decode, the node,
the token, the bench's ``echo`` handler (``async def``), the re-issue and the reply. No reactor
and no kernel (the floors pay those too). Prints CPU µs per request (best of 5), the
driver's own work (building the frame, finding the token) taken out. ``--observers``: with
the metrics and status-page observers a node with ``metrics`` and ``status`` has (the bench's
node has neither). Run from another tree (``cd TREE && PYTHONPATH=$PWD python -m bench.wscost``)
to compare two trees on the same machine (docs/performance.md).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from typing import Any

from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Reactor(Clock):
    def seconds(self) -> float:
        return time.time()


def _frame(payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    n = len(payload)
    head = b"\x81" + (bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + n.to_bytes(2, "big"))
    return head + mask + create_xor_masker(mask, n).process(payload)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--number", type=int, default=20000, help="requests per repeat")
    p.add_argument("--observers", action="store_true")
    opts = p.parse_args(argv)
    sys.path.insert(0, os.path.join(REPO, "bench", "apps"))
    import bench_app  # noqa: E402

    from qewd_twisted.apps.modules import Applications
    from qewd_twisted.auth.tokens import TokenCodec
    from qewd_twisted.core.node import Node
    from qewd_twisted.ops.metrics import Labels, NodeMetrics
    from qewd_twisted.ops.observe import combine
    from qewd_twisted.ops.operations import RequestRates
    from qewd_twisted.testing import SyncPool
    from qewd_twisted.transports.site import EngineIOProtocol, make_factory

    reactor = _Reactor()
    apps = Applications.from_objects({"bench": bench_app})
    node = Node(reactor, apps, SyncPool(), tokens=TokenCodec("someSecret123", clock=reactor))
    if opts.observers:
        labels = Labels.for_node(apps)
        node.observer = combine([NodeMetrics(node, clock=reactor, labels=labels, process=False),
                                 RequestRates(reactor, labels)])
    factory = make_factory(EngineIOProtocol, node, reactor, 1 << 20)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    proto.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    proto.dataReceived((
        "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    transport.clear()
    proto.dataReceived(_frame(b'42["ewdjs",{"type":"ewd-register","application":"bench",'
                              b'"jwt":true}]'))
    find = re.compile(rb'"token":"([^"]+)"')
    state: dict[str, Any] = {"token": find.search(transport.value()).group(1), "n": 0}
    transport.clear()
    text = b'42["ewdjs",{"type":"echo","token":"%s","params":{"text":"1.%d"}}]'

    def request() -> None:
        state["n"] += 1
        proto.dataReceived(_frame(text % (state["token"], state["n"])))
        state["token"] = find.search(transport.value()).group(1)
        transport.clear()

    def driver() -> None:  # the same work without the node
        state["n"] += 1
        _frame(text % (state["token"], state["n"]))
        find.search(b'xx"token":"' + state["token"] + b'"')
        transport.clear()

    for _ in range(3000):
        request()
    best = []
    for fn in (request, driver):
        runs = []
        for _ in range(5):
            t = time.process_time()
            for _ in range(opts.number):
                fn()
            runs.append((time.process_time() - t) / opts.number * 1e6)
        best.append(min(runs))
    print(f"{best[0] - best[1]:.1f} µs per request (the driver's own {best[1]:.1f} µs taken out)")


if __name__ == "__main__":
    main()
