# test-case-name: tests.test_config
"""
Startup files and config validation (docs/configuration.md, docs/handlers.md,
docs/protocol.md §4.1 and §7): defaults, every type check, key paths, all problems at once.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import textwrap
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from qewd_twisted.config import (
    Config,
    ConfigError,
    Destination,
    JWTConfig,
    MicroServicesConfig,
    ModuleSpec,
    Route,
    config_from_dict,
    load_config,
)
from qewd_twisted.config import LIMIT_RULES, SECONDS, SUPPORTED_KEYS
from qewd_twisted.config.limits import CONFIG_KEYS, Limits

# twisted's ssl: endpoints need pyOpenSSL, a requirement (twisted[tls] in setup.py): without it
# the TLS tests fail rather than skip (issue 18 item 1)

JWT = {"secret": "someSecret123"}
ROUTE = {"url": "http://127.0.0.1:3000", "application": "test-app"}


class ConfigTestCase(SynchronousTestCase):
    """Helpers: a fresh directory per test, files in it, and problem lists."""

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, name: str, text: str = "") -> str:
        path = os.path.join(self.dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path

    def startup(self, text: str, name: str = "startup.py") -> str:
        return self.write(name, text)

    def build(self, d: dict[Any, Any]) -> Config:
        return config_from_dict(d, base_dir=self.dir)

    def problems(self, d: dict[Any, Any]) -> list[str]:
        """The problems config_from_dict reports for ``d`` (it must fail)."""
        e = self.assertRaises(ConfigError, config_from_dict, d, self.dir)
        self.assertTrue(e.problems)
        return e.problems

    def assertProblemStarts(self, d: dict[Any, Any], prefix: str) -> str:
        problems = self.problems(d)
        matching = [p for p in problems if p.startswith(prefix)]
        self.assertTrue(matching, f"no problem starts with {prefix!r}:\n" + "\n".join(problems))
        return matching[0]


class LoadConfigTests(ConfigTestCase):
    def test_minimal(self) -> None:
        config = load_config(self.startup("config = {}\n"))
        self.assertEqual(config.listen, ["tcp:8080"])
        self.assertEqual(config.port, 8080)
        self.assertEqual(config.base_dir, self.dir)
        self.assertEqual(config.raw, {})

    def test_design_example(self) -> None:
        """The startup file from docs/quickstart.md, with its handler module beside it."""
        self.write("jwt_app.py", "handlers = {}\n")
        path = self.startup(
            """
            config = {
                "port": 8080,
                "poolSize": 2,
                "jwt": {"secret": "someSecret123"},
                "moduleMap": {"jwt": "jwt_app.py"},
                "u_services": [
                    {"application": "jwt",
                     "types": {"login": {"url": "http://127.0.0.1:3000",
                                         "application": "test-app"}}},
                ],
            }
            """
        )
        config = load_config(path)
        self.assertEqual(config.listen, ["tcp:8080"])
        self.assertEqual(config.port, 8080)
        self.assertEqual(config.pool_size, 2)
        self.assertEqual(config.jwt, JWTConfig("someSecret123", ("HS256",), ()))
        self.assertEqual(
            config.module_map, {"jwt": ModuleSpec("jwt", os.path.join(self.dir, "jwt_app.py"))}
        )
        route = Route("jwt", "login", "http://127.0.0.1:3000", "test-app", None)
        self.assertEqual(config.micro_services.routes, {("jwt", "login"): route})
        self.assertEqual(config.micro_services.route("jwt", "login"), route)
        self.assertIsNone(config.micro_services.route("jwt", "other"))
        self.assertEqual(config.micro_services.urls, ["http://127.0.0.1:3000"])
        self.assertEqual(config.raw["poolSize"], 2)
        self.assertEqual(config.ignored_keys, [])

    def test_path_like(self) -> None:
        from pathlib import Path

        config = load_config(Path(self.startup("config = {'port': 9000}\n")))
        self.assertEqual(config.port, 9000)

    def test_missing_file(self) -> None:
        path = os.path.join(self.dir, "nope.py")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, [f"{path}: no such file"])
        self.assertEqual(e.source, path)
        self.assertIn(path, str(e))

    def test_directory(self) -> None:
        e = self.assertRaises(ConfigError, load_config, self.dir)
        self.assertEqual(e.problems, [f"{self.dir}: not a file"])

    def test_syntax_error(self) -> None:
        path = self.startup("config = {\n    'port': 8080\n    'poolSize': 2,\n}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(len(e.problems), 1)
        self.assertTrue(e.problems[0].startswith(f"{path}:"), e.problems[0])
        self.assertIn("syntax error", e.problems[0])
        self.assertIsInstance(e.__cause__, SyntaxError)

    def test_no_config(self) -> None:
        path = self.startup("settings = {}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, [f"{path}: defines no 'config' (a dict of QEWD config keys)"])

    def test_config_not_a_dict(self) -> None:
        path = self.startup("config = [('port', 8080)]\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, [f"{path}: 'config' must be a dict, not list"])

    def test_exception_while_executing(self) -> None:
        """The line in the startup file and the exception are named; the cause is kept."""
        path = self.startup("x = 1\nconfig = {'port': 1 // 0}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(
            e.problems,
            [
                f"{path}:2: exception while executing: ZeroDivisionError: integer division or "
                "modulo by zero"
            ],
        )
        self.assertIsInstance(e.__cause__, ZeroDivisionError)

    def test_exception_in_imported_module(self) -> None:
        """An exception raised in a module the startup file imports names the import line."""
        self.write("helper_raises.py", "raise RuntimeError('boom')\n")
        path = self.startup("import helper_raises\nconfig = {}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, [f"{path}:1: exception while executing: RuntimeError: boom"])
        sys.modules.pop("helper_raises", None)

    def test_system_exit(self) -> None:
        path = self.startup("import sys\nsys.exit(3)\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.problems, [f"{path}:2: exception while executing: SystemExit: 3"])

    def test_sibling_import_and_sys_path_restored(self) -> None:
        """The startup file can import a module beside it; sys.path is left as it was."""
        self.write("startup_settings_xyz.py", "PORT = 9123\n")
        path = self.startup("from startup_settings_xyz import PORT\nconfig = {'port': PORT}\n")
        before = list(sys.path)
        modules = set(sys.modules)
        self.addCleanup(sys.modules.pop, "startup_settings_xyz", None)
        self.assertEqual(load_config(path).port, 9123)
        self.assertEqual(sys.path, before)
        added = set(sys.modules) - modules
        self.assertIn("startup_settings_xyz", added)
        self.assertFalse([m for m in added if m.startswith("_qewd_startup_")], added)

    def test_sys_path_restored_after_failure(self) -> None:
        before = list(sys.path)
        self.assertRaises(ConfigError, load_config, self.startup("raise ValueError('x')\n"))
        self.assertRaises(ConfigError, load_config, self.startup("config = (\n", "s2.py"))
        self.assertEqual(sys.path, before)

    def test_unique_module_per_load(self) -> None:
        """Two startup files with the same name load independently, and leave no module."""
        first = self.startup("config = {'port': 1111}\n")
        other_dir = os.path.join(self.dir, "other")
        second = self.write(os.path.join("other", "startup.py"), "config = {'port': 2222}\n")
        self.assertEqual(load_config(first).port, 1111)
        self.assertEqual(load_config(second).port, 2222)
        self.assertEqual(load_config(second).base_dir, other_dir)
        self.assertFalse([m for m in sys.modules if m.startswith("_qewd_startup_")])

    def test_dataclass_in_startup_file(self) -> None:
        """Code that looks its own module up while running (dataclasses do) works."""
        path = self.startup(
            """
            from dataclasses import dataclass

            @dataclass
            class Settings:
                port: int = 8181

            config = {"port": Settings().port}
            """
        )
        self.assertEqual(load_config(path).port, 8181)

    def test_any_file_name(self) -> None:
        self.assertEqual(load_config(self.startup("config = {'port': 1}\n", "qewd.conf")).port, 1)

    def test_paths_relative_to_startup_file(self) -> None:
        """Relative paths resolve against the startup file's directory, not the cwd."""
        self.write(os.path.join("app", "handlers.py"))
        os.makedirs(os.path.join(self.dir, "app", "public"))
        path = self.write(
            os.path.join("app", "startup.py"),
            "config = {'moduleMap': {'a': 'handlers.py'}, 'webServerRootPath': 'public'}\n",
        )
        config = load_config(path)
        self.assertEqual(config.module_map["a"].path, os.path.join(self.dir, "app", "handlers.py"))
        self.assertEqual(config.web_server_root, os.path.join(self.dir, "app", "public"))

    def test_problems_name_the_file(self) -> None:
        path = self.startup("config = {'port': 'eighty', 'colour': 1}\n")
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(e.source, path)
        self.assertEqual(
            str(e).splitlines(),
            [
                f"invalid qewd-twisted configuration in {path}: 2 problems",
                "  config.port: must be an integer from 0 to 65535, got 'eighty' (str)",
                "  config.colour: unknown key",
            ],
        )


