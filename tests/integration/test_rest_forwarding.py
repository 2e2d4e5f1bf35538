# -*- test-case-name: tests.integration.test_rest_forwarding -*-
"""
REST micro-service forwarding between real nodes on loopback (issue 13 item 5): a Python
primary forwards REST routes to Python micro-services over its links; a real HTTP client.
Per-request correlation under 200 concurrent requests, group fan-out, link down (503), a
micro-service that never answers (504), and a micro-service process killed mid-request
(``twistd`` child: 503, and the primary goes on).
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.httpclient import HTTPClient
from tests.integration.nodes import port_of
from tests.integration.processes import TwistdProcess, free_port
from tests.test_rest_http import APPS, SECRET, base_url, start_rest_node


def start_ms(test):
    return start_rest_node(test, routes=[], moduleMap={"api": "rest_api.py"})


def url_of(node) -> str:
    return f"http://127.0.0.1:{port_of(node)}"


def start_primary(test, destinations, **config):
    routes = [
        {"path": "/api/users/:id", "method": "GET", "destination": "one"},
        {"path": "/api/never", "method": "GET", "destination": "one"},
        {"path": "/api/store/:destination/stock", "method": "GET"},
        {"path": "/api/login", "method": "POST", "destination": "one"},
    ]
    return start_rest_node(test, routes=[], u_services={
        "destinations": destinations, "routes": routes}, **config)


@defer.inlineCallbacks
def links_up(primary):
    yield defer.gatherResults([link.when_up() for link in
                               primary.micro_services.links.values()])


class PythonPrimaryTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.ms1, self.ms2 = start_ms(self), start_ms(self)
        self.primary = start_primary(self, {
            "one": {"host": url_of(self.ms1), "application": "api"},
            "two": {"host": url_of(self.ms2), "application": "api"},
            "both": {"destinations": ["one", "two"]},
        })
        yield links_up(self.primary)
        self.http = HTTPClient(self, base_url(self.primary))

    @defer.inlineCallbacks
    def test_forwarded_and_token_round_trip(self):
        r = yield self.http.post("/api/login", {"username": "rob", "password": "secret"})
        self.assertEqual(r.status, 200, r.raw)
        token = r.json["token"]
        r = yield self.http.get("/api/users/5", headers={"authorization": f"Bearer {token}"})
        self.assertEqual((r.status, r.json["id"], r.json["user"]), (200, "5", "rob"))
        self.assertRegex(r.header("x-responsetime"), r"^\d+ms$")

    @defer.inlineCallbacks
    def test_200_concurrent_requests_each_get_their_own_reply(self):
        ds = [self.http.get(f"/api/users/{i}") for i in range(200)]
        replies = yield defer.gatherResults(ds)
        self.assertEqual([r.status for r in replies], [200] * 200)
        self.assertEqual([r.json["id"] for r in replies], [str(i) for i in range(200)])

    @defer.inlineCallbacks
    def test_group_fan_out(self):
        r = yield self.http.get("/api/store/both/stock")
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(sorted(r.json["results"]), ["one", "two"])
        self.assertEqual(r.json["results"]["one"]["args"], {"destination": "both"})
        self.primary.tokens.session(r.json["token"])

    @defer.inlineCallbacks
    def test_timeout_504(self):
        self.primary.rest.forwarder.timeout = 0.2
        r = yield self.http.get("/api/never")
        self.assertEqual((r.status, r.json), (504, {"error": "MicroService request timed out"}))
        r = yield self.http.get("/api/users/1")
        self.assertEqual(r.status, 200)


class LinkDownTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_no_micro_service_503(self):
        primary = start_primary(self, {"one": {"host": f"http://127.0.0.1:{free_port()}",
                                               "application": "api"}})
        r = yield HTTPClient(self, base_url(primary)).get("/api/users/1")
        self.assertEqual((r.status, r.json), (503, {"error": "MicroService connection is down"}))


class KilledMicroServiceTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_killed_mid_request_ends_the_request(self):
        port = free_port()
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        startup = os.path.join(d, "startup.py")
        with open(startup, "w") as f:
            f.write(f"config = {{'listen': 'tcp:{port}:interface=127.0.0.1', "
                    f"'jwt': {{'secret': {SECRET!r}}}, "
                    f"'moduleMap': {{'api': {os.path.join(APPS, 'rest_api.py')!r}}}}}\n")
        ms = TwistdProcess(self, startup).start()
        yield ms.wait_for("started: listening")
        primary = start_primary(self, {"one": {"host": f"http://127.0.0.1:{port}",
                                               "application": "api"}})
        yield links_up(primary)
        http = HTTPClient(self, base_url(primary))
        holding = ms.wait_for("rest_api: holding")
        pending = http.get("/api/never")
        yield holding
        yield ms.kill()
        r = yield pending
        self.assertEqual((r.status, r.json), (503, {"error": "MicroService connection is down"}))
        r = yield http.get("/api/store/nowhere/stock")
        self.assertEqual(r.status, 400)  # the primary goes on
