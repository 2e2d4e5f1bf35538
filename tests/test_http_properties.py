# -*- test-case-name: tests.test_http_properties -*-
"""
Property tests of the HTTP surface (issue 20 item 8): request lines, headers and Range values
drawn by Hypothesis, replayed against one node on loopback.

Hypothesis draws a fixed corpus (derandomized: the same on every run) which the test then
sends one request per connection; the properties hold for every request: it is answered or
closed within its deadline, nothing is logged at error level or above, and after the corpus
the node is alive and its open files and memory are back near where they started.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from tests.httpclient import connect, exchange, get, open_fds, rss_bytes, status_of
from tests.integration.nodes import port_of, start_node
from tests.test_http_hardening import _Collect, until_no_connections

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
LINGER = 0.2
#: the longest a request may take to be answered or closed, with room for a busy machine
BOUND = HEADER_TIMEOUT + BODY_TIMEOUT + LINGER + 4.0


def corpus(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` examples of ``strategy``, the same ones on every run."""
    out: list[Any] = []

    @settings(max_examples=n, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(example: Any) -> None:
        out.append(example)

    collect()
    return out


# -- strategies ----------------------------------------------------------------------------------

_token = st.binary(min_size=1, max_size=12)
methods = st.one_of(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH",
                     b"status", b"page", b"get", b"TRACE", b"CONNECT", b"M-SEARCH"]),
    _token)
_segment = st.one_of(
    st.sampled_from([b"", b"ws", b"socket.io", b"status", b"status.json", b"health", b"ready",
                     b"ewd-client.js", b"socket.io.js", b"index.html", b"data.bin", b".env",
                     b"..", b".", b"%2e%2e", b"%00", b"%ff", b"%c0%af", b"a%0d%0ab", b"*"]),
    st.binary(max_size=20).map(lambda b: "".join(f"%{c:02x}" for c in b).encode()),
    st.text(max_size=10).map(lambda t: t.encode("utf-8", "surrogatepass")))
targets = st.one_of(
    st.lists(_segment, min_size=1, max_size=4).map(lambda s: b"/" + b"/".join(s)),
    st.tuples(st.lists(_segment, min_size=1, max_size=3), st.binary(max_size=30)).map(
        lambda t: b"/" + b"/".join(t[0]) + b"?" + t[1]),
    st.sampled_from([b"*", b"http://x/", b"", b"//", b"/socket.io/?EIO=3&transport=websocket",
                     b"/socket.io/?EIO=3&transport=polling"]))
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"", b"FOO"])
_num = st.integers(min_value=0, max_value=40000)
_range_spec = st.one_of(
    st.tuples(_num, _num).map(lambda t: b"%d-%d" % t),
    _num.map(lambda n: b"%d-" % n), _num.map(lambda n: b"-%d" % n),
    st.sampled_from([b"0-", b"-", b"", b"a-b", b"1-0", b"-0"]))
range_values = st.one_of(
    st.lists(_range_spec, max_size=40).map(lambda r: b"bytes=" + b",".join(r)),
    st.integers(1, 2000).map(lambda n: b"bytes=" + b",".join([b"0-"] * n)),
    st.binary(max_size=60))
_header_values = {
    b"Range": range_values,
    b"Content-Length": st.one_of(st.integers(0, 3000).map(lambda n: b"%d" % n),
                                 st.sampled_from([b"-1", b"300000000", b"1e3", b"", b"0x10",
                                                  b"99999999999999999999"])),
    b"Transfer-Encoding": st.sampled_from([b"chunked", b"identity", b"gzip, chunked", b"x"]),
    b"Origin": st.sampled_from([b"https://app.example", b"https://evil.example", b"null",
                                b"HTTPS://APP.EXAMPLE/", b""]),
    b"Upgrade": st.sampled_from([b"websocket", b"WebSocket", b"h2c", b""]),
    b"Connection": st.sampled_from([b"close", b"Upgrade", b"keep-alive", b"upgrade, close"]),
    b"Sec-WebSocket-Key": st.sampled_from([b"dGhlIHNhbXBsZSBub25jZQ==", b"x", b""]),
    b"Sec-WebSocket-Version": st.sampled_from([b"13", b"8", b"99", b""]),
    b"Expect": st.sampled_from([b"100-continue", b"x"]),
    b"Authorization": st.binary(max_size=40).map(lambda b: b"Basic " + b),
    b"Host": st.sampled_from([b"127.0.0.1", b"", b"x:99999", b"a" * 300]),
}
headers = st.lists(st.one_of(
    st.sampled_from(sorted(_header_values)).flatmap(
        lambda name: _header_values[name].map(lambda v: (name, v))),
    st.tuples(_token, st.binary(max_size=200))), max_size=8)