class DefaultsTests(ConfigTestCase):
    def test_defaults(self) -> None:
        config = self.build({})
        self.assertEqual(config.listen, ["tcp:8080"])
        self.assertEqual(config.port, 8080)
        self.assertEqual(config.pool_size, 2)
        self.assertIsNone(config.jwt)
        self.assertEqual(config.module_map, {})
        self.assertEqual(config.initial_session_timeout, 300)
        self.assertIsNone(config.web_server_root)
        self.assertEqual(config.server_name, "qewd")
        self.assertEqual(config.management_password, "keepThisSecret")
        self.assertIs(config.cors, False)
        self.assertEqual(config.handler_timeout, 60)
        self.assertEqual(config.micro_service_timeout, 30)
        self.assertEqual(config.max_message_size, 1048576)
        self.assertEqual(config.max_queue_length, 20000)
        self.assertEqual(config.shutdown_grace, 20)
        self.assertEqual(config.micro_services, MicroServicesConfig())
        self.assertEqual(config.micro_services.urls, [])
        self.assertEqual(config.ignored_keys, [])
        self.assertEqual(config.base_dir, self.dir)

    def test_dataclass_defaults_match(self) -> None:
        """A Config built directly has the same defaults as a validated empty config."""
        self.assertEqual(Config(base_dir=self.dir), self.build({}))

    def test_none_means_default(self) -> None:
        config = self.build({"port": None, "poolSize": None, "jwt": None, "cors": None})
        self.assertEqual((config.port, config.pool_size, config.jwt), (8080, 2, None))

    def test_qewd_false_means_off(self) -> None:
        config = self.build({"jwt": False, "ssl": False})
        self.assertIsNone(config.jwt)
        self.assertEqual(config.listen, ["tcp:8080"])

    def test_www_default(self) -> None:
        os.makedirs(os.path.join(self.dir, "www"))
        self.assertEqual(self.build({}).web_server_root, os.path.join(self.dir, "www"))

    def test_base_dir_defaults_to_cwd(self) -> None:
        self.assertEqual(config_from_dict({}).base_dir, os.getcwd())

    def test_values(self) -> None:
        os.makedirs(os.path.join(self.dir, "site"))
        config = self.build(
            {
                "port": 0,
                "poolSize": 8,
                "poolSchedBatch": False,
                "jwt": {
                    "secret": "s",
                    "algorithms": ["HS512", "HS256", "HS512"],
                    "previousSecrets": ["old"],
                },
                "initialSessionTimeout": 3600,
                "webServerRootPath": "site",
                "serverName": "My Server",
                "managementPassword": "pw",
                "cors": True,
                "handlerTimeout": 0.5,
                "microServiceTimeout": 2,
                "maxMessageSize": 1024,
                "max_queue_length": 1,
                "shutdownGracePeriod": 0,
            }
        )
        self.assertEqual((config.listen, config.port, config.pool_size), (["tcp:0"], 0, 8))
        self.assertIs(config.pool_sched_batch, False)
        self.assertIs(self.build({}).pool_sched_batch, True)
        self.assertEqual(config.jwt, JWTConfig("s", ("HS512", "HS256"), ("old",)))
        self.assertEqual(config.initial_session_timeout, 3600)
        self.assertEqual(config.web_server_root, os.path.join(self.dir, "site"))
        self.assertEqual((config.server_name, config.management_password), ("My Server", "pw"))
        self.assertIs(config.cors, True)
        self.assertEqual((config.handler_timeout, config.micro_service_timeout), (0.5, 2.0))
        self.assertIsInstance(config.micro_service_timeout, float)
        self.assertEqual((config.max_message_size, config.max_queue_length), (1024, 1))
        self.assertEqual(config.shutdown_grace, 0)

    def test_secrets_not_in_repr(self) -> None:
        config = self.build({"jwt": {"secret": "topSecret1"}, "managementPassword": "pw-Secret2"})
        self.assertNotIn("topSecret1", repr(config))
        self.assertNotIn("pw-Secret2", repr(config))

    def test_frozen(self) -> None:
        config = self.build({})
        self.assertRaises(AttributeError, setattr, config, "port", 1)


class LimitsTests(ConfigTestCase):
    def test_defaults_are_the_limits_defaults(self) -> None:
        self.assertEqual(self.build({}).limits, Limits())
        self.assertEqual(Config().limits, Limits())

    def test_every_limit_has_its_config_key(self) -> None:
        from dataclasses import fields

        self.assertEqual(sorted(CONFIG_KEYS), sorted(f.name for f in fields(Limits)))
        self.assertTrue(set(CONFIG_KEYS.values()) <= set(SUPPORTED_KEYS))
        self.assertEqual(sorted(LIMIT_RULES), sorted(CONFIG_KEYS))  # and how it is checked

    def test_each_limit_is_checked_by_its_rule(self) -> None:
        """Below its least value (or not a number), every limit is a problem under its key."""
        bad = {key: (LIMIT_RULES[name] - 1 if isinstance(LIMIT_RULES[name], int) else -1)
               for name, key in CONFIG_KEYS.items()}
        problems = self.problems(bad)
        self.assertEqual(sorted(p.split(":")[0] for p in problems),
                         sorted(f"config.{key}" for key in CONFIG_KEYS.values()))
        self.assertTrue(all(": must be " in p for p in problems), problems)
        zero = {key: 0 for name, key in CONFIG_KEYS.items() if LIMIT_RULES[name] == SECONDS}
        self.assertEqual(len(self.problems(zero)), len(zero))
        self.assertEqual(self.build({"shutdownGracePeriod": 0}).shutdown_grace, 0)

    def test_configured_limits(self) -> None:
        limits = self.build({"maxConnections": 5, "maxInFlightPerLink": 7,
                             "handlerTimeout": 2, "shutdownGracePeriod": 0}).limits
        self.assertEqual((limits.max_connections, limits.max_in_flight_link,
                          limits.handler_timeout, limits.shutdown_grace), (5, 7, 2, 0))


