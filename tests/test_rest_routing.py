# -*- test-case-name: tests.test_rest_routing -*-
"""Path templates, route tables and mount points (qewd_twisted/rest/routing.py): pure."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from qewd_twisted.rest.routing import (
    Matched,
    Mount,
    MountTable,
    NoRoute,
    PathTemplate,
    RouteError,
    RouteTable,
    WrongMethod,
)


def h(args, finished):
    finished({})


def h2(args, finished):
    finished({})


class PathTemplateTests(TestCase):
    def test_variables(self):
        t = PathTemplate.compile("/api/users/:id/orders/:orderId")
        self.assertEqual(t.match("/api/users/7/orders/x%20y"), {"id": "7", "orderId": "x y"})
        self.assertIsNone(t.match("/api/users/7/orders"))
        self.assertIsNone(t.match("/api/users//orders/1"))
        self.assertEqual(t.names, ("id", "orderId"))

    def test_trailing_slash_and_query(self):
        t = PathTemplate.compile("/api/info")
        self.assertEqual(t.match("/api/info/"), {})
        self.assertEqual(t.match("/api/info?x=1"), {})
        self.assertIsNone(t.match("/api/infos"))

    def test_optional_and_splat(self):
        t = PathTemplate.compile("/report/PR(/:id)")
        self.assertEqual(t.match("/report/PR"), {})
        self.assertEqual(t.match("/report/PR/9"), {"id": "9"})
        s = PathTemplate.compile("/files/*path")
        self.assertEqual(s.match("/files/a/b/c.txt"), {"path": "a/b/c.txt"})
        anon = PathTemplate.compile("/x/*")
        self.assertEqual(anon.match("/x/y/z"), {"splat": "y/z"})

    def test_regex_characters_are_literal(self):
        t = PathTemplate.compile("/a.b/:x")
        self.assertIsNone(t.match("/aXb/1"))
        self.assertEqual(t.match("/a.b/1"), {"x": "1"})

    def test_bad_templates(self):
        for text in ("api", "/a/(b", "/a/b)", "/a/:x/:x", 3):
            self.assertRaises(RouteError, PathTemplate.compile, text)


class RouteTableTests(TestCase):
    def table(self):
        return RouteTable.from_table([
            {"url": "/api/users/:id", "method": "get", "handler": h},
            {"url": "/api/users/:id", "method": "DELETE", "handler": h2},
            {"url": "/api/any", "handler": h},
            {"url": "/api/any2", "method": "ANY", "handler": h2},
        ])

    def test_match_method_and_args(self):
        found = self.table().match("/api/users/3", "GET")
        self.assertIsInstance(found, Matched)
        self.assertEqual((found.route.handler, found.args), (h, {"id": "3"}))
        self.assertIs(self.table().match("/api/users/3", "DELETE").route.handler, h2)
        self.assertIs(self.table().match("/api/any", "PATCH").route.handler, h)
        self.assertIs(self.table().match("/api/any2", "PUT").route.handler, h2)

    def test_head_falls_back_to_get(self):
        self.assertIs(self.table().match("/api/users/3", "HEAD").route.handler, h)

    def test_405_and_404(self):
        self.assertEqual(self.table().match("/api/users/3", "POST"),
                         WrongMethod(("GET", "DELETE", "HEAD")))
        self.assertEqual(self.table().match("/nope", "GET"), NoRoute(404,
                                                                     "url could not be matched"))

    def test_first_match_wins(self):
        t = RouteTable.from_table([{"url": "/a/:x", "handler": h}, {"url": "/a/b", "handler": h2}])
        self.assertIs(t.match("/a/b", "GET").route.handler, h)

    def test_else_customises_404(self):
        t = RouteTable.from_table([{"url": "/a", "handler": h},
                                   {"else": {"statusCode": 410, "text": "gone"}}])
        self.assertEqual(t.match("/b", "GET"), NoRoute(410, "gone"))

    def test_relative_to_mount(self):
        t = RouteTable.from_table([{"url": "/users/:id", "handler": h}], mount="/api")
        self.assertEqual(t.match("/api/users/1", "GET").args, {"id": "1"})

    def test_microservice_object_shape_and_by_template(self):
        t = RouteTable.from_table({"/api/users/:id": {"GET": h, "ANY": h2}})
        self.assertIs(t.by_template("/api/users/:id", "GET"), h and t.routes[0])
        self.assertIs(t.by_template("/api/users/:id", "POST").handler, h2)
        self.assertEqual(t.by_template("/api/other", "GET"),
                         "No routes defined for handling REST MicroService requests")
        t2 = RouteTable.from_table([{"url": "/api/x", "method": "GET", "handler": h}])
        self.assertEqual(t2.by_template("/api/x", "POST"),
                         "No handler defined for incoming REST MicroService request")

    def test_problems_listed(self):
        e = self.assertRaises(RouteError, RouteTable.from_table, [
            {"url": "nope", "handler": h}, {"url": "/a", "handler": 3}, "x",
            {"url": "/b", "method": 5, "handler": h}])
        self.assertEqual(len(e.problems), 4)
        self.assertRaises(RouteError, RouteTable.from_table, "routes")


class MountTableTests(TestCase):
    def test_longest_prefix(self):
        m = MountTable([Mount("/api", "api"), Mount("/api/v2", "v2")])
        self.assertEqual(m.find("/api/v2/x").application, "v2")
        self.assertEqual(m.find("/api/x?y=1").application, "api")
        self.assertEqual(m.find("/api").application, "api")
        self.assertIsNone(m.find("/apix"))
        self.assertEqual(m.first_segments(), {"api"})
