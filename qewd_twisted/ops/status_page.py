# -*- test-case-name: tests.test_ops -*-
"""
The ``/status`` page and ``/status.json``: a read-only view of one node for its operator (what
qewd-monitor shows QEWD users), behind HTTP Basic auth with ``managementPassword``.

Any user name is accepted; the password is compared in constant time. Each failed attempt is
logged (the address and user name, never the password); an address that fails
``auth_failures`` times within ``auth_window`` seconds gets 429 until that window has passed
(`AuthThrottle`), whatever it sends. The page is plain HTML rendered here (no script, so the
Content-Security-Policy allows none) and refreshes itself every few seconds. ops.py mounts these
only when the password is not QEWD's default.
"""

from __future__ import annotations

import hmac
import json
import math
from collections import OrderedDict
from html import escape
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from qewd_twisted import errors as E
from qewd_twisted.config.limits import Limits
from qewd_twisted.transports.http import clip

log = Logger()
_DEFAULTS = Limits()

REFRESH_SECONDS = 5
_REALM = b'Basic realm="qewd status", charset="UTF-8"'
_COMMON_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_CSP = b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"


class AuthThrottle:
    """Failed Basic-auth attempts per client address, on ``clock``.

    `blocked(ip)` gives the seconds left while the address is blocked (else 0):
    `failed(ip)` records a failure and blocks the address for ``auth_window`` seconds once it
    reaches ``auth_failures`` failures within that window. At most ``tracked`` addresses are
    remembered (the least recently failing are forgotten first).
    """

    tracked = 10000

    def __init__(self, clock: Any, limits: Limits = _DEFAULTS) -> None:
        self._clock = clock
        self.limits = limits
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._blocked_until: dict[str, float] = {}

    def blocked(self, ip: str) -> float:
        until = self._blocked_until.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock.seconds()
        if left > 0:
            return left
        del self._blocked_until[ip]
        return 0.0

    def failed(self, ip: str) -> bool:
        """Record a failure; True when it blocks ``ip``."""
        now, window = self._clock.seconds(), self.limits.auth_window
        times = [t for t in self._failures.pop(ip, []) if t > now - window]
        times.append(now)
        if len(times) >= self.limits.auth_failures:
            self._blocked_until[ip] = now + window
            return True
        self._failures[ip] = times
        while len(self._failures) > self.tracked:
            self._failures.popitem(last=False)
        if len(self._blocked_until) > self.tracked:
            self._blocked_until = {k: v for k, v in self._blocked_until.items() if v > now}
        return False

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)


class _Protected(Resource):
    isLeaf = True

    def __init__(self, ops: Any, password: bytes, throttle: AuthThrottle) -> None:
        super().__init__()
        self.ops = ops
        self._password = password
        self.throttle = throttle

    def render_GET(self, request: Any) -> bytes:  # noqa: N802
        for name, value in _COMMON_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        ip = _client_ip(request)
        wait = self.throttle.blocked(ip)
        if wait:
            seconds = math.ceil(wait)
            request.setResponseCode(429)
            request.setHeader(b"retry-after", b"%d" % seconds)
            return E.AUTH_BACKOFF.format(seconds=seconds).encode("utf-8") + b"\n"
        given = request.getPassword() or b""
        if not hmac.compare_digest(given, self._password):
            if request.getHeader(b"authorization") is not None:  # not a browser's first try
                user = clip(request.getUser() or b"")
                if self.throttle.failed(ip):
                    log.warn("status page: {ip} failed Basic auth {n} times (user {user}): "
                             "answered 429 for {window} s", ip=ip, user=user,
                             n=self.throttle.limits.auth_failures,
                             window=self.throttle.limits.auth_window)
                else:
                    log.warn("status page: wrong password from {ip} (user {user})", ip=ip,
                             user=user)
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", _REALM)
            return b"401 Unauthorized: the status page needs the node's managementPassword\n"
        self.throttle.succeeded(ip)
        status = getattr(self.ops, "node_status", self.ops.status)()
        if not isinstance(status, defer.Deferred):
            return self.page(request, status)
        # a node process of several: the other processes' figures come over the control
        # channel (cluster/aggregate.py)
        status.addCallback(lambda whole: self.page(request, whole))
        status.addErrback(self._failed, request)
        status.addCallback(self._write, request)
        return server.NOT_DONE_YET

    def _failed(self, failure: Any, request: Any) -> bytes:
        log.failure("status page: gathering the node's status", failure)
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"500 Internal Server Error: the node's status could not be gathered\n"

    @staticmethod
    def _write(body: bytes, request: Any) -> None:
        if not request.finished and not getattr(request, "_disconnected", False):
            request.write(body)
            request.finish()

    def page(self, request: Any, status: dict[str, Any]) -> bytes:
        """The body for an authorised request (subclasses)."""
        raise NotImplementedError


def _client_ip(request: Any) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


class StatusJSONResource(_Protected):
    """``/status.json``: the same data as the page."""

    def page(self, request: Any, status: dict[str, Any]) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status, indent=1).encode("utf-8")


class StatusPageResource(_Protected):
    """``/status``: the page."""

    def page(self, request: Any, status: dict[str, Any]) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", _CSP)
        return render_page(status).encode("utf-8")


