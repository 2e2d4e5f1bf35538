# -*- test-case-name: tests.test_ops -*-
"""
Operations: health and readiness checks, ``/metrics``, the ``/status`` page and the request log.

`Operations` is built by ``QEWDService`` from the config (docs/operations.md):

- ``/health`` (always): 200 ``{"status": "ok"}`` while the reactor serves requests;
- ``/ready`` (always): 200 once the node listens, its worker pool runs and every micro-service
  link has registered at least once (for replicas: one link of the set); 503 before that and
  while shutting down;
- ``/metrics`` (``metrics: True``, or on its own endpoint with ``metrics: {"listen": ...}``);
- ``/status`` and ``/status.json`` (``status``, default on): a read-only view of the node for
  its operator, behind HTTP Basic auth with ``managementPassword``; not served at all while that
  password is QEWD's published default;
- the request log (``logRequests: True``): one ``info`` event per finished request in the
  ``qewd_twisted.requests`` namespace, with stable fields.

It watches the node through one `NodeObserver` (observe.py), and the links as their
``ILinkObserver`` (`LinkEvents`: the status page's recent link events).
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import implementer

from qewd_twisted._version import __version__
from qewd_twisted.core.interfaces import ILinkObserver
from qewd_twisted.core.push import IPushBusStats
from qewd_twisted.ops.metrics import Labels, MetricsResource, NodeMetrics
from qewd_twisted.ops.observe import NodeObserver, combine
from qewd_twisted.transports.http import NodeSite

__all__ = ["DEFAULT_MANAGEMENT_PASSWORD", "Operations", "RequestLog", "RequestRates"]

log = Logger()
request_log = Logger(namespace="qewd_twisted.requests")

# QEWD's published default: a status page behind it would be open to anyone who read the docs.
DEFAULT_MANAGEMENT_PASSWORD = "keepThisSecret"
# QEWD-Up's default (docs/protocol.md §9 item 8): just as public
DEFAULT_PASSWORDS = frozenset({DEFAULT_MANAGEMENT_PASSWORD, "keepThisSecret!"})



def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# -- observers -------------------------------------------------------------------------------


class RequestLog(NodeObserver):
    """One ``info`` event per finished request (``logRequests: True``).

    Fields: ``request_id``, ``application``, ``type``, ``outcome``, ``duration_ms``,
    ``forwarded`` and ``link`` (the link's URL, or None). Never the message, the token or
    the session.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def request_finished(self, req: Any, outcome: str) -> None:
        duration_ms = round((self._clock.seconds() - req.started) * 1000, 3)
        link = req.link
        if link is None:
            request_log.info(
                "request {request_id} {application}/{type}: {outcome} in {duration_ms}ms",
                request_id=req.id, application=req.application, type=req.type,
                outcome=outcome, duration_ms=duration_ms, forwarded=False, link=None)
        else:
            request_log.info(
                "request {request_id} {application}/{type}: {outcome} in {duration_ms}ms "
                "via {link}",
                request_id=req.id, application=req.application, type=req.type,
                outcome=outcome, duration_ms=duration_ms, forwarded=True, link=link.url)


class RequestRates(NodeObserver):
    """Requests per (application, type) over the last ``window`` seconds, and since start,
    plus registrations: what the status page shows. Labels are folded as for metrics."""

    def __init__(self, clock: Any, labels: Any, window: int = 60) -> None:
        self._clock = clock
        self._labels = labels
        self.window = window
        self._second = -1
        self._current: dict[tuple[str, str], list[float]] = {}
        self._buckets: deque[tuple[int, dict[tuple[str, str], list[float]]]] = deque()
        self.totals: dict[tuple[str, str], list[int]] = {}  # [requests, not ok]
        self.registrations: dict[tuple[str, str], int] = {}  # (application, mode)

    def registered(self, conn: Any, application: str, jwt: bool, reregister: bool) -> None:
        key = (self._labels.application(application), "jwt" if jwt else "session")
        self.registrations[key] = self.registrations.get(key, 0) + 1

    def request_finished(self, req: Any, outcome: str) -> None:
        now = self._clock.seconds()
        second = int(now)
        if second != self._second:
            self._rotate(second)
        key = self._labels.pair(req.application, req.type)
        counts = self._current.get(key)
        if counts is None:
            counts = self._current[key] = [0, 0, 0.0]  # requests, not ok, total seconds
        failed = outcome != "ok"
        counts[0] += 1
        counts[1] += failed
        counts[2] += now - req.started
        total = self.totals.get(key)
        if total is None:
            total = self.totals[key] = [0, 0]
        total[0] += 1
        total[1] += failed

    def _rotate(self, second: int) -> None:
        self._second = second
        self._current = {}
        self._buckets.append((second, self._current))
        self._expire(second)

    def _expire(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()

    def recent(self) -> list[dict[str, Any]]:
        """Per (application, type), over the last window: requests, errors, per second,
        mean duration; busiest first."""
        self._expire(int(self._clock.seconds()))
        sums: dict[tuple[str, str], list[float]] = {}
        for _, bucket in self._buckets:
            for key, (n, failed, seconds) in bucket.items():
                acc = sums.setdefault(key, [0, 0, 0.0])
                acc[0] += n
                acc[1] += failed
                acc[2] += seconds
        rows = [{"application": a, "type": t, "requests": int(n), "errors": int(failed),
                 "per_second": round(n / self.window, 3),
                 "mean_ms": round(seconds / n * 1000, 1) if n else 0.0}
                for (a, t), (n, failed, seconds) in sums.items()]
        return sorted(rows, key=lambda r: (-r["requests"], r["application"], r["type"]))


@implementer(ILinkObserver)
class LinkEvents:
    """A ring buffer of the last ``size`` link events, for the status page.

    An ``ILinkObserver`` of each of this node's links from the start (until ``stop``): state
    changes (kind ``"state"``) and what the links report (``"error"``, ``"timeout"``,
    ``"dropped"``); the last of those per link is its ``last_error``.
    """

    def __init__(self, clock: Any, links: dict[str, Any], size: int = 50) -> None:
        self._clock = clock
        self.links = links
        self.events: deque[dict[str, Any]] = deque(maxlen=size)
        self.since: dict[str, float] = {}  # url -> when its state last changed
        self.last_error: dict[str, dict[str, Any]] = {}
        self._unsubscribe: list[Any] = []
        self.start()

    def _add(self, url: str, kind: str, text: str) -> dict[str, Any]:
        event = {"time": _iso(self._clock.seconds()), "url": url, "kind": kind, "text": text}
        self.events.append(event)
        return event

    def link_state_changed(self, link: Any, state: Any) -> None:
        self.since[link.url] = self._clock.seconds()
        self._add(link.url, "state", f"link {link.url} is {getattr(state, 'value', state)}")

    def link_event(self, link: Any, kind: str, text: str) -> None:
        self.last_error[link.url] = self._add(link.url, kind, text)

    def start(self) -> None:
        if not self._unsubscribe:
            self._unsubscribe = [link.add_observer(self) for link in self.links.values()]

    def stop(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for remove in unsubscribe:
            remove()


# -- the service -----------------------------------------------------------------------------


class Operations(Service):
    """Health, readiness, metrics, status and the request log for one ``QEWDService``.

    Building it installs the node's observer and the HTTP resources, and (for
    ``metrics: {"listen": ...}``) adds the metrics listener to ``service``.
    """

    name = "operations"

    def __init__(self, service: Any) -> None:
        self.service = service
        config = service.config
        self.clock = service.reactor
        self.started = self.clock.seconds()
        ms = service.micro_services
        self.links: dict[str, Any] = dict(ms.links) if ms is not None else {}
        self.replica_sets: list[Any] = list(ms.replica_sets) if ms is not None else []
        routes = config.micro_services.routes.values() if config.micro_services else ()
        self.labels = Labels.for_node(service.apps, routes)

        self.metrics: NodeMetrics | None = None
        if config.metrics:
            self.metrics = NodeMetrics(service.node, clock=self.clock, labels=self.labels,
                                       pool=service.pool, links=self.links,
                                       replica_sets=self.replica_sets,
                                       server_name=config.server_name)
        self.status_enabled = (config.status
                               and config.management_password not in DEFAULT_PASSWORDS)
        self.rates = RequestRates(self.clock, self.labels) if self.status_enabled else None
        self.link_events = LinkEvents(self.clock, self.links) if self.status_enabled else None
        self.request_log = RequestLog(self.clock) if config.log_requests else None
        service.node.observer = combine([self.metrics, self.rates, self.request_log])

        # where /health, /ready (and /metrics) are mounted: the node's site, and the metrics
        # listener's own (a node process of several replaces them: cluster/aggregate.py)
        self.roots: list[Resource] = []
        #: a node process of several: the whole node's status from this process's
        #: (cluster/aggregate.py); None: this process is the node
        self.node_status_of: Any = None
        root = service.site.resource
        self._mount(root, self.metrics if config.metrics_listen is None else None)
        if self.status_enabled:
            from qewd_twisted.ops.status_page import (
                AuthThrottle,
                StatusJSONResource,
                StatusPageResource,
            )

            password = config.management_password.encode("utf-8")
            throttle = AuthThrottle(self.clock, config.limits)
            root.putChild(b"status", StatusPageResource(self, password, throttle))
            root.putChild(b"status.json", StatusJSONResource(self, password, throttle))
        self.metrics_listener: Service | None = None
        if config.metrics_listen is not None:
            own = Resource()
            self._mount(own, self.metrics)
            site = NodeSite(own, reactor=service.reactor, limits=config.limits)
            listener = service.listener(config.metrics_listen, site)
            listener.setServiceParent(service)
            self.metrics_listener = listener
        self.setServiceParent(service)

    def _mount(self, root: Resource, metrics: NodeMetrics | None) -> None:
        self.roots.append(root)
        root.putChild(b"health", HealthResource())
        root.putChild(b"ready", ReadyResource(self))
        if metrics is not None:
            root.putChild(b"metrics", MetricsResource(metrics))

    def startService(self) -> None:
        super().startService()
        if self.link_events is not None:
            self.link_events.start()
        config = self.service.config
        if config.raw.get("status") is True and not self.status_enabled:
            log.warn("the status page is off: config.managementPassword is QEWD's default; "
                     "set your own to serve /status")

    def stopService(self) -> None:
        super().stopService()
        if self.link_events is not None:
            self.link_events.stop()

    @property
    def metrics_port(self) -> Any:
        """The metrics listener's IListeningPort, once listening (or None)."""
        waiting = getattr(self.metrics_listener, "_waitingForPort", None)
        if waiting is not None and waiting.called and not isinstance(waiting.result, Failure):
            return waiting.result
        return None

    # -- what the resources report

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body): ready when listening, the pool runs, no shutdown is under way and
        every link has registered at least once (a replica's link: once some replica of its
        set has). ``down`` lists links not up right now."""
        s = self.service
        reasons = []
        if not s.running:
            reasons.append("not started")
        elif len(s.ports) < len(s.listeners):
            reasons.append("not listening yet")
        if not s.node.accepting:
            reasons.append("shutting down")
        if not s.pool.running:
            reasons.append("worker pool not running")
        links = {url: link.state.value for url, link in sorted(self.links.items())}
        # a replica's link that never registered holds nothing up while its set has one
        # that did (its requests go there): only a lone link, or a whole set, is waited for
        covered = {link.url for replicas in self.replica_sets if replicas.ever_registered
                   for link in replicas.links}
        for url, link in sorted(self.links.items()):
            if link.registrations + link.reregistrations == 0 and url not in covered:
                reasons.append(f"link {url} has not registered yet")
        body: dict[str, Any] = {"status": "not ready" if reasons else "ready",
                                "links": links,
                                "down": [url for url, state in links.items() if state != "up"]}
        if reasons:
            body["reasons"] = reasons
        return not reasons, body

    def status(self) -> dict[str, Any]:
        """Everything the status page shows, as JSON-ready data."""
        s, node, now = self.service, self.service.node, self.clock.seconds()
        by_framing: dict[str, int] = {}
        by_application: dict[str, int] = {}
        links_in = 0
        for conn in list(node.connections.values()):
            by_framing[conn.framing] = by_framing.get(conn.framing, 0) + 1
            app = self.labels.application(conn.application) if conn.application else "(none)"
            by_application[app] = by_application.get(app, 0) + 1
            links_in += bool(getattr(conn, "is_link", False))
        ready, readiness = self.readiness()
        rates = self.rates
        return {
            "server": {"name": s.config.server_name, "version": __version__,
                       "started": _iso(self.started), "uptime_seconds": int(now - self.started),
                       "listen": list(s.config.listen), "accepting": node.accepting,
                       "ready": ready, "reasons": readiness.get("reasons", []),
                       "links_down": readiness["down"]},
            "connections": {"total": len(node.connections), "by_framing": by_framing,
                            "by_application": by_application, "from_masters": links_in},
            "pool": {"size": s.pool.size, "busy": s.pool.busy, "queued": s.pool.queued,
                     "max_queue": s.pool.max_queue, "running": bool(s.pool.running)},
            "requests": {
                "in_flight": node.in_flight,
                "window_seconds": rates.window if rates else 60,
                "recent": rates.recent() if rates else [],
                "since_start": [{"application": a, "type": t, "requests": n, "errors": e}
                                for (a, t), (n, e) in sorted(rates.totals.items())]
                if rates else [],
            },
            "registrations": [{"application": a, "mode": m, "count": n}
                              for (a, m), n in sorted(rates.registrations.items())]
            if rates else [],
            "links": [self._link_status(url, link) for url, link in sorted(self.links.items())],
            "replica_sets": [{"urls": list(r.urls), "application": r.application,
                              "state": r.state.value, "links": len(r.links), "up": r.live,
                              "in_flight": r.in_flight, "queued": r.queued,
                              "sent": dict(r.sent)} for r in self.replica_sets],
            "push": [{"bus": b.kind, "up": bool(b.up), "published": b.published,
                      "received": b.received, "dropped": dict(b.dropped)}
                     for b in node.push_buses if IPushBusStats.providedBy(b)],
            "events": list(reversed(self.link_events.events)) if self.link_events else [],
        }

    def node_status(self) -> Any:
        """What the status page shows: `status`, or for a node process of several the whole
        node's (a Deferred)."""
        if self.node_status_of is None:
            return self.status()
        return self.node_status_of(self.status())

    def _link_status(self, url: str, link: Any) -> dict[str, Any]:
        events = self.link_events
        since = events.since.get(url) if events else None
        last_error = events.last_error.get(url) if events else None
        return {"url": url, "application": link.application, "state": link.state.value,
                "since": _iso(since) if since is not None else None,
                "in_flight": link.in_flight, "queued": link.queued,
                "registrations": link.registrations, "reregistrations": link.reregistrations,
                "last_error": last_error}


# -- health and readiness --------------------------------------------------------------------


def json_response(request: Any, code: int, body: Any) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


class HealthResource(Resource):
    """``/health``: liveness. If this answers, the reactor is serving."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return json_response(request, 200, {"status": "ok"})


class ReadyResource(Resource):
    """``/ready``: readiness for a load balancer; 200 or 503 with the reasons."""

    isLeaf = True

    def __init__(self, ops: Operations) -> None:
        super().__init__()
        self.ops = ops

    def render_GET(self, request: Any) -> bytes:
        ready, body = self.ops.readiness()
        return json_response(request, 200 if ready else 503, body)
