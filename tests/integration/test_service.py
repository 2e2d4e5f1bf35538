# test-case-name: tests.integration.test_service
"""
The node as a service: the twistd plugin, config errors before listening, graceful stop
(in-process and SIGTERM to a real twistd), and embedding under a parent MultiService.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.plugin import getPlugins
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService, load_config
from tests.apps import demo
from tests.integration.nodes import eio_url, port_of, start_node
from tests.ports import reserve_port
from tests.integration.processes import (
    REPO,
    TWISTD,
    TwistdProcess,
    write_startup,
)
from tests.wsclient import EIOClient


def twistd_args(*args: str) -> list[str]:
    return [*TWISTD, *args]


class PluginTests(TestCase):
    def test_plugin_found(self):
        """The lazy dropin registers the tap name `qewd` (issue 2 item 1)."""
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("qewd", makers)
        self.assertEqual(makers["qewd"].module, "qewd_twisted.tap")

    @defer.inlineCallbacks
    def test_twistd_help_lists_qewd(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, twistd_args("--help"), env=dict(os.environ), path=REPO)
        self.assertEqual(code, 0, err)
        self.assertIn(b"qewd", out)

    @defer.inlineCallbacks
    def test_bad_config_exits_before_listening(self):
        """Every problem is printed with its key path; exit status 1; nothing listens."""
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        port = reserve_port(self)
        path = os.path.join(d, "startup.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""
                config = {{
                    "port": {port},
                    "poolSize": "two",
                    "colour": "blue",
                    "moduleMap": {{"app": "missing.py"}},
                }}
            """))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, twistd_args("qewd", "--config", path), env=dict(os.environ), path=REPO)
        self.assertEqual(code, 1, out + err)
        text = err.decode()
        self.assertIn("config.poolSize", text)
        self.assertIn("config.colour", text)
        self.assertIn("config.moduleMap.app", text)
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)

    @defer.inlineCallbacks
    def test_missing_startup_file(self):
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, twistd_args("qewd", "--config", "/nonexistent/startup.py"),
            env=dict(os.environ), path=REPO)
        self.assertEqual(code, 1)
        self.assertIn(b"/nonexistent/startup.py", err)


class TwistdProcessTests(TestCase):
    @defer.inlineCallbacks
    def test_runs_and_stops_on_sigterm(self):
        port = reserve_port(self)
        path = write_startup(self, f'{{"listen": "tcp:{port}:interface=127.0.0.1", '
                                   f'"jwt": {{"secret": "x"}}, "moduleMap": {{"demo": "tests.apps.demo"}}}}')
        node = TwistdProcess(self, path)
        listening = node.wait_for("started: listening")
        node.start()
        yield listening
        c = EIOClient(f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        reg = yield defer.ensureDeferred(c.message())
        self.assertIn("token", reg["message"])
        stopped = node.signal("TERM")
        code, _ = yield c.closed
        self.assertEqual(code, 1001)  # told: going away
        reason = yield stopped
        # twistd re-raises the signal it stopped on, so a SIGTERM stop ends by that signal
        self.assertIn(reason.signal or reason.exitCode, (0, signal.SIGTERM), node.output)
        self.assertIn("stopped", node.output)


class GracefulStopTests(TestCase):
    @defer.inlineCallbacks
    def test_stop_drains_in_flight_then_closes(self):
        demo.release.hold(self)
        node = QEWDService(
            load_config_dict(listen="tcp:0:interface=127.0.0.1", shutdownGracePeriod=30), reactor)
        self.addCleanup(lambda: node.stopService() if node.running else None)
        node.startService()
        port = port_of(node)
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "demo", "jwt": True})
        token = (yield defer.ensureDeferred(c.message()))["message"]["token"]
        c.emit({"type": "blocked", "token": token})
        running = yield defer.ensureDeferred(c.message())  # the handler is running in the pool
        self.assertEqual(running["message"], {"blocked": True})
        stopped = node.stopService()
        # no longer listening
        late = EIOClient(f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket")
        self.addCleanup(late.close)
        yield self.assertFailure(late.opened, ConnectionError)
        self.assertNoResult(stopped)
        demo.release.open()
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["released"], True)
        code, _ = yield c.closed
        self.assertEqual(code, 1001)
        yield stopped


