# -*- test-case-name: tests.test_rest_forwarding -*-
"""
The REST micro-service router (issue 13 item 5, docs/protocol.md §4.5-§4.6): routes, token
selection, group fan-out and QEWD's aggregation, hooks, link down/timeout. In memory: fake
links that record what they are asked to send and answer when the test says.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from qewd_twisted.config import config_from_dict
from qewd_twisted.core.interfaces import IReplyReceiver, LinkOutcome
from qewd_twisted.rest import RestDispatcher, attach
from qewd_twisted.rest.forwarding import RestForwarder, aggregate, leaves
from qewd_twisted.testing import MemoryConnection, NodeHarness

SECRET = "someSecret123"


class FakeLink:
    """Records what it is asked to send; ``sent[i][1]`` is the request's IReplyReceiver."""

    def __init__(self, url, application):
        self.url, self.application = url, application
        self.sent = []

    def send_request(self, message, receiver, timeout=None):
        self.sent.append((message, receiver, timeout))

    def reply(self, i=-1, **message):
        self.sent[i][1].frame({"type": "restRequest", "finished": True, "message": message})


class FakeMicroServices:
    def __init__(self):
        self.links = {}

    def link_for(self, urls, application):
        [url] = urls  # one host per destination here (replicas: tests/test_replicas.py)
        return self.links.setdefault(url, FakeLink(url, application))


class HttpMemoryConnection(MemoryConnection):
    framing = "http"
    needs_reply = True


def u_services(**route_options):
    return {
        "destinations": {
            "a": {"host": "http://127.0.0.1:1001", "application": "appA"},
            "b": {"host": "http://127.0.0.1:1002", "application": "appB"},
            "ab": {"destinations": ["a", "b"]},
            "all": {"destinations": ["ab", "a"]},
        },
        "routes": [
            {"path": "/api/users/:id", "method": "GET", "destination": "a", **route_options},
            {"path": "/api/open", "destination": "a", "bypassJWTCheck": True},
            {"path": "/api/store/:destination/stock", "method": "GET"},
        ],
    }


