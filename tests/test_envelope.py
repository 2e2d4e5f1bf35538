"""
Tests for qewd_twisted.core.envelope: the shape of every frame a client or a link sees
(docs/protocol.md §1.4, §2.4, §4.5, §5.4).
"""

from __future__ import annotations

import ast
import inspect

from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted import errors as E
from qewd_twisted.core import envelope


class ReplyTests(SynchronousTestCase):
    def test_response_time(self) -> None:
        self.assertEqual(envelope.response_time(10.0, 10.0123), "12ms")
        self.assertEqual(envelope.response_time(10.0, 9.0), "0ms")  # a clock going back

    def test_reply(self) -> None:
        self.assertEqual(envelope.reply("login", {"ok": True}, "3ms"),
                         {"type": "login", "finished": True, "message": {"ok": True},
                          "responseTime": "3ms"})

    def test_reply_since_is_reply_with_its_response_time(self) -> None:
        for rid in (None, 4):
            self.assertEqual(envelope.reply_since("t", {"a": 1}, 10.0, 10.0123, rid, False),
                             envelope.reply("t", {"a": 1}, "12ms", rid, False))
        self.assertEqual(envelope.reply_since("t", None, 10.0, 9.0)["responseTime"], "0ms")

    def test_intermediate(self) -> None:
        frame = envelope.reply("login", {"n": 1}, "1ms", finished=False)
        self.assertIs(frame["finished"], False)
        self.assertFalse(envelope.is_final(frame))

    def test_request_id_echoed_on_frame_and_object_message(self) -> None:
        frame = envelope.reply("login", {"ok": True}, "3ms", rid=7)
        self.assertEqual(frame["ms_requestId"], 7)
        self.assertEqual(frame["message"], {"ok": True, "ms_requestId": 7})
        listed = envelope.reply("login", [1, 2], "3ms", rid=7)
        self.assertEqual((listed["message"], listed["ms_requestId"]), ([1, 2], 7))

    def test_error(self) -> None:
        self.assertEqual(
            envelope.error("login", "nope", "2ms", status=503, reason="x"),
            {"type": "login", "finished": True, "responseTime": "2ms",
             "message": {"error": "nope", "reason": "x", "status": {"code": 503}}})

    def test_disconnect_only_without_request_id(self) -> None:
        self.assertIs(envelope.error("t", "e", "0ms", disconnect=True)["message"]["disconnect"],
                      True)
        message = envelope.error("t", "e", "0ms", rid=3, disconnect=True)["message"]
        self.assertNotIn("disconnect", message)  # §2.4

    def test_jwt_rejection_has_no_finished(self) -> None:
        self.assertEqual(envelope.jwt_rejection("login", "Invalid JWT"),
                         {"type": "login", "message": {"error": "Invalid JWT",
                                                       "disconnect": True}})
        self.assertEqual(envelope.jwt_rejection("login", "Invalid JWT", rid=4),
                         {"type": "login", "message": {"error": "Invalid JWT"},
                          "ms_requestId": 4})
        self.assertTrue(envelope.is_final(envelope.jwt_rejection("login", "x")))

    def test_crash(self) -> None:
        self.assertEqual(envelope.crash("boom", "5ms"),
                         {"type": "error", "finished": True, "message": "boom",
                          "responseTime": "5ms"})
        self.assertEqual(envelope.crash("boom", "5ms", rid=2)["ms_requestId"], 2)

    def test_transport_and_internal_errors(self) -> None:
        self.assertEqual(envelope.transport_error("bad"),
                         {"type": "error", "finished": True, "message": {"error": "bad"}})
        self.assertEqual(envelope.internal_error({"type": "x"})["type"], "x")
        self.assertEqual(envelope.internal_error({"type": 3})["type"], "error")
        self.assertEqual(envelope.internal_error("junk")["message"],
                         {"error": E.INTERNAL_ERROR})

    def test_not_json_keeps_correlation(self) -> None:
        frame = {"type": "t", "finished": False, "message": {1j: 1}, "responseTime": "1ms",
                 "ms_requestId": 9}
        self.assertEqual(envelope.not_json(frame),
                         {"type": "t", "finished": False, "responseTime": "1ms",
                          "ms_requestId": 9,
                          "message": {"error": E.NOT_JSON_REPLY.format(type="t")}})
        self.assertEqual(envelope.not_json(object())["type"], "error")


class LinkFrameTests(SynchronousTestCase):
    def test_down_and_timeout(self) -> None:
        self.assertEqual(envelope.link_down("login"),
                         {"type": "login", "finished": True,
                          "message": {"error": E.MS_DOWN, "status": {"code": 503}}})
        frame = envelope.link_timeout("login", "30000ms", rid=5)
        self.assertEqual(frame["message"], {"error": E.MS_TIMEOUT, "status": {"code": 504}})
        self.assertEqual((frame["responseTime"], frame["ms_requestId"]), ("30000ms", 5))
        self.assertNotIn("ms_requestId", frame["message"])

    def test_final_rule(self) -> None:
        self.assertTrue(envelope.is_final({"type": "a", "finished": True}))
        self.assertFalse(envelope.is_final({"type": "a", "finished": False}))
        self.assertTrue(envelope.is_final({"type": "login", "message": {"error": "x"}}))

    def test_from_link_strips_request_ids(self) -> None:
        frame = {"type": "t", "finished": False, "ms_requestId": 3,
                 "message": {"n": 1, "ms_requestId": 3}}
        self.assertEqual(envelope.from_link(frame, "t"),
                         {"type": "t", "finished": False, "message": {"n": 1}})
        self.assertEqual(frame["message"]["ms_requestId"], 3)  # the input is left alone

    def test_from_link_retypes_a_remote_crash(self) -> None:
        self.assertEqual(envelope.from_link({"type": "error", "finished": True,
                                             "message": "null ref"}, "login"),
                         {"type": "login", "finished": True,
                          "message": {"error": "null ref"}})
        self.assertEqual(envelope.from_link({"type": "error", "finished": True,
                                             "message": {"error": "x"}}, "login")["type"],
                         "login")
        intermediate = {"type": "error", "finished": False, "message": "x"}
        self.assertEqual(envelope.from_link(intermediate, "login"), intermediate)

    def test_from_link_types_a_typeless_frame(self) -> None:
        self.assertEqual(envelope.from_link({"message": {"error": "x"}}, "login")["type"],
                         "login")

    def test_relayed(self) -> None:
        frame = {"type": "login", "message": {"error": "Invalid JWT", "disconnect": True}}
        out = envelope.relayed(frame, "login", "4ms", None, final=True)
        self.assertEqual(out, {"type": "login", "finished": True, "responseTime": "4ms",
                               "message": {"error": "Invalid JWT"}})
        out = envelope.relayed({"finished": False, "message": {}}, "t", "1ms", 8, final=False)
        self.assertEqual(out, {"type": "t", "finished": False, "message": {},
                               "responseTime": "1ms", "ms_requestId": 8})

    def test_bad_ms_token(self) -> None:
        self.assertEqual(envelope.bad_ms_token(),
                         {"error": E.BAD_MS_TOKEN, "status": {"code": 502}})


class PurityTests(SynchronousTestCase):
    def test_imports_only_errors(self) -> None:
        tree = ast.parse(inspect.getsource(envelope))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        self.assertEqual(imported - {"__future__", "typing"}, {"qewd_twisted"})
        self.assertEqual(
            [n.names[0].name for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and n.module == "qewd_twisted"], ["errors"])