class TypeTests(ConfigTestCase):
    """Every key's type and range checks, with the exact problem text."""

    PORT = "must be an integer from 0 to 65535, got"
    AT_LEAST_1 = "must be an integer >= 1, got"
    SECONDS = "must be a number of seconds > 0, got"
    STRING = "must be a non-empty string, got"
    BOOL = "must be True or False, got"
    JWT = "must be False or {'secret': '...'}, got"
    ALGS = "HS256, HS384, HS512"
    LISTEN = "must be an endpoint string or a non-empty list of them, got"
    CASES: list[tuple[dict[str, Any], str]] = [
        ({"port": True}, f"config.port: {PORT} True (bool)"),
        ({"port": "8080"}, f"config.port: {PORT} '8080' (str)"),
        ({"port": 8080.0}, f"config.port: {PORT} 8080.0 (float)"),
        ({"port": -1}, f"config.port: {PORT} -1 (int)"),
        ({"port": 65536}, f"config.port: {PORT} 65536 (int)"),
        ({"poolSize": 0}, f"config.poolSize: {AT_LEAST_1} 0 (int)"),
        ({"poolSize": 1.5}, f"config.poolSize: {AT_LEAST_1} 1.5 (float)"),
        ({"poolSize": True}, f"config.poolSize: {AT_LEAST_1} True (bool)"),
        ({"initialSessionTimeout": 0}, f"config.initialSessionTimeout: {AT_LEAST_1} 0 (int)"),
        ({"initialSessionTimeout": "3"}, f"config.initialSessionTimeout: {AT_LEAST_1} '3' (str)"),
        ({"serverName": 1}, f"config.serverName: {STRING} 1 (int)"),
        ({"serverName": ""}, f"config.serverName: {STRING} '' (str)"),
        ({"managementPassword": 1234}, f"config.managementPassword: {STRING} int"),
        ({"cors": "yes"}, f"config.cors: {BOOL} 'yes' (str)"),
        ({"poolSchedBatch": 0}, f"config.poolSchedBatch: {BOOL} 0 (int)"),
        ({"cors": 1}, f"config.cors: {BOOL} 1 (int)"),
        ({"handlerTimeout": 0}, f"config.handlerTimeout: {SECONDS} 0 (int)"),
        ({"handlerTimeout": "60"}, f"config.handlerTimeout: {SECONDS} '60' (str)"),
        ({"handlerTimeout": True}, f"config.handlerTimeout: {SECONDS} True (bool)"),
        ({"handlerTimeout": float("nan")}, f"config.handlerTimeout: {SECONDS} nan (float)"),
        ({"handlerTimeout": float("inf")}, f"config.handlerTimeout: {SECONDS} inf (float)"),
        ({"microServiceTimeout": -1}, f"config.microServiceTimeout: {SECONDS} -1 (int)"),
        ({"microServiceTimeout": [1]}, f"config.microServiceTimeout: {SECONDS} [1] (list)"),
        (
            {"maxMessageSize": 1023},
            "config.maxMessageSize: must be an integer >= 1024, got 1023 (int)",
        ),
        (
            {"maxMessageSize": 1e6},
            "config.maxMessageSize: must be an integer >= 1024, got 1000000.0 (float)",
        ),
        ({"max_queue_length": 0}, f"config.max_queue_length: {AT_LEAST_1} 0 (int)"),
        (
            {"shutdownGracePeriod": -0.5},
            "config.shutdownGracePeriod: must be a number of seconds >= 0, got -0.5 (float)",
        ),
        (
            {"shutdownGracePeriod": False},
            "config.shutdownGracePeriod: must be a number of seconds >= 0, got False (bool)",
        ),
        ({"jwt": True}, f"config.jwt: {JWT} True (bool)"),
        ({"jwt": "secret"}, f"config.jwt: {JWT} 'secret' (str)"),
        ({"jwt": {}}, "config.jwt.secret: missing (the signing secret)"),
        ({"jwt": {"secret": 123}}, f"config.jwt.secret: {STRING} int"),
        ({"jwt": {"secret": ""}}, f"config.jwt.secret: {STRING} '' (str)"),
        (
            {"jwt": {"secret": "s", "algorithms": "HS256"}},
            f"config.jwt.algorithms: must be a non-empty list of {ALGS}, got 'HS256' (str)",
        ),
        (
            {"jwt": {"secret": "s", "algorithms": []}},
            f"config.jwt.algorithms: must be a non-empty list of {ALGS}, got [] (list)",
        ),
        (
            {"jwt": {"secret": "s", "algorithms": ["HS256", "RS256"]}},
            f"config.jwt.algorithms: unsupported algorithm 'RS256' (str) (supported: {ALGS})",
        ),
        (
            {"jwt": {"secret": "s", "algorithms": ["none"]}},
            f"config.jwt.algorithms: unsupported algorithm 'none' (str) (supported: {ALGS})",
        ),
        (
            {"jwt": {"secret": "s", "previousSecrets": "old"}},
            "config.jwt.previousSecrets: must be a non-empty list of strings, got 'old' (str)",
        ),
        (
            {"jwt": {"secret": "s", "previousSecrets": ["ok", 7]}},
            f"config.jwt.previousSecrets[1]: {STRING} int",
        ),
        (
            {"moduleMap": ["app.py"]},
            "config.moduleMap: must be a dict {application: module}, got ['app.py'] (list)",
        ),
        (
            {"moduleMap": {"a": 1}},
            "config.moduleMap.a: must be a .py file path or a dotted module name, got 1 (int)",
        ),
        (
            {"moduleMap": {"": "x"}},
            "config.moduleMap['']: application names must be non-empty strings",
        ),
        ({"webServerRootPath": 1}, f"config.webServerRootPath: {STRING} 1 (int)"),
        ({"listen": 8080}, f"config.listen: {LISTEN} 8080 (int)"),
        ({"listen": []}, f"config.listen: {LISTEN} [] (list)"),
        (
            {"listen": ["tcp:1", 2]},
            "config.listen[1]: must be an endpoint string such as 'tcp:8080', got 2 (int)",
        ),
        (
            {"ssl": True},
            "config.ssl: must be False or {keyFilePath, certFilePath}, got True (bool)",
        ),
        (
            {"u_services": "http://h:1"},
            "config.u_services: must be a list of routes or a {destinations, routes} dict, "
            "got 'http://h:1' (str)",
        ),
    ]

    def test_each_type_problem(self) -> None:
        for d, expected in self.CASES:
            with self.subTest(config=d):
                self.assertEqual(self.problems(d), [expected])

    def test_long_values_are_shortened(self) -> None:
        (problem,) = self.problems({"serverName": ["x" * 200]})
        self.assertLess(len(problem), 130)
        self.assertTrue(problem.endswith("... (list)"), problem)

    def test_secrets_not_echoed(self) -> None:
        e = self.assertRaises(
            ConfigError,
            config_from_dict,
            {"jwt": {"secret": 987654321, "previousSecrets": [123123]}, "managementPassword": 4242},
        )
        for secret in ("987654321", "123123", "4242"):
            self.assertNotIn(secret, str(e))


