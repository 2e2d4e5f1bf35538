# test-case-name: tests.browser.test_socketio
"""
/socket.io/socket.io.js in headless Chromium against a scripted Engine.IO 3 server (so the
heartbeat can be short and pongs can go missing): the URL it opens, pings every pingInterval
from the OPEN packet, a missing pong ending the connection after pingTimeout, reconnection,
events both ways, emits buffered until connected, other namespaces ignored, and the server's
namespace disconnect (no reconnection). Fixture page: tests/browser/www/sio.html.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import defer, reactor

from qewd_twisted.transports.site import make_factory
from tests.browser.harness import BrowserTestCase, base_url


class ScriptedEngineIO(WebSocketServerProtocol):
    """One client connection; the factory's ``script`` decides the answers."""

    def onConnect(self, request: Any) -> None:
        self.index = len(self.factory.sessions)
        self.received: list[str] = []
        self.request = request
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.factory.sessions.append(self)

    def onOpen(self) -> None:
        f = self.factory
        handshake = {"sid": f"sid-{self.index}", "upgrades": [],
                     "pingInterval": f.ping_interval, "pingTimeout": f.ping_timeout}
        self.send_text("0" + json.dumps(handshake))
        self.send_text("40")
        f.script(self, None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        text = payload.decode("utf-8")
        self.received.append(text)
        self.factory.script(self, text)
        self.factory.check_waiters()

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.closed.called:
            self.closed.callback(None)

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))


class SocketIOClientTests(BrowserTestCase):
    @defer.inlineCallbacks
    def start(self, script: Callable[[ScriptedEngineIO, str | None], None],
              ping_interval: int = 25000, ping_timeout: int = 20000, then: str = "") -> Any:
        """The scripted server and a page connected to it; ``then`` runs in the same JS turn
        as ``io()``, i.e. before the connection can be up."""
        factory = make_factory(ScriptedEngineIO, None, reactor, 1 << 20)
        factory.sessions = []
        factory.script = script
        factory.ping_interval, factory.ping_timeout = ping_interval, ping_timeout
        waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []

        def check_waiters() -> None:
            for entry in list(waiters):
                if entry[0]():
                    waiters.remove(entry)
                    entry[1].callback(None)

        def wait_until(predicate: Callable[[], bool]) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.Deferred()
            waiters.append((predicate, d))
            check_waiters()
            return d

        factory.check_waiters = check_waiters
        self.wait_until = wait_until
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self._stop, port, factory)

        node = self.start_app_node()  # serves the fixture page and /socket.io/socket.io.js
        yield self.start_browser()
        page = yield self.bt.new_page(base_url(node) + "/sio.html")
        yield self.in_browser(page.evaluate, f"(url) => {{ connectTo(url); {then} }}",
                              f"http://127.0.0.1:{port.getHost().port}")
        return factory, page

    @defer.inlineCallbacks
    def _stop(self, port: Any, factory: Any) -> Any:
        yield port.stopListening()
        for proto in factory.sessions:
            if proto.transport is not None and proto.transport.connected:
                proto.dropConnection(abort=True)
        yield defer.DeferredList([p.closed for p in factory.sessions])

    @defer.inlineCallbacks
    def test_heartbeat_missing_pong_and_reconnection(self):
        def script(proto: ScriptedEngineIO, text: str | None) -> None:
            # First connection: answer two pings, then go silent. Later ones: always answer.
            if text == "2" and (proto.index > 0 or proto.received.count("2") <= 2):
                proto.send_text("3")

        factory, page = yield self.start(script, ping_interval=100, ping_timeout=200)
        yield self.in_browser(_wait_js, page, "count('reconnect') === 1")
        log = yield self.in_browser(page.evaluate, "log")
        upto = [entry for entry in log[: log.index(["reconnect", "1"]) + 1]]
        self.assertEqual(upto, [
            ["connect", None], ["ping", None], ["pong", None], ["ping", None], ["pong", None],
            ["ping", None], ["disconnect", "ping timeout"], ["reconnecting", "1"],
            ["connect", None], ["reconnect", "1"],
        ])
        first, second = factory.sessions[:2]
        self.assertEqual(first.received, ["2", "2", "2"])
        self.assertEqual((second.request.path, second.request.params),
                         ("/socket.io/", {"EIO": ["3"], "transport": ["websocket"]}))
        sid = yield self.in_browser(page.evaluate, "[socket.id, socket.connected]")
        self.assertEqual(sid, ["sid-1", True])

        yield self.in_browser(page.evaluate, "socket.close()")
        yield self.wait_until(lambda: "41" in second.received)
        state = yield self.in_browser(page.evaluate, "[socket.connected, log[log.length - 1]]")
        self.assertEqual(state, [False, ["disconnect", "io client disconnect"]])

    @defer.inlineCallbacks
    def test_events_buffering_namespaces_and_server_disconnect(self):
        def script(proto: ScriptedEngineIO, text: str | None) -> None:
            if text is None:  # just opened
                proto.send_text('42/admin,["ewdjs",{"type":"not for us"}]')
                proto.send_text('42["ewdjs",{"type":"hello","n":1}]')

        # Emitted before the connection is up: buffered, then sent once it is.
        factory, page = yield self.start(script, then="socket.emit('ewdjs', {type: 'early'});")
        yield self.wait_until(lambda: len(factory.sessions) == 1
                              and len(factory.sessions[0].received) == 2)
        proto = factory.sessions[0]
        self.assertEqual(proto.received, [
            '42["ewdjs",{"type":"early"}]',
            '42["ewdjs",{"type":"echo","got":{"type":"hello","n":1}}]',
        ])
        proto.send_text("41")  # the server leaves the namespace: no reconnection after that
        yield self.in_browser(_wait_js, page, "count('disconnect') === 1")
        log = yield self.in_browser(page.evaluate, "log")
        self.assertEqual(log, [["connect", None], ["ewdjs", '{"type":"hello","n":1}'],
                               ["disconnect", "io server disconnect"]])
        connected = yield self.in_browser(page.evaluate, "socket.connected")
        self.assertIs(connected, False)


def _wait_js(page: Any, expression: str) -> None:
    page.wait_for_function(f"() => {expression}")
