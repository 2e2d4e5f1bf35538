# -*- test-case-name: tests.test_rest_fuzz -*-
"""
Hostile HTTP, property-based (issue 13 item 7): random methods, paths (percent-escaped bytes,
template-like characters, dot segments), headers (every kind of Authorization value, content
types) and bodies (JSON of every type, forms, garbage bytes, sizes around the limit) against the
REST routes and ``/ajax``.

Properties: every request is answered (after at most the handler timeout) with an HTTP status
and a JSON body (no body only for HEAD and the 204 preflight); the node never logs a failure
(handlers here only raise where the test app means to); after each example a well-formed
request still works. In memory and deterministic: a real twisted.web ``Site`` and
``HTTPChannel`` on a ``StringTransport``, the node on ``NodeHarness`` (a ``Clock``, no threads).
Pure parts (templates, mapping) get their own properties.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from qewd_twisted.rest import AjaxResource, RestDispatcher, RestResource, attach
from qewd_twisted.rest.resource import FormlessRequest
from qewd_twisted.rest.mapping import BodyError, parse_body, reply_from_frame
from qewd_twisted.rest.routing import Mount, MountTable, PathTemplate, RouteError, RouteTable
from qewd_twisted.testing import NodeHarness
from tests.apps import rest_api, rest_simple

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 4096

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)

segment = st.one_of(
    st.sampled_from(["users", "1", "crash", "later", "echo", "login", "private", "members",
                     "cookie", "list", "silent", "never", "store", "stock", "info", "..", ".",
                     ":id", "*", "(x)", "", "%00", "%ff", "%2F", "a%20b"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126,
                          blacklist_characters="?#%/"), max_size=8),
    st.binary(max_size=4).map(lambda b: "".join(f"%{c:02X}" for c in b)),
)
paths = st.tuples(st.sampled_from(["/api", "/simple", "/ajax"]),
                  st.lists(segment, max_size=4),
                  st.one_of(st.just(""), st.text(st.characters(min_codepoint=33,
                                                               max_codepoint=126,
                                                               blacklist_characters="#"),
                                                 max_size=12).map(lambda q: "?" + q))
                  ).map(lambda t: t[0] + "".join("/" + s for s in t[1]) + t[2])
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
content_types = st.sampled_from([None, "application/json", "application/json; charset=utf-8",
                                 "application/x-www-form-urlencoded", "text/plain",
                                 "application/vnd.api+json", "multipart/form-data"])
bodies = st.one_of(
    st.just(b""),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(LIMIT - 2, LIMIT + 2).map(lambda n: b"x" * n),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


class _Node:
    def __init__(self) -> None:
        self.h = NodeHarness({"api": rest_api, "simple": rest_simple},
                             handler_timeout=5)
        attach(self.h.node, RestDispatcher(
            self.h.node, MountTable([Mount("/api", "api"), Mount("/simple", "simple")])))
        root = Resource()
        rest = RestResource(self.h.node, self.h.clock, cors=True, max_body=LIMIT)
        root.putChild(b"api", rest)
        root.putChild(b"simple", rest)
        root.putChild(b"ajax", AjaxResource(self.h.node, self.h.clock, max_body=LIMIT))
        self.site = Site(root, requestFactory=FormlessRequest, reactor=self.h.clock)
        self.token = self.h.tokens.register_token("api", {"authenticated": True})

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        transport = StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        head = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        channel.dataReceived("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        if not transport.value():
            self.h.clock.advance(6)  # a handler that never finishes: the handler timeout
        out = transport.value()
        channel.connectionLost(None)
        return out


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class HTTPPropertyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = _Node()

    @SETTINGS
    @given(method=methods, path=paths, ctype=content_types, body=bodies,
           auth=st.sampled_from([None, "", "Bearer", "Bearer ", "Bearer x.y.z", "Basic abc",
                                 "valid", "Bearer undefined", "Bearer a.b"]),
           extra=st.dictionaries(st.sampled_from(["X-Custom", "Accept", "Cookie", "Origin"]),
                                 st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                         max_size=20), max_size=2))
    def test_every_request_gets_a_status_and_json(self, method, path, ctype, body, auth, extra):
        headers = dict(extra)
        if ctype is not None:
            headers["Content-Type"] = ctype
        if auth == "valid":
            headers["Authorization"] = "Bearer " + self.node.token
        elif auth is not None:
            headers["Authorization"] = auth
        raw = self.node.request(method, path, headers, body)
        self.assertTrue(raw, f"no answer to {method} {path}")
        status, rheaders, rbody = _parse(raw)
        self.assertTrue(200 <= status <= 599, status)
        if method == "HEAD" or status == 204:
            return
        self.assertTrue(rheaders.get("content-type", "").startswith("application/json"),
                        (method, path, headers, body[:80], raw[:300]))
        json.loads(rbody)
        if status >= 400:
            self.assertIn("error", json.loads(rbody))
        self.assertIn("x-responsetime", rheaders)
        self.flushLoggedErrors(ValueError)  # the app's /api/crash route raises on purpose
        # the node stays up: a well-formed request still works
        status, _, rbody = _parse(self.node.request("GET", "/api/users/7", {}, b""))
        self.assertEqual((status, json.loads(rbody)["id"]), (200, "7"))
        self.assertEqual(self.node.h.node.in_flight, 0)
        self.assertEqual(self.node.h.node.connections, {})  # every HTTP connection ended


class PurePropertyTests(SynchronousTestCase):
    @SETTINGS
    @given(st.text(max_size=30))
    def test_templates_compile_or_refuse(self, text):
        try:
            t = PathTemplate.compile(text)
        except RouteError:
            return
        t.match(text)  # never raises

    @SETTINGS
    @given(st.text(max_size=40), st.sampled_from(["GET", "POST", "HEAD", "X"]))
    def test_matching_never_raises(self, path, method):
        table = RouteTable.from_table(rest_api.routes)
        table.match(path, method)
        table.by_template(path, method)

    @SETTINGS
    @given(json_values | st.dictionaries(st.sampled_from(["type", "message", "error", "status",
                                                          "finished"]), json_values))
    def test_any_frame_maps_to_a_valid_reply(self, frame):
        reply = reply_from_frame(frame)
        self.assertTrue(200 <= reply.status <= 599)
        json.dumps(reply.body)
        for name, value in reply.headers:
            self.assertNotIn("\n", name + value)

    @SETTINGS
    @given(st.binary(max_size=50), content_types)
    def test_bodies_parse_or_give_body_error(self, raw, ctype):
        try:
            parse_body(raw, ctype)
        except BodyError:
            pass