class ForwardingTests(TestCase):
    def setUp(self, **route_options):
        self.h = NodeHarness({})
        config = config_from_dict({"jwt": {"secret": SECRET}, "port": 0,
                                   "u_services": u_services(**route_options)})
        self.ms = FakeMicroServices()
        self.forwarder = RestForwarder(self.h.node, config.micro_services, self.ms, timeout=5)
        attach(self.h.node, RestDispatcher(self.h.node, forwarder=self.forwarder))
        self.a = self.ms.links["http://127.0.0.1:1001"]
        self.b = self.ms.links["http://127.0.0.1:1002"]

    def request(self, path, method="GET", headers=None, **extra):
        conn = HttpMemoryConnection()
        msg = {"type": "restRequest", "method": method, "path": path, "headers": headers or {},
               "query": {}, "body": {}, "ip": "10.1.1.1", "ips": ["10.1.1.1"], **extra}
        self.h.node.receive(conn, msg)
        return conn

    def test_forwarded_message_shape_and_reply(self):
        conn = self.request("/api/users/7?x=1")
        [(msg, receiver, timeout)] = self.a.sent
        verifyObject(IReplyReceiver, receiver)
        self.assertEqual(timeout, 5)
        self.assertEqual({k: msg[k] for k in ("application", "type", "path", "pathTemplate",
                                              "method", "params", "args", "jwt", "ip")},
                         {"application": "appA", "type": "restRequest", "path": "/api/users/7?x=1",
                          "pathTemplate": "/api/users/:id", "method": "GET",
                          "params": {"id": "7"}, "args": {"id": "7"}, "jwt": True,
                          "ip": "10.1.1.1"})
        session = self.h.tokens.session(msg["token"])  # a fresh, unauthenticated session
        self.assertEqual((session["application"], session["authenticated"]), ("appA", False))
        self.assertEqual(conn.take(), [])
        remote_token = self.h.tokens.register_token("appA", {})
        self.a.reply(ok=1, token=remote_token)
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"ok": 1, "token": remote_token})
        self.assertEqual(self.h.node.in_flight, 0)

    def test_client_jwt_verified_and_rewritten(self):
        token = self.h.tokens.register_token("web", {"authenticated": True})
        self.request("/api/users/1", headers={"authorization": f"Bearer {token}"})
        msg = self.a.sent[-1][0]
        self.assertEqual(self.h.tokens.session(msg["token"])["application"], "appA")
        self.assertEqual(self.h.tokens.session(msg["token"])["authenticated"], True)
        conn = self.request("/api/users/1", headers={"authorization": "Bearer x.y.z"})
        self.assertEqual(len(self.a.sent), 1)  # not forwarded
        [frame] = conn.take()
        self.assertTrue(frame["message"]["error"].startswith("Invalid JWT"))

    def test_bypass_passes_an_unverifiable_jwt_in_the_header_only(self):
        self.request("/api/open", method="POST", headers={"authorization": "Bearer x.y.z"})
        msg = self.a.sent[-1][0]
        self.assertEqual(msg["headers"], {"authorization": "Bearer x.y.z"})
        self.assertNotEqual(msg["token"], "x.y.z")
        self.h.tokens.session(msg["token"])

    def test_method_mismatch_falls_through_to_local(self):
        conn = self.request("/api/users/1", method="DELETE")
        self.assertEqual(self.a.sent, [])
        [frame] = conn.take()
        self.assertEqual(frame["message"]["error"], "url could not be matched")

    def test_destination_variable_and_unknown(self):
        self.request("/api/store/b/stock")
        self.assertEqual(len(self.b.sent), 1)
        conn = self.request("/api/store/zz/stock")
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"error": "No such destination: zz"})

    def test_group_fan_out_and_aggregation(self):
        conn = self.request("/api/store/all/stock")
        self.assertEqual((len(self.a.sent), len(self.b.sent)), (1, 1))  # "a" once, not twice
        t = self.h.tokens.register_token("appB", {})
        self.b.reply(items=2, token=t)
        self.assertEqual(conn.take(), [])
        self.a.reply(error="no stock", status={"code": 404})
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"results": {
            "a": {"error": "no stock", "status": {"code": 404}}, "b": {"items": 2}},
            "token": t})

    def test_link_down_and_timeout(self):
        conn = self.request("/api/users/1")
        self.a.sent[-1][1].failed(LinkOutcome.DOWN)
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"error": "MicroService connection is down",
                                            "status": {"code": 503}})
        conn = self.request("/api/users/1")
        self.a.sent[-1][1].failed(LinkOutcome.TIMEOUT)
        [frame] = conn.take()
        self.assertEqual(frame["message"]["status"], {"code": 504})

    def test_intermediate_frames_are_not_answers(self):
        conn = self.request("/api/users/1")
        self.a.sent[-1][1].frame({"type": "restRequest", "finished": False, "message": {"x": 1}})
        self.assertEqual(conn.take(), [])

    def test_unverifiable_token_in_reply_is_502(self):
        conn = self.request("/api/users/1")
        self.a.reply(ok=1, token="a.b.c")
        [frame] = conn.take()
        self.assertEqual(frame["message"], {"error": "Invalid token from micro-service",
                                            "status": {"code": 502}})


class HookTests(TestCase):
    def make(self, **hooks):
        t = ForwardingTests("test_forwarded_message_shape_and_reply")
        t.setUp(**hooks)
        return t

    def test_on_request_handles_or_falls_through(self):
        seen = []

        def on_request(args, send, handle_response):
            seen.append(args)
            if args["id"] == "1":
                handle_response({"message": {"from": "onRequest"}})
                return True
            return False

        t = self.make(onRequest=on_request)
        conn = t.request("/api/users/1", headers={"authorization": "Bearer abc"})
        self.assertEqual(conn.take()[0]["message"], {"from": "onRequest"})
        self.assertEqual(seen[0]["jwt"], "abc")
        self.assertEqual(seen[0]["req"]["pathTemplate"], "/api/users/:id")
        t.request("/api/users/2")
        self.assertEqual(len(t.a.sent), 1)

    def test_on_request_send_reroutes(self):
        def on_request(args, send, handle_response):
            send({"path": "/api/store/b/stock", "method": "GET"}, handle_response)

        t = self.make(onRequest=on_request)
        conn = t.request("/api/users/1")
        self.assertEqual(len(t.b.sent), 1)
        t.b.reply(rerouted=True)
        self.assertEqual(conn.take()[0]["message"], {"rerouted": True})

    def test_on_response(self):
        def on_response(obj):
            if obj["responseObj"]["message"].get("ok"):
                obj["handleResponse"]({"message": {"changed": obj["destination"]}})
                return True
            return False

        t = self.make(onResponse=on_response)
        conn = t.request("/api/users/1")
        t.a.reply(ok=1)
        self.assertEqual(conn.take()[0]["message"], {"changed": "a"})
        conn = t.request("/api/users/1")
        t.a.reply(other=1)
        self.assertEqual(conn.take()[0]["message"], {"other": 1})


