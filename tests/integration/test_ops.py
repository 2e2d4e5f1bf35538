# test-case-name: tests.integration.test_ops
"""
Operations on real loopback nodes: /health, /ready (with links coming up), /metrics on the
node's port or its own, the status page's auth, and no secret in any log line through a whole
session (register, login, forwarding, JWT errors, a link reconnect, config warnings).
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.logger import (
    eventAsJSON,
    formatEvent,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from qewd_twisted.mesh.links import LinkState
from qewd_twisted.ops.observe import NodeObserver
from tests.integration.nodes import port_of, start_node
from tests.integration.test_microservices import (
    client,
    link_up,
    login,
    start_master,
    start_ms,
)
from tests.ports import reserve_port

PASSWORD = "status-pw-7Jq2xv"


async def get(url: str, password: str | None = None, user: str = "anyone",
              accept: str | None = None) -> tuple[int, Headers, bytes]:
    headers = Headers()
    if password is not None:
        headers.addRawHeader(b"authorization",
                             b"Basic " + base64.b64encode(f"{user}:{password}".encode()))
    if accept is not None:
        headers.addRawHeader(b"accept", accept.encode())
    response = await Agent(reactor).request(b"GET", url.encode(), headers)
    body = await readBody(response)
    return response.code, response.headers, body


def base(node: Any) -> str:
    return f"http://127.0.0.1:{port_of(node)}"


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _log_format(line: str) -> str:
    """The format string of a captured JSON log line (a text line: its first words)."""
    try:
        return str(json.loads(line.strip("\x1e")).get("log_format"))
    except (ValueError, AttributeError):
        return line[:30]


def when_state(link: Any, state: LinkState) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()

    def changed(_link: Any, new: LinkState) -> None:
        if new is state and not d.called:
            unsubscribe()
            reactor.callLater(0, d.callback, None)

    unsubscribe = link.on_state_change(changed)
    return d


class HealthTests(TestCase):
    async def test_health_and_ready(self) -> None:
        node = start_node(self)
        # by default nothing observes requests: the node's hooks are the no-op ones
        self.assertIs(type(node.node.observer), NodeObserver)
        code, headers, body = await get(base(node) + "/health")
        self.assertEqual((code, json.loads(body)), (200, {"status": "ok"}))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        code, _, body = await get(base(node) + "/ready")
        self.assertEqual((code, json.loads(body)),
                         (200, {"status": "ready", "links": {}, "down": []}))

    async def test_not_ready_while_shutting_down(self) -> None:
        node = start_node(self)
        await node.node.drain(1)  # what stopService does once listeners are closed
        code, _, body = await get(base(node) + "/ready")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["reasons"], ["shutting down"])

    async def test_ready_once_every_link_registered(self) -> None:
        port = reserve_port(self)
        url = f"http://127.0.0.1:{port}"
        master = start_node(self, moduleMap={"jwt": "tests.apps.jwt_app"}, u_services=[
            {"application": "jwt", "types": {"login": {"url": url, "application": "test-app"}}}])
        code, _, body = await get(base(master) + "/ready")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body), {
            "status": "not ready", "links": {url: "down"}, "down": [url],
            "reasons": [f"link {url} has not registered yet"]})
        ms = start_ms(self, listen=f"tcp:{port}:interface=127.0.0.1")
        await link_up(master)
        code, _, body = await get(base(master) + "/ready")
        self.assertEqual((code, json.loads(body)),
                         (200, {"status": "ready", "links": {url: "up"}, "down": []}))
        # down again after its first registration: still ready, but the body says so
        [link] = master.micro_services
        down = when_state(link, LinkState.DOWN)
        for conn in list(ms.node.connections.values()):
            conn.close(4000, "test: drop the link")
        await down
        code, _, body = await get(base(master) + "/ready")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["down"], [url])


class MetricsEndpointTests(TestCase):
    async def test_off_by_default(self) -> None:
        node = start_node(self)
        code, _, _ = await get(base(node) + "/metrics")
        self.assertEqual(code, 404)

    async def test_on_the_node_port(self) -> None:
        node = start_node(self, metrics=True)
        code, headers, body = await get(base(node) + "/metrics")
        self.assertEqual(code, 200)
        [ctype] = headers.getRawHeaders(b"content-type")
        self.assertTrue(ctype.startswith(b"text/plain; version=0.0.4"), ctype)
        self.assertIn(b"qewd_requests_in_flight 0.0", body)
        self.assertIn(b"process_cpu_seconds_total", body)
        code, headers, body = await get(base(node) + "/metrics",
                                        accept="application/openmetrics-text; version=1.0.0")
        self.assertTrue(body.endswith(b"# EOF\n"))

    async def test_on_its_own_endpoint(self) -> None:
        node = start_node(self, metrics={"listen": "tcp:0:interface=127.0.0.1"})
        code, _, _ = await get(base(node) + "/metrics")
        self.assertEqual(code, 404)
        port = node.ops.metrics_port.getHost().port
        code, _, body = await get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"qewd_connections", body)
        code, _, body = await get(f"http://127.0.0.1:{port}/ready")
        self.assertEqual(code, 200)
        code, _, _ = await get(f"http://127.0.0.1:{port}/status")
        self.assertEqual(code, 404)  # only /metrics, /health and /ready there

    async def test_a_forwarded_session_counted(self) -> None:
        ms = start_ms(self, metrics=True)
        master = start_master(self, ms, metrics=True)
        await link_up(master)
        c, token = await client(self, master)
        frames = await login(c, token, "user-7")
        self.assertIs(frames[-1]["message"]["ok"], True)
        token = frames[-1]["message"]["token"]
        c.emit({"type": "test", "token": token, "params": {"text": "hi"}})
        await c.message()
        c.emit({"type": "noSuchType", "token": token})
        await c.message()
        _, _, body = await get(base(master) + "/metrics")
        s = samples(body)
        url = f"http://127.0.0.1:{port_of(ms)}"

        def value(name: str, **labels: str) -> float | None:
            return s.get((name, tuple(sorted(labels.items()))))

        self.assertEqual(value("qewd_requests_total", application="jwt", type="login",
                               outcome="ok"), 1)
        self.assertEqual(value("qewd_requests_total", application="jwt", type="test",
                               outcome="ok"), 1)
        # beforeHandler answers unknown types: counted, but as "other"
        self.assertEqual(value("qewd_requests_total", application="jwt", type="other",
                               outcome="error"), 1)
        self.assertEqual(value("qewd_forwarded_requests_total", url=url, outcome="ok"), 1)
        self.assertEqual(value("qewd_forwarded_request_duration_seconds_count", url=url), 1)
        self.assertEqual(value("qewd_link_up", url=url, application="test-app"), 1)
        self.assertEqual(value("qewd_link_registrations_total", url=url, kind="register"), 1)
        self.assertEqual(value("qewd_registrations_total", application="jwt", mode="jwt",
                               kind="register"), 1)
        self.assertEqual(value("qewd_connections", framing="engine.io"), 1)
        self.assertGreater(value("qewd_websocket_received_bytes_total"), 200)
        self.assertGreater(value("qewd_websocket_sent_bytes_total"), 200)
        # the micro-service counts the same login, arriving over the master's link
        _, _, body = await get(base(ms) + "/metrics")
        s = samples(body)
        self.assertEqual(value("qewd_requests_total", application="test-app", type="login",
                               outcome="ok"), 1)


class StatusPageTests(TestCase):
    async def test_basic_auth_any_user(self) -> None:
        node = start_node(self, managementPassword=PASSWORD)
        for password in (None, "wrong", PASSWORD.upper()):
            code, headers, _ = await get(base(node) + "/status", password)
            self.assertEqual(code, 401)
            self.assertEqual(headers.getRawHeaders(b"www-authenticate"),
                             [b'Basic realm="qewd status", charset="UTF-8"'])
        for user in ("admin", "", "someone else"):
            code, _, body = await get(base(node) + "/status", PASSWORD, user=user)
            self.assertEqual(code, 200)
            self.assertIn(b"<h2>Worker pool</h2>", body)
        code, _, body = await get(base(node) + "/status.json", PASSWORD)
        self.assertEqual(code, 200)
        status = json.loads(body)
        self.assertEqual(status["pool"]["size"], 2)
        self.assertIs(status["server"]["ready"], True)

    async def test_refused_with_the_default_password(self) -> None:
        warnings: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "qewd_twisted.ops.operations":
                warnings.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for config in ({}, {"managementPassword": "keepThisSecret"}, {"status": True}):
            node = start_node(self, **config)
            for path in ("/status", "/status.json"):
                code, _, _ = await get(base(node) + path, "keepThisSecret")
                self.assertEqual(code, 404)
        # only the node that asked for the page explicitly is told why it has none
        self.assertEqual(warnings, [
            "the status page is off: config.managementPassword is QEWD's default; "
            "set your own to serve /status"])

    async def test_off(self) -> None:
        node = start_node(self, managementPassword=PASSWORD, status=False)
        code, _, _ = await get(base(node) + "/status", PASSWORD)
        self.assertEqual(code, 404)


class SecretsNeverLoggedTests(TestCase):
    """Issue 8 item 3: a whole session's log output, as JSON and as text, holds no secret."""

    timeout = 60

    async def test_no_secret_in_any_log_event(self) -> None:
        out = io.StringIO()
        json_observer = jsonFileLogObserver(out)
        texts: list[str] = []

        def observe(event: dict) -> None:
            json_observer(event)
            texts.append(eventAsJSON(event))
            texts.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        secret = "jwt-secret-" + "Kq93vZ0pL"
        management = "mgmt-pass-" + "Rt55wXy2"
        username = "secret-user-9d1f"
        password = username[::-1]  # tests/apps/users accepts the reversed name
        common = {"jwt": {"secret": secret}, "managementPassword": management,
                  "logRequests": True, "metrics": True, "database": {"type": "redis"}}
        ms = start_ms(self, **common)
        master = start_master(self, ms, **common)
        await link_up(master)
        [link] = master.micro_services
        secrets = {secret, management, password, link._token}

        c, token = await client(self, master)
        secrets.add(token)
        frames = await login(c, token, username, password)  # forwarded, password in params
        token = frames[-1]["message"]["token"]
        secrets.add(token)
        frames = await login(c, token, username, "wrong-pass-" + "Mm31")
        secrets.add("wrong-pass-" + "Mm31")
        c.emit({"type": "test", "token": token, "params": {"text": "hello"}})
        await c.message()
        # JWT errors: a tampered signature, another secret's token, garbage
        head, body, signature = token.split(".")
        tampered = f"{head}.{body}.{signature[:-4]}AAAA"
        secrets.add(tampered)
        for bad in (tampered, "x.y.z"):
            c.emit({"type": "test", "token": bad})
            reply = await c.message()
            self.assertIn("Invalid JWT", reply["message"]["error"])
        # the status page, with a wrong and the right password
        code, _, _ = await get(base(master) + "/status", "guess-" + management)
        self.assertEqual(code, 401)
        code, _, _ = await get(base(master) + "/status", management)
        self.assertEqual(code, 200)
        # the link drops and comes back: it re-registers with a refreshed token
        down, up = when_state(link, LinkState.DOWN), when_state(link, LinkState.UP)
        for conn in list(ms.node.connections.values()):
            conn.close(4000, "test: drop the link")
        await down
        await up
        self.assertEqual(link.reregistrations, 1)
        secrets.add(link._token)
        frames = await login(c, token, username, password)
        self.assertIs(frames[-1]["message"]["ok"], True)
        secrets.add(frames[-1]["message"]["token"])

        await master.stopService()
        await ms.stopService()

        captured = out.getvalue() + "\n".join(texts)
        # the capture saw what we think it saw
        self.assertIn("config.database is a QEWD.js setting", captured)
        self.assertIn("re-registered", captured)
        self.assertIn('"log_namespace": "qewd_twisted.requests"', captured)
        self.assertIn('"outcome": "ok"', captured)
        self.assertIn('"duration_ms"', captured)
        # and no recognisable part of a token (its signature) either
        needles = secrets | {s.rsplit(".", 1)[1] for s in secrets if s.count(".") == 2}
        needles.add(secret[-6:])
        for i, needle in enumerate(sorted(needles)):
            leaks = [line for line in captured.splitlines() if needle in line]
            if leaks:  # say where, without printing the secret
                formats = {_log_format(line) for line in leaks}
                self.fail(f"secret #{i} appears in {len(leaks)} log line(s): {formats}")
