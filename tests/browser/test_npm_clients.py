# test-case-name: tests.browser.test_npm_clients
"""
QEWD's real ``ewd-client`` (npm 1.21.0) over socket.io-client 2.5's real browser bundle (npm),
in headless Chromium against a node: socket.io's defaults start on long-polling and upgrade to
WebSocket; forced to polling it stays there. Registers, logs in and sends either way. Both
files are served by the test from tests/js/node_modules; fixture page www/npm-ewd.html.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest

from tests.browser.harness import REPO, BrowserTestCase, base_url
from tests.browser.test_ewd_client import _log_in_and_echo, _wait_js

MODULES = os.path.join(REPO, "tests", "js", "node_modules")
FILES = {
    "**/npm/socket.io.js": os.path.join(MODULES, "socket.io-client", "dist", "socket.io.js"),
    "**/npm/ewd-client.js": os.path.join(MODULES, "ewd-client", "lib", "proto", "ewd-client.js"),
}


def _serve(path: str) -> Any:
    def handler(route: Any, request: Any = None) -> None:
        route.fulfill(path=path, content_type="application/javascript")
    return handler


class NpmClientTests(BrowserTestCase):
    @defer.inlineCallbacks
    def open_page(self, query: str = "") -> Any:
        for path in FILES.values():
            if not os.path.exists(path):
                if os.environ.get("CI"):
                    self.fail("tests/js/node_modules is required in CI (scripts/test.sh)")
                raise SkipTest("tests/js/node_modules missing (scripts/test.sh installs it)")
        node = self.start_app_node()
        yield self.start_browser()
        self.requests: list[str] = []

        def setup() -> Any:
            for pattern, path in FILES.items():
                self.bt.context.route(pattern, _serve(path))
            page = self.bt.context.new_page()
            page.on("console", lambda m: self.bt.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: self.bt.console.append(f"pageerror: {e}"))
            page.on("request", lambda r: self.requests.append(r.url))
            page.on("websocket", lambda ws: self.requests.append(ws.url))
            # a JSONP poll is a script tag: the page may never reach "load" while one waits
            page.goto(base_url(node) + "/npm-ewd.html" + query, wait_until="domcontentloaded")
            return page

        page = yield self.in_browser(setup)
        yield self.in_browser(_wait_js, page, "seen('ewd-registered') === 1")
        return node, page

    @defer.inlineCallbacks
    def transports_of(self, node: Any, want: str) -> Any:
        """The transport of the page's one connection, once it is ``want`` (bounded wait)."""
        for _ in range(200):
            conns = list(node.node.connections.values())
            if len(conns) == 1 and getattr(conns[0], "transport_name", None) == want:
                return conns[0]
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"no single {want} connection: {node.node.connections}")

    @defer.inlineCallbacks
    def test_defaults_poll_then_upgrade(self):
        node, page = yield self.open_page()
        yield self.in_browser(_log_in_and_echo, page, "before upgrade check")
        yield self.transports_of(node, "websocket")
        yield self.in_browser(_log_in_and_echo, page, "after upgrade")
        self.assertTrue(any("transport=polling" in u for u in self.requests), self.requests)
        self.assertTrue(any("transport=websocket" in u and "sid=" in u for u in self.requests),
                        self.requests)
        errors = yield self.in_browser(page.evaluate, "seen('error') + seen('socketDisconnected')")
        self.assertEqual(errors, 0)

    @defer.inlineCallbacks
    def test_jsonp_polling(self):
        """socket.io-client 2's forceJSONP: script-tag GETs (``j=``), form POSTs (``d=``)."""
        node, page = yield self.open_page("?polling&jsonp")
        yield self.in_browser(_log_in_and_echo, page, "over jsonp, with \"quotes\"\nand a newline")
        yield self.transports_of(node, "polling")
        self.assertTrue(any("&j=" in u for u in self.requests), self.requests)

    @defer.inlineCallbacks
    def test_polling_only(self):
        node, page = yield self.open_page("?polling")
        yield self.in_browser(_log_in_and_echo, page, "over polling")
        conn = yield self.transports_of(node, "polling")
        self.assertEqual(conn.application, "browser-test")
        self.assertFalse(any("transport=websocket" in u for u in self.requests), self.requests)
