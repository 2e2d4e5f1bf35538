# -*- test-case-name: tests.documents.test_service -*-
"""
A real node (QEWDService on loopback) with ``config["database"]`` set to an SQLite file:
handlers' q.db and session-token sessions survive a restart of the node.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from qewd_twisted import QEWDService, config_from_dict
from tests.integration.nodes import eio_url
from tests.wsclient import EIOClient


class SQLiteNodeRestartTests(TestCase):
    timeout = 60

    def node(self, path: str) -> QEWDService:
        config = config_from_dict({
            "listen": "tcp:0:interface=127.0.0.1", "moduleMap": {"counter": "tests.apps.counter"},
            "shutdownGracePeriod": 1, "database": {"type": "sqlite", "params": {"path": path}}})
        service = QEWDService(config, reactor)
        service.startService()
        return service

    async def ask(self, c: EIOClient, message: dict) -> Any:
        c.emit(message)
        return (await c.message())["message"]

    async def scenario(self) -> None:
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        first = self.node(path)
        c = EIOClient(eio_url(first))
        await c.handshake()
        token = (await self.ask(c, {"type": "ewd-register", "application": "counter"}))["token"]
        self.assertEqual(await self.ask(c, {"type": "hit", "token": token}),
                         {"n": 1, "boots": 1, "session_hits": 1})
        self.assertEqual(await self.ask(c, {"type": "hit", "token": token}),
                         {"n": 2, "boots": 1, "session_hits": 2})
        await c.close()
        await first.stopService()

        second = self.node(path)  # the same file: documents and sessions are still there
        try:
            c = EIOClient(eio_url(second))
            await c.handshake()
            self.assertEqual(await self.ask(c, {"type": "hit", "token": token}),
                             {"n": 3, "boots": 2, "session_hits": 3})
            self.assertEqual(await self.ask(c, {"type": "peek", "token": token}), {"n": 3})
            await c.close()
        finally:
            await second.stopService()

    def test_documents_and_sessions_survive_a_restart(self) -> defer.Deferred:
        return defer.ensureDeferred(self.scenario())


class ExampleTests(TestCase):
    """examples/documents runs as written (copied to a temporary folder: its SQLite file is
    made beside the startup file)."""

    timeout = 60

    async def scenario(self) -> None:
        import shutil

        from qewd_twisted import load_config

        here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "examples", "documents")
        folder = os.path.abspath(self.mktemp())
        shutil.copytree(here, folder)
        config = load_config(os.path.join(folder, "startup.py"))
        config = config_from_dict({**config.raw, "port": 0}, folder)
        service = QEWDService(config, reactor)
        service.startService()
        try:
            c = EIOClient(eio_url(service))
            await c.handshake()
            c.emit({"type": "ewd-register", "application": "people", "jwt": True})
            token = (await c.message())["message"]["token"]

            async def ask(type: str, **params: Any) -> Any:
                c.emit({"type": type, "token": token, "params": params})
                return (await c.message())["message"]

            self.assertEqual((await ask("save", id=7, name="Rob", tags=["a", "b"]))["count"], 1)
            person = await ask("load", id=7)
            self.assertEqual((person["name"], person["tags"]), ("Rob", ["a", "b"]))
            self.assertEqual((await ask("load", id=8))["error"], "no such person")
            self.assertEqual((await ask("visits"))["visits"], 1)
            self.assertTrue(os.path.exists(os.path.join(folder, "qewd.sqlite")))
            await c.close()
        finally:
            await service.stopService()

    def test_people_example(self) -> defer.Deferred:
        return defer.ensureDeferred(self.scenario())

