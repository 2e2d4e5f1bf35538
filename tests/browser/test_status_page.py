# test-case-name: tests.browser.test_status_page
"""
The operator's status page (/status, docs/operations.md) in headless Chromium: HTTP Basic auth
with managementPassword, the link table following a micro-service link down and up again, and
the request rates after a forwarded login.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer

from tests.browser.harness import ARTIFACTS, BrowserTestCase, base_url
from tests.ports import reserve_port
from tests.integration.test_microservices import (
    client,
    link_up,
    login,
    start_master,
    start_ms,
)

PASSWORD = "status-page-" + "pw41"


class StatusPageTests(BrowserTestCase):
    @defer.inlineCallbacks
    def test_needs_the_management_password(self):
        node = start_ms(self, managementPassword=PASSWORD)
        yield self.start_browser()
        url = base_url(node) + "/status"
        status = yield self.in_browser(_status_code, self.bt.browser, url, None)
        self.assertEqual(status, 401)
        status = yield self.in_browser(_status_code, self.bt.browser, url, "not-" + PASSWORD)
        self.assertEqual(status, 401)
        status = yield self.in_browser(_status_code, self.bt.browser, url, PASSWORD)
        self.assertEqual(status, 200)

    @defer.inlineCallbacks
    def test_links_and_requests(self):
        """The page shows the link up, a forwarded login, then the link down, then up again."""
        ms_port = reserve_port(self)  # the micro-service comes back on it (tests/ports.py)
        ms = start_ms(self, listen=f"tcp:{ms_port}:interface=127.0.0.1")
        master = start_master(self, ms, managementPassword=PASSWORD, types=("login",))
        yield defer.ensureDeferred(link_up(master))
        c, token = yield defer.ensureDeferred(client(self, master))
        frames = yield defer.ensureDeferred(login(c, token, "user-3"))
        self.assertIs(frames[-1]["message"]["ok"], True)
        link_url = f"http://127.0.0.1:{ms_port}"

        yield self.start_browser()
        page = yield self.in_browser(_open, self.bt.browser, base_url(master) + "/status")
        row = f'#links tr[data-url="{link_url}"]'
        yield self.in_browser(_shows, page, f'{row}[data-state="up"]')
        cells = yield self.in_browser(_cells, page, "#requests-recent tbody tr")
        self.assertEqual(cells, [["jwt", "login", "1", "0", "0.017", cells[0][5]]])
        summary = yield self.in_browser(lambda: page.text_content("#connections"))
        self.assertTrue(summary.startswith("1 connected"), summary)

        # the micro-service goes away: the row turns "down" and the event list says why
        for conn in list(ms.node.connections.values()):
            conn.close(4000, "test: drop the link")
        yield ms.stopService()
        yield link_state(master, link_url, "down")
        yield self.in_browser(_shows, page, f'{row}[data-state="down"]')
        events = yield self.in_browser(lambda: page.text_content("#events"))
        self.assertIn(f"link {link_url} is down", events)
        readiness = yield self.in_browser(lambda: page.text_content("#readiness"))
        # it has registered once, so the node stays ready; the page says the link is down
        self.assertEqual(readiness, f"ready (links down now: {link_url})")

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "browser-status-page.png")
        yield self.in_browser(lambda: page.screenshot(path=shot, full_page=True))

        # back on the same port: the link re-registers and the page shows it
        start_ms(self, listen=f"tcp:{ms_port}:interface=127.0.0.1")
        yield link_state(master, link_url, "up")
        yield self.in_browser(_shows, page, f'{row}[data-state="up"]')
        cells = yield self.in_browser(_cells, page, f"{row}")
        self.assertEqual(cells[0][6], "1 / 1")  # registered once, re-registered once


# -- browser-thread steps ----------------------------------------------------------------


def _context(browser: Any, password: str | None) -> Any:
    credentials = {"username": "ops", "password": password} if password is not None else None
    return browser.new_context(http_credentials=credentials)


def _status_code(browser: Any, url: str, password: str | None) -> int:
    """The status a page navigation ends with; Chromium gives up on refused credentials with
    net::ERR_INVALID_AUTH_CREDENTIALS, so the status is then read with the context's
    request API (same credentials)."""
    from playwright.sync_api import Error

    context = _context(browser, password)
    try:
        try:
            return context.new_page().goto(url).status
        except Error as e:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(e), e
            return context.request.get(url).status
    finally:
        context.close()


def _open(browser: Any, url: str) -> Any:
    page = _context(browser, PASSWORD).new_page()
    response = page.goto(url)
    assert response.status == 200, response.status
    return page


def link_state(master: Any, url: str, state: str) -> defer.Deferred[None]:
    """Fires when the master's link to ``url`` is in ``state`` (at once if it already is)."""
    link = master.micro_services.links[url]
    d: defer.Deferred[None] = defer.Deferred()
    if link.state.value == state:
        d.callback(None)
        return d

    def changed(_link: Any, new: Any) -> None:
        if new.value == state and not d.called:
            unsubscribe()
            d.callback(None)

    unsubscribe = link.on_state_change(changed)
    return d


def _shows(page: Any, selector: str) -> None:
    """Reload once (the node's state has already changed) and require ``selector``."""
    page.reload()
    if page.query_selector(selector) is None:
        raise AssertionError(f"{selector} is not on the page:\n{page.text_content('body')}")


def _cells(page: Any, rows: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        rows, "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent))")
