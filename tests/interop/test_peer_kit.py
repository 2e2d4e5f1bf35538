# -*- test-case-name: tests.interop.test_peer_kit -*-
"""
``scripts/peer.sh private-start``: the suite's own QEWD.js peer is started on the ports it is
given and checked to be ours (issue 18 item 4): a port some other server already listens on is
never taken for the peer's.
"""

from __future__ import annotations

import os

from twisted.internet import protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.processes import REPO
from tests.interop.peer import KIT, require_peer
from tests.ports import reserve_port

PEER_SH = os.path.join(REPO, "scripts", "peer.sh")


class PrivatePeerTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        require_peer(self, spawn=True)  # node, the kit and an installed run folder

    async def private(self, command: str, folder: str, ports: dict[str, int]) -> tuple:
        env = dict(os.environ, QEWD_PEER_KIT=KIT, **{k: str(v) for k, v in ports.items()})
        return await getProcessOutputAndValue("/bin/bash", [PEER_SH, command, folder],
                                              env=env, path=REPO)

    async def test_a_port_served_by_someone_else_is_refused(self) -> None:
        """The micro-service's port already has a listener that is not the peer's: the
        node started there cannot bind, private-start says whose port it is not, stops what
        it started, and fails."""
        ports = {name: reserve_port(self) for name in
                 ("QEWD_REDIS_PORT", "QEWD_MS_PORT", "QEWD_MASTER_PORT")}
        squatter = reactor.listenTCP(ports["QEWD_MS_PORT"], protocol.Factory.forProtocol(
            protocol.Protocol), interface="127.0.0.1")
        self.addCleanup(squatter.stopListening)
        folder = os.path.abspath(self.mktemp())
        self.addCleanup(self.private, "private-stop", folder, ports)
        out, err, code = await self.private("private-start", folder, ports)
        self.assertEqual(code, 1, out + err)
        self.assertIn(f"ms: 127.0.0.1:{ports['QEWD_MS_PORT']} is not served by our pid".encode(),
                      err)
        self.assertFalse(os.path.exists(os.path.join(folder, "peer.env")))
        for name in ("redis", "ms", "master"):  # nothing of it left running
            self.assertFalse(os.path.exists(os.path.join(folder, "run", f"{name}.pid")), name)

    async def test_started_on_the_given_ports(self) -> None:
        ports = {name: reserve_port(self) for name in
                 ("QEWD_REDIS_PORT", "QEWD_MS_PORT", "QEWD_MASTER_PORT")}
        folder = os.path.abspath(self.mktemp())
        self.addCleanup(self.private, "private-stop", folder, ports)
        out, err, code = await self.private("private-start", folder, ports)
        self.assertEqual(code, 0, out + err)
        with open(os.path.join(folder, "peer.env")) as f:
            env = f.read()
        self.assertIn(f"QEWD_PEER_MASTER=127.0.0.1:{ports['QEWD_MASTER_PORT']}", env)
        self.assertIn(f"QEWD_PEER_MS=127.0.0.1:{ports['QEWD_MS_PORT']}", env)
