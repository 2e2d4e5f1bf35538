# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for one node: ``/metrics`` in the text exposition format (docs/operations.md
lists every metric).

Each node has its own ``CollectorRegistry`` (never the library's global one: several nodes can
live in one process, e.g. in tests). Two kinds of metric:

- events (requests, registrations, connections opened) are counted by `NodeMetrics`, the node's
  observer (observe.py). Every hook runs on the reactor thread, so the counts are plain
  integers with no lock: a finished request costs a few dict and list updates and allocates
  nothing past its label set's first request (about 1 µs, against about 4 µs with the
  library's own locked Counter and Histogram objects);
- state (connections, in-flight requests, the worker pool, links, bytes on the wire) is read
  when Prometheus scrapes: nothing is maintained by hand that could drift.

Both are turned into the library's metric families by one custom collector at scrape time
(also on the reactor thread: twisted.web renders there), and the library writes the exposition.

Label values are bounded: ``application`` is one the node knows (``moduleMap`` or a
``u_services`` route), ``type`` one that application handles or routes; anything a client
makes up is counted as ``"other"``. Link URLs come from the config.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource

from qewd_twisted._version import __version__
from qewd_twisted.apps.modules import AppLoadError
from qewd_twisted.core.interfaces import ILink, IWorkerPool
from qewd_twisted.core.push import IPushBusStats
from qewd_twisted.ops.observe import OUTCOMES, NodeObserver

if TYPE_CHECKING:
    from qewd_twisted.core.node import Node

__all__ = ["DURATION_BUCKETS", "Labels", "MetricsResource", "NodeMetrics"]

OTHER = "other"

# Seconds. Up to 60: handlerTimeout's default; a request past the last bucket is in +Inf.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


class Labels:
    """Folds client-supplied (application, type) pairs onto a bounded set of label values.

    ``known`` maps each application the node knows to the message types it handles or routes.
    """

    def __init__(self, known: Mapping[str, Iterable[str]]) -> None:
        self.known = {app: frozenset(types) for app, types in known.items()}

    @classmethod
    def for_node(cls, apps: Any, routes: Iterable[Any] = ()) -> Labels:
        """From the node's ``Applications`` (handler names of every loaded module) and its
        ``u_services`` routes (``config.Route``)."""
        known: dict[str, set[str]] = {}
        for name in apps.names():
            types = known.setdefault(name, set())
            with contextlib.suppress(AppLoadError):  # a module that failed handles nothing
                types.update(apps.get(name).handlers)
        for route in routes:
            known.setdefault(route.application, set()).add(route.type)
        return cls(known)

    def application(self, application: Any) -> str:
        return application if application in self.known else OTHER

    def pair(self, application: Any, type: Any) -> tuple[str, str]:
        types = self.known.get(application)
        if types is None:
            return OTHER, OTHER
        return application, type if type in types else OTHER


