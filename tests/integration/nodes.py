"""Start real nodes on loopback for integration tests, and clean them up."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService, config_from_dict

SECRET = "someSecret123"


class ClockedReactor:
    """The real reactor for sockets, threads and processes, with the time of ``clock``: the
    node's timers (handlerTimeout, microServiceTimeout, token times, ...) fire only when the
    test advances the clock, so a limit under a second is never raced against wall time
    (issue 18 item 5). The clock starts at the wall time, so tokens it stamps are good for
    nodes on the real clock too. A zero delay means "on the next turn", not a limit: it
    goes to the real reactor."""

    def __init__(self, real: Any = _reactor) -> None:
        self.clock = Clock()
        self.clock.advance(time.time())
        self._real = real

    def callLater(self, delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        if delay <= 0:  # "on the next turn" (when_up, when_idle, drain): not a time limit
            return self._real.callLater(0, f, *args, **kwargs)
        return self.clock.callLater(delay, f, *args, **kwargs)

    def seconds(self) -> float:
        return self.clock.seconds()

    def getDelayedCalls(self) -> list[Any]:
        return self.clock.getDelayedCalls()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def start_node(test: TestCase, base_dir: str | None = None, reactor: Any = _reactor,
               **config: Any) -> QEWDService:
    """A started node on 127.0.0.1, an ephemeral port; stopped when the test ends, passed or
    failed (the cleanup is registered before it starts)."""
    config.setdefault("listen", "tcp:0:interface=127.0.0.1")
    config.setdefault("jwt", {"secret": SECRET})
    config.setdefault("moduleMap", {"demo": "tests.apps.demo"})
    # a request left running when a test ends is cut off after 1 s, not QEWD's 20
    config.setdefault("shutdownGracePeriod", 1)
    service = QEWDService(config_from_dict(config, base_dir), reactor)
    test.addCleanup(lambda: service.stopService() if service.running else None)
    service.startService()
    return service


def port_of(service: QEWDService) -> int:
    return service.ports[0].getHost().port


def eio_url(service: QEWDService) -> str:
    return f"ws://127.0.0.1:{port_of(service)}/socket.io/?EIO=3&transport=websocket"


def plain_url(service: QEWDService) -> str:
    return f"ws://127.0.0.1:{port_of(service)}/ws"
