# -*- test-case-name: tests.test_rest_early -*-
"""
The HTTP layer's early answers on REST paths (issue 13; docs/errors.md "HTTP answers"): 413,
400, 501, 408 and a refused connection's 503 are sent before any resource runs, and the
resource that owns the path writes them (transports/http.py ``IEarlyAnswer``). On ``/api``,
``/simple`` and ``/ajax`` each is JSON ``{"error": <text>}`` as every REST error; on other paths
plain text, as before; the status and the text are the same either way.

In memory on a ``Clock`` (tests/rest_httpclient.py ``MemoryRestSite``), and once over loopback
against a real node.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits
from qewd_twisted.transports.http import IEarlyAnswer, owner_of
from tests.httpclient import exchange, get
from tests.rest_httpclient import MemoryRestSite, parse_response
from tests.test_http_hardening import BodyEcho, _HalfClosing
from tests.test_rest_http import base_url, start_rest_node

LIMIT = 2048
REST_PATHS = (b"/api/users", b"/simple/info", b"/ajax")
OTHER_PATHS = (b"/plain", b"/nowhere")
TOO_LARGE = E.BODY_TOO_LARGE.format(limit=LIMIT)


class EarlyAnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rest = MemoryRestSite(max_body=LIMIT)
        self.rest.root.putChild(b"plain", BodyEcho(limit=LIMIT))

    def assert_json(self, raw: bytes, status: int, text: str) -> None:
        code, headers, body = parse_response(raw)
        self.assertEqual(code, status, raw[:300])
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(json.loads(body), {"error": text})
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(headers["x-responsetime"], "0ms")
        self.assertEqual(headers["access-control-allow-origin"], "*")  # cors: true
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(headers["connection"], "close")

    def assert_plain(self, raw: bytes, status: int, text: str) -> None:
        code, headers, body = parse_response(raw)
        self.assertEqual(code, status, raw[:300])
        self.assertEqual(headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(body, text.encode() + b"\n")
        self.assertNotIn("x-responsetime", headers)
        self.assertEqual(headers["connection"], "close")

    def check(self, status: int, text: str, request: Any, others: Any = OTHER_PATHS) -> None:
        """``request(path)`` gets ``status`` with ``text``: JSON on every REST path, plain text
        on the others."""
        for path in REST_PATHS:
            self.assert_json(self.rest.send(request(path)), status, text)
        for path in others:
            self.assert_plain(self.rest.send(request(path)), status, text)

    # the limit is the owner's: LIMIT on the REST paths and /plain, none (0) elsewhere

    def test_413_content_length_over_the_limit(self):
        self.check(413, TOO_LARGE,
                   lambda path: get(path, b"Content-Length: 300000000\r\n", b"POST"), [b"/plain"])
        self.assert_plain(self.rest.send(get(b"/nowhere", b"Content-Length: 1\r\n", b"PUT")),
                          413, E.BODY_TOO_LARGE.format(limit=0))

    def test_413_chunked_body_past_the_limit(self):
        chunk = b"%x\r\n%s\r\n" % (LIMIT + 1, b"a" * (LIMIT + 1))
        self.check(413, TOO_LARGE,
                   lambda path: get(path, b"Transfer-Encoding: chunked\r\n", b"POST") + chunk,
                   [b"/plain"])

    def test_400_invalid_bytes_in_the_path(self):
        for bad in (b"/%00", b"/x%ff", b"/%c3%28", b"/a%0ab"):
            self.check(400, E.BAD_REQUEST_PATH, lambda path: get(path + bad))

    def test_400_malformed_request_head(self):
        self.check(400, E.BAD_REQUEST_HEAD,
                   lambda path: get(path, b"a header line without a colon\r\n", b"GET"))
        self.check(400, E.BAD_REQUEST_HEAD,
                   lambda path: get(path, b"Content-Length: 1e3\r\n", b"POST"))

    def test_501_unknown_method(self):
        for method in (b"FOO", b"TRACE", b"PROPFIND"):
            self.check(501, E.METHOD_NOT_IMPLEMENTED, lambda path: get(path, b"", method))

    def test_501_unknown_transfer_coding(self):
        for coding in (b"gzip", b"gzip, chunked", b"x"):
            self.check(501, E.CODING_NOT_IMPLEMENTED, lambda path: get(
                path, b"Transfer-Encoding: " + coding + b"\r\n", b"POST")
                + b"5\r\nhello\r\n0\r\n\r\n")

    def timed_out(self, data: bytes, seconds: float) -> bytes:
        channel, transport = self.rest.connect()
        channel.dataReceived(data)
        self.assertEqual(transport.value(), b"")
        self.rest.clock.advance(seconds)
        return transport.value()

    def test_408_headers_or_body_past_the_deadline(self):
        # (a body deadline under Twisted's own idle timeout, 60 s, which closes silently)
        self.rest = MemoryRestSite(max_body=LIMIT, limits=Limits(body_timeout=10))
        self.rest.root.putChild(b"plain", BodyEcho(limit=LIMIT))
        for path in REST_PATHS:
            self.assert_json(self.timed_out(b"GET %s HTTP/1.1\r\nHost: x\r\n" % path,
                                            Limits.header_timeout), 408, E.REQUEST_TIMEOUT)
            body_part = get(path, b"Content-Length: 10\r\n", b"POST") + b"abc"
            self.assert_json(self.timed_out(body_part, 10), 408, E.REQUEST_TIMEOUT)
        self.assert_plain(self.timed_out(get(b"/plain", b"Content-Length: 10\r\n", b"POST"), 10),
                          408, E.REQUEST_TIMEOUT)
        self.assert_plain(self.timed_out(b"GET /plain HTTP/1.1\r\nHost: x\r\n",
                                         Limits.header_timeout), 408, E.REQUEST_TIMEOUT)
        # before the request line is complete, no path: plain text
        self.assert_plain(self.timed_out(b"GET /api/us", Limits.header_timeout),
                          408, E.REQUEST_TIMEOUT)

    def test_503_refused_connection(self):
        rest = MemoryRestSite(max_body=LIMIT, max_connections=1)
        rest.connect()  # holds the one slot
        for path, json_answer in ((b"/api/users", True), (b"/ajax", True), (b"/x", False)):
            channel, transport = rest.connect()
            channel.dataReceived(get(path))
            (self.assert_json if json_answer else self.assert_plain)(
                transport.value(), 503, E.TOO_MANY_CONNECTIONS)
            # the reason phrase is the node's text, as it has always been
            self.assertTrue(transport.value().startswith(
                b"HTTP/1.1 503 " + E.TOO_MANY_CONNECTIONS.encode() + b"\r\n"))

    def test_what_follows_an_early_answer_is_never_parsed(self):
        """Bytes behind a refused request, in the same read, are discarded: never parsed as
        a request (or as its headers), never answered; the socket is closed once the linger
        time is over."""
        for refused in (get(b"/api/users", b"", b"FOO"), get(b"/api/%00"),
                        get(b"/api/users", b"no colon\r\n")):
            channel, transport = self.rest.connect(_HalfClosing())
            channel.dataReceived(refused + get(b"/api/users/1") + b"more\r\n\r\n"
                                 + b"a line too long for Twisted's parser" * 500 + b"\r\n")
            self.assertEqual(transport.value().count(b"HTTP/1.1"), 1, transport.value())
            self.assertTrue(transport.write_closed)
            self.assertEqual(self.rest.h.node.in_flight, 0)
            self.rest.clock.advance(self.rest.site.linger - 0.1)
            self.assertFalse(transport.disconnecting)  # still reading, discarding
            self.rest.clock.advance(0.1)
            self.assertTrue(transport.disconnecting)

    def test_without_cors_no_cors_headers(self):
        rest = MemoryRestSite(max_body=LIMIT, cors=False)
        _, headers, body = parse_response(rest.send(get(b"/api/users", b"", b"FOO")))
        self.assertNotIn("access-control-allow-origin", headers)
        self.assertEqual(json.loads(body), {"error": E.METHOD_NOT_IMPLEMENTED})

    def test_served_requests_are_unchanged(self):
        code, headers, body = parse_response(self.rest.request("GET", "/api/users/7", {}, b""))
        self.assertEqual((code, json.loads(body)["id"]), (200, "7"))
        code, _, body = parse_response(self.rest.send(get(b"/plain")))
        self.assertEqual((code, body), (200, b"hello"))

    def test_behind_another_site_the_resource_bounds_the_body_itself(self):
        """Embedded under a plain twisted.web Site (which reads whole bodies), the REST
        resource answers a body over its limit with the same 413 (transports/http.py
        ``read_body``)."""
        def post(size: int) -> tuple[int, Any]:
            request = DummyRequest([b"users"])
            request.method, request.uri = b"POST", b"/api/users"
            request.content = BytesIO(b"x" * size)
            self.rest.root.children[b"api"].render(request)
            return request.responseCode, json.loads(b"".join(request.written))

        self.assertEqual(post(LIMIT + 1), (413, {"error": TOO_LARGE}))
        code, body = post(LIMIT)  # read, then refused as not JSON
        self.assertEqual((code, body["error"][:29]), (400, "Invalid JSON in request body:"))

    def test_the_rest_resources_provide_it(self):
        for path in (b"api", b"simple", b"ajax"):
            self.assertTrue(verifyObject(IEarlyAnswer, self.rest.root.children[path]))


@implementer(IEarlyAnswer)
class _Broken(Resource):
    isLeaf = True

    def earlyAnswer(self, code: int, text: str) -> Any:  # noqa: N802
        raise RuntimeError("cannot write it")


class OwnerTests(SynchronousTestCase):
    """Whose path it is: the registered children only (no resource code runs)."""

    def setUp(self) -> None:
        self.root = Resource()
        self.api = Resource()
        self.api.isLeaf = True
        self.root.putChild(b"api", self.api)
        self.dir = Resource()
        self.root.putChild(b"dir", self.dir)
        self.leaf = Resource()
        self.dir.putChild(b"leaf", self.leaf)

    def test_the_deepest_registered_child_a_leaf_ending_the_walk(self):
        cases = {b"/api": self.api, b"/api/x/y?z=1": self.api, b"/%61pi/x": self.api,
                 b"/dir": self.dir, b"/dir/leaf/more": self.leaf, b"/dir/other": self.dir,
                 b"/": self.root, b"/other/api": self.root, b"*": self.root,
                 b"http://h/api": self.root, None: self.root, b"": self.root}
        for target, owner in cases.items():
            self.assertIs(owner_of(self.root, target), owner, target)

    def test_an_owner_that_fails_gets_plain_text(self):
        rest = MemoryRestSite(max_body=LIMIT)
        rest.root.putChild(b"broken", _Broken())
        code, headers, body = parse_response(rest.send(get(b"/broken", b"", b"FOO")))
        self.assertEqual((code, headers["content-type"], body),
                         (501, "text/plain; charset=utf-8", b"Method not implemented\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class EarlyAnswerOnTheWireTests(TestCase):
    """A real node on loopback: the REST routes from the startup file's ``routes``."""

    timeout = 30

    @defer.inlineCallbacks
    def test_json_on_rest_paths_plain_text_elsewhere(self):
        node = start_rest_node(self, cors=True, maxBodySize=LIMIT)
        port = int(base_url(node).rsplit(":", 1)[1])
        cases = [(get(b"/api/users", b"Content-Length: 300000000\r\n", b"POST"), 413, TOO_LARGE),
                 (get(b"/api/users/%00"), 400, E.BAD_REQUEST_PATH),
                 (get(b"/ajax", b"", b"FOO"), 501, E.METHOD_NOT_IMPLEMENTED),
                 (get(b"/ajax", b"Transfer-Encoding: br\r\n", b"POST"), 501,
                  E.CODING_NOT_IMPLEMENTED)]
        for request, status, text in cases:
            response = yield defer.ensureDeferred(exchange(port, request, self))
            code, headers, body = parse_response(response)
            self.assertEqual((code, headers["content-type"], json.loads(body)),
                             (status, "application/json; charset=utf-8", {"error": text}))
            self.assertEqual(headers["access-control-allow-origin"], "*")
        response = yield defer.ensureDeferred(exchange(port, get(b"/%00"), self))
        code, headers, body = parse_response(response)
        self.assertEqual((code, headers["content-type"], body),
                         (400, "text/plain; charset=utf-8", E.BAD_REQUEST_PATH.encode() + b"\n"))