class _Series:
    """Counts for one label set: a count per outcome, and a duration histogram.

    Plain integers, not the library's metric objects: every hook runs on the reactor thread, so
    no lock is needed, and a finished request costs a few list updates. ``buckets[i]`` counts
    durations in (bounds[i-1], bounds[i]]; the last one is +Inf. Cumulated at scrape time.
    """

    __slots__ = ("buckets", "outcomes", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (n_buckets + 1)
        self.sum = 0.0

    def observe(self, outcome: str, seconds: float) -> None:
        self.outcomes[outcome] += 1
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds

    def histogram(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(_BUCKET_LABELS, self.buckets):
            total += count
            out.append((bound, total))
        return out


_BUCKET_LABELS = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]


class NodeMetrics(NodeObserver):
    """The node's metrics: its registry, and the observer that counts events for it.

    ``node``: the `Node` (connections, in-flight requests); ``pool``: the `WorkerPool`;
    ``links``: ``{url: Link}`` (every replica's link too); ``replica_sets``: the
    ``ReplicaSet``s; ``labels``: a `Labels`; ``clock``: for request durations;
    ``process``: add the library's standard process and Python collectors.
    """

    def __init__(self, node: Node, *, clock: IReactorTime, labels: Labels,
                 pool: IWorkerPool | None = None, links: Mapping[str, ILink] | None = None,
                 replica_sets: Iterable[Any] = (), server_name: str = "qewd",
                 process: bool = True) -> None:
        self.node = node
        self.pool = pool
        self.links = dict(links or {})
        self.replica_sets = list(replica_sets)
        self.labels = labels
        self.server_name = server_name
        self._clock = clock
        # Every known series exists from the start, at zero: rate() and absent() work at once.
        self.requests: dict[str, dict[str, _Series]] = {}
        for application, types in sorted(labels.known.items()):
            for type in sorted(types):
                self._request_series(application, type)
        self.forwarded: dict[str, _Series] = {url: _Series(len(DURATION_BUCKETS))
                                              for url in self.links}
        self.registrations: dict[tuple[str, bool, bool], int] = {}
        self.connections_opened: dict[str, int] = {}
        self._closed_in = 0  # wire bytes of connections already closed
        self._closed_out = 0
        self.registry = r = CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        r.register(_Collector(self))

    # -- NodeObserver (reactor thread)

    def connection_opened(self, conn: Any) -> None:
        framing = conn.framing
        self.connections_opened[framing] = self.connections_opened.get(framing, 0) + 1

    def connection_closed(self, conn: Any) -> None:
        received, sent = conn.traffic()
        self._closed_in += received
        self._closed_out += sent

    def registered(self, conn: Any, application: str, jwt: bool, reregister: bool) -> None:
        key = (self.labels.application(application), jwt, reregister)
        self.registrations[key] = self.registrations.get(key, 0) + 1

    def request_finished(self, req: Any, outcome: str) -> None:
        elapsed = self._clock.seconds() - req.started
        application, type = self.labels.pair(req.application, req.type)
        by_type = self.requests.get(application)
        series = by_type.get(type) if by_type is not None else None
        if series is None:
            series = self._request_series(application, type)
        series.observe(outcome, elapsed)
        link = req.link
        if link is not None:
            forward = self.forwarded.get(link.url)
            if forward is None:
                forward = self.forwarded[link.url] = _Series(len(DURATION_BUCKETS))
            forward.observe(outcome, elapsed)

    def _request_series(self, application: str, type: str) -> _Series:
        series = self.requests.setdefault(application, {})[type] = _Series(len(DURATION_BUCKETS))
        return series

    # -- exposition

    def traffic(self) -> tuple[int, int]:
        """Wire bytes (received, sent) over every client connection since the node started."""
        received, sent = self._closed_in, self._closed_out
        for conn in list(self.node.connections.values()):
            i, o = conn.traffic()
            received += i
            sent += o
        return received, sent

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) for a scrape, negotiated on the ``Accept`` header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _Collector:
    """Everything of ours, built at scrape time: the event counts kept by `NodeMetrics`, and
    the gauges read from the node's objects (nothing maintained by hand that could drift)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield from self._events(m)
        yield from self._state(m)
        if m.links:
            yield from self._links(m)
        buses = [b for b in m.node.push_buses if IPushBusStats.providedBy(b)]
        if buses:
            yield from self._push(buses)

    def _events(self, m: NodeMetrics) -> Iterator[Metric]:
        info = InfoMetricFamily("qewd_build", "The qewd-twisted version and the node's "
                                "serverName.", labels=["version", "server_name"])
        info.add_metric([__version__, m.server_name], {})
        yield info
        opened = CounterMetricFamily(
            "qewd_connections_opened",
            "Client connections opened, by framing (http, ajax: one per REST or /ajax request).",
            labels=["framing"])
        for framing, n in sorted(m.connections_opened.items()):
            opened.add_metric([framing], n)
        yield opened
        registrations = CounterMetricFamily(
            "qewd_registrations",
            "Successful ewd-register (kind=register) and ewd-reregister (kind=reregister), "
            "by application and session mode (jwt or session).",
            labels=["application", "mode", "kind"])
        for (application, jwt, rereg), n in sorted(m.registrations.items()):
            registrations.add_metric([application, "jwt" if jwt else "session",
                                      "reregister" if rereg else "register"], n)
        yield registrations
        requests = CounterMetricFamily(
            "qewd_requests", "Requests finished, by application, type and outcome "
            "(ok, error, timeout, 503).", labels=["application", "type", "outcome"])
        duration = HistogramMetricFamily(
            "qewd_request_duration_seconds",
            "Time from a request's arrival to its final reply, by application and type.",
            labels=["application", "type"])
        for application, by_type in sorted(m.requests.items()):
            for type, series in sorted(by_type.items()):
                for outcome, n in series.outcomes.items():
                    requests.add_metric([application, type, outcome], n)
                duration.add_metric([application, type], series.histogram(), series.sum)
        yield requests
        yield duration
        forwarded = CounterMetricFamily(
            "qewd_forwarded_requests", "Requests forwarded to a micro-service, by link URL "
            "and outcome.", labels=["url", "outcome"])
        forward_duration = HistogramMetricFamily(
            "qewd_forwarded_request_duration_seconds",
            "Time from a forwarded request's arrival to the final reply relayed, by link URL.",
            labels=["url"])
        for url, series in sorted(m.forwarded.items()):
            for outcome, n in series.outcomes.items():
                forwarded.add_metric([url, outcome], n)
            forward_duration.add_metric([url], series.histogram(), series.sum)
        yield forwarded
        yield forward_duration

    def _state(self, m: NodeMetrics) -> Iterator[Metric]:
        node = m.node
        by_framing = _Tally(c.framing for c in list(node.connections.values()))
        connections = GaugeMetricFamily(
            "qewd_connections",
            "Client connections open now, by framing (http, ajax: REST and /ajax requests).",
            labels=["framing"])
        for framing in sorted(set(by_framing) | {"engine.io", "plain"}):
            connections.add_metric([framing], by_framing.get(framing, 0))
        yield connections
        yield GaugeMetricFamily("qewd_requests_in_flight",
                                "Requests received and not yet answered (local and forwarded).",
                                value=node.in_flight)
        received, sent = m.traffic()
        yield CounterMetricFamily("qewd_websocket_received_bytes",
                                  "Bytes received on client WebSocket connections (wire level).",
                                  value=received)
        yield CounterMetricFamily("qewd_websocket_sent_bytes",
                                  "Bytes sent on client WebSocket connections (wire level).",
                                  value=sent)
        pool = m.pool
        if pool is not None:
            yield GaugeMetricFamily("qewd_worker_pool_threads",
                                    "Worker threads for sync handlers (poolSize).",
                                    value=pool.size)
            yield GaugeMetricFamily("qewd_worker_pool_busy_threads",
                                    "Worker threads running a handler now.", value=pool.busy)
            yield GaugeMetricFamily("qewd_worker_pool_queue_depth",
                                    "Handler calls waiting for a free worker thread.",
                                    value=pool.queued)
            spares = getattr(pool, "spares", None)
            if spares is not None:
                yield GaugeMetricFamily("qewd_worker_pool_spare_threads",
                                        "Threads lent beyond poolSize in place of handlers "
                                        "stuck past handlerTimeout.", value=spares)

    def _links(self, m: NodeMetrics) -> Iterator[Metric]:
        up = GaugeMetricFamily("qewd_link_up",
                               "1 while the micro-service link is registered (forwarding), "
                               "else 0.", labels=["url", "application"])
        in_flight = GaugeMetricFamily("qewd_link_requests_in_flight",
                                      "Requests sent on the link, awaiting their final reply.",
                                      labels=["url"])
        queued = GaugeMetricFamily("qewd_link_requests_queued",
                                   "Requests waiting to be sent on the link.", labels=["url"])
        registrations = CounterMetricFamily(
            "qewd_link_registrations",
            "Registrations of the link with its remote node: kind=register (ewd-register) or "
            "reregister (ewd-reregister after a reconnect).", labels=["url", "kind"])
        reconnects = CounterMetricFamily(
            "qewd_link_reconnects",
            "Times the link was registered again after its first registration.",
            labels=["url"])
        for url, link in sorted(m.links.items()):
            up.add_metric([url, link.application], 1 if link.is_up else 0)
            in_flight.add_metric([url], link.in_flight)
            queued.add_metric([url], link.queued)
            registrations.add_metric([url, "register"], link.registrations)
            registrations.add_metric([url, "reregister"], link.reregistrations)
            reconnects.add_metric([url], max(0, link.registrations + link.reregistrations - 1))
        yield from (up, in_flight, queued, registrations, reconnects)
        if m.replica_sets:
            yield from self._replicas(m)

    def _replicas(self, m: NodeMetrics) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            "qewd_replica_set_links", "Replicas (links) of a destination with several hosts; "
            "replicas is the hosts' URLs joined with ','.", labels=["replicas", "application"])
        live = GaugeMetricFamily(
            "qewd_replica_set_links_up", "Replicas of the set registered now (forwarding); "
            "0: its requests get the 503.", labels=["replicas", "application"])
        sent = CounterMetricFamily(
            "qewd_replica_set_requests", "Requests the replica set handed to each replica "
            "(url), WebSocket and REST.", labels=["replicas", "url"])
        for replicas in m.replica_sets:
            members.add_metric([replicas.url, replicas.application], len(replicas.links))
            live.add_metric([replicas.url, replicas.application], replicas.live)
            for url, n in replicas.sent.items():
                sent.add_metric([replicas.url, url], n)
        yield from (members, live, sent)

    def _push(self, buses: list[Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily("qewd_push_bus_up",
                               "1 while the push bus carries server push to its peers (other "
                               "nodes, other processes), else 0.", labels=["bus"])
        published = CounterMetricFamily(
            "qewd_push_published", "Server pushes from this process accepted by the bus.",
            labels=["bus"])
        received = CounterMetricFamily(
            "qewd_push_received", "Server pushes from peers delivered to this process's "
            "sockets.", labels=["bus"])
        dropped = CounterMetricFamily(
            "qewd_push_dropped", "Server pushes not carried to the peers (or received and "
            "refused), by reason (docs/reliability.md).", labels=["bus", "reason"])
        for bus in buses:
            up.add_metric([bus.kind], 1 if bus.up else 0)
            published.add_metric([bus.kind], bus.published)
            received.add_metric([bus.kind], bus.received)
            for reason, n in sorted(bus.dropped.items()):
                dropped.add_metric([bus.kind, reason], n)
        yield from (up, published, received, dropped)


class MetricsResource(Resource):
    """``/metrics``: the registry in Prometheus' text format (or OpenMetrics, if asked)."""

    isLeaf = True

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.exposition(accept.decode("latin-1") if accept else None)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    render_HEAD = render_GET
