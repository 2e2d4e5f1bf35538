# test-case-name: tests.browser.test_seed
"""
The seed's page (examples/jwt/www/index.html) in headless Chromium, against the seed's two
nodes started in-process: the master (jwt_app.py, serving the page) routes ``login`` to the
micro-service (test_app.py). The page uses /socket.io/socket.io.js and /ewd-client.js.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer

from tests.browser.harness import ARTIFACTS, REPO, BrowserTestCase, base_url
from tests.integration.nodes import port_of, start_node

EXAMPLE = os.path.join(REPO, "examples", "jwt")


class SeedPageTests(BrowserTestCase):
    @defer.inlineCallbacks
    def start_seed(self) -> Any:
        """The micro-service, then the master (as examples/jwt/*.py, on ephemeral ports)."""
        ms = start_node(self, base_dir=EXAMPLE, moduleMap={"test-app": "test_app.py"})
        master = start_node(
            self, base_dir=EXAMPLE, moduleMap={"jwt": "jwt_app.py"}, webServerRootPath="www",
            u_services=[{"application": "jwt", "types": {"login": {
                "url": f"http://127.0.0.1:{port_of(ms)}", "application": "test-app"}}}],
        )
        for link in master.micro_services.links.values():
            yield link.when_up()
        yield self.start_browser()
        page = yield self.bt.new_page(base_url(master) + "/")
        yield self.in_browser(_wait_text, page, "#status", "registered")
        return master, page

    @defer.inlineCallbacks
    def test_login_test_message_and_broadcast(self):
        """Log in through the micro-service (intermediate shown), then ``test`` on the master."""
        _master, page = yield self.start_seed()
        yield self.in_browser(_log_in, page, "rob", "secret")
        yield self.in_browser(_wait_text, page, "#login-result", "Logged in")
        state = yield self.in_browser(_texts, page, "#progress", "#user", "#login-result@class")
        self.assertEqual(state, ["checking credentials", "as Rob", "ok"])

        yield self.in_browser(_send_test, page, "hello")
        yield self.in_browser(_wait_text, page, "#test-reply", "You sent: hello")
        yield self.in_browser(_wait_text, page, "#broadcast", '{"test":"message 2"}')
        state = yield self.in_browser(_texts, page, "#test-user", "#registrations")
        self.assertEqual(state, ["rob", "1"])

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "browser-logged-in.png")
        yield self.in_browser(lambda: page.screenshot(path=shot, full_page=True))
        self.assertTrue(os.path.getsize(shot) > 0)

    @defer.inlineCallbacks
    def test_bad_password_shows_the_error(self):
        """The micro-service's error reply reaches the page (QEWD.js drops it, §4.4 item 8)."""
        _master, page = yield self.start_seed()
        yield self.in_browser(_log_in, page, "rob", "wrong")
        yield self.in_browser(_wait_text, page, "#login-result", "Invalid login")
        state = yield self.in_browser(
            _texts, page, "#progress", "#login-result@class", "#test-button@disabled")
        self.assertEqual(state, ["checking credentials", "error", "true"])

    @defer.inlineCallbacks
    def test_survives_a_socket_dropped_by_the_server(self):
        """After a drop the page re-registers with its JWT and stays logged in."""
        master, page = yield self.start_seed()
        yield self.in_browser(_log_in, page, "rob", "secret")
        yield self.in_browser(_wait_text, page, "#login-result", "Logged in")
        before = self.drop_sockets(master)
        self.assertEqual(len(before), 1)

        yield self.in_browser(_wait_text, page, "#status", "re-registered")
        state = yield self.in_browser(_texts, page, "#disconnects", "#registrations")
        self.assertEqual(state, ["1", "2"])
        [conn] = master.node.connections.values()
        self.assertNotIn(conn.id, before)
        self.assertTrue(conn.jwt)
        self.assertEqual(conn.application, "jwt")

        # No new login: the secret claims (username, authenticated) came through the drop.
        yield self.in_browser(_send_test, page, "after the drop")
        yield self.in_browser(_wait_text, page, "#test-reply", "You sent: after the drop")
        state = yield self.in_browser(_texts, page, "#test-user", "#login-result")
        self.assertEqual(state, ["rob", "Logged in"])


# -- browser-thread steps ----------------------------------------------------------------


def _wait_text(page: Any, selector: str, text: str) -> None:
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel).textContent === text", arg=[selector, text])


def _texts(page: Any, *selectors: str) -> list[str]:
    """Text of each selector; ``sel@attr`` reads an attribute (``disabled`` -> "true"/"false")."""
    out = []
    for spec in selectors:
        sel, _, attr = spec.partition("@")
        if attr == "disabled":
            out.append(str(page.eval_on_selector(sel, "el => el.disabled")).lower())
        elif attr:
            out.append(page.get_attribute(sel, attr))
        else:
            out.append(page.text_content(sel))
    return out


def _log_in(page: Any, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-button")


def _send_test(page: Any, text: str) -> None:
    page.wait_for_selector("#test-button:not([disabled])")
    page.fill("#test-text", text)
    page.click("#test-button")
