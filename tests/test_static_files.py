# -*- test-case-name: tests.test_static_files -*-
"""
Static files on a real node on loopback (issue 20 item 2): byte ranges answered correctly or
with the whole file (never more than the file, no hang, no file left open), dotfiles, symlinks
out of the web root, the node's own files, unknown types, ``nosniff`` on every response; and
the start-up refusal of a web root holding the node's own files.
"""

from __future__ import annotations

import os
import re

from twisted.internet import defer
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qewd_twisted import QEWDService
from qewd_twisted.config import ConfigError, config_from_dict, load_config, own_files_in
from qewd_twisted.config.limits import Limits
from qewd_twisted.transports.site import STATIC_DIR
from qewd_twisted.transports.static import StaticFiles
from tests.httpclient import connect, exchange, get, head_and_body, open_fds, status_of
from tests.integration.nodes import port_of, start_node

CLIENT_JS = os.path.join(STATIC_DIR, "ewd-client.js")


def make_root(test: TestCase) -> str:
    base = FilePath(test.mktemp())
    www = base.child("www")
    www.makedirs()
    www.child("index.html").setContent(b"<h1>hello</h1>")
    www.child("data.bin").setContent(bytes(range(256)) * 40)  # 10240 bytes
    www.child("notes.qwerty").setContent(b"<script>alert(1)</script>")
    www.child(".env").setContent(b"SECRET=1")
    www.child(".git").makedirs()
    www.child(".git").child("config").setContent(b"[core]")
    www.child("sub").makedirs()
    www.child("sub").child("page.html").setContent(b"sub page")
    base.child("outside.txt").setContent(b"jwt secret here")
    os.symlink(base.child("outside.txt").path, www.child("leak.txt").path)
    os.symlink(base.path, www.child("up").path)
    os.symlink(www.child("sub").child("page.html").path, www.child("inside-link.html").path)
    return www.path


class StaticFileTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.www = make_root(self)
        self.node = start_node(self, webServerRootPath=self.www)
        self.port = port_of(self.node)

    def fetch(self, path: bytes, headers: bytes = b"", method: bytes = b"GET") -> defer.Deferred:
        return defer.ensureDeferred(exchange(self.port, get(path, headers, method), self))

    @defer.inlineCallbacks
    def test_files_are_served_with_nosniff(self):
        for path, kind in ((b"/", b"text/html"), (b"/index.html", b"text/html"),
                           (b"/sub/page.html", b"text/html"), (b"/inside-link.html", b"text/html"),
                           (b"/ewd-client.js", b"text/javascript"),
                           (b"/socket.io/socket.io.js", b"text/javascript"),
                           (b"/notes.qwerty", b"application/octet-stream")):
            response = yield self.fetch(path)
            headers, _ = head_and_body(response)
            self.assertEqual(status_of(response), 200, path)
            self.assertTrue(headers[b"content-type"].startswith(kind), (path, headers))
            self.assertEqual(headers[b"x-content-type-options"], b"nosniff", path)

    @defer.inlineCallbacks
    def test_refused_paths(self):
        for path in (b"/.env", b"/.git/config", b"/.git/", b"/%2eenv", b"/sub/../.env",
                     b"/leak.txt", b"/up/outside.txt", b"/up/www/index.html", b"/sub/",
                     b"/..%2f..%2fetc%2fpasswd", b"/no-such-file"):
            response = yield self.fetch(path)
            headers, body = head_and_body(response)
            self.assertIn(status_of(response), (404, 400), path)
            self.assertEqual(headers[b"x-content-type-options"], b"nosniff", path)
            self.assertNotIn(b"SECRET", body)
            self.assertNotIn(b"jwt secret", body)
            self.assertNotIn(b"[core]", body)

    @defer.inlineCallbacks
    def test_one_range(self):
        response = yield self.fetch(b"/data.bin", b"Range: bytes=10-19\r\n")
        headers, body = head_and_body(response)
        self.assertEqual(status_of(response), 206)
        self.assertEqual(body, bytes(range(10, 20)))
        self.assertEqual(headers[b"content-range"], b"bytes 10-19/10240")

    @defer.inlineCallbacks
    def test_several_ranges_as_multipart(self):
        data = bytes(range(256)) * 40
        response = yield self.fetch(b"/data.bin", b"Range: bytes=0-9, 100-199,-5\r\n")
        headers, body = head_and_body(response)
        self.assertEqual(status_of(response), 206)
        boundary = re.match(rb'multipart/byteranges; boundary="(\w+)"',
                            headers[b"content-type"]).group(1)
        self.assertEqual(int(headers[b"content-length"]), len(body))
        parts = body.split(b"--" + boundary)
        self.assertEqual(parts[-1], b"--\r\n")
        got = []
        for part in parts[1:-1]:
            head, _, content = part.partition(b"\r\n\r\n")
            self.assertIn(b"content-type: application/octet-stream", head)
            start, end = map(int, re.search(rb"bytes (\d+)-(\d+)/10240", head).groups())
            content = content[:-2]  # the CRLF before the next boundary
            self.assertEqual(content, data[start:end + 1])
            got.append((start, end))
        self.assertEqual(got, [(0, 9), (100, 199), (10235, 10239)])

    @defer.inlineCallbacks
    def test_hostile_ranges_get_the_whole_file(self):
        size = os.path.getsize(CLIENT_JS)
        many = b",".join([b"0-"] * 1500)
        boundary_sized = b",".join(b"%d-%d" % (i * 90, i * 90 + 1) for i in range(5))
        for value in (many, b"0-,0-", b"0-99,50-149", b"5-9,0-6",
                      b",".join(b"%d-%d" % (i * 10, i * 10 + 1) for i in range(17))):
            response = yield self.fetch(b"/ewd-client.js", b"Range: bytes=" + value + b"\r\n")
            headers, body = head_and_body(response)
            self.assertEqual(status_of(response), 200, value[:40])
            self.assertEqual(len(body), size)  # never more than the file
            self.assertNotIn(b"content-range", headers)
        # small ranges that are not hostile (five of them once hung twisted.web's producer)
        for value in (b"0-0,2-2", boundary_sized):
            response = yield self.fetch(b"/ewd-client.js", b"Range: bytes=" + value + b"\r\n")
            headers, body = head_and_body(response)
            self.assertEqual(status_of(response), 206, value)
            self.assertEqual(int(headers[b"content-length"]), len(body))
            self.assertLess(len(body), size)

    @defer.inlineCallbacks
    def test_unsatisfiable_and_malformed_ranges(self):
        response = yield self.fetch(b"/data.bin", b"Range: bytes=20000-,30000-30001\r\n")
        headers, body = head_and_body(response)
        self.assertEqual(status_of(response), 416)
        self.assertEqual(headers[b"content-range"], b"bytes */10240")
        self.assertEqual(body, b"")
        for value in (b"bytes=abc", b"lines=1-2", b"bytes=5-1", b"bytes=-", b"Z" * 3000):
            response = yield self.fetch(b"/data.bin", b"Range: " + value + b"\r\n")
            self.assertEqual(status_of(response), 200, value[:20])
            self.assertEqual(len(head_and_body(response)[1]), 10240)

    @defer.inlineCallbacks
    def test_no_file_left_open(self):
        """Range requests, answered or abandoned mid-response, leave no file open."""
        big = os.path.join(self.www, "big.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(4 << 20))
        yield self.fetch(b"/big.bin", b"Range: bytes=0-9,20-29\r\n")  # warm up
        before = open_fds()
        for i in range(40):
            value = (b"0-,0-" if i % 3 == 0 else b"0-99,1000-1999" if i % 3 == 1 else
                     b"0-1048575,2097152-")
            client = yield defer.ensureDeferred(connect(self.port))
            client.send(get(b"/big.bin", b"Range: bytes=" + value + b"\r\n"))
            if i % 2:
                yield client.until(b"\r\n\r\n")
                yield client.close()  # leaves mid-response
            else:
                yield client.closed
        from tests.test_http_hardening import until_no_connections

        yield until_no_connections(self, self.node)
        self.assertLessEqual(open_fds(), before)

    @defer.inlineCallbacks
    def test_head_and_conditional(self):
        response = yield self.fetch(b"/data.bin", b"", b"HEAD")
        headers, body = head_and_body(response)
        self.assertEqual((status_of(response), body), (200, b""))
        self.assertEqual(headers[b"content-length"], b"10240")
        self.assertEqual(headers[b"x-content-type-options"], b"nosniff")


class OwnFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = FilePath(self.mktemp())
        self.dir.makedirs()
        self.dir.child("app.py").setContent(b"handlers = {}\n")
        self.dir.child("www").makedirs()

    def test_web_root_holding_a_module_is_refused(self):
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"webServerRootPath": ".", "moduleMap": {"app": "app.py"}},
                             self.dir.path)
        text = str(e.exception)
        self.assertIn("config.webServerRootPath", text)
        self.assertIn(self.dir.child("app.py").path, text)

    def test_web_root_holding_the_startup_file_is_refused(self):
        startup = self.dir.child("startup.py")
        startup.setContent(b'config = {"webServerRootPath": ".", "jwt": {"secret": "x"}}\n')
        with self.assertRaises(ConfigError) as e:
            load_config(startup.path)
        self.assertIn(startup.path, str(e.exception))

    def test_web_root_holding_a_dotted_module_is_refused_at_start(self):
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        from twisted.internet import reactor

        config = config_from_dict({"webServerRootPath": tests_dir,
                                   "moduleMap": {"demo": "tests.apps.demo"}})
        with self.assertRaises(ConfigError) as e:
            QEWDService(config, reactor)
        self.assertIn(os.path.join(tests_dir, "apps", "demo.py"), str(e.exception))

    def test_a_separate_web_root_is_fine(self):
        startup = self.dir.child("startup.py")
        startup.setContent(b'config = {"moduleMap": {"app": "app.py"}, "jwt": {"secret": "x"}}\n')
        config = load_config(startup.path)
        self.assertEqual(config.web_server_root, self.dir.child("www").path)
        self.assertIn(startup.path, config.own_files)
        self.assertIn(self.dir.child("app.py").path, config.own_files)

    def test_own_files_are_hidden_wherever_they_are(self):
        root = self.dir.child("www")
        root.child("key.pem").setContent(b"PRIVATE")
        files = StaticFiles(root.path, hidden=[root.child("key.pem").path])
        child = files.getChild(b"key.pem", None)
        self.assertNotIsInstance(child, StaticFiles)
        self.assertEqual(own_files_in(root.path, [root.child("key.pem").path, "/etc/passwd"]),
                         [root.child("key.pem").path])

    def test_defaults(self):
        self.assertEqual(StaticFiles(self.dir.path).defaultType, "application/octet-stream")
        self.assertEqual(Limits.max_ranges, 16)
