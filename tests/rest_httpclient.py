# -*- test-case-name: tests.test_rest_http -*-
"""HTTP for the REST tests: ``HTTPClient``, a small JSON-over-HTTP client (twisted.web.client.Agent
on a persistent, keep-alive pool, closed when the test ends), and ``MemoryRestSite``, the REST
routes of tests/apps behind the node's own HTTP layer, driven in memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from qewd_twisted.rest import AjaxResource, RestDispatcher, RestResource, attach
from qewd_twisted.rest.resource import FormlessRequest
from qewd_twisted.rest.routing import Mount, MountTable
from qewd_twisted.testing import NodeHarness
from qewd_twisted.transports.http import NodeSite
from tests.apps import rest_api, rest_simple
from tests.httpclient import head_and_body, status_of


@dataclass
class Reply:
    status: int
    headers: Headers
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0].decode() if isinstance(values[0], bytes) else values[0] \
            if values else None


class HTTPClient:
    def __init__(self, test: Any, base: str, persistent: bool = True) -> None:
        self.base = base
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool.maxPersistentPerHost = 64
        self.agent = Agent(reactor, pool=self.pool)
        test.addCleanup(self.pool.closeCachedConnections)

    @defer.inlineCallbacks
    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                raw: bytes | None = None):
        h = Headers()
        for k, v in (headers or {}).items():
            h.addRawHeader(k, v)
        producer = None
        if body is not None or raw is not None:
            data = raw if raw is not None else json.dumps(body).encode()
            if not h.hasHeader("content-type"):
                h.addRawHeader("content-type", "application/json")
            from io import BytesIO
            producer = FileBodyProducer(BytesIO(data))
        response = yield self.agent.request(method.encode(), (self.base + path).encode(), h,
                                            producer)
        content = yield readBody(response)
        return Reply(response.code, response.headers, content)

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self.request("POST", path, body, **kw)


class MemoryRestSite:
    """tests/apps' REST routes at ``/api`` and ``/simple`` and ``/ajax``, in the node's own
    ``NodeSite`` and channel on a ``StringTransport``, the node on ``NodeHarness`` (a ``Clock``,
    no threads): deterministic. ``root`` takes more children; ``token`` is a valid JWT."""

    def __init__(self, max_body: int = 4096, cors: bool = True, **site_options: Any) -> None:
        self.h = NodeHarness({"api": rest_api, "simple": rest_simple}, handler_timeout=5)
        self.clock = self.h.clock
        attach(self.h.node, RestDispatcher(
            self.h.node, MountTable([Mount("/api", "api"), Mount("/simple", "simple")])))
        self.root = Resource()
        rest = RestResource(self.h.node, self.clock, cors=cors, max_body=max_body)
        self.root.putChild(b"api", rest)
        self.root.putChild(b"simple", rest)
        self.root.putChild(b"ajax", AjaxResource(self.h.node, self.clock, cors=cors,
                                                 max_body=max_body))
        self.site = NodeSite(self.root, reactor=self.clock, **site_options)
        self.site.requestFactory = FormlessRequest
        self.token = self.h.tokens.register_token("api", {"authenticated": True})

    def connect(self, transport: StringTransport | None = None) -> tuple[Any, StringTransport]:
        """A new connection (on ``transport``, by default a new one): its channel and what the
        node writes to it."""
        transport = transport if transport is not None else StringTransport()
        channel = self.site.buildProtocol(None)
        channel.makeConnection(transport)
        return channel, transport

    def send(self, data: bytes) -> bytes:
        """``data`` on a new connection; what was answered (after at most the handler
        timeout); the connection is then closed."""
        channel, transport = self.connect()
        channel.dataReceived(data)
        if not transport.value():
            self.clock.advance(6)  # a handler that never finishes: the handler timeout
        channel.connectionLost(None)
        return transport.value()

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        head = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        return self.send("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.1 response as written: status, headers (lower-case names), body."""
    headers, body = head_and_body(raw)
    return status_of(raw), {k.decode("latin-1"): v.decode("latin-1")
                            for k, v in headers.items()}, body
