# -*- test-case-name: tests.test_rest_http -*-
"""
Local REST routes on a real node over loopback HTTP (issue 13 items 1, 2, 4): a real client
(twisted.web.client.Agent, keep-alive pool) against routes mounted by the startup file's
``routes``.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService, config_from_dict
from qewd_twisted.auth.tokens import TokenCodec
from tests.rest_httpclient import HTTPClient

SECRET = "someSecret123"
APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")


def start_rest_node(test: TestCase, routes=None, **config):
    config.setdefault("listen", "tcp:0:interface=127.0.0.1")
    config.setdefault("jwt", {"secret": SECRET})
    config.setdefault("shutdownGracePeriod", 1)
    routes = routes if routes is not None else [
        {"path": "/api", "module": "rest_api.py"},
        {"path": "/simple", "module": "rest_simple.py"},
    ]
    service = QEWDService(config_from_dict(config, APPS, routes=routes), reactor)
    service.startService()
    test.addCleanup(service.stopService)
    return service


def base_url(service) -> str:
    return f"http://127.0.0.1:{service.ports[0].getHost().port}"


class LocalRoutesTests(TestCase):
    timeout = 30

    def setUp(self):
        self.node = start_rest_node(self)
        self.http = HTTPClient(self, base_url(self.node))

    @defer.inlineCallbacks
    def test_get_with_path_variable(self):
        r = yield self.http.get("/api/users/42")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json, {"id": "42", "method": "GET", "user": None})
        self.assertRegex(r.header("x-responsetime"), r"^\d+ms$")
        self.assertEqual(r.header("content-type"), "application/json; charset=utf-8")

    @defer.inlineCallbacks
    def test_post_json_and_error_status(self):
        r = yield self.http.post("/api/users", {"name": "ann"})
        self.assertEqual((r.status, r.json), (200, {"ok": True, "name": "ann"}))
        r = yield self.http.post("/api/users", {"nom": "ann"})
        self.assertEqual((r.status, r.json), (422, {"error": "name is required"}))

    @defer.inlineCallbacks
    def test_form_body(self):
        r = yield self.http.request("POST", "/api/echo/x?a=1&a=2&b=", raw=b"name=ann&x=1",
                                    headers={"content-type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json["body"], {"name": "ann", "x": "1"})
        self.assertEqual(r.json["query"], {"a": ["1", "2"], "b": ""})
        self.assertEqual(r.json["args"], {"rest": "x"})
        self.assertEqual(r.json["ip"], "127.0.0.1")

    @defer.inlineCallbacks
    def test_crash_is_500_and_node_goes_on(self):
        r = yield self.http.get("/api/crash")
        self.assertEqual((r.status, r.json),
                         (500, {"error": "Unexpected Exception occurred: boom"}))
        self.flushLoggedErrors(ValueError)
        r = yield self.http.get("/api/users/1")
        self.assertEqual(r.status, 200)

    @defer.inlineCallbacks
    def test_async_handler_runs_on_reactor(self):
        r = yield self.http.get("/api/later/7")
        self.assertEqual((r.status, r.json), (200, {"x": "7", "thread": "reactor"}))

    @defer.inlineCallbacks
    def test_unknown_path_404_wrong_method_405_head(self):
        r = yield self.http.get("/api/nothing/here")
        self.assertEqual((r.status, r.json), (404, {"error": "url could not be matched"}))
        r = yield self.http.request("DELETE", "/api/users/3")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.json, {"error": "Method DELETE is not allowed for /api/users/3"})
        self.assertEqual(r.header("allow"), "GET, HEAD")
        r = yield self.http.request("HEAD", "/api/users/3")
        self.assertEqual((r.status, r.raw), (200, b""))

    @defer.inlineCallbacks
    def test_malformed_json_400(self):
        r = yield self.http.request("POST", "/api/users", raw=b'{"name": ')
        self.assertEqual(r.status, 400)
        self.assertTrue(r.json["error"].startswith("Invalid JSON in request body"))

    @defer.inlineCallbacks
    def test_list_and_empty_replies(self):
        r = yield self.http.get("/api/list")
        self.assertEqual((r.status, r.json), (200, [1, 2, 3]))
        r = yield self.http.get("/api/silent")
        self.assertEqual((r.status, r.json), (200, {}))

    @defer.inlineCallbacks
    def test_simple_form(self):
        r = yield self.http.get("/simple/info?x=1")
        self.assertEqual((r.status, r.json), (200, {"type": "info", "query": {"x": "1"}}))
        r = yield self.http.get("/simple/other")
        self.assertEqual((r.status, r.json), (404, {
            "error": "No handler defined for simple messages of type other"}))

    @defer.inlineCallbacks
    def test_keep_alive(self):
        """Many requests on one persistent connection: the pool reuses it."""
        for i in range(5):
            r = yield self.http.get(f"/api/users/{i}")
            self.assertEqual(r.json["id"], str(i))
        self.assertEqual(len(self.http.pool._connections), 1)
        (conns,) = self.http.pool._connections.values()
        self.assertEqual(len(conns), 1)


class JWTOverHTTPTests(TestCase):
    timeout = 30

    def setUp(self):
        self.node = start_rest_node(self)
        self.http = HTTPClient(self, base_url(self.node))
        self.tokens = self.node.tokens

    @defer.inlineCallbacks
    def login(self):
        r = yield self.http.post("/api/login", {"username": "rob", "password": "secret"})
        self.assertEqual(r.status, 200)
        return r.json["token"]

    @defer.inlineCallbacks
    def test_login_then_bearer(self):
        token = yield self.login()
        session = self.tokens.session(token)
        self.assertEqual(session["application"], "api")
        self.assertEqual((session["username"], session["authenticated"]), ("rob", True))
        self.assertEqual(session["ipAddress"], "127.0.0.1")
        self.assertEqual(session["timeout"], 1200)
        auth = {"authorization": f"Bearer {token}"}
        r = yield self.http.get("/api/users/9", headers=auth)
        self.assertEqual(r.json["user"], "rob")
        self.tokens.session(r.json["token"])  # the refreshed token verifies
        r = yield self.http.get("/api/private", headers=auth)
        self.assertEqual((r.status, r.json["username"]), (200, "rob"))
        r = yield self.http.get("/api/members", headers=auth)
        self.assertEqual((r.status, r.json["member"]), (200, "rob"))

    @defer.inlineCallbacks
    def test_missing_tampered_expired_wrong_application(self):
        r = yield self.http.get("/api/private")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json["error"], "Authorization Header missing or JWT not found in "
                         "header (expected format: Bearer {{JWT}}")
        r = yield self.http.get("/api/members")
        self.assertEqual(r.status, 401)
        token = yield self.login()
        head, payload, sig = token.split(".")
        tampered = f"{head}.{payload}.{'A' * len(sig)}"
        r = yield self.http.get("/api/users/1", headers={"authorization": f"Bearer {tampered}"})
        self.assertEqual((r.status, r.json),
                         (403, {"error": "Invalid JWT: Error: Signature verification failed"}))
        old = TokenCodec(SECRET, clock=_Past()).register_token("api", {}, timeout=10)
        r = yield self.http.get("/api/users/1", headers={"authorization": f"Bearer {old}"})
        self.assertEqual((r.status, r.json), (403, {"error": "Invalid JWT: Error: Token expired"}))
        other = self.tokens.register_token("chat", {"authenticated": True})
        r = yield self.http.get("/api/users/1", headers={"authorization": f"Bearer {other}"})
        self.assertEqual(r.status, 403)
        self.assertEqual(r.json["error"],
                         "Invalid JWT: the token was issued for application chat")

    @defer.inlineCallbacks
    def test_cookie_and_response_headers(self):
        r = yield self.http.get("/api/cookie")
        self.assertEqual(r.status, 200)
        self.assertNotIn("token", r.json)
        self.assertEqual(r.json, {"ok": True})
        cookie = r.header("set-cookie")
        self.assertTrue(cookie.startswith("qewd=ey"), cookie)
        self.assertTrue(cookie.endswith("; HttpOnly"), cookie)
        self.assertEqual(r.header("x-extra"), "yes")
        jwt = cookie.split("=", 1)[1].split(";")[0]
        self.assertEqual(self.tokens.session(jwt)["username"], "cookie-monster")


class _Past:
    def seconds(self):
        return 1_000_000_000.0


class ConventionsTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_cors_and_preflight(self):
        node = start_rest_node(self, cors=True)
        http = HTTPClient(self, base_url(node))
        r = yield http.request("OPTIONS", "/api/users/1")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.header("access-control-allow-origin"), "*")
        self.assertEqual(r.header("access-control-allow-methods"),
                         "GET, PUT, DELETE, POST, OPTIONS")
        r = yield http.get("/api/users/1")
        self.assertEqual(r.header("access-control-allow-credentials"), "true")
        self.assertIn("Authorization", r.header("access-control-allow-headers"))

    @defer.inlineCallbacks
    def test_no_cors_by_default(self):
        node = start_rest_node(self)
        r = yield HTTPClient(self, base_url(node)).get("/api/users/1")
        self.assertIsNone(r.headers.getRawHeaders("access-control-allow-origin"))

    @defer.inlineCallbacks
    def test_body_over_limit_413_never_reaches_handler(self):
        node = start_rest_node(self, maxBodySize=2048)
        http = HTTPClient(self, base_url(node))
        r = yield http.post("/api/users", {"name": "x" * 4096})
        # refused by the HTTP layer from Content-Length, before any of the body is read
        # (transports/http.py), in JSON as every REST error; the connection closed
        self.assertEqual((r.status, r.json),
                         (413, {"error": "Request body too large: at most 2048 bytes here"}))
        self.assertEqual(r.header("content-type"), "application/json; charset=utf-8")
        r = yield http.post("/api/users", {"name": "x" * 1000})
        self.assertEqual(r.status, 200)

    @defer.inlineCallbacks
    def test_handler_timeout_504(self):
        node = start_rest_node(self, handlerTimeout=0.2)
        r = yield HTTPClient(self, base_url(node)).get("/api/never")
        self.assertEqual(r.status, 504)
        self.assertIn("did not finish", r.json["error"])


class AjaxTests(TestCase):
    """``POST /ajax`` (issue 13 item 3, docs/protocol.md §1.7): any QEWD message over HTTP, the
    same registration, tokens, handlers and error texts as over a WebSocket."""

    timeout = 30

    def setUp(self):
        self.node = start_rest_node(self, moduleMap={"demo": "tests.apps.demo"})
        self.http = HTTPClient(self, base_url(self.node))

    @defer.inlineCallbacks
    def test_jwt_register_and_messages(self):
        r = yield self.http.post("/ajax", {"type": "ewd-register", "application": "demo",
                                           "jwt": True})
        self.assertEqual(r.status, 200)
        token = r.json["token"]
        self.assertEqual(self.node.tokens.session(token)["application"], "demo")
        r = yield self.http.post("/ajax", {"type": "login", "token": token,
                                           "params": {"username": "rob", "password": "secret"}})
        self.assertEqual(r.status, 200, r.raw)
        self.assertIs(r.json["ok"], True)
        session = self.node.tokens.session(r.json["token"])
        self.assertEqual(session["username"], "rob")
        r = yield self.http.post("/ajax", {"type": "login", "token": token,
                                           "params": {"username": "rob", "password": "x"}})
        self.assertEqual((r.status, r.json), (400, {"error": "Invalid login"}))

    @defer.inlineCallbacks
    def test_session_mode_and_errors(self):
        r = yield self.http.post("/ajax", {"type": "ewd-register", "application": "demo"})
        token = r.json["token"]
        r = yield self.http.post("/ajax", {"type": "nope", "token": token})
        self.assertEqual((r.status, r.json),
                         (400, {"error": "Handler not defined for demo messages of type nope"}))
        r = yield self.http.post("/ajax", {"type": "x", "token": "garbage.gar.bage"})
        self.assertEqual(r.status, 400)
        self.assertTrue(r.json["error"].startswith("Invalid JWT"), r.json)
        r = yield self.http.post("/ajax", [1])
        self.assertEqual((r.status, r.json), (400, {"error": "Invalid message: expected a JSON "
                                                             "object"}))
        r = yield self.http.post("/ajax", {"type": "ewd-jwt-encode"})
        self.assertEqual(r.json, {"error": "Message type ewd-jwt-encode is reserved for "
                                           "internal use"})
        r = yield self.http.get("/ajax")
        self.assertEqual((r.status, r.header("allow")), (405, "POST"))
        r = yield self.http.request("POST", "/ajax", raw=b"{")
        self.assertEqual(r.status, 400)


class ExampleTests(TestCase):
    """examples/rest (the node docs/rest.md's curl session runs against) works as written."""

    timeout = 30

    @defer.inlineCallbacks
    def test_example_session(self):
        import dataclasses

        from qewd_twisted.config import load_config

        example = os.path.join(os.path.dirname(APPS), os.pardir, "examples", "rest", "startup.py")
        config = dataclasses.replace(load_config(example),
                                     listen=["tcp:0:interface=127.0.0.1"], shutdown_grace=1)
        node = QEWDService(config, reactor)
        node.startService()
        self.addCleanup(node.stopService)
        http = HTTPClient(self, base_url(node))
        r = yield http.get("/api/users/1")
        self.assertEqual(r.json, {"id": "1", "name": "Rob"})
        r = yield http.post("/api/login", {"username": "rob", "password": "secret"})
        auth = {"authorization": "Bearer " + r.json["token"]}
        r = yield http.post("/api/users", {"name": "Ann"}, headers=auth)
        self.assertEqual((r.status, r.json["name"], r.json["by"]), (200, "Ann", "rob"))
        r = yield http.post("/api/users", {"name": "Ann"})
        self.assertEqual(r.status, 401)
        r = yield http.get("/api/whoami", headers=auth)
        self.assertEqual(r.json["username"], "rob")


class ShutdownTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_in_flight_request_answered_503_on_stop(self):
        from tests.interop.peer import LogWatcher

        logs = LogWatcher(self)
        node = start_rest_node(self, shutdownGracePeriod=0.2)
        holding = logs.wait_for("rest_api: holding")
        pending = HTTPClient(self, base_url(node)).get("/api/never")
        yield holding
        self.assertEqual(len(node.node.connections), 1)  # the HTTP request's connection
        yield node.stopService()
        r = yield pending
        self.assertEqual((r.status, r.json), (503, {"error": "Server is shutting down"}))
        self.assertEqual(node.node.connections, {})


class MultipartTests(TestCase):
    @defer.inlineCallbacks
    def test_malformed_multipart_reaches_the_route_as_text(self):
        """Found by tests/test_rest_fuzz.py: twisted.web's form parsing answered a bare 400."""
        node = start_rest_node(self)
        r = yield HTTPClient(self, base_url(node)).request(
            "POST", "/api/echo/x", raw=b"\x00", headers={"content-type": "multipart/form-data"})
        self.assertEqual((r.status, r.json["body"]), (200, "\x00"))


class HttpConnectionTests(TestCase):
    def test_provides_iconnection(self):
        from twisted.web.test.requesthelper import DummyRequest
        from zope.interface.verify import verifyObject

        from qewd_twisted.core.interfaces import IConnection
        from qewd_twisted.rest import HttpConnection

        lost = []
        request = DummyRequest([b"api"])
        conn = HttpConnection(request, "127.0.0.1", 0.0, reactor, False, lost=lost.append)
        verifyObject(IConnection, conn)
        conn.send({"type": "restRequest", "finished": False, "message": {"x": 1}})
        self.assertEqual(request.written, [])  # intermediate frames are not HTTP answers
        conn.send({"type": "restRequest", "finished": True, "message": {"ok": 1}})
        self.assertEqual((request.responseCode or 200, b"".join(request.written)),
                         (200, b'{"ok":1}'))
        self.assertEqual(lost, [conn])
        conn.send({"type": "restRequest", "finished": True, "message": {"again": 1}})
        self.assertEqual(b"".join(request.written), b'{"ok":1}')
