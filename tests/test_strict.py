# -*- test-case-name: tests.test_strict -*-
"""
The suite's own rules: what is required (tests/strict.py), how a test holds a port
(tests/ports.py), and what CI accepts (.ci/run), issue 18 items 1 and 4.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests import strict
from tests.ports import hold_port, reserve_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StrictTests(SynchronousTestCase):
    def test_nothing_may_skip_by_default(self) -> None:
        self.assertEqual(strict.allowed_skips({}), frozenset())
        self.assertEqual(strict.allowed_skips({"CI": "", "QEWD_TEST_ALLOW_SKIP": ""}), frozenset())

    def test_named_opt_out(self) -> None:
        env = {"QEWD_TEST_ALLOW_SKIP": " interop, browser "}
        self.assertEqual(strict.allowed_skips(env), frozenset({"interop", "browser"}))
        self.assertEqual(strict.allowed_skips({"QEWD_TEST_ALLOW_SKIP": "all"}),
                         frozenset(strict.AREAS))

    def test_unknown_area_refused(self) -> None:
        with self.assertRaises(ValueError):
            strict.allowed_skips({"QEWD_TEST_ALLOW_SKIP": "interopp"})

    def test_require_fails_without_the_opt_out(self) -> None:
        """Whatever ``CI`` says: the repository decides."""
        self.patch(os, "environ", {"CI": ""})
        with self.assertRaises(self.failureException) as caught:
            strict.require(self, "node", "node is missing")
        self.assertIn("node is missing", str(caught.exception))
        self.assertIn("QEWD_TEST_ALLOW_SKIP=node", str(caught.exception))

    def test_require_skips_only_the_named_area(self) -> None:
        self.patch(os, "environ", {"QEWD_TEST_ALLOW_SKIP": "browser"})
        with self.assertRaises(SkipTest):
            strict.require(self, "browser", "no chromium")
        with self.assertRaises(self.failureException):
            strict.require(self, "interop", "no peer")


class ReservedPortTests(TestCase):
    def test_nobody_else_can_bind_it(self) -> None:
        port = reserve_port(self)
        with socket.socket() as other:
            with self.assertRaises(OSError) as caught:
                other.bind(("127.0.0.1", port))
        self.assertEqual(caught.exception.errno, errno.EADDRINUSE)

    def test_connections_are_refused_while_held(self) -> None:
        port = reserve_port(self)
        with socket.socket() as c:
            self.assertEqual(c.connect_ex(("127.0.0.1", port)), errno.ECONNREFUSED)

    async def test_our_server_listens_on_it_and_then_others_cannot_even_reuse(self) -> None:
        port = reserve_port(self)
        listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(listening.stopListening)
        self.assertEqual(listening.getHost().port, port)
        with self.assertRaises(OSError):
            hold_port_at(port)

    def test_released_when_the_test_ends(self) -> None:
        s = hold_port()
        port = s.getsockname()[1]
        s.close()
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # free again once the holder is closed


def hold_port_at(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        raise
    return s


class CIRunTests(TestCase):
    """.ci/run against a stand-in scripts/test.sh: any skip fails CI, and the opt-out never
    reaches the suite (issue 18 item 1)."""

    def run_ci(self, summary: str, status: int = 0) -> defer.Deferred:
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, ".ci"))
        os.makedirs(os.path.join(root, "scripts"))
        shutil.copy(os.path.join(REPO, ".ci", "run"), os.path.join(root, ".ci", "run"))
        with open(os.path.join(root, "scripts", "test.sh"), "w") as f:
            f.write("echo \"allow=[${QEWD_TEST_ALLOW_SKIP:-}]\"\n"
                    f"echo '[SKIPPED] tests.x.Y.test_z'\necho '{summary}'\nexit {status}\n")
        env = dict(os.environ, QEWD_TEST_ALLOW_SKIP="interop")
        return getProcessOutputAndValue("/bin/bash", [os.path.join(root, ".ci", "run")],
                                        env=env, path=root)

    async def test_a_skip_fails_ci(self) -> None:
        out, _err, code = await self.run_ci("530 passed, 0 failed, 1 skipped")
        self.assertEqual(code, 1, out)
        self.assertIn(b"1 test(s) skipped, 0 expected", out)
        self.assertIn(b"allow=[]", out)  # .ci/run cleared the opt-out

    async def test_no_skip_passes(self) -> None:
        out, _err, code = await self.run_ci("531 passed, 0 failed, 0 skipped")
        self.assertEqual(code, 0, out)

    async def test_a_failure_fails_ci(self) -> None:
        out, _err, code = await self.run_ci("530 passed, 1 failed, 0 skipped", status=1)
        self.assertEqual(code, 1, out)

    async def test_no_summary_fails_ci(self) -> None:
        out, _err, code = await self.run_ci("trial crashed")
        self.assertEqual(code, 1, out)
        self.assertIn(b"no summary line", out)
