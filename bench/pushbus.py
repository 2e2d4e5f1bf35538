"""
Cost of server push across nodes (issue 16 items 2 and 6): two Redis push buses, as two nodes
would have, on a private redis-server on a free loopback port, in this one process.

Node A's bus publishes N numbered pushes as fast as the caller can; node B's bus receives them
(and A's own subscriber receives its echo and skips it, as every subscriber on the channel
does). Each round checks that B got every push once, in order, and prints:

* publish: CPU µs per push on the publishing side (JSON, RESP, the write, the acknowledgement);
* publish + receive: CPU µs per push for everything in this process (A's publish, A's and B's
  subscribers parsing it), so a subscriber's share is (that - publish) / 2;
* pushes/s: wall-clock rate, publish to the last delivery.

    python -m bench.pushbus              # 3 rounds of 20,000
    python -m bench.pushbus --quick      # 1 round of 2,000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet import defer, task

from qewd_twisted.core.push import make_push
from qewd_twisted.pushbus.redisbus import RedisPushBus
from tests.documents.redisserver import RedisServer


async def measure(reactor: Any, n: int, rounds: int) -> list[dict[str, float]]:
    """One row per round: ``publish_us``, ``total_us``, ``per_second``, ``dropped``."""
    server = RedisServer()
    rows = []
    try:
        port = server.start()
        got: list[dict[str, Any]] = []
        a = RedisPushBus(reactor, "A", lambda record: None, port=port)
        b = RedisPushBus(reactor, "B", got.append, port=port)
        a.startService()
        b.startService()
        try:
            await a.when_up()
            await b.when_up()
            for _ in range(rounds):
                got.clear()
                c0, t0 = time.process_time(), time.perf_counter()
                for i in range(n):
                    a.publish(make_push("all", {"type": "push", "n": i, "text": "hello"}, "A/p"))
                c1 = time.process_time()
                deadline = t0 + 60
                while len(got) < n and sum(a.dropped.values()) == 0:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"only {len(got)} of {n} pushes arrived")
                    await task.deferLater(reactor, 0.001, lambda: None)
                c2, t2 = time.process_time(), time.perf_counter()
                if [g["message"]["n"] for g in got] != list(range(n)):
                    raise RuntimeError("pushes missing, repeated or out of order")
                rows.append({"publish_us": 1e6 * (c1 - c0) / n, "total_us": 1e6 * (c2 - c0) / n,
                             "per_second": n / (t2 - t0),
                             "dropped": float(sum(a.dropped.values()))})
        finally:
            await a.stopService()
            await b.stopService()
    finally:
        server.cleanup()
    return rows


def main() -> None:
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (2000, 1) if args.quick else (20000, 3)

    async def run() -> None:
        try:
            for i, row in enumerate(await measure(reactor, n, rounds)):
                print(f"round {i}: publish {row['publish_us']:.1f} us CPU/push; publish + two "
                      f"subscribers {row['total_us']:.1f} us CPU/push; "
                      f"{row['per_second']:,.0f} pushes/s; dropped {row['dropped']:.0f}")
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()))
    reactor.run()


if __name__ == "__main__":
    main()
