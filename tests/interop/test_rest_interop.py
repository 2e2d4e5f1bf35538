# -*- test-case-name: tests.interop.test_rest_interop -*-
"""
REST across QEWD.js and qewd-twisted (issue 13 item 6), with real QEWD.js nodes.

A QEWD.js primary (tests/interop/js/rest_primary.js, u_services object form) forwards REST
routes to our node as ``restRequest`` messages (docs/protocol.md §4.5); our node dispatches them
by ``pathTemplate`` and method to tests/apps/rest_api.py's ``routes`` table. Tokens our node
issues are accepted by the QEWD.js primary.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.httpclient import HTTPClient
from tests.integration.nodes import port_of
from tests.interop.peer import PeerProcess, free_port, peer_home, require_peer
from tests.test_rest_http import start_rest_node

JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def start_qewd_rest_primary(test: TestCase, port: int, ms_url: str):
    """The QEWD.js primary of rest_primary.js on ``port``; fires once it has registered with
    the micro-service at ``ms_url``."""
    env = {"QEWD_REST_PRIMARY_PORT": str(port), "QEWD_REST_MS_URL": ms_url,
           "NODE_PATH": os.path.join(peer_home(), "node_modules")}
    primary = PeerProcess(test, os.path.join(JS, "rest_primary.js"), env,
                          f"QEWD.js REST primary :{port}")
    ready = primary.wait_for(f"{ms_url} micro-service ready")
    return primary.start(), ready


class QEWDPrimaryToPythonMicroServiceTests(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        require_peer(self, spawn=True)
        self.ms = start_rest_node(self, routes=[], moduleMap={"api": "rest_api.py"})
        ms_url = f"http://127.0.0.1:{port_of(self.ms)}"
        port = free_port()
        self.primary, ready = start_qewd_rest_primary(self, port, ms_url)
        yield ready
        self.http = HTTPClient(self, f"http://127.0.0.1:{port}")

    @defer.inlineCallbacks
    def test_forwarded_routes(self):
        r = yield self.http.get("/api/users/42")
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual((r.json["id"], r.json["method"], r.json["user"]), ("42", "GET", None))
        self.assertRegex(r.header("x-responsetime"), r"^\d+ms$")
        session = self.ms.tokens.session(r.json["token"])
        self.assertEqual(session["application"], "api")
        # a handler's {error, status} keeps its status through the QEWD.js primary
        r = yield self.http.post("/api/users", {"nom": "x"})
        self.assertEqual((r.status, r.json), (422, {"error": "name is required"}))
        r = yield self.http.post("/api/users", {"name": "ann"})
        self.assertEqual((r.status, r.json["name"]), (200, "ann"))
        # a :destination path variable picks the destination
        r = yield self.http.get("/api/store/py/stock?x=1")
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.json["args"], {"destination": "py"})
        self.assertEqual(r.json["pathTemplate"], "/api/store/:destination/stock")
        self.assertEqual(r.json["query"], {"x": "1"})

    @defer.inlineCallbacks
    def test_crash_answers_instead_of_hanging(self):
        """QEWD.js's own micro-services leave the request hanging on a crash (§4.5 item 8);
        ours answer with the request id, so the QEWD.js primary maps it to HTTP."""
        r = yield self.http.get("/api/crash")
        self.flushLoggedErrors(ValueError)
        self.assertEqual((r.status, r.json),
                         (500, {"error": "Unexpected Exception occurred: boom"}))

    @defer.inlineCallbacks
    def test_our_token_accepted_by_the_qewd_primary(self):
        r = yield self.http.post("/api/login", {"username": "rob", "password": "secret"})
        self.assertEqual(r.status, 200, r.raw)
        token = r.json["token"]
        self.assertEqual(self.ms.tokens.session(token)["username"], "rob")
        r = yield self.http.get("/api/users/1", headers={"authorization": f"Bearer {token}"})
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.json["user"], "rob")
        # and a tampered one is refused by the QEWD.js primary itself (§4.5 step 3)
        r = yield self.http.get("/api/users/1",
                                headers={"authorization": f"Bearer {token[:-4]}AAAA"})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json["error"], "Invalid JWT: Error: Signature verification failed")
