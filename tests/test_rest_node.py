# -*- test-case-name: tests.test_rest_node -*-
"""
The remote side of REST (issue 13 item 5): ``restRequest`` messages from a primary, dispatched
by ``pathTemplate`` and method (``ANY`` as the fallback) to the module's ``routes`` table, on an
in-memory node (docs/protocol.md §4.5 steps 5-6).
"""

from __future__ import annotations

import types

from twisted.trial.unittest import TestCase

from qewd_twisted.rest import RestDispatcher, attach
from qewd_twisted.testing import NodeHarness
from tests.apps import rest_api


def _qewd_style_module():
    """A module written as for qewd-router's addMicroServiceHandler (object shape)."""
    mod = types.ModuleType("ms_style")

    def get_stock(args, finished):
        finished({"store": args["destination"], "items": 3})

    def any_stock(args, finished):
        finished({"any": args["req"]["method"]})

    mod.routes = {"/api/store/:destination/stock": {"GET": get_stock, "ANY": any_stock}}
    return mod


def _own_handler_module():
    mod = types.ModuleType("own")

    def rest_request(messageObj, session, send, finished):
        finished({"own": messageObj["path"]})

    mod.handlers = {"restRequest": rest_request}
    return mod


class RemoteSideTests(TestCase):
    def setUp(self):
        self.h = NodeHarness({"api": rest_api, "stock": _qewd_style_module(),
                              "own": _own_handler_module()})
        attach(self.h.node, RestDispatcher(self.h.node))
        self.link = self.h.connect()
        self.token = self.h.register(self.link, "api")

    def forward(self, template, method="GET", token=None, rid=7, **extra):
        msg = {"application": "api", "type": "restRequest", "path": "/x", "pathTemplate": template,
               "method": method, "headers": {}, "query": {}, "body": {}, "ip": "10.0.0.1",
               "token": self.token if token is None else token, "jwt": True,
               "ms_requestId": rid, **extra}
        return self.h.send(self.link, msg)

    def test_dispatch_by_template_and_method(self):
        [frame] = self.forward("/api/users/:id", args={"id": "5"})
        self.assertEqual((frame["type"], frame["finished"], frame["ms_requestId"]),
                         ("restRequest", True, 7))
        message = frame["message"]
        self.assertEqual(message["ms_requestId"], 7)  # a QEWD.js primary matches on this one
        self.assertEqual((message["id"], message["method"]), ("5", "GET"))
        session = self.h.tokens.session(message["token"])
        self.assertEqual(session["application"], "api")

    def test_handler_sees_req_without_args_and_session(self):
        [frame] = self.forward("/api/echo/*rest", method="PATCH", args={"rest": "a/b"},
                               query={"q": "1"}, body={"b": 2})
        m = frame["message"]
        self.assertEqual(m["args"], {"rest": "a/b"})
        self.assertEqual((m["method"], m["query"], m["body"], m["ip"]),
                         ("PATCH", {"q": "1"}, {"b": 2}, "10.0.0.1"))
        self.assertEqual(m["pathTemplate"], "/api/echo/*rest")

    def test_any_fallback_and_object_shape(self):
        stock_token = self.h.tokens.register_token("stock", {})
        [frame] = self.forward("/api/store/:destination/stock", token=stock_token,
                               args={"destination": "s1"})
        self.assertEqual(frame["message"]["store"], "s1")
        [frame] = self.forward("/api/store/:destination/stock", method="DELETE",
                               token=stock_token, args={"destination": "s1"})
        self.assertEqual(frame["message"]["any"], "DELETE")

    def test_unknown_template_and_method(self):
        [frame] = self.forward("/api/nothing")
        self.assertEqual(frame["message"], {
            "error": "No routes defined for handling REST MicroService requests",
            "status": {"code": 404}, "ms_requestId": 7})
        [frame] = self.forward("/api/users/:id", method="PUT")
        self.assertEqual(frame["message"]["error"],
                         "No handler defined for incoming REST MicroService request")

    def test_error_reply_keeps_status_and_no_token(self):
        [frame] = self.forward("/api/users", method="POST", body={})
        self.assertEqual(frame["message"], {"error": "name is required", "status": {"code": 422},
                                            "ms_requestId": 7})

    def test_crash_answers_with_the_request_id(self):
        [frame] = self.forward("/api/crash")
        self.flushLoggedErrors(ValueError)
        self.assertEqual(frame["type"], "restRequest")
        self.assertEqual(frame["message"], {"error": "Unexpected Exception occurred: boom",
                                            "status": {"code": 500}, "ms_requestId": 7})

    def test_bad_tokens(self):
        [frame] = self.forward("/api/users/:id", token="x.y.z")
        self.assertEqual(frame["message"]["ms_requestId"], 7)
        self.assertTrue(frame["message"]["error"].startswith("Invalid JWT"))
        self.assertEqual(frame["message"]["status"], {"code": 403})
        [frame] = self.forward("/api/users/:id", token="")
        self.assertEqual(frame["message"]["error"], "Missing authorization header")

    def test_unknown_application(self):
        token = self.h.tokens.register_token("nope", {})
        [frame] = self.forward("/api/users/:id", token=token)
        self.assertEqual(frame["message"]["error"], "Unable to load handler module for: nope")

    def test_module_with_its_own_rest_request_handler(self):
        token = self.h.tokens.register_token("own", {})
        [frame] = self.forward("/whatever", token=token, path="/own/1")
        self.assertEqual(frame["message"]["own"], "/own/1")

    def test_no_template_matches_path(self):
        [frame] = self.forward(None, path="/api/users/12?x=1")
        self.assertEqual(frame["message"]["id"], "12")
        [frame] = self.forward(None, path=None)
        self.assertEqual(frame["message"]["error"],
                         "Invalid restRequest: pathTemplate or path is needed")

    def test_without_dispatcher_it_is_an_ordinary_message(self):
        """A node without the REST dispatcher runs restRequest as any other type (QEWD.js:
        the module's handlers.restRequest)."""
        h = NodeHarness({"api": rest_api})
        link = h.connect()
        token = h.register(link, "api")
        [frame] = h.send(link, {"type": "restRequest", "token": token, "ms_requestId": 3})
        self.assertEqual(frame["message"]["error"],
                         "Handler not defined for api messages of type restRequest")