class UnknownKeyTests(ConfigTestCase):
    def test_unknown_key(self) -> None:
        self.assertEqual(self.problems({"colour": "red"}), ["config.colour: unknown key"])

    def test_did_you_mean(self) -> None:
        cases = {
            "poolsize": "poolSize",
            "Port": "port",
            "jwtt": "jwt",
            "moduleMaps": "moduleMap",
            "webServerRoot": "webServerRootPath",
            "maxQueueLength": "max_queue_length",
        }
        for key, known in cases.items():
            with self.subTest(key=key):
                self.assertEqual(
                    self.problems({key: 1}),
                    [f"config.{key}: unknown key (did you mean '{known}'?)"],
                )

    def test_interface_hint(self) -> None:
        self.assertEqual(
            self.problems({"interface": "127.0.0.1"}),
            ["config.interface: unknown key (use listen, e.g. 'tcp:8080:interface=127.0.0.1')"],
        )

    def test_unsupported_qewd_key(self) -> None:
        self.assertEqual(
            self.problems({"qewd_up": True, "no_sockets": True}),
            [
                "config.qewd_up: QEWD.js key not supported by qewd-twisted",
                "config.no_sockets: QEWD.js key not supported by qewd-twisted",
            ],
        )

    def test_non_string_key(self) -> None:
        self.assertEqual(self.problems({1: 2}), ["config[1]: unknown key"])

    def test_odd_key(self) -> None:
        self.assertEqual(self.problems({"my key": 2}), ["config['my key']: unknown key"])
        self.assertEqual(
            self.problems({"pool size": 2}),
            ["config['pool size']: unknown key (did you mean 'poolSize'?)"],
        )

    def test_nested_unknown_keys(self) -> None:
        self.assertEqual(
            self.problems({"jwt": {"secret": "s", "secrets": ["x"]}}),
            ["config.jwt.secrets: unknown key (did you mean 'secret'?)"],
        )

    def test_ignored_keys(self) -> None:
        """QEWD.js keys with no effect here are accepted and listed, in the file's order."""
        config = self.build(
            {
                "port": 8080,
                "webServer": "express",
                "poolPrefork": True,
                "idleLimit": 3600000,
                "mode": "production",
                "bodyParser": False,
                "lockSession": False,
                "resilientMode": False,
                "errorLogFile": "/tmp/err.log",
            }
        )
        self.assertEqual(
            config.ignored_keys,
            [
                "webServer",
                "poolPrefork",
                "idleLimit",
                "mode",
                "bodyParser",
                "resilientMode",
                "errorLogFile",
            ],
        )
        self.assertEqual(config.port, 8080)


class DatabaseConfigTests(ConfigTestCase):
    """config.database (QEWD's key) and sessionDocumentName (docs/configuration.md)."""

    def test_default_is_memory(self) -> None:
        config = self.build({})
        self.assertIsNone(config.database)
        self.assertEqual(config.session_document_name, "CacheTempEWDSession")

    def test_sqlite(self) -> None:
        config = config_from_dict({"database": {"type": "sqlite", "params": {"path": "d.db"}},
                                   "sessionDocumentName": "mySessions"}, base_dir="/srv/app")
        self.assertEqual(config.database, {"type": "sqlite", "params": {
            "path": "/srv/app/d.db", "busyTimeout": 5.0}})
        self.assertEqual(config.session_document_name, "mySessions")
        self.assertEqual(self.build({"database": {"type": "sqlite"}}).database["params"]["path"],
                         os.path.join(self.dir, "qewd.sqlite"))

    def test_redis(self) -> None:
        config = self.build({"database": {"type": "redis", "params": {"host": "127.0.0.1",
                                                                      "port": 16379}}})
        self.assertEqual(config.database, {"type": "redis", "params": {
            "host": "127.0.0.1", "port": 16379, "password": None, "db": 0, "timeout": 5.0}})

    def test_problems(self) -> None:
        self.assertEqual(self.problems({"database": "redis"}), [
            "config.database: must be {'type': 'sqlite' or 'redis', 'params': {...}}, "
            "got 'redis' (str)"])
        self.assertEqual(self.problems({"database": {"type": "gtm"}}), [
            "config.database.type: 'gtm' needs an M/IRIS engine: not supported by qewd-twisted "
            "(use 'sqlite', or 'redis' to share documents with QEWD.js nodes)"])
        self.assertEqual(self.problems({"database": {"type": "mysql"}}), [
            "config.database.type: must be one of 'memory', 'sqlite', 'redis', got 'mysql' (str)"])
        self.assertEqual(self.problems({"database": {"type": "redis", "params": {
            "port": "6379", "hots": "x", "timeout": 0}}}), [
            "config.database.params.hots: unknown key (did you mean 'host'?)",
            "config.database.params.port: must be an integer from 1 to 65535, got '6379' (str)",
            "config.database.params.timeout: must be a number of seconds > 0, got 0 (int)"])
        self.assertEqual(self.problems({"sessionDocumentName": ""}), [
            "config.sessionDocumentName: must be a non-empty string, got '' (str)"])


class AllProblemsTests(ConfigTestCase):
    def test_every_problem_at_once(self) -> None:
        """Nothing stops at the first problem; they come in the config's key order."""
        e = self.assertRaises(
            ConfigError,
            config_from_dict,
            {
                "poolsize": 3,
                "port": True,
                "jwt": {"secret": ""},
                "moduleMap": {"jwt": "missing.py", "x": "my-app"},
                "u_services": [{"application": "jwt", "types": {"login": {"url": "ftp://h:1"}}}],
                "cors": "no",
            },
            self.dir,
        )
        self.assertEqual(
            e.problems,
            [
                "config.poolsize: unknown key (did you mean 'poolSize'?)",
                "config.port: must be an integer from 0 to 65535, got True (bool)",
                "config.jwt.secret: must be a non-empty string, got '' (str)",
                f"config.moduleMap.jwt: file not found: {self.dir}/missing.py",
                "config.moduleMap.x: 'my-app' is neither a .py file path nor a dotted "
                "Python module name",
                "config.u_services[0].types.login.url: invalid URL 'ftp://h:1': must start with "
                "http://, https://, ws:// or wss://",
                "config.u_services[0].types.login.application: missing (the remote application)",
                "config.cors: must be True or False, got 'no' (str)",
            ],
        )
        lines = str(e).splitlines()
        self.assertEqual(lines[0], "invalid qewd-twisted configuration: 8 problems")
        self.assertEqual(lines[1:], ["  " + p for p in e.problems])

    def test_one_problem_header(self) -> None:
        e = ConfigError(["config.x: unknown key"])
        self.assertEqual(
            str(e), "invalid qewd-twisted configuration: 1 problem\n  config.x: unknown key"
        )
        self.assertIsNone(e.source)

    def test_not_a_dict(self) -> None:
        e = self.assertRaises(ConfigError, config_from_dict, ["port"])
        self.assertEqual(e.problems, ["config: must be a dict, got ['port'] (list)"])