@st.composite
def requests(draw: Any) -> bytes:
    method, target, version = draw(methods), draw(targets), draw(versions)
    head = draw(headers)
    lines = [method + b" " + target + (b" " + version if version else b"")]
    lines += [name + b": " + value for name, value in head]
    if not any(name.lower() == b"connection" for name, _ in head):
        lines.append(b"Connection: close")
    complete = draw(st.integers(0, 9)) > 0  # one in ten stops mid-head
    data = b"\r\n".join(lines) + (b"\r\n\r\n" if complete else b"\r\n")
    return data + draw(st.binary(max_size=300))


# -- the test ------------------------------------------------------------------------------------


class HTTPPropertyTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        base = FilePath(self.mktemp())
        www = base.child("www")
        www.makedirs()
        www.child("index.html").setContent(b"<p>hi</p>")
        www.child("data.bin").setContent(os.urandom(30000))
        www.child(".env").setContent(b"SECRET")
        self.node = start_node(self, webServerRootPath=www.path,
                               allowedOrigins=["https://app.example"],
                               managementPassword="op-secret-1", headerTimeout=HEADER_TIMEOUT,
                               bodyTimeout=BODY_TIMEOUT)
        self.node.site.linger = LINGER
        self.port = port_of(self.node)
        self.log = _Collect(self)

    @defer.inlineCallbacks
    def send(self, request: bytes) -> Any:
        """Send one request; its first answer (or the close) must come within BOUND."""
        client = yield defer.ensureDeferred(connect(self.port))
        self.addCleanup(client.close)
        client.send(request)
        first = client.until(b"\r\n\r\n")
        try:
            data = yield first.addTimeout(BOUND, reactor)
        except defer.TimeoutError:
            self.fail(f"neither answered nor closed within {BOUND} s: {request[:300]!r}")
        if status_of(data) == 101:
            yield client.close()  # a WebSocket now: not this test's subject
        else:
            closed = client.closed
            try:
                yield closed.addTimeout(BOUND, reactor)
            except defer.TimeoutError:
                self.fail(f"answered {status_of(data)} but not closed within {BOUND} s: "
                          f"{request[:300]!r}")
        return data

    @defer.inlineCallbacks
    def test_every_request_is_answered_or_closed_and_the_node_lives(self):
        examples = corpus(requests(), 150)
        for request in examples[:20]:  # warm-up: caches, lazy imports, Hypothesis itself
            yield self.send(request)
        yield until_no_connections(self, self.node, timeout=BOUND)
        fds, rss = open_fds(), rss_bytes()
        for request in examples:
            yield self.send(request)
        yield until_no_connections(self, self.node, timeout=BOUND)
        self.assertLessEqual(open_fds(), fds + 2)
        self.assertLess(rss_bytes() - rss, 20 << 20)
        alive = yield defer.ensureDeferred(exchange(self.port, get(b"/health"), self))
        self.assertEqual(status_of(alive), 200)
        self.assertEqual(self.log.critical(), [])

    @defer.inlineCallbacks
    def test_range_values(self):
        examples = corpus(range_values, 120)
        size = 30000
        for value in examples:
            data = yield self.send(get(b"/data.bin", b"Range: " + value + b"\r\n"))
            code = status_of(data)
            self.assertIn(code, (200, 206, 416, 400), value[:80])  # 400: NUL, CR, LF in it
            body = data.split(b"\r\n\r\n", 1)[1]
            self.assertLessEqual(len(body), size, value[:80])  # never more than the file
        yield until_no_connections(self, self.node, timeout=BOUND)
        self.assertEqual(self.log.critical(), [])