def _table(table_id: str, headers: list[str], rows: list[list[Any]], empty: str,
           row_attrs: list[str] | None = None) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}-empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else ""
        cells = "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row)
        body.append(f"<tr{attrs}>{cells}</tr>")
    return (f'<table id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def render_page(status: dict[str, Any]) -> str:
    server, conns, pool = status["server"], status["connections"], status["pool"]
    requests = status["requests"]
    ready = "ready" if server["ready"] else "not ready: " + "; ".join(server["reasons"])
    if server["ready"] and server["links_down"]:
        ready += " (links down now: " + ", ".join(server["links_down"]) + ")"
    links = status["links"]
    link_rows = [[link["url"], link["application"], link["state"], link["since"],
                  link["in_flight"], link["queued"],
                  f'{link["registrations"]} / {link["reregistrations"]}',
                  (link["last_error"] or {}).get("text")]
                 for link in links]
    link_attrs = [f' class="state-{escape(link["state"])}" data-url="{escape(link["url"])}"'
                  f' data-state="{escape(link["state"])}"' for link in links]
    window = requests["window_seconds"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>{escape(server['name'])}: status</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(server['name'])} <small>qewd-twisted {escape(server['version'])}</small></h1>",
        (f'<p id="summary">Up since {escape(server["started"])} '
         f'({server["uptime_seconds"]} s); listening on {escape(", ".join(server["listen"]))}; '
         f'<span id="readiness" class="{"ok" if server["ready"] else "bad"}">'
         f"{escape(ready)}</span></p>"),
        *_processes(status.get("processes")),
        "<h2>Connections</h2>",
        (f'<p id="connections">{conns["total"]} connected '
         f'({escape(_pairs(conns["by_framing"]))}); {conns["from_masters"]} from master nodes</p>'),
        _table("connections-by-application", ["application", "connections"],
               [[a, n] for a, n in sorted(conns["by_application"].items())], "No clients."),
        "<h2>Worker pool</h2>",
        (f'<p id="pool">{pool["busy"]} of {pool["size"]} threads busy, {pool["queued"]} queued '
         f'(limit {pool["max_queue"]}){"" if pool["running"] else ", not running"}; '
         f'{requests["in_flight"]} requests in flight</p>'),
        f"<h2>Requests, last {window} s</h2>",
        _table("requests-recent", ["application", "type", "requests", "errors", "per second",
                                   "mean ms"],
               [[r["application"], r["type"], r["requests"], r["errors"], r["per_second"],
                 r["mean_ms"]] for r in requests["recent"]], "No requests in the last minute."),
        "<h2>Requests since start</h2>",
        _table("requests-total", ["application", "type", "requests", "errors"],
               [[r["application"], r["type"], r["requests"], r["errors"]]
                for r in requests["since_start"]], "No requests yet."),
        "<h2>Registrations</h2>",
        _table("registrations", ["application", "mode", "count"],
               [[r["application"], r["mode"], r["count"]] for r in status["registrations"]],
               "No registrations yet."),
        "<h2>Micro-service links</h2>",
        _table("links", ["url", "remote application", "state", "since", "in flight", "queued",
                         "registered / re-registered", "last error"],
               link_rows, "No micro-service links configured.", link_attrs),
        *([] if not status.get("replica_sets") else [
            "<h2>Replica sets</h2>",
            _table("replica-sets", ["replicas", "remote application", "up", "in flight",
                                    "queued", "requests sent"],
                   [[", ".join(r["urls"]), r["application"], f'{r["up"]} of {r["links"]}',
                     r["in_flight"], r["queued"], _pairs(r["sent"])]
                    for r in status["replica_sets"]], "")]),
        *([] if not status.get("push") else [
            "<h2>Server push across nodes</h2>",
            _table("push", ["bus", "state", "published", "received", "dropped"],
                   [[p["bus"], "up" if p["up"] else "down", p["published"], p["received"],
                     _pairs({k: v for k, v in p["dropped"].items() if v})]
                    for p in status["push"]], "")]),
        "<h2>Recent link events</h2>",
        _table("events", ["time", "url", "kind", "event"],
               [[e["time"], e["url"], e["kind"], e["text"]] for e in status["events"]],
               "No link events."),
        (f'<p class="foot">Refreshes every {REFRESH_SECONDS} s. Also as '
         '<a href="status.json">JSON</a>.</p>'),
        "</body></html>",
    ]
    return "\n".join(parts)


def _processes(processes: list[dict[str, Any]] | None) -> list[str]:
    """The processes of a node of several (config.processes), one row each."""
    if not processes:
        return []
    return ["<h2>Processes</h2>",
            _table("processes", ["process", "pid", "state", "restarts", "up (s)", "connections",
                                 "in flight", "pool busy"],
                   [[p["process"], p["pid"], p["state"], p["restarts"], p["uptime_seconds"],
                     p.get("connections"), p.get("in_flight"), p.get("pool_busy")]
                    for p in processes], "No processes.")]


def _pairs(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) or "none"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1 small{font-weight:normal;color:#666;font-size:60%}
h2{font-size:110%;margin-top:1.5em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
th{background:#f4f4f4}.ok{color:#080}.bad{color:#b00}.empty,.foot{color:#666}
tr.state-up td:nth-child(3){color:#080}tr.state-down td:nth-child(3){color:#b00}
""".strip()
