# test-case-name: tests.browser.test_ewd_client
"""
/ewd-client.js (over /socket.io/socket.io.js) in headless Chromium against a real node:
per-request correlation (concurrent same-type requests, errors, crashes, array replies), the
node's JWT rejection, the string start form (session tokens) across a dropped socket, a
session resumed from a cookie, the official socket.io-client 2 bundle in place of ours, and the
ajax channel. Fixture page: tests/browser/www/ewd.html.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest

from tests.browser import app
from tests.browser.harness import REPO, BrowserTestCase, base_url


class EWDClientTests(BrowserTestCase):
    @defer.inlineCallbacks
    def open_page(self, query: str = "", node: Any = None) -> Any:
        node = node or self.start_app_node()
        if not hasattr(self, "bt"):
            yield self.start_browser()
        page = yield self.bt.new_page(base_url(node) + "/ewd.html" + query)
        yield self.in_browser(_wait_js, page, "seen('ewd-registered') === 1")
        return node, page

    @defer.inlineCallbacks
    def test_concurrent_same_type_requests_get_their_own_replies(self):
        """Each callback gets its own frames, whatever order the replies come in."""
        _node, page = yield self.open_page()
        yield self.in_browser(page.evaluate, """() => {
            track('a', {type: 'hold', params: {key: 'a'}});
            track('b', {type: 'hold', params: {key: 'b'}});
            track('c', {type: 'hold', params: {key: 'c', fail: true}});
            track('d', {type: 'hold', params: {key: 'd', crash: true}});
            track('items', {type: 'items'});
        }""")
        yield app.held("a", "b")
        app.release("b")
        yield self.in_browser(
            _wait_js, page, "finalOf('b') && finalOf('c') && finalOf('d') && finalOf('items')")
        early = yield self.in_browser(page.evaluate, "results.a")
        self.assertEqual([f["message"]["text"] for f in early], ["holding a"])  # not b's reply
        app.release("a")
        yield self.in_browser(_wait_js, page, "finalOf('a')")

        results = yield self.in_browser(page.evaluate, "results")
        for key in "ab":
            inter, final = results[key]
            self.assertEqual((inter["type"], inter["finished"], inter["message"]),
                             ("hold", False, {"text": "holding " + key}))
            self.assertEqual((final["type"], final["finished"]), ("hold", True))
            self.assertEqual((final["message"]["key"], final["message"]["text"]),
                             (key, "released " + key))
            self.assertIn("token", final["message"])
            self.assertNotIn("ms_requestId", final)
            self.assertNotIn("ms_requestId", final["message"])
        self.assertEqual(results["c"][1]["message"], {"error": "refused c"})
        # A handler crash is QEWD's {type: 'error', message: '<text>'}: given to its request.
        crash = results["d"][1]
        self.assertEqual((crash["type"], crash["finished"], crash["message"]),
                         ("hold", True, {"error": "crashed d"}))
        # An array reply, wrapped as {results: [...]} by the node for correlated requests.
        self.assertEqual(results["items"][0]["message"], [1, 2, {"three": 3}])
        errors = yield self.in_browser(page.evaluate, "events.filter(e => e[0] === 'error').length")
        self.assertEqual(errors, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the node logs the crash

    @defer.inlineCallbacks
    def test_typed_intermediate_goes_to_its_type_listeners(self):
        _node, page = yield self.open_page()
        yield self.in_browser(page.evaluate, "track('t', {type: 'typed'})")
        yield self.in_browser(_wait_js, page, "finalOf('t')")
        frames = yield self.in_browser(page.evaluate, "results.t")
        self.assertEqual([f["message"].get("done") for f in frames], [True])
        progress = yield self.in_browser(
            page.evaluate, "events.filter(e => e[0] === 'progress').map(e => e[1])")
        self.assertEqual([(p["type"], p["finished"], p["message"]["text"]) for p in progress],
                         [("progress", False, "step 1")])

    @defer.inlineCallbacks
    def test_jwt_rejection_reaches_its_callback_and_ends_the_session(self):
        """The node's rejection of a correlated request has neither ``finished`` nor
        ``disconnect``; the client still ends the session as QEWD's ``disconnect`` would."""
        _node, page = yield self.open_page()
        yield self.in_browser(page.evaluate, "track('x', {type: 'expire'})")
        yield self.in_browser(_wait_js, page, "finalOf('x')")
        yield self.in_browser(page.evaluate, "track('y', {type: 'echo', params: 'late'})")
        yield self.in_browser(_wait_js, page, "finalOf('y') && seen('socketDisconnected') === 1")
        [rejected] = yield self.in_browser(page.evaluate, "results.y")
        self.assertEqual(rejected, {"type": "echo",
                                    "message": {"error": "Invalid JWT: Error: Token expired"}})
        errors = yield self.in_browser(
            page.evaluate, "events.filter(e => e[0] === 'error').map(e => e[1].message.error)")
        self.assertEqual(errors, ["Invalid JWT: Error: Token expired"])
        after = yield self.in_browser(
            page.evaluate, "track('z', {type: 'echo'}); [EWD.send.length, results.z.length]")
        self.assertEqual(after, [0, 0])  # send is a no-op now, as in QEWD

    @defer.inlineCallbacks
    def test_string_start_form_is_session_mode_and_survives_a_drop(self):
        """``EWD.start(app, $, io, ajax, url)``: a server-side session, re-registered after
        a drop."""
        node, page = yield self.open_page("?form=string&url")
        jwt = yield self.in_browser(page.evaluate, "EWD.jwt")
        self.assertIs(jwt, False)
        [conn] = node.node.connections.values()
        self.assertFalse(conn.jwt)
        yield self.in_browser(_log_in_and_echo, page, "one")
        self.drop_sockets(node)
        yield self.in_browser(_wait_js, page, "seen('ewd-reregistered') === 1")
        echo = yield self.in_browser(_echo, page, "two")
        self.assertEqual(echo, {"you sent": "two", "user": "rob"})
        [conn] = node.node.connections.values()
        self.assertFalse(conn.jwt)

    @defer.inlineCallbacks
    def test_session_resumed_from_a_cookie(self):
        """A second page re-registers with the token another page put in the cookie."""
        node, first = yield self.open_page()
        yield self.in_browser(_log_in_and_echo, first, "first")
        yield self.in_browser(first.evaluate, "EWD.setCookie('ewdSession')")
        node, second = yield self.open_page("?cookie=ewdSession", node)
        seen = yield self.in_browser(second.evaluate, "events.map(e => e[0])")
        self.assertEqual(seen, ["ewd-reregistered", "ewd-registered"])
        echo = yield self.in_browser(_echo, second, "second")
        self.assertEqual(echo, {"you sent": "second", "user": "rob"})
        claims = yield self.in_browser(second.evaluate, "EWD.jwt")
        self.assertEqual((claims["application"], claims["userText"]), ("browser-test", "Rob"))

    @defer.inlineCallbacks
    def test_with_the_official_socket_io_client_2(self):
        """ewd-client.js over socket.io-client 2.5.0's own browser bundle (tests/js), which a
        page may bring instead of ours: correlation and the reconnect work the same."""
        bundle = os.path.join(REPO, "tests", "js", "node_modules", "socket.io-client", "dist",
                              "socket.io.js")
        if not os.path.exists(bundle):
            if os.environ.get("CI"):
                self.fail("tests/js/node_modules is required in CI (scripts/test.sh runs npm ci)")
            raise SkipTest("tests/js/node_modules missing (scripts/test.sh installs it)")
        node = self.start_app_node()
        yield self.start_browser()
        yield self.in_browser(lambda: self.bt.context.route(
            "**/socket.io/socket.io.js",
            lambda route: route.fulfill(path=bundle, content_type="application/javascript")))
        node, page = yield self.open_page("?url", node)
        version = yield self.in_browser(page.evaluate, "[io.protocol, io.version === undefined]")
        self.assertEqual(version, [4, True])  # theirs: ours sets io.version
        yield self.in_browser(page.evaluate, """() => {
            track('a', {type: 'hold', params: {key: 'a'}});
            track('b', {type: 'hold', params: {key: 'b'}});
        }""")
        yield app.held("a", "b")
        app.release("b")
        yield self.in_browser(_wait_js, page, "finalOf('b')")
        app.release("a")
        yield self.in_browser(_wait_js, page, "finalOf('a')")
        keys = yield self.in_browser(
            page.evaluate, "[finalOf('a').message.key, finalOf('b').message.key]")
        self.assertEqual(keys, ["a", "b"])

        yield self.in_browser(_log_in_and_echo, page, "before")
        self.drop_sockets(node)
        yield self.in_browser(_wait_js, page, "seen('ewd-reregistered') === 1")
        echo = yield self.in_browser(_echo, page, "after")
        self.assertEqual(echo, {"you sent": "after", "user": "rob"})

    @defer.inlineCallbacks
    def test_ajax_channel_with_a_custom_ajax_function(self):
        """No io: QEWD's POST /ajax channel, through the page's ajax function."""
        _node, page = yield self.open_page("?form=ajax")
        yield self.in_browser(page.evaluate, """() => {
            track('ok', {type: 'echo', params: 'over http'});
            track('bad', {type: 'nope'});
        }""")
        yield self.in_browser(_wait_js, page, "finalOf('ok') && finalOf('bad')")
        results = yield self.in_browser(page.evaluate, "results")
        self.assertEqual(results["ok"], [{"type": "echo", "finished": True, "message": {
            "you sent": "over http", "token": "session-token-1"}}])
        self.assertEqual(results["bad"][0]["message"], {"error": "no nope handler"})
        calls = yield self.in_browser(page.evaluate, "ajaxCalls.map(c => [c.url, c.data.type])")
        self.assertEqual(calls, [["/ajax", "ewd-register"], ["/ajax", "echo"], ["/ajax", "nope"]])

    @defer.inlineCallbacks
    def test_ajax_channel_against_the_node(self):
        """No io, no ajax function: the client's own XMLHttpRequest to the node's POST /ajax
        (issue 13 item 3): register, log in, a handler error, an expired token."""
        node, page = yield self.open_page("?form=xhr")
        yield self.in_browser(page.evaluate, """() => {
            track('login', {type: 'login', params: {username: 'rob', password: 'secret'}});
        }""")
        yield self.in_browser(_wait_js, page, "finalOf('login')")
        yield self.in_browser(page.evaluate, """() => {
            track('ok', {type: 'echo', params: 'over http'});
            track('bad', {type: 'nope'});
        }""")
        yield self.in_browser(_wait_js, page, "finalOf('ok') && finalOf('bad')")
        results = yield self.in_browser(page.evaluate, "results")
        [login] = results["login"]  # send() is not delivered over HTTP (QEWD's rule)
        self.assertIs(login["message"]["ok"], True)
        [ok] = results["ok"]
        self.assertEqual(ok["message"]["you sent"], "over http")
        self.assertEqual(ok["message"]["user"], "rob")  # the token from login came back
        self.assertEqual(node.tokens.session(ok["message"]["token"])["username"], "rob")
        self.assertEqual(results["bad"][0]["message"],
                         {"error": "Handler not defined for browser-test messages of type nope"})


# -- browser-thread steps ----------------------------------------------------------------


def _wait_js(page: Any, expression: str) -> None:
    page.wait_for_function(f"() => {expression}")


def _echo(page: Any, text: str) -> Any:
    key = "echo-" + text
    page.evaluate("([key, text]) => track(key, {type: 'echo', params: text})", [key, text])
    page.wait_for_function("(key) => finalOf(key)", arg=key)
    message = page.evaluate("(key) => finalOf(key).message", key)
    message.pop("token", None)  # JWT mode: the refreshed token
    return message


def _log_in_and_echo(page: Any, text: str) -> None:
    page.evaluate(
        "track('login', {type: 'login', params: {username: 'rob', password: 'secret'}})")
    page.wait_for_function("() => finalOf('login')")
    assert page.evaluate("finalOf('login').message.ok") is True
    assert _echo(page, text) == {"you sent": text, "user": "rob"}
