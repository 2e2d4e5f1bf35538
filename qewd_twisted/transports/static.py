# -*- test-case-name: tests.test_static_files -*-
"""
Static files: the web root (``webServerRootPath``) and the browser clients the node ships.

`StaticFiles` is twisted.web's ``File`` with what a node facing the internet needs
(docs/security.md, "Static files"):

- no directory listings, no dotfiles (``/.env``, ``/.git/config``), nothing whose real path
  (symlinks resolved) leaves the root, and never a file the node loads itself (its startup
  file, its handler modules, its TLS key), wherever it is;
- unknown types as ``application/octet-stream`` (never sniffed into HTML: every response
  carries ``X-Content-Type-Options: nosniff``, set by the request for every response);
- byte ranges: one range as twisted.web does it; several, if at most ``max_ranges``, not
  overlapping and smaller than the file, as one multipart/byteranges response; otherwise the
  whole file (RFC 9110, section 14.2 lets a server ignore a Range header), so a response is never
  larger than the file and the file is always closed.

(The start-up check that refuses a web root holding the node's own files is
``config.own_files_in``.)

Imports twisted.web, config.limits and transports.http only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import NoResource, Resource
from twisted.web.static import File, StaticProducer

from qewd_twisted.config.limits import Limits
from qewd_twisted.transports.http import clip

__all__ = ["StaticFiles"]

log = Logger()

OCTET_STREAM = "application/octet-stream"


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class StaticFiles(File):
    """A file, or a directory of files, served as described in the module docstring.

    ``root`` is the directory nothing may leave (default: ``path`` itself); ``hidden`` the
    real paths never served; ``max_ranges`` the most byte ranges answered as multipart.
    """

    indexNames = ["index.html"]

    def __init__(self, path: str, defaultType: str = OCTET_STREAM,  # noqa: N803
                 ignoredExts: Any = (), registry: Any = None, *,  # noqa: N803
                 root: str | None = None, hidden: Iterable[str] = (),
                 max_ranges: int = Limits.max_ranges) -> None:
        super().__init__(path, defaultType, ignoredExts, registry)
        self.root = os.path.realpath(root if root is not None else path)
        self.hidden = frozenset(os.path.realpath(h) for h in hidden)
        self.max_ranges = max_ranges
        self.childNotFound = NoResource("No such file")

    def createSimilarFile(self, path: str) -> StaticFiles:
        return StaticFiles(path, self.defaultType, self.ignoredExts, self.registry,
                           root=self.root, hidden=self.hidden, max_ranges=self.max_ranges)

    def directoryListing(self) -> Resource:
        return self.childNotFound

    def servable(self) -> bool:
        real = os.path.realpath(self.path)
        return _inside(real, self.root) and real not in self.hidden

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path.startswith(b"."):
            return self.childNotFound  # dotfiles, and "." / ".." however they were spelled
        child = super().getChild(path, request)
        if isinstance(child, StaticFiles) and not child.servable():
            return self.childNotFound
        return child

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        if not self.servable():
            return self.childNotFound.render(request)
        return super().render_GET(request)

    render_HEAD = render_GET

    # -- byte ranges

    def makeProducer(self, request: Any, fileForReading: Any) -> StaticProducer:  # noqa: N803
        header = request.getHeader(b"range")
        if header is None:
            return super().makeProducer(request, fileForReading)
        try:
            ranges = self._parseRangeHeader(header)
        except ValueError:
            log.debug("ignoring a malformed Range header {value}", value=clip(header))
            return self._whole(request, fileForReading)
        if len(ranges) == 1:
            return super().makeProducer(request, fileForReading)
        if len(ranges) > self.max_ranges:
            return self._whole(request, fileForReading)
        size = self.getFileSize()
        spans = [self._rangeToOffsetAndSize(start, end) for start, end in ranges]
        spans = [(offset, n) for offset, n in spans if n > 0]
        if not spans:
            request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
            request.setHeader(b"content-range", b"bytes */%d" % (size,))
            request.setHeader(b"content-length", b"0")
            return _Nothing(request, fileForReading)
        ordered = sorted(spans)
        if any(b[0] < a[0] + a[1] for a, b in zip(ordered, ordered[1:])):
            return self._whole(request, fileForReading)  # overlapping ranges
        boundary = os.urandom(12).hex().encode("ascii")
        kind = (self.type or OCTET_STREAM).encode("ascii", "replace")
        parts = []
        for offset, n in spans:
            head = (b"\r\n--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
                    % (boundary, kind, offset, offset + n - 1, size))
            parts.append((head, offset, n))
        parts.append((b"\r\n--%s--\r\n" % boundary, 0, 0))
        length = sum(len(head) + n for head, _, n in parts)
        if length >= size:
            return self._whole(request, fileForReading)  # never more than the whole file
        request.setResponseCode(http.PARTIAL_CONTENT)
        request.setHeader(b"content-type", b'multipart/byteranges; boundary="%s"' % boundary)
        request.setHeader(b"content-length", b"%d" % (length,))
        return _PartsProducer(request, fileForReading, parts)

    def _whole(self, request: Any, fileForReading: Any) -> StaticProducer:  # noqa: N803
        request.requestHeaders.removeHeader(b"range")
        return super().makeProducer(request, fileForReading)


class _Nothing(StaticProducer):
    """An empty body (416): finish at once, close the file."""

    def start(self) -> None:
        self.request.finish()
        self.stopProducing()

    def resumeProducing(self) -> None:
        pass


class _PartsProducer(StaticProducer):
    """Writes ``parts`` [(head, offset, size), ...] in order: each head, then ``size`` bytes
    of the file from ``offset``. Every read is within the part; a file that shrank under us
    ends the connection (the promised length can no longer be met)."""

    def __init__(self, request: Any, fileObject: Any, parts: list[tuple[bytes, int, int]]) -> None:  # noqa: N803
        super().__init__(request, fileObject)
        self._parts = iter(parts)
        self._head = b""
        self._left = 0

    def start(self) -> None:
        self._advance()
        self.request.registerProducer(self, False)

    def _advance(self) -> bool:
        try:
            self._head, offset, self._left = next(self._parts)
        except StopIteration:
            return False
        self.fileObject.seek(offset)
        return True

    def resumeProducing(self) -> None:
        request = self.request
        if request is None:
            return
        chunks, n, done = [], 0, False
        while n < self.bufferSize:
            if self._head:
                chunks.append(self._head)
                n += len(self._head)
                self._head = b""
            if self._left:
                data = self.fileObject.read(min(self._left, max(self.bufferSize - n, 1)))
                if not data:
                    log.warn("{path} shrank while it was being served", path=self.fileObject.name)
                    request.unregisterProducer()
                    self.stopProducing()
                    request.loseConnection()
                    return
                chunks.append(data)
                n += len(data)
                self._left -= len(data)
            if not self._left and not self._advance():
                done = True
                break
        request.write(b"".join(chunks))
        if done and self.request is not None:
            request.unregisterProducer()
            request.finish()
            self.stopProducing()