class ModuleMapTests(ConfigTestCase):
    def test_file_paths(self) -> None:
        self.write("a.py")
        self.write(os.path.join("handlers", "b.py"))
        self.write(os.path.join("handlers", "c_module"))
        absolute = self.write(os.path.join("elsewhere", "d.py"))
        config = self.build(
            {
                "moduleMap": {
                    "a": "a.py",
                    "b": "handlers/b.py",
                    "c": "./handlers/c_module",
                    "d": absolute,
                }
            }
        )
        self.assertEqual(
            config.module_map,
            {
                "a": ModuleSpec("a", path=os.path.join(self.dir, "a.py")),
                "b": ModuleSpec("b", path=os.path.join(self.dir, "handlers", "b.py")),
                "c": ModuleSpec("c", path=os.path.join(self.dir, "handlers", "c_module")),
                "d": ModuleSpec("d", path=absolute),
            },
        )

    def test_missing_file(self) -> None:
        self.assertEqual(
            self.problems({"moduleMap": {"jwt": "jwt_app.py", "x": "sub/x"}}),
            [
                f"config.moduleMap.jwt: file not found: {self.dir}/jwt_app.py",
                f"config.moduleMap.x: file not found: {self.dir}/sub/x",
            ],
        )

    def test_directory_is_not_a_file(self) -> None:
        os.makedirs(os.path.join(self.dir, "pkg.py"))
        self.assertEqual(
            self.problems({"moduleMap": {"p": "pkg.py"}}),
            [f"config.moduleMap.p: not a file: {self.dir}/pkg.py"],
        )

    def test_dotted_module_not_imported(self) -> None:
        """A dotted name is only checked for shape: importing is the workers' job."""
        config = self.build({"moduleMap": {"a": "no_such_pkg_xyz.handlers", "b": "mod"}})
        self.assertEqual(
            config.module_map,
            {
                "a": ModuleSpec("a", module="no_such_pkg_xyz.handlers"),
                "b": ModuleSpec("b", module="mod"),
            },
        )
        self.assertNotIn("no_such_pkg_xyz", sys.modules)

    def test_bad_dotted_names(self) -> None:
        for name in ("my-app", "a..b", ".a", "a.", "class.x", "a b", "1abc"):
            with self.subTest(name=name):
                self.assertEqual(
                    self.problems({"moduleMap": {"app": name}}),
                    [
                        f"config.moduleMap.app: {name!r} is neither a .py file path nor a "
                        "dotted Python module name"
                    ],
                )


class WebServerRootTests(ConfigTestCase):
    def test_directory(self) -> None:
        os.makedirs(os.path.join(self.dir, "public", "html"))
        self.assertEqual(
            self.build({"webServerRootPath": "public/html"}).web_server_root,
            os.path.join(self.dir, "public", "html"),
        )

    def test_missing_directory(self) -> None:
        os.makedirs(os.path.join(self.dir, "www"))  # the default does not stand in for it
        self.assertEqual(
            self.problems({"webServerRootPath": "site"}),
            [f"config.webServerRootPath: directory not found: {self.dir}/site"],
        )

    def test_file_is_not_a_directory(self) -> None:
        self.write("index.html")
        self.assertEqual(
            self.problems({"webServerRootPath": "index.html"}),
            [f"config.webServerRootPath: directory not found: {self.dir}/index.html"],
        )


class ListenTests(ConfigTestCase):
    def test_port(self) -> None:
        config = self.build({"port": 3000})
        self.assertEqual((config.listen, config.port), (["tcp:3000"], 3000))

    def test_listen_string(self) -> None:
        config = self.build({"listen": "tcp:8080:interface=127.0.0.1"})
        self.assertEqual((config.listen, config.port), (["tcp:8080:interface=127.0.0.1"], 8080))

    def test_listen_list_first_tcp_port(self) -> None:
        sock = os.path.join(self.dir, "qewd.sock")
        config = self.build({"listen": [f"unix:{sock}", "tcp6:9001:interface=\\:\\:1", "tcp:9002"]})
        self.assertEqual(config.listen, [f"unix:{sock}", "tcp6:9001:interface=\\:\\:1", "tcp:9002"])
        self.assertEqual(config.port, 9001)

    def test_listen_without_tcp(self) -> None:
        config = self.build({"listen": f"unix:{self.dir}/qewd.sock"})
        self.assertIsNone(config.port)

    def test_port_and_listen(self) -> None:
        self.assertEqual(
            self.problems({"port": 8080, "listen": "tcp:8080"}),
            [
                "config.listen: cannot be used together with config.port (put the port in the "
                "endpoint string, e.g. 'tcp:8080')"
            ],
        )

    def test_ssl_and_listen(self) -> None:
        self.assertProblemStarts(
            {"listen": "tcp:8080", "ssl": {"keyFilePath": "k", "certFilePath": "c"}},
            "config.ssl: cannot be used together with config.listen",
        )

    def test_bad_endpoints(self) -> None:
        cases = {
            "foo:80": "config.listen: invalid endpoint 'foo:80': Unknown endpoint type: 'foo'",
            "tcp:http": "config.listen: invalid endpoint 'tcp:http': invalid literal for int() "
            "with base 10: 'http'",
            "tcp:99999": "config.listen: invalid endpoint 'tcp:99999': port 99999 is out of "
            "range 0..65535",
        }
        for description, expected in cases.items():
            with self.subTest(description=description):
                self.assertEqual(self.problems({"listen": description}), [expected])
        self.assertProblemStarts(
            {"listen": "tcp:80:bogus=1"}, "config.listen: invalid endpoint 'tcp:80:bogus=1': "
        )

    def test_systemd_outside_systemd(self) -> None:
        self.patch(os, "environ", {})
        self.assertEqual(
            self.problems({"listen": "systemd:domain=INET:index=0"}),
            [
                "config.listen: invalid endpoint 'systemd:domain=INET:index=0': systemd passed "
                "no socket at that index (LISTEN_FDS)"
            ],
        )

    def test_duplicate_endpoint(self) -> None:
        self.assertEqual(
            self.problems({"listen": ["tcp:8080", "tcp:8080"]}),
            ["config.listen[1]: duplicate endpoint 'tcp:8080'"],
        )

    def test_listen_does_not_bind(self) -> None:
        """Validation only parses: a port that is already taken still validates."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = self.build({"listen": f"tcp:{port}:interface=127.0.0.1"})
        self.assertEqual(config.port, port)


def make_key_and_cert(directory: str) -> tuple[str, str]:
    """A self-signed EC key and certificate for localhost, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    key_path, cert_path = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class SSLTests(ConfigTestCase):
    def test_ssl_files(self) -> None:
        key, cert = make_key_and_cert(os.path.join(self.dir, "tls"))
        config = self.build(
            {"port": 8443, "ssl": {"keyFilePath": "tls/key.pem", "certFilePath": "tls/cert.pem"}}
        )
        self.assertEqual(config.listen, [f"ssl:8443:privateKey={key}:certKey={cert}"])
        self.assertEqual(config.port, 8443)

    def test_ssl_default_port(self) -> None:
        make_key_and_cert(self.dir)
        config = self.build({"ssl": {"keyFilePath": "key.pem", "certFilePath": "cert.pem"}})
        self.assertTrue(config.listen[0].startswith("ssl:8080:privateKey="), config.listen)

    def test_ssl_paths_escaped(self) -> None:
        """``:``, ``=`` and ``\\`` in the file paths survive the endpoint string."""
        directory = os.path.join(self.dir, "odd:dir=x\\y")
        make_key_and_cert(directory)
        config = self.build(
            {
                "port": 0,
                "ssl": {
                    "keyFilePath": os.path.join(directory, "key.pem"),
                    "certFilePath": os.path.join(directory, "cert.pem"),
                },
            }
        )
        (description,) = config.listen
        self.assertIn("odd\\:dir\\=x\\\\y", description)
        serverFromString(MemoryReactor(), description)  # Twisted reads the same files back

    def test_ssl_listen_endpoint(self) -> None:
        key, cert = make_key_and_cert(self.dir)
        config = self.build({"listen": [f"ssl:8443:privateKey={key}:certKey={cert}"]})
        self.assertEqual(config.port, 8443)

    def test_ssl_missing_files(self) -> None:
        self.assertEqual(
            self.problems({"ssl": {"keyFilePath": "key.pem", "certFilePath": "cert.pem"}}),
            [
                f"config.ssl.keyFilePath: file not found: {self.dir}/key.pem",
                f"config.ssl.certFilePath: file not found: {self.dir}/cert.pem",
            ],
        )

    def test_ssl_incomplete(self) -> None:
        self.assertEqual(
            self.problems({"ssl": {"keyFile": "key.pem"}}),
            [
                "config.ssl.keyFile: unknown key (did you mean 'keyFilePath'?)",
                "config.ssl.keyFilePath: missing (a PEM file path)",
                "config.ssl.certFilePath: missing (a PEM file path)",
            ],
        )

    def test_ssl_not_pem(self) -> None:
        self.write("key.pem", "not a key\n")
        self.write("cert.pem", "not a certificate\n")
        self.assertProblemStarts(
            {"ssl": {"keyFilePath": "key.pem", "certFilePath": "cert.pem"}},
            "config.ssl: cannot use this key and certificate: ",
        )


