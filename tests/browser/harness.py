"""
Headless Chromium for trial tests, driven by Playwright's sync API on a thread of its own.

Playwright's sync objects belong to the thread that created them, and blocking calls must not
run on the reactor thread (the nodes under test live there). So each test gets one
``BrowserThread``: every browser step is a plain function run on that thread, returning a
Deferred. Steps wait for page state (``wait_for_function``, ``wait_for_selector``), never a
fixed time.

Chromium is Debian's (/usr/bin/chromium, or $QEWD_CHROMIUM); ``bash scripts/setup-browser.sh``
installs it and Playwright. Without them the tests fail (tests/strict.py: only
``QEWD_TEST_ALLOW_SKIP=browser`` skips them instead).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration.nodes import port_of, start_node
from tests.strict import require

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "browser", "www")
ARTIFACTS = os.path.join(REPO, "test-artifacts")
CHROMIUM = os.environ.get("QEWD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 20000  # the longest any single page condition may take


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (bash scripts/setup-browser.sh installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (bash scripts/setup-browser.sh installs it)"
    return None


class BrowserThread:
    """One thread owning Playwright and a Chromium; ``run(fn)`` calls ``fn`` there."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="playwright", daemon=True)
        self._thread.start()
        self.console: list[str] = []  # every page's console output, for failure messages
        self._pw: Any = None
        self.browser: Any = None
        self.context: Any = None

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, d = job
            try:
                result = fn(*args)
            except BaseException:  # noqa: BLE001 -- every failure goes back to the test
                reactor.callFromThread(d.errback, Failure())
            else:
                reactor.callFromThread(d.callback, result)

    def run(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._jobs.put((fn, args, d))
        return d

    def launch(self) -> defer.Deferred[None]:
        def launch() -> None:
            from playwright.sync_api import sync_playwright

            self._pw = sync_playwright().start()
            self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            self.context = self.browser.new_context()
            self.context.set_default_timeout(WAIT_MS)

        return self.run(launch)

    def new_page(self, url: str) -> defer.Deferred[Any]:
        def open_page() -> Any:
            page = self.context.new_page()
            page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
            page.goto(url)
            return page

        return self.run(open_page)

    def stop(self) -> defer.Deferred[None]:
        def close() -> None:
            try:
                if self.browser is not None:
                    self.browser.close()
            finally:
                if self._pw is not None:
                    self._pw.stop()

        d = self.run(close)
        d.addBoth(lambda r: (self._jobs.put(None), r)[1])
        return d


class BrowserTestCase(TestCase):
    """A test with a browser: ``self.bt`` once ``start_browser()`` has fired."""

    timeout = 120

    def require_browser(self) -> None:
        why = browser_missing()
        if why is None:
            return
        require(self, "browser", why)

    @defer.inlineCallbacks
    def start_browser(self) -> Any:
        """Launch Chromium; closed when the test ends (before the nodes started earlier stop)."""
        self.require_browser()
        self.bt = BrowserThread()
        self.addCleanup(self.bt.stop)
        yield self.bt.launch()

    def start_app_node(self, **config: Any) -> Any:
        """A node running the "browser-test" application and serving the fixture pages."""
        from tests.browser import app

        self.addCleanup(app.release_all)
        config.setdefault("moduleMap", {"browser-test": "tests.browser.app"})
        config.setdefault("webServerRootPath", FIXTURES)
        return start_node(self, **config)

    def in_browser(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``fn(*args)`` on the browser thread; a failed wait reports the console output."""
        d = self.bt.run(fn, *args)

        def explain(failure: Failure) -> Failure:
            from playwright.sync_api import TimeoutError as PlaywrightTimeout

            if failure.check(PlaywrightTimeout, AssertionError):
                console = "\n".join(self.bt.console[-40:]) or "(nothing)"
                raise AssertionError(f"{failure.getErrorMessage()}\nbrowser console:\n{console}")
            return failure

        return d.addErrback(explain)

    def drop_sockets(self, service: Any, code: int = 4000, reason: str = "test drop") -> list[str]:
        """Close every client socket of ``service`` from the server side; their ids."""
        conns = list(service.node.connections.values())
        for conn in conns:
            conn.close(code, reason)
        return [c.id for c in conns]


def base_url(service: Any) -> str:
    return f"http://127.0.0.1:{port_of(service)}"


def js_value(page: Any, expression: str) -> Any:
    """Evaluate ``expression`` in the page (a browser-thread helper)."""
    return page.evaluate(expression)
