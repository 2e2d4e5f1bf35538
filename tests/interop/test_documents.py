# -*- test-case-name: tests.interop.test_documents -*-
"""
Documents shared with QEWD.js on one Redis (issue 15 item 4): a real QEWD.js node of our own
(tests/interop/js/qewd-docs.js, the peer kit's installed qewd, ewd-document-store over
ewd-redis-globals) and our RedisStore on the peer's Redis (``QEWD_REDIS_PORT``). QEWD.js writes
a document and Python reads it with ``get_document(True)``; Python writes one and QEWD.js reads
it with ``getDocument(true)``; both increment one counter; a delete on either side is seen by
the other. The documented differences (docs/compatibility.md) are pinned down too: text
outside Latin-1.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from qewd_twisted.documents import DocumentStore
from tests.interop.peer import (
    NODE,
    REDIS_PORT,
    PeerProcess,
    eio_url,
    free_port,
    peer_home,
    register,
    request,
)
from tests.wsclient import EIOClient

def _listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js", "qewd-docs.js")


class QEWDjsSharesDocumentsTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        # Only the peer's Redis and its installed qewd are needed (not its master or MS).
        problems = []
        if not _listening(("127.0.0.1", int(REDIS_PORT))):
            problems.append(f"the peer's Redis on 127.0.0.1:{REDIS_PORT} is not reachable")
        if NODE is None or peer_home() is None:
            problems.append("node or the peer's installed run folder is missing")
        if problems:
            why = ("QEWD.js peer unavailable: " + "; ".join(problems)
                   + " (start it with: bash scripts/peer.sh start)")
            if os.environ.get("CI"):
                self.fail(why)
            raise SkipTest(why)
        try:
            from qewd_twisted.documents.redis import RedisStore
        except ImportError:  # pragma: no cover - the [redis] extra is part of [test]
            self.fail("redis-py is not installed (pip install .[redis])")
        self.db = DocumentStore(RedisStore(port=int(REDIS_PORT)))
        self.addCleanup(self.db.close)
        # a document name of our own on the shared Redis, removed afterwards
        self.name = "pyInterop" + uuid.uuid4().hex[:8]
        self.addCleanup(lambda: self.db.use(self.name).delete())

    @defer.inlineCallbacks
    def start_js(self) -> Any:
        port = free_port()
        js = PeerProcess(self, JS, {"QEWD_DOCS_PORT": str(port),
                                    "NODE_PATH": os.path.join(peer_home(), "node_modules")},
                         f"QEWD.js documents node :{port}")
        ready = js.wait_for(f"QEWD.js is listening on port {port}")
        js.start()
        yield ready
        c = EIOClient(eio_url(("127.0.0.1", port)))
        self.addCleanup(c.close)
        token = yield defer.ensureDeferred(register(c, "docs"))
        return c, token

    def js(self, c: EIOClient, token: str, type: str, **params: Any) -> defer.Deferred:
        params.setdefault("name", self.name)

        async def go() -> Any:
            frames = await request(c, {"type": type, "token": token, "params": params})
            message = frames[-1]["message"]
            assert "error" not in message, message
            return message

        return defer.ensureDeferred(go())

    @defer.inlineCallbacks
    def test_both_ways(self) -> None:
        c, token = yield self.start_js()
        # QEWD.js writes, Python reads
        written = {"name": "Rob", "age": 60, "ok": True, "tags": ["a", "b", {"c": 1}],
                   "nested": {"deep": {"x": "1.5"}}, "latin": "héllo ÿ", "10": "ten", "2": "two"}
        yield self.js(c, token, "write", subscripts=["fromJS"], document=written)
        node = self.db.use(self.name, "fromJS")
        self.assertEqual(node.get_document(True), written)
        self.assertEqual([n.name for n in node.children()],
                         [2, 10, "age", "latin", "name", "nested", "ok", "tags"])
        self.assertEqual(node.use("tags").get_document(True), ["a", "b", {"c": 1}])
        self.assertEqual(node.use("latin").value, "héllo ÿ")

        # Python writes, QEWD.js reads
        ours = {"city": "Reigate", "n": 7, "flag": False, "list": [1, [2, 3]],
                "é": "Ürlaub", "big": {"1": "one", "20": "twenty", "3": "three"}}
        self.db.use(self.name, "fromPy").set_document(ours)
        seen = yield self.js(c, token, "read", subscripts=["fromPy"])
        self.assertEqual(seen["document"], ours)
        self.assertEqual(seen["children"], ["big", "city", "flag", "list", "n", "é"])
        big = yield self.js(c, token, "read", subscripts=["fromPy", "big"])
        self.assertEqual(big["children"], [1, 3, 20])

        # a node with both a value and children: QEWD.js sees both (data 11)
        self.db.use(self.name, "both").value = "v"
        self.db.use(self.name, "both", "kid").value = 1
        both = yield self.js(c, token, "read", subscripts=["both"])
        self.assertEqual((both["value"], both["hasValue"], both["hasChildren"]), ("v", True, True))

        # one counter, both sides
        self.assertEqual(self.db.use(self.name, "counter").increment(), 1)
        self.assertEqual((yield self.js(c, token, "increment", subscripts=["counter"]))["value"], 2)
        self.assertEqual(self.db.use(self.name, "counter").increment(5), 7)

        # deletes are seen by the other side
        self.db.use(self.name, "fromPy", "list").delete()
        seen = yield self.js(c, token, "read", subscripts=["fromPy"])
        self.assertNotIn("list", seen["document"])
        yield self.js(c, token, "remove", subscripts=["fromJS", "nested"])
        self.assertFalse(self.db.use(self.name, "fromJS", "nested").exists)
        self.assertTrue(self.db.use(self.name, "fromJS", "tags").exists)

    @defer.inlineCallbacks
    def test_text_outside_latin1(self) -> None:
        """docs/compatibility.md: QEWD.js drops characters above U+00FF when it writes, and
        reads our UTF-8 bytes for them as Latin-1 characters; we read both ways exactly."""
        c, token = yield self.start_js()
        yield self.js(c, token, "setValue", subscripts=["jsText"], value="日本 é")
        self.assertEqual(self.db.use(self.name, "jsText").value, " é")
        self.db.use(self.name, "pyText").value = "日本"
        seen = yield self.js(c, token, "read", subscripts=["pyText"])
        self.assertEqual(seen["value"], "日本".encode("utf-8").decode("latin-1"))
        self.assertEqual(self.db.use(self.name, "pyText").value, "日本")