def load_config_dict(**overrides):
    from qewd_twisted import config_from_dict

    cfg = {"jwt": {"secret": "x"}, "moduleMap": {"demo": "tests.apps.demo"}}
    cfg.update(overrides)
    return config_from_dict(cfg)


class EmbeddingTests(TestCase):
    @defer.inlineCallbacks
    def test_tac_example(self):
        """examples/embed/qewd.tac builds an application with the node under a MultiService."""
        env = dict(os.environ, QEWD_EMBED_LISTEN="tcp:0:interface=127.0.0.1")
        self.patch(os, "environ", env)
        namespace: dict = {"__file__": os.path.join(REPO, "examples", "embed", "qewd.tac")}
        with open(namespace["__file__"]) as f:
            exec(compile(f.read(), namespace["__file__"], "exec"), namespace)
        parent = namespace["parent"]
        self.assertIsInstance(parent, MultiService)
        node = namespace["node"]
        self.assertIsInstance(node, QEWDService)
        self.addCleanup(lambda: parent.stopService() if parent.running else None)
        parent.startService()
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        yield defer.ensureDeferred(c.handshake())
        c.emit({"type": "ewd-register", "application": "hello", "jwt": True})
        token = (yield defer.ensureDeferred(c.message()))["message"]["token"]
        c.emit({"type": "hello", "token": token, "params": {"name": "embedder"}})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["text"], "Hello, embedder!")
        c.emit({"type": "count", "token": reply["message"]["token"]})
        reply = yield defer.ensureDeferred(c.message())
        self.assertEqual(reply["message"]["count"], 1)
        yield parent.stopService()
        yield c.closed
        self.assertEqual(node.ports, [])

    def test_load_config_of_examples(self):
        """Each example's startup file loads with the listener, application and secret its
        docstring names (the environment's overrides unset)."""
        expected = {
            "embed/startup.py": (["tcp:8090:interface=127.0.0.1"], ["hello"], "change-me-please"),
            "jwt/master.py": (["tcp:8080"], ["jwt"], "someSecret123"),
            "jwt/microservice.py": (["tcp:3000"], ["test-app"], "someSecret123"),
        }
        overrides = ("QEWD_EMBED_LISTEN", "QEWD_EMBED_SECRET", "QEWD_EXAMPLE_MS_URL",
                     "QEWD_EXAMPLE_PORT", "QEWD_EXAMPLE_SECRET", "QEWD_EXAMPLE_MS_PORT")
        for var in overrides:
            if var in os.environ:
                self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                           if k not in overrides})
                break
        for name, (listen, apps, secret) in expected.items():
            cfg = load_config(os.path.join(REPO, "examples", name))
            self.assertEqual([entry.split(":backlog=")[0] for entry in cfg.listen], listen, name)
            self.assertEqual(sorted(cfg.module_map), apps, name)
            self.assertEqual(cfg.jwt.secret, secret, name)


class BacklogTests(TestCase):
    def test_default_backlog_added(self) -> None:
        from qewd_twisted.service import DEFAULT_BACKLOG, with_backlog

        self.assertEqual(with_backlog("tcp:8080"), f"tcp:8080:backlog={DEFAULT_BACKLOG}")
        self.assertEqual(with_backlog("ssl:443:privateKey=k:certKey=c"),
                         f"ssl:443:privateKey=k:certKey=c:backlog={DEFAULT_BACKLOG}")
        for kept in ("tcp:1:backlog=5", "unix:/tmp/qewd.sock", "systemd:domain=INET:index=0"):
            self.assertEqual(with_backlog(kept), kept)

    def test_service_listens_with_it(self) -> None:
        from qewd_twisted.service import DEFAULT_BACKLOG

        node = QEWDService(load_config_dict(listen=["tcp:0:interface=127.0.0.1",
                                                    "tcp:0:interface=127.0.0.1:backlog=7"]),
                           reactor)
        self.assertEqual([s.endpoint._backlog for s in node.listeners], [DEFAULT_BACKLOG, 7])