class MicroServicesArrayFormTests(ConfigTestCase):
    def build_services(self, services: Any) -> MicroServicesConfig:
        return self.build({"jwt": JWT, "u_services": services}).micro_services

    def test_array_form(self) -> None:
        ms = self.build_services(
            [
                {"application": "jwt", "types": {"login": ROUTE, "logout": ROUTE}},
                {
                    "application": "shop",
                    "types": {"list": {"url": "https://store.example.com", "application": "stock"}},
                },
            ]
        )
        self.assertEqual(ms.destinations, {})
        self.assertEqual(
            ms.routes,
            {
                ("jwt", "login"): Route("jwt", "login", "http://127.0.0.1:3000", "test-app"),
                ("jwt", "logout"): Route("jwt", "logout", "http://127.0.0.1:3000", "test-app"),
                ("shop", "list"): Route("shop", "list", "https://store.example.com:443", "stock"),
            },
        )
        self.assertEqual(ms.urls, ["http://127.0.0.1:3000", "https://store.example.com:443"])

    def test_url_normalised(self) -> None:
        """One link per remote: equivalent spellings of a URL are one URL."""
        cases = {
            "http://127.0.0.1:3000/": "http://127.0.0.1:3000",
            "HTTP://Example.COM:3000": "http://example.com:3000",
            "http://h": "http://h:80",
            "ws://h": "ws://h:80",
            "https://h": "https://h:443",
            "wss://h:8443": "wss://h:8443",
            "http://[::1]:3000": "http://[::1]:3000",
        }
        for url, normal in cases.items():
            with self.subTest(url=url):
                ms = self.build_services(
                    [{"application": "a", "types": {"t": {"url": url, "application": "b"}}}]
                )
                self.assertEqual(ms.urls, [normal])

    def test_one_url_per_link(self) -> None:
        ms = self.build_services(
            [
                {"application": "a", "types": {"t": {"url": "http://h:80/", "application": "b"}}},
                {"application": "c", "types": {"t": {"url": "http://h", "application": "d"}}},
            ]
        )
        self.assertEqual(ms.urls, ["http://h:80"])

    def test_bad_urls(self) -> None:
        path = "config.u_services[0].types.login.url"
        cases = {
            "ftp://h:21": f"{path}: invalid URL 'ftp://h:21': must start with http://, https://, "
            "ws:// or wss://",
            "127.0.0.1:3000": f"{path}: invalid URL '127.0.0.1:3000': must start with http://, "
            "https://, ws:// or wss://",
            "localhost:3000": f"{path}: invalid URL 'localhost:3000': must start with http://, "
            "https://, ws:// or wss://",
            "http:h:3000": f"{path}: invalid URL 'http:h:3000': must start with http://, "
            "https://, ws:// or wss://",
            "http://:3000": f"{path}: invalid URL 'http://:3000': no host",
            "http://h:3000/api": f"{path}: invalid URL 'http://h:3000/api': no path allowed "
            "(got '/api'; links connect to /socket.io/)",
            "http://h:3000/?x=1": f"{path}: invalid URL 'http://h:3000/?x=1': no query or "
            "fragment allowed",
            "http://u:p@h:3000": f"{path}: invalid URL 'http://u:p@h:3000': no user name or "
            "password allowed",
            "http://h:0": f"{path}: invalid URL 'http://h:0': port 0 is not a remote port",
            "http://h:abc": f"{path}: invalid URL 'http://h:abc': Port could not be cast to "
            "integer value as 'abc'",
            "http://h:70000": f"{path}: invalid URL 'http://h:70000': Port out of range 0-65535",
        }
        for url, expected in cases.items():
            with self.subTest(url=url):
                self.assertEqual(
                    self.problems(
                        {
                            "jwt": JWT,
                            "u_services": [
                                {
                                    "application": "jwt",
                                    "types": {"login": {"url": url, "application": "x"}},
                                }
                            ],
                        }
                    ),
                    [expected],
                )

    def test_url_not_a_string(self) -> None:
        self.assertEqual(
            self.problems(
                {
                    "jwt": JWT,
                    "u_services": [
                        {"application": "a", "types": {"t": {"url": 3000, "application": "b"}}}
                    ],
                }
            ),
            [
                "config.u_services[0].types.t.url: must be a URL such as 'http://10.0.0.5:8080', "
                "got 3000 (int)"
            ],
        )

    def test_entry_problems(self) -> None:
        self.assertEqual(
            self.problems(
                {
                    "jwt": JWT,
                    "u_services": [
                        "jwt",
                        {"types": {"login": ROUTE}},
                        {"application": "a"},
                        {"application": "b", "types": {}},
                        {"application": "c", "types": ["login"]},
                        {"application": "d", "types": {"t": "http://h:1"}},
                        {"application": "e", "types": {"t": {}}},
                        {
                            "application": "f",
                            "types": {"t": {"url": "http://h:1", "aplication": "x"}},
                        },
                        {"application": "", "types": {"t": ROUTE}, "extra": 1},
                    ],
                }
            ),
            [
                "config.u_services[0]: must be a dict {application, types}, got 'jwt' (str)",
                "config.u_services[1].application: missing (the local application name)",
                "config.u_services[2].types: must be a non-empty dict {type: {url, application} "
                "or {destination}}, missing",
                "config.u_services[3].types: must be a non-empty dict {type: {url, application} "
                "or {destination}}, got {} (dict)",
                "config.u_services[4].types: must be a non-empty dict {type: {url, application} "
                "or {destination}}, got ['login'] (list)",
                "config.u_services[5].types.t: must be {url, application} or {destination}, "
                "got 'http://h:1' (str)",
                "config.u_services[6].types.t.url: missing (a URL such as 'http://10.0.0.5:8080')",
                "config.u_services[6].types.t.application: missing (the remote application)",
                "config.u_services[7].types.t.aplication: unknown key "
                "(did you mean 'application'?)",
                "config.u_services[7].types.t.application: missing (the remote application)",
                "config.u_services[8].extra: unknown key",
                "config.u_services[8].application: must be a non-empty string, got '' (str)",
            ],
        )

    def test_rest_route(self) -> None:
        self.assertEqual(
            self.problems({"jwt": JWT, "u_services": [{"path": "/api/login", "method": "POST"}]}),
            ["config.u_services[0]: needs a destination, a :destination variable in path, "
             "or onRequest"],
        )

    def test_duplicate_route(self) -> None:
        self.assertEqual(
            self.problems(
                {
                    "jwt": JWT,
                    "u_services": [
                        {"application": "jwt", "types": {"login": ROUTE}},
                        {"application": "other", "types": {"login": ROUTE}},
                        {"application": "jwt", "types": {"login": ROUTE}},
                    ],
                }
            ),
            [
                "config.u_services[2].types.login: duplicate route for application 'jwt', type "
                "'login' (also at config.u_services[0].types.login)"
            ],
        )

    def test_needs_jwt(self) -> None:
        expected = (
            "config.u_services: forwarding to micro-services needs JWT mode: set "
            "config.jwt.secret (the same secret on every node)"
        )
        services = [{"application": "jwt", "types": {"login": ROUTE}}]
        self.assertEqual(self.problems({"u_services": services}), [expected])
        self.assertEqual(self.problems({"u_services": services, "jwt": False}), [expected])
        self.assertEqual(self.problems({"u_services": {"routes": services}}), [expected])

    def test_needs_jwt_even_when_routes_are_wrong(self) -> None:
        """Every problem at once: the JWT requirement does not wait for valid routes."""
        problems = self.problems({"u_services": [{"application": "jwt", "types": {}}]})
        self.assertEqual(len(problems), 2)
        self.assertTrue(problems[1].startswith("config.u_services: forwarding"), problems)

    def test_invalid_jwt_not_reported_twice(self) -> None:
        self.assertEqual(
            self.problems(
                {"jwt": {"secret": ""}, "u_services": [{"application": "a", "types": {"t": ROUTE}}]}
            ),
            ["config.jwt.secret: must be a non-empty string, got '' (str)"],
        )

    def test_empty(self) -> None:
        self.assertEqual(self.build({"u_services": []}).micro_services, MicroServicesConfig())
        self.assertEqual(self.build({"u_services": {}}).micro_services, MicroServicesConfig())