class AggregateTests(TestCase):
    def test_all_failed_same_error(self):
        f = {"message": {"error": "down", "status": {"code": 503}}}
        self.assertEqual(aggregate({"a": f, "b": f}), {"error": "down", "status": {"code": 503}})
        g = {"message": {"error": "down"}}
        self.assertEqual(aggregate({"a": f, "b": g}), {"error": "down"})

    def test_all_failed_different_errors(self):
        self.assertEqual(aggregate({"a": {"message": {"error": "x"}},
                                    "b": {"type": "error", "message": "crash"}}),
                         {"error": {"destinations": {"a": {"error": "x"},
                                                     "b": {"error": "crash"}}}})

    def test_success_first_token(self):
        self.assertEqual(aggregate({"a": {"message": {"v": 1}},
                                    "b": {"message": {"v": 2, "token": "T"}},
                                    "c": {"message": {"v": 3, "token": "U"}}}),
                         {"results": {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 3}},
                          "token": "T"})

    def test_leaves(self):
        self.assertEqual(leaves("all", {"all": ("ab", "a", "c"), "ab": ("a", "b")}),
                         ["a", "b", "c"])
        self.assertEqual(leaves("x", {}), ["x"])


class UseMicroServiceTests(TestCase):
    """§4.7: a WebSocket handler hands its request on to a REST micro-service route."""

    def setUp(self):
        import types

        mod = types.ModuleType("ws_app")

        def lookup(messageObj, session, send, finished):
            finished({"use_microservice": True,
                      "request": {"path": "/api/users/" + messageObj["params"]["id"]}})

        mod.handlers = {"lookup": lookup}
        self.h = NodeHarness({"web": mod})
        config = config_from_dict({"jwt": {"secret": SECRET}, "port": 0,
                                   "u_services": u_services()})
        self.ms = FakeMicroServices()
        forwarder = RestForwarder(self.h.node, config.micro_services, self.ms, timeout=5)
        attach(self.h.node, RestDispatcher(self.h.node, forwarder=forwarder))
        self.a = self.ms.links["http://127.0.0.1:1001"]

    def test_reply_comes_back_under_the_original_type(self):
        conn = self.h.connect()
        token = self.h.register(conn, "web")
        frames = self.h.send(conn, {"type": "lookup", "token": token, "params": {"id": "8"}})
        self.assertEqual(frames, [])
        [(msg, _, _)] = self.a.sent
        self.assertEqual((msg["path"], msg["args"]), ("/api/users/8", {"id": "8"}))
        self.assertEqual(self.h.tokens.session(msg["token"])["application"], "appA")
        self.assertEqual(msg["headers"]["authorization"][:10], "Bearer eyJ")
        self.a.reply(found=True, token=self.h.tokens.register_token("appA", {}))
        [frame] = conn.take()
        self.assertEqual((frame["type"], frame["finished"], frame["message"]["found"]),
                         ("lookup", True, True))
        self.assertEqual(self.h.tokens.session(frame["message"]["token"])["application"], "web")


class HeadTests(TestCase):
    def test_head_is_forwarded_as_get(self):
        t = ForwardingTests("test_forwarded_message_shape_and_reply")
        t.setUp()
        t.request("/api/users/3", method="HEAD")
        self.assertEqual(t.a.sent[-1][0]["method"], "GET")
