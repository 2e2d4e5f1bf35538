# -*- test-case-name: tests.test_parity_rest -*-
"""
Custom error responses (``q.set_custom_error_response`` from ``init(application, q)``) over
REST and ``POST /ajax``, on a real node over loopback HTTP: the text and the HTTP status follow
the application's setting, as over WebSocket (tests/test_parity_node.py).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.rest_httpclient import HTTPClient
from tests.test_rest_http import base_url, start_rest_node


class CustomErrorsOverHTTPTests(TestCase):
    timeout = 30

    def setUp(self):
        self.node = start_rest_node(self, routes=[{"path": "/custom", "module": "rest_custom.py"},
                                                  {"path": "/simple",
                                                   "module": "rest_simple.py"}])
        self.http = HTTPClient(self, base_url(self.node))

    @defer.inlineCallbacks
    def test_no_type_handler(self):
        r = yield self.http.get("/custom/nope")
        self.assertEqual((r.status, r.json["error"]), (404, "Resource Not Found"))
        r = yield self.http.get("/simple/nope")  # another application: the node's own text
        self.assertEqual((r.status, r.json["error"]),
                         (404, "No handler defined for simple messages of type nope"))
        r = yield self.http.get("/custom/info")
        self.assertEqual((r.status, r.json), (200, {"ok": True}))

    @defer.inlineCallbacks
    def test_session_not_authenticated(self):
        r = yield self.http.get("/custom/info", headers={"Authorization": "Bearer a.b.c"})
        self.assertEqual((r.status, r.json["error"]), (401, "Please log in"))

    @defer.inlineCallbacks
    def test_ajax(self):
        r = yield self.http.post("/ajax", {"type": "ewd-register", "application": "custom",
                                           "jwt": True})
        token = r.json["token"]
        r = yield self.http.post("/ajax", {"type": "nope", "token": token})
        self.assertEqual((r.status, r.json["error"]), (404, "Resource Not Found"))