class MicroServicesObjectFormTests(ConfigTestCase):
    DESTINATIONS = {
        "login_service": {"host": "http://10.0.0.5:8080", "application": "login-micro-service"},
        "store1": {"host": "http://h1:8080", "application": "stock-list"},
        "store2": {"host": "https://h2", "application": "stock-list"},
        "all_stores": {"destinations": ["store1", "store2"]},
        "everything": {"destinations": ["all_stores", "login_service"]},
    }

    def services(self, routes: list[Any], **extra: Any) -> dict[str, Any]:
        return {
            "jwt": JWT,
            "u_services": {"destinations": self.DESTINATIONS, "routes": routes},
            **extra,
        }

    def test_object_form(self) -> None:
        ms = self.build(
            self.services(
                [
                    {
                        "application": "jwt",
                        "types": {"login": {"destination": "login_service"}, "direct": ROUTE},
                    },
                    {"application": "shop", "types": {"stock": {"destination": "store2"}}},
                ]
            )
        ).micro_services
        self.assertEqual(
            ms.destinations,
            {
                "login_service": Destination(
                    "login_service", "http://10.0.0.5:8080", "login-micro-service"
                ),
                "store1": Destination("store1", "http://h1:8080", "stock-list"),
                "store2": Destination("store2", "https://h2:443", "stock-list"),
            },
        )
        self.assertEqual(
            ms.groups,
            {"all_stores": ("store1", "store2"), "everything": ("all_stores", "login_service")},
        )
        self.assertEqual(
            ms.routes,
            {
                ("jwt", "login"): Route(
                    "jwt", "login", "http://10.0.0.5:8080", "login-micro-service", "login_service"
                ),
                ("jwt", "direct"): Route("jwt", "direct", "http://127.0.0.1:3000", "test-app"),
                ("shop", "stock"): Route("shop", "stock", "https://h2:443", "stock-list", "store2"),
            },
        )
        # one link per URL that a route uses: store1 has no route, so no link
        self.assertEqual(
            ms.urls, ["http://10.0.0.5:8080", "http://127.0.0.1:3000", "https://h2:443"]
        )

    def test_unknown_destination(self) -> None:
        self.assertEqual(
            self.problems(
                self.services([{"application": "jwt", "types": {"login": {"destination": "x"}}}])
            ),
            ["config.u_services.routes[0].types.login.destination: unknown destination 'x'"],
        )

    def test_group_route(self) -> None:
        self.assertEqual(
            self.problems(
                self.services([{"application": "a", "types": {"t": {"destination": "all_stores"}}}])
            ),
            [
                "config.u_services.routes[0].types.t.destination: 'all_stores' is a group: group "
                "destinations are only for REST routes"
            ],
        )

    def test_rest_route(self) -> None:
        # REST routes themselves: tests/test_rest_config.py
        config = config_from_dict(
            self.services(
                [
                    {"application": "a", "types": {"t": {"destination": "store1"}}},
                    {"path": "/api/store/:destination/stocklist", "method": "GET"},
                ]
            ),
            self.dir,
        )
        [rest] = config.micro_services.rest_routes
        self.assertEqual((rest.path, rest.method), ("/api/store/:destination/stocklist", "GET"))

    def test_destination_and_url(self) -> None:
        self.assertEqual(
            self.problems(
                self.services(
                    [{"application": "a", "types": {"t": {"destination": "store1", **ROUTE}}}]
                )
            ),
            [
                "config.u_services.routes[0].types.t: give either destination or url + "
                "application, not both"
            ],
        )

    def test_destination_problems(self) -> None:
        d = {
            "jwt": JWT,
            "u_services": {
                "destinations": {
                    "a": {"host": "http://h:1"},
                    "b": {"application": "x"},
                    "c": "http://h:1",
                    "d": {"host": "http://h:1/x", "application": "x", "port": 1},
                    "g1": {"destinations": ["a", "nope"], "host": "http://h:1"},
                    "g2": {"destinations": []},
                    "g3": {"destinations": ["g4"]},
                    "g4": {"destinations": ["g3"]},
                    "g5": {"destinations": [1]},
                },
                "routes": [{"application": "app", "types": {"t": {"destination": "a"}}}],
                "extra": True,
            },
        }
        self.assertEqual(
            self.problems(d),
            [
                "config.u_services.extra: unknown key",
                "config.u_services.destinations.a.application: missing (the remote application)",
                "config.u_services.destinations.b.host: missing (a URL such as "
                "'http://10.0.0.5:8080')",
                "config.u_services.destinations.c: must be {host, application} or "
                "{destinations: [names]}, got 'http://h:1' (str)",
                "config.u_services.destinations.d.port: unknown key",
                "config.u_services.destinations.d.host: invalid URL 'http://h:1/x': no path "
                "allowed (got '/x'; links connect to /socket.io/)",
                "config.u_services.destinations.g1.host: unknown key",
                "config.u_services.destinations.g2.destinations: must be a non-empty list of "
                "destination names, got [] (list)",
                "config.u_services.destinations.g5.destinations: destination names must be "
                "non-empty strings",
                "config.u_services.destinations.g1.destinations[1]: unknown destination 'nope'",
                "config.u_services.destinations.g3: group contains itself: g3 -> g4 -> g3",
                "config.u_services.destinations.g4: group contains itself: g4 -> g3 -> g4",
            ],
        )

    def test_structure_problems(self) -> None:
        self.assertEqual(
            self.problems({"jwt": JWT, "u_services": {"destinations": [], "routes": {}}}),
            [
                "config.u_services.destinations: must be a dict, got [] (list)",
                "config.u_services.routes: must be a list of routes, got {} (dict)",
            ],
        )


