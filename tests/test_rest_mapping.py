# -*- test-case-name: tests.test_rest_mapping -*-
"""Reply frames to HTTP, bodies and bearer tokens (qewd_twisted/rest/mapping.py): pure."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from qewd_twisted.rest.mapping import (
    BodyError,
    bearer_token,
    parse_body,
    parse_query,
    reply_from_frame,
)


class ReplyFromFrameTests(TestCase):
    def test_success_strips_internal_fields(self):
        r = reply_from_frame({"type": "restRequest", "finished": True, "message": {
            "ok": 1, "ewd_application": "a", "restMessage": True, "ms_requestId": 4}})
        self.assertEqual((r.status, r.body, r.headers), (200, {"ok": 1}, []))

    def test_error_default_400_and_status_code(self):
        self.assertEqual(reply_from_frame({"message": {"error": "x"}}).status, 400)
        r = reply_from_frame({"message": {"error": "x", "status": {"code": 503}}})
        self.assertEqual((r.status, r.body), (503, {"error": "x"}))
        r = reply_from_frame({"message": {"error": "x", "status": {"code": 99}}})
        self.assertEqual(r.status, 400)

    def test_error_response_object(self):
        r = reply_from_frame({"message": {"error": {"response": {"why": "custom"}},
                                          "status": {"code": 418}}})
        self.assertEqual((r.status, r.body), (418, {"why": "custom"}))

    def test_crash_frame(self):
        r = reply_from_frame({"type": "error", "finished": True, "message": "boom"})
        self.assertEqual((r.status, r.body),
                         (500, {"error": "Unexpected Exception occurred: boom"}))

    def test_rejection_without_finished(self):
        r = reply_from_frame({"type": "x", "message": {"error": "Invalid JWT: Error: Token "
                                                       "expired", "disconnect": True}})
        self.assertEqual((r.status, r.body), (400, {"error": "Invalid JWT: Error: Token expired"}))

    def test_cookie_and_headers(self):
        r = reply_from_frame({"message": {"a": 1, "token": "T", "qewd_send_jwt_as_cookie": True,
                                          "qewd_response_headers": {"X-A": "b", "Bad": "x\r\ny"}}})
        self.assertEqual(r.body, {"a": 1})
        self.assertEqual(r.headers, [("X-A", "b"), ("Set-Cookie", "JSESSIONID=T; path=/")])
        r = reply_from_frame({"message": {"token": "T", "qewd_send_jwt_as_cookie": {
            "name": "c", "directives": ["Secure", "HttpOnly"]}}})
        self.assertEqual(r.headers, [("Set-Cookie", "c=T; Secure; HttpOnly")])

    def test_list_and_garbage(self):
        self.assertEqual(reply_from_frame({"message": [1]}).body, [1])
        self.assertEqual(reply_from_frame("x").status, 500)
        self.assertEqual(reply_from_frame({"type": "t"}).status, 400)

    def test_405_allow(self):
        r = reply_from_frame({"message": {"error": "no", "status": {"code": 405},
                                          "allow": ["GET", "HEAD"]}})
        self.assertEqual(r.headers, [("Allow", "GET, HEAD")])


class BodyTests(TestCase):
    def test_json_form_empty_text(self):
        self.assertEqual(parse_body(b'{"a": 1}', "application/json; charset=utf-8"), {"a": 1})
        self.assertEqual(parse_body(b'[1]', None), [1])
        self.assertEqual(parse_body(b"a=1&b=2&b=3", "application/x-www-form-urlencoded"),
                         {"a": "1", "b": ["2", "3"]})
        self.assertEqual(parse_body(b"", "application/json"), {})
        self.assertEqual(parse_body(b"hello", "text/plain"), "hello")

    def test_malformed(self):
        self.assertRaises(BodyError, parse_body, b"{", "application/json")
        self.assertRaises(BodyError, parse_body, b"\xff\xfe", None)
        self.assertRaises(BodyError, parse_body, b"NaN", None)

    def test_query(self):
        self.assertEqual(parse_query("x=1&y=%20&x=2"), {"x": ["1", "2"], "y": " "})


class BearerTests(TestCase):
    def test_bearer(self):
        self.assertEqual(bearer_token({"authorization": "Bearer abc"}), "abc")
        self.assertEqual(bearer_token({"authorization": "Basic abc"}), "")
        self.assertEqual(bearer_token({}), "")
        self.assertEqual(bearer_token({"authorization": "Bearer undefined"}), "")
        self.assertEqual(bearer_token({"authorization": "abc"}, bearer=False), "abc")
