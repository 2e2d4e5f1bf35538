# test-case-name: tests.integration.test_churn
"""
Connection churn leaves nothing behind (issue 7): a few hundred connect / ``ewd-register`` /
close cycles against a real node on loopback, 20 at a time, then nothing per connection may be
left on the node. The measurement with 10,000 cycles and the node's memory is bench/churn.py
(docs/reliability.md); this is its bounded smoke test, with no timing or memory assertions.

Each cycle waits until the node itself has seen its connection go (``Node.connection_lost``
for that socket id), so the checks at the end need no sleeps.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url, plain_url, start_node
from tests.wsclient import EIOClient, PlainClient

CYCLES = 300
CONCURRENCY = 20


class ChurnTests(TestCase):
    timeout = 120

    def watch(self, node: Any) -> None:
        """Record every connection the node loses, and let a cycle wait for its own."""
        self.lost: set[str] = set()
        self.waiting: dict[str, defer.Deferred[None]] = {}
        original = node.node.connection_lost

        def connection_lost(conn: Any) -> None:
            original(conn)
            self.lost.add(conn.id)
            d = self.waiting.pop(conn.id, None)
            if d is not None:
                d.callback(None)

        self.patch(node.node, "connection_lost", connection_lost)

    def gone(self, socket_id: str) -> defer.Deferred[None]:
        if socket_id in self.lost:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting[socket_id] = d
        return d

    async def cycle(self, node: Any, jwt: bool, plain: bool) -> str:
        c: Any = PlainClient(plain_url(node)) if plain else EIOClient(eio_url(node))
        self.addCleanup(c.close)  # closed by the cycle itself; this is for a failure part-way
        if plain:
            await c.opened
        else:
            await c.handshake()
        c.emit({"type": "ewd-register", "application": "demo", "jwt": jwt})
        reply = await c.message()
        token = reply["message"]["token"]
        # the node knows this socket by the id it put in the token (JWT) or the session
        if jwt:
            socket_id = node.tokens.session(token)["socketId"]
        else:  # the session store (documents, in memory here) answers through a Deferred
            socket_id = (await node.sessions.get(token))["socketId"]
        self.assertIn(socket_id, node.node.connections)
        # The close code is not checked: client and server share this reactor, and on a
        # starved machine the client's 1 s close-handshake timer can fire before the server's
        # answer is read (1006). What matters is that the node lets the connection go.
        await c.close()
        await self.gone(socket_id)
        return token

    async def churn(self, node: Any, jwt: bool, plain: bool = False) -> list[str]:
        tokens: list[str] = []
        todo = iter(range(CYCLES))

        async def worker() -> None:
            for i in todo:
                tokens.append(await self.cycle(node, jwt, plain and i % 2 == 0))

        await defer.gatherResults([defer.ensureDeferred(worker())
                                   for _ in range(CONCURRENCY)])
        return tokens

    async def _jwt(self) -> None:
        node = start_node(self)
        self.watch(node)
        tokens = await self.churn(node, jwt=True, plain=True)
        self.assertEqual(len(set(tokens)), CYCLES)
        self.assertEqual(node.node.connections, {})
        self.assertEqual(len(self.lost), CYCLES)
        self.assertEqual(node.node.in_flight, 0)
        await node.sessions.collect_garbage()  # len() is the count at the last sweep
        self.assertEqual(len(node.sessions), 0, "JWT mode keeps nothing server-side")
        # the node still serves: the tokens it issued work on a new connection
        c = EIOClient(eio_url(node))
        self.addCleanup(c.close)
        await c.handshake()
        c.emit({"type": "echo", "token": tokens[-1], "params": "after churn"})
        self.assertEqual((await c.message())["message"]["you sent"], "after churn")

    def test_jwt_mode_leaves_nothing(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._jwt())

    async def _session(self) -> None:
        node = start_node(self)
        self.watch(node)
        tokens = await self.churn(node, jwt=False)
        self.assertEqual(node.node.connections, {})
        self.assertEqual(node.node.in_flight, 0)
        # exactly one server-side session per registration, until it expires (§2.1): the
        # store's own bound and timeout apply, nothing else is kept per connection
        await node.sessions.collect_garbage()  # len() is the count at the last sweep
        self.assertEqual(len(node.sessions), CYCLES)
        found = [(await node.sessions.get(t)).token for t in tokens]
        self.assertEqual(sorted(found), sorted(tokens))

    def test_session_mode_leaves_only_the_sessions(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._session())
