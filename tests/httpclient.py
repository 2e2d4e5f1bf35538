"""A small JSON-over-HTTP client for the REST tests: twisted.web.client.Agent on a persistent
(keep-alive) pool, closed when the test ends."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, reactor
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers


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
