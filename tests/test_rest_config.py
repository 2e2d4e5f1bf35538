# -*- test-case-name: tests.test_rest_config -*-
"""The startup file's ``routes`` (config/rest.py) and ``maxBodySize``."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from qewd_twisted.config import ConfigError, RestMount, config_from_dict, load_config

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")


class RoutesConfigTests(TestCase):
    def test_mount_adds_module(self):
        c = config_from_dict({"maxBodySize": 10}, APPS,
                             routes=[{"path": "/api", "module": "rest_api.py"},
                                     {"path": "/v2/x/", "module": "tests.apps.rest_simple"}])
        self.assertEqual(c.rest_mounts, (RestMount("/api", "api"), RestMount("/v2/x", "v2")))
        self.assertEqual(c.module_map["api"].path, os.path.join(APPS, "rest_api.py"))
        self.assertEqual(c.module_map["v2"].module, "tests.apps.rest_simple")
        self.assertEqual(c.max_body_size, 10)

    def test_problems_all_listed(self):
        e = self.assertRaises(ConfigError, config_from_dict, {"moduleMap": {
            "api": "tests.apps.demo"}}, APPS, routes=[
            {"path": "api", "module": "x.py"},
            {"path": "/api", "module": "rest_api.py"},
            {"path": "/b", "module": "missing.py", "beforeRouter": []},
            {"path": "/c", "module": "not a module"},
            "x",
        ])
        text = "\n".join(e.problems)
        self.assertIn("routes[0].path: must be a path", text)
        self.assertIn("routes[1].module: application 'api' is already mapped", text)
        self.assertIn("routes[2].beforeRouter: Express middleware is not supported", text)
        self.assertIn("routes[2].module: file not found", text)
        self.assertIn("routes[3].module: not a .py file or a dotted module name", text)
        self.assertIn("routes[4]: must be a dict", text)

    def test_startup_file_routes(self):
        path = self.mktemp()
        os.makedirs(path)
        with open(os.path.join(path, "api.py"), "w") as f:
            f.write("routes = []\n")
        with open(os.path.join(path, "startup.py"), "w") as f:
            f.write("config = {'port': 0}\nroutes = [{'path': '/api', 'module': 'api.py'}]\n")
        c = load_config(os.path.join(path, "startup.py"))
        self.assertEqual(c.rest_mounts, (RestMount("/api", "api"),))
        with open(os.path.join(path, "startup.py"), "w") as f:
            f.write("config = {'port': 0}\nroutes = {'path': '/api'}\n")
        e = self.assertRaises(ConfigError, load_config, os.path.join(path, "startup.py"))
        self.assertIn("routes: must be a list", str(e))


class RestMicroServiceConfigTests(TestCase):
    def base(self, routes, destinations=None):
        return {"port": 0, "jwt": {"secret": "s"}, "u_services": {
            "destinations": destinations or {
                "a": {"host": "http://127.0.0.1:1001", "application": "appA"},
                "g": {"destinations": ["a"]}},
            "routes": routes}}

    def test_rest_routes(self):
        def hook(*a):
            return False

        c = config_from_dict(self.base([
            {"path": "/api/x/:id", "method": "get", "destination": "a", "bypassJWTCheck": True,
             "onRequest": hook, "onResponse": hook},
            {"path": "/api/s/:destination"},
            {"path": "/api/g", "destination": "g"},
            {"application": "jwt", "types": {"login": {"destination": "a"}}},
        ]))
        rest = c.micro_services.rest_routes
        self.assertEqual([(r.path, r.method, r.destination, r.bypass_jwt_check) for r in rest],
                         [("/api/x/:id", "GET", "a", True), ("/api/s/:destination", None, None,
                                                             False), ("/api/g", None, "g", False)])
        self.assertIs(rest[0].on_request, hook)
        self.assertEqual(list(c.micro_services.routes), [("jwt", "login")])

    def test_problems(self):
        e = self.assertRaises(ConfigError, config_from_dict, self.base([
            {"path": "api"},
            {"path": "/api/x", "destination": "nope", "method": 3},
            {"path": "/api/y"},
            {"path": "/api/z", "destination": "a", "onRequest": 1, "bypassJWTCheck": "yes",
             "extra": 1},
        ]))
        text = "\n".join(e.problems)
        for expected in ("routes[0].path: must be a path template",
                         "routes[1].destination: unknown destination 'nope'",
                         "routes[1].method: must be an HTTP method",
                         "routes[2]: needs a destination, a :destination variable",
                         "routes[3].onRequest: must be a function",
                         "routes[3].bypassJWTCheck: must be True or False",
                         "routes[3].extra: unknown key"):
            self.assertIn(expected, text)