class ReplicaConfigTests(ConfigTestCase):
    """A destination with several hosts (issue 16 item 4): ``host`` as a list, or ``hosts``;
    the single-host forms unchanged."""

    def build_services(self, services: Any) -> MicroServicesConfig:
        return self.build({"jwt": JWT, "u_services": services}).micro_services

    def test_host_list_and_hosts_key(self) -> None:
        ms = self.build_services({
            "destinations": {
                "svc": {"host": ["http://10.0.0.5:8080", "http://10.0.0.6"],
                        "application": "svc-app"},
                "other": {"hosts": ["https://h1", "https://h2:8443/"], "application": "o"},
                "one": {"host": "http://10.0.0.7:3000", "application": "single"},
                "one_in_list": {"hosts": ["http://10.0.0.8:3000"], "application": "single"},
                "both": {"destinations": ["svc", "one"]},
            },
            "routes": [
                {"application": "jwt", "types": {"login": {"destination": "svc"},
                                                 "stock": {"destination": "other"},
                                                 "lone": {"destination": "one"}}},
                {"path": "/api/all", "destination": "both"},
            ],
        })
        svc = Destination("svc", "http://10.0.0.5:8080", "svc-app",
                          ("http://10.0.0.5:8080", "http://10.0.0.6:80"))
        self.assertEqual(ms.destinations["svc"], svc)
        self.assertEqual(ms.destinations["other"].urls, ("https://h1:443", "https://h2:8443"))
        # one host: urls is (url,), and the value equals the one written without urls
        self.assertEqual(ms.destinations["one"],
                         Destination("one", "http://10.0.0.7:3000", "single"))
        self.assertEqual(ms.destinations["one"].urls, ("http://10.0.0.7:3000",))
        self.assertEqual(ms.destinations["one_in_list"].urls, ("http://10.0.0.8:3000",))
        self.assertEqual(ms.routes[("jwt", "login")], Route(
            "jwt", "login", "http://10.0.0.5:8080", "svc-app", "svc", svc.urls))
        self.assertEqual(ms.routes[("jwt", "lone")].urls, ("http://10.0.0.7:3000",))
        self.assertEqual(ms.groups, {"both": ("svc", "one")})
        self.assertEqual(ms.urls, ["http://10.0.0.5:8080", "http://10.0.0.6:80",
                                   "http://10.0.0.7:3000", "https://h1:443", "https://h2:8443"])

    def test_array_form_url_list(self) -> None:
        ms = self.build_services([{"application": "jwt", "types": {
            "login": {"url": ["http://a:1", "http://b:2"], "application": "test-app"},
            "other": ROUTE}}])
        self.assertEqual(ms.routes[("jwt", "login")].urls, ("http://a:1", "http://b:2"))
        self.assertEqual(ms.routes[("jwt", "login")].url, "http://a:1")
        self.assertEqual(ms.routes[("jwt", "other")].urls, ("http://127.0.0.1:3000",))

    def test_problems(self) -> None:
        d = {"jwt": JWT, "u_services": {
            "destinations": {
                "a": {"host": ["http://h:1", "http://h:1/", "http://h:2"], "application": "x"},
                "b": {"host": "http://h:1", "hosts": ["http://h:2"], "application": "x"},
                "c": {"hosts": "http://h:1", "application": "x"},
                "d": {"host": [], "application": "x"},
                "e": {"hosts": ["http://h:1", "ftp://h:2", 7], "application": "x"},
            },
            "routes": [{"application": "app", "types": {
                "t": {"destination": "a"},
                "u": {"url": ["http://h:1", "http://h:1"], "application": "x"}}}],
        }}
        self.assertEqual(self.problems(d), [
            "config.u_services.destinations.a.host[1]: http://h:1 is listed twice (also at [0])",
            "config.u_services.destinations.b: give host or hosts, not both",
            "config.u_services.destinations.c.hosts: must be a non-empty list of URLs, got "
            "'http://h:1' (str)",
            "config.u_services.destinations.d.host: must be a URL such as "
            "'http://10.0.0.5:8080' or a non-empty list of them, got [] (list)",
            "config.u_services.destinations.e.hosts[1]: invalid URL 'ftp://h:2': must start "
            "with http://, https://, ws:// or wss://",
            "config.u_services.destinations.e.hosts[2]: must be a URL such as "
            "'http://10.0.0.5:8080', got 7 (int)",
            "config.u_services.routes[0].types.u.url[1]: http://h:1 is listed twice "
            "(also at [0])",
        ])


class CipherKeyTests(ConfigTestCase):
    def test_cipher(self) -> None:
        from qewd_twisted.config import config_from_dict

        cfg = config_from_dict({"jwt": {"secret": "s", "cipher": "aes-256-gcm"}})
        self.assertEqual(cfg.jwt.cipher, "aes-256-gcm")
        self.assertEqual(config_from_dict({"jwt": {"secret": "s"}}).jwt.cipher, "qewd")
        with self.assertRaises(ConfigError) as e:
            config_from_dict({"jwt": {"secret": "s", "cipher": "des"}})
        self.assertIn("config.jwt.cipher", str(e.exception))
