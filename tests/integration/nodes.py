"""Start real nodes on loopback for integration tests, and clean them up."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService, config_from_dict

SECRET = "someSecret123"


def start_node(test: TestCase, base_dir: str | None = None, **config: Any) -> QEWDService:
    """A started node on 127.0.0.1, an ephemeral port; stopped when the test ends."""
    config.setdefault("listen", "tcp:0:interface=127.0.0.1")
    config.setdefault("jwt", {"secret": SECRET})
    config.setdefault("moduleMap", {"demo": "tests.apps.demo"})
    # a request left running when a test ends is cut off after 1 s, not QEWD's 20
    config.setdefault("shutdownGracePeriod", 1)
    service = QEWDService(config_from_dict(config, base_dir), reactor)
    service.startService()
    test.addCleanup(service.stopService)
    return service


def port_of(service: QEWDService) -> int:
    return service.ports[0].getHost().port


def eio_url(service: QEWDService) -> str:
    return f"ws://127.0.0.1:{port_of(service)}/socket.io/?EIO=3&transport=websocket"


def plain_url(service: QEWDService) -> str:
    return f"ws://127.0.0.1:{port_of(service)}/ws"
