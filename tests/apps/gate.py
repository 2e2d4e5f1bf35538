# -*- test-case-name: tests.integration.test_limits -*-
"""
A gate a handler thread waits at until the test opens it, with no state left between tests.

Handler modules are loaded once per process (by dotted name), so a module-level
``threading.Event`` would keep a test's ``set()`` for the next test. ``Gate.hold(test)``
closes the gate for ``test`` and, when the test ends (passed or failed), lets every thread
still waiting go and closes it again.
"""

from __future__ import annotations

import threading

from twisted.trial.unittest import SynchronousTestCase


class Gate:
    def __init__(self) -> None:
        self._event = threading.Event()

    def hold(self, test: SynchronousTestCase) -> None:
        """Closed for ``test``; opened for whoever still waits, then closed, at its end."""
        self._event.clear()
        test.addCleanup(self._reset)

    def open(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def _reset(self) -> None:
        self._event.set()  # wakes every waiting thread ...
        self._event.clear()  # ... and the next test starts with a closed gate