class QArgumentTests(TestCase):
    def test_handler_with_three_parameters_gets_q(self):
        mod = types.ModuleType("with_q")
        seen = []

        def get(args, finished, q):
            seen.append(q)
            finished({"ok": True})

        mod.routes = [{"url": "/q", "handler": get}]
        h = NodeHarness({"with_q": mod})
        attach(h.node, RestDispatcher(h.node))
        link = h.connect()
        token = h.tokens.register_token("with_q", {})
        [frame] = h.send(link, {"type": "restRequest", "pathTemplate": "/q", "method": "GET",
                                "token": token, "ms_requestId": 1})
        self.assertIs(frame["message"]["ok"], True)
        self.assertEqual(seen, [h.node.q])
        self.assertTrue(callable(seen[0].to_all))


class BeforeMicroServiceHandlerTests(TestCase):
    def test_before_hook_can_refuse(self):
        from qewd_twisted.rest import validate_rest_request

        mod = types.ModuleType("guarded")

        def before(args, finished):
            return validate_rest_request(args, finished)  # the Authorization header's JWT

        def get(args, finished):
            finished({"ok": True, "user": args["session"]["username"]})

        mod.beforeMicroServiceHandler = before
        mod.routes = [{"url": "/g", "method": "GET", "handler": get}]
        h = NodeHarness({"guarded": mod})
        attach(h.node, RestDispatcher(h.node))
        link = h.connect()
        token = h.tokens.register_token("guarded", {})
        msg = {"type": "restRequest", "pathTemplate": "/g", "method": "GET", "token": token,
               "headers": {}, "ms_requestId": 1}
        [frame] = h.send(link, msg)
        self.assertEqual(frame["message"]["status"], {"code": 401})
        user = h.tokens.register_token("guarded", {"username": "rob", "authenticated": True})
        [frame] = h.send(link, dict(msg, headers={"authorization": "Bearer " + user}))
        self.assertEqual(frame["message"]["user"], "rob")
