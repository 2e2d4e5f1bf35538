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
