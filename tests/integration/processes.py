"""Real ``twistd -n qewd`` child processes for tests where process death matters."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TWISTD = ["-c", "from twisted.scripts.twistd import run; run()",
          "--nodaemon", "--pidfile=", "--logfile=-"]


def write_startup(test: TestCase, config_source: str) -> str:
    """A startup file holding ``config = <config_source>``; returns its absolute path."""
    d = os.path.abspath(test.mktemp())
    os.makedirs(d)
    path = os.path.join(d, "startup.py")
    with open(path, "w") as f:
        f.write("config = " + config_source + "\n")
    return path


class OutputWatcher:
    """Collected text output; ``wait_for(text)`` fires once ``text`` appears after ``since``
    (default: the output's length when called). Nothing polls or sleeps."""

    label = "output"

    def __init__(self) -> None:
        self.output = ""
        self._waiters: list[tuple[str, int, defer.Deferred[None]]] = []

    def mark(self) -> int:
        return len(self.output)

    def wait_for(self, text: str, since: int | None = None) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((text, self.mark() if since is None else since, d))
        self._check()
        return d

    def _append(self, text: str) -> None:
        self.output += text
        self._check()

    def _check(self) -> None:
        for entry in list(self._waiters):
            text, start, d = entry
            if text in self.output[start:]:
                self._waiters.remove(entry)
                d.callback(None)

    def _fail_waiters(self, why: str) -> None:
        waiters, self._waiters = self._waiters, []
        for text, _, d in waiters:
            d.errback(RuntimeError(f"{self.label}: {why} before {text!r} appeared; "
                                   f"output:\n{self.output[-4000:]}"))


class WatchedProcess(OutputWatcher, protocol.ProcessProtocol):
    """A child process whose stdout and stderr are collected for ``wait_for``; ``ended``
    fires with the reason when it exits (waiters still open then fail)."""

    def __init__(self) -> None:
        OutputWatcher.__init__(self)
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.transport: Any = None

    def outReceived(self, data: bytes) -> None:
        self._append(data.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.transport = None
        self._fail_waiters("process ended")
        self.ended.callback(reason.value)


class TwistdProcess(WatchedProcess):
    """One ``twistd -n qewd`` node process, its output collected for ``wait_for``."""

    label = "twistd node"

    def __init__(self, test: TestCase, startup: str) -> None:
        WatchedProcess.__init__(self)
        self.test = test
        self.startup = startup

    def start(self) -> "TwistdProcess":
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        reactor.spawnProcess(self, sys.executable,
                             [sys.executable, *TWISTD, "qewd", "--config", self.startup],
                             env=env, path=REPO)
        self.test.addCleanup(self.kill)
        return self

    def signal(self, name: str) -> defer.Deferred[Any]:
        if self.transport is not None:
            self.transport.signalProcess(name)
        return self.ended

    def kill(self) -> defer.Deferred[Any] | None:
        if self.transport is not None and self.transport.pid:
            return self.signal("KILL")
        return None
