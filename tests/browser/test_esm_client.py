# test-case-name: tests.browser.test_esm_client
"""
/qewd-client.mjs (the ES-module client, over the plain /ws endpoint) in headless Chromium
against a real node: start/reply/onIntermediate, concurrent same-type requests, a socket
dropped by the server, and the node's JWT rejection. Fixture page: tests/browser/www/esm.html.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from tests.browser import app
from tests.browser.harness import BrowserTestCase, base_url

START = "() => QEWD.start({application: 'browser-test', jwt: true}).then(() => true)"
LOGIN = """() => QEWD.reply({type: 'login', params: {username: 'rob', password: 'secret'}})
                 .then((f) => f.message.ok)"""


class ESMClientTests(BrowserTestCase):
    @defer.inlineCallbacks
    def open_page(self) -> Any:
        node = self.start_app_node()
        yield self.start_browser()
        page = yield self.bt.new_page(base_url(node) + "/esm.html")
        yield self.in_browser(_wait_js, page, "document.getElementById('status').textContent === 'loaded'")
        started = yield self.in_browser(page.evaluate, START)
        self.assertIs(started, True)
        return node, page

    @defer.inlineCallbacks
    def test_start_reply_and_intermediate_messages(self):
        node, page = yield self.open_page()
        [conn] = node.node.connections.values()
        self.assertEqual((conn.framing, conn.jwt), ("plain", True))
        out = yield self.in_browser(page.evaluate, """async () => {
            const seen = [];
            const login = await QEWD.reply(
                {type: 'login', params: {username: 'rob', password: 'secret'}},
                {onIntermediate: (f) => seen.push(['option', f.finished, f.message.text])});
            const echo = await QEWD.reply({type: 'echo', params: 'hi'});
            const bad = await QEWD.reply({type: 'login', params: {username: 'rob', password: 'no'}},
                                         (f) => seen.push(['function', f.finished, f.message.text]));
            const typed = await QEWD.reply({type: 'typed'},
                                           (f) => seen.push(['typed', f.type, f.message.text]));
            const items = await QEWD.reply({type: 'items'});
            return {seen, login: login.message.ok, echo: [echo.message['you sent'], echo.message.user],
                    bad: bad.message, typed: typed.message.done, items: items.message,
                    claims: QEWD.jwt, registered: QEWD.registered, events: events.map((e) => e[0])};
        }""")
        self.assertEqual(out["seen"], [["option", False, "checking credentials"],
                                       ["function", False, "checking credentials"],
                                       ["typed", "progress", "step 1"]])
        self.assertIs(out["login"], True)
        self.assertEqual(out["echo"], ["hi", "rob"])
        self.assertEqual(out["bad"], {"error": "Invalid login"})
        self.assertIs(out["typed"], True)
        self.assertEqual(out["items"], [1, 2, {"three": 3}])
        self.assertEqual((out["claims"]["application"], out["claims"]["userText"]),
                         ("browser-test", "Rob"))
        self.assertNotIn("username", out["claims"])  # a secret claim: only inside `qewd`
        self.assertIs(out["registered"], True)
        self.assertEqual(out["events"], ["ewd-registered", "error", "progress"])

    @defer.inlineCallbacks
    def test_concurrent_same_type_requests_get_their_own_replies(self):
        _node, page = yield self.open_page()
        yield self.in_browser(page.evaluate, """() => {
            window.out = {};
            window.inter = {};
            for (const [key, extra] of [['a', {}], ['b', {}], ['c', {fail: true}], ['d', {crash: true}]]) {
                inter[key] = [];
                QEWD.reply({type: 'hold', params: {key, ...extra}},
                           {onIntermediate: (f) => inter[key].push(f.message.text)})
                    .then((f) => { out[key] = f; }, (e) => { out[key] = {rejected: e.message}; });
            }
        }""")
        yield app.held("a", "b")
        app.release("b")
        yield self.in_browser(_wait_js, page, "out.b && out.c && out.d")
        early = yield self.in_browser(page.evaluate, "[out.a === undefined, inter.a]")
        self.assertEqual(early, [True, ["holding a"]])
        app.release("a")
        yield self.in_browser(_wait_js, page, "out.a")
        out = yield self.in_browser(page.evaluate, "({out, inter})")
        for key in "ab":
            final = out["out"][key]
            self.assertEqual((final["type"], final["finished"], final["message"]["key"]),
                             ("hold", True, key))
            self.assertNotIn("ms_requestId", final)
            self.assertEqual(out["inter"][key], ["holding " + key])
        self.assertEqual(out["out"]["c"]["message"], {"error": "refused c"})
        self.assertEqual((out["out"]["d"]["type"], out["out"]["d"]["message"]),
                         ("hold", {"error": "crashed d"}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_survives_a_socket_dropped_by_the_server(self):
        """In flight at the drop: rejected. Asked while down: sent after the re-register."""
        node, page = yield self.open_page()
        logged_in = yield self.in_browser(page.evaluate, LOGIN)
        self.assertIs(logged_in, True)
        yield self.in_browser(page.evaluate, """() => {
            window.inflight = QEWD.reply({type: 'hold', params: {key: 'inflight'}})
                .then(() => 'resolved', (e) => e.message);
            QEWD.once('socketDisconnected', () => {
                window.queued = QEWD.reply({type: 'echo', params: 'queued'});
            });
        }""")
        yield app.held("inflight")
        before = self.drop_sockets(node)
        yield self.in_browser(
            _wait_js, page, "events.filter((e) => e[0] === 'ewd-reregistered').length === 1")
        out = yield self.in_browser(page.evaluate, """async () => {
            const queued = await window.queued;
            const echo = await QEWD.reply({type: 'echo', params: 'after'});
            return {inflight: await window.inflight, queued: queued.message.user,
                    echo: [echo.message['you sent'], echo.message.user],
                    events: events.map((e) => e[0])};
        }""")
        self.assertEqual(out, {
            "inflight": "Connection lost before the reply arrived",
            "queued": "rob",
            "echo": ["after", "rob"],
            "events": ["ewd-registered", "socketDisconnected", "ewd-reregistered"],
        })
        [conn] = node.node.connections.values()
        self.assertNotIn(conn.id, before)
        self.assertTrue(conn.jwt)

    @defer.inlineCallbacks
    def test_jwt_rejection_resolves_then_ends_the_session(self):
        _node, page = yield self.open_page()
        out = yield self.in_browser(page.evaluate, """async () => {
            await QEWD.reply({type: 'expire'});
            const rejected = await QEWD.reply({type: 'echo', params: 'late'});
            const after = await QEWD.reply({type: 'echo'}).then(() => 'resolved', (e) => e.message);
            return {rejected, after, events: events.map((e) => e[0])};
        }""")
        self.assertEqual(out, {
            "rejected": {"type": "echo", "message": {"error": "Invalid JWT: Error: Token expired"}},
            "after": "Invalid JWT: Error: Token expired",
            "events": ["ewd-registered", "error", "socketDisconnected"],
        })


def _wait_js(page: Any, expression: str) -> None:
    page.wait_for_function(f"() => {expression}")
