# -*- test-case-name: tests.integration.test_polling_clients -*-
"""
Real, unmodified socket.io 2 clients against a node on loopback, over Engine.IO long-polling:
socket.io-client 2.5 in Node.js (tests/js/sio_polling.js) with its default options, which
start on polling and upgrade to WebSocket while 50 replies are in flight, and with
``transports: ['polling']``; python-socketio 4.x's client (tests/integration/psio_client.py)
with its defaults and polling only. Each registers, logs in and echoes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.nodes import port_of, start_node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _required(why: str) -> None:
    if os.environ.get("CI"):
        raise AssertionError(why + " is required in CI (scripts/test.sh installs it)")
    raise SkipTest(why + " missing (scripts/test.sh installs it)")


class NodeSocketIOClientTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def run_client(self, mode: str) -> dict:
        node_bin = shutil.which("node")
        if not node_bin or not os.path.isdir(
                os.path.join(REPO, "tests", "js", "node_modules", "socket.io-client")):
            _required("node with tests/js/node_modules")
        node = start_node(self)
        out, err, code = yield getProcessOutputAndValue(
            node_bin, [os.path.join(REPO, "tests", "js", "sio_polling.js"),
                       f"http://127.0.0.1:{port_of(node)}", mode], env=dict(os.environ))
        self.assertEqual(code, 0, err.decode())
        lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        frames, last = lines[:-1], lines[-1]
        self.assertEqual([(f["type"], f["finished"]) for f in frames[:3]],
                         [("ewd-register", True), ("login", False), ("login", True)])
        self.assertEqual(len(frames), 3 + 50 + 1)
        # every reply exactly once, across the switch of transport
        self.assertEqual(last["echoes"], {f"n{i}": 1 for i in range(50)})
        return last

    @defer.inlineCallbacks
    def test_default_options_upgrade(self):
        last = yield self.run_client("default")
        self.assertEqual((last["upgraded"], last["transport"]), (True, "websocket"))

    @defer.inlineCallbacks
    def test_polling_only(self):
        last = yield self.run_client("polling")
        self.assertEqual((last["upgraded"], last["transport"]), (False, "polling"))


class PythonSocketIOClientTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def run_client(self, mode: str) -> dict:
        try:
            import socketio  # noqa: F401
        except ImportError:
            _required("python-socketio 4.x (the test extra)")
        node = start_node(self)
        env = dict(os.environ, PYTHONPATH=REPO)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, [os.path.join(REPO, "tests", "integration", "psio_client.py"),
                             f"http://127.0.0.1:{port_of(node)}", mode], env=env)
        self.assertEqual(code, 0, err.decode())
        lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        # sorted: while it upgrades, python-engineio 3 runs handlers on two threads, so two
        # frames of one request (login's intermediate and final) may be handled either way
        self.assertEqual(sorted((f["type"], f["finished"]) for f in lines[:-1]),
                         [("echo", True), ("ewd-register", True), ("login", False),
                          ("login", True)])
        echo = [f for f in lines if f.get("type") == "echo"][0]
        self.assertEqual(echo["message"]["you sent"], "from python")
        return lines[-1]

    @defer.inlineCallbacks
    def test_default_options_upgrade(self):
        last = yield self.run_client("default")
        self.assertEqual(last["transport"], "websocket")

    @defer.inlineCallbacks
    def test_polling_only(self):
        last = yield self.run_client("polling")
        self.assertEqual(last["transport"], "polling")
