"""Real ``twistd -n qewd`` child processes for tests where process death matters."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TWISTD = ["-c", "from twisted.scripts.twistd import run; run()",
          "--nodaemon", "--pidfile=", "--logfile=-"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_startup(test: TestCase, config_source: str) -> str:
    """A startup file holding ``config = <config_source>``; returns its absolute path."""
    d = os.path.abspath(test.mktemp())
    os.makedirs(d)
    path = os.path.join(d, "startup.py")
    with open(path, "w") as f:
        f.write("config = " + config_source + "\n")
    return path


class TwistdProcess(protocol.ProcessProtocol):
    """One node process. ``wait_for(text)`` fires when ``text`` appears in its output after
    the point where wait_for was called (or after ``mark()``); nothing polls or sleeps."""

    def __init__(self, test: TestCase, startup: str) -> None:
        self.test = test
        self.startup = startup
        self.output = b""
        self._waiters: list[tuple[bytes, int, defer.Deferred[None]]] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.transport: Any = None

    def start(self) -> "TwistdProcess":
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        reactor.spawnProcess(self, sys.executable,
                             [sys.executable, *TWISTD, "qewd", "--config", self.startup],
                             env=env, path=REPO)
        self.test.addCleanup(self.kill)
        return self

    def wait_for(self, text: str, since: int | None = None) -> defer.Deferred[None]:
        start = len(self.output) if since is None else since
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((text.encode(), start, d))
        self._check()
        return d

    def mark(self) -> int:
        return len(self.output)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def _check(self) -> None:
        for entry in list(self._waiters):
            text, start, d = entry
            if text in self.output[start:]:
                self._waiters.remove(entry)
                d.callback(None)

    def processEnded(self, reason: Any) -> None:
        self.transport = None
        for _, _, d in self._waiters:
            d.errback(RuntimeError("process ended; output:\n" + self.output.decode(errors="replace")))
        self._waiters = []
        self.ended.callback(reason.value)

    def signal(self, name: str) -> defer.Deferred[Any]:
        if self.transport is not None:
            self.transport.signalProcess(name)
        return self.ended

    def kill(self) -> defer.Deferred[Any] | None:
        if self.transport is not None and self.transport.pid:
            return self.signal("KILL")
        return None
