# -*- test-case-name: tests.test_cluster -*-
"""
The whole node's ``/health``, ``/metrics`` and status page, answered by whichever of its
processes the scrape reached (docs/operations.md, "A node of several processes").

The answering process asks the supervisor (``Gather``), which asks every ready process for its
own figures (``Report``) and returns them all; they are merged here:

- ``/health``: 200 ``{"status": "ok", "process": i, "pid": p, "processes": [...]}``, one entry
  per process (``pid``, ``state``: ready / starting / restarting, ``restarts``, uptime);
- ``/metrics``: every process's series with a ``process`` label (its index, 0..N-1: stable
  across restarts, so a restarted process's counters are an ordinary counter reset), plus the
  supervisor's ``qewd_processes`` and ``qewd_process_restarts``. A label rather than sums:
  gauges such as ``process_start_time_seconds`` or ``process_max_fds`` do not add up, and a
  sum would drop whenever one process restarts; ``sum without (process) (...)`` gives totals;
- the status page: connections, pool, requests, registrations and links summed over the
  processes, and a table of the processes.

May import: ``ops``, ``cluster``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from qewd_twisted.ops.operations import json_response

__all__ = ["NodeHealthResource", "NodeMetricsResource", "install", "merge_metrics",
           "merge_status"]

log = Logger()


def install(service: Any, control: Any, index: int) -> Callable[[str], Any]:
    """Make ``service`` (one process of several) answer for the whole node: ``/health`` and
    ``/metrics`` replaced on every root ops mounted them on, the status page merged. Returns
    the process's own reporter for ``Report``."""
    ops = service.ops
    for root in ops.roots:
        root.putChild(b"health", NodeHealthResource(control, index))
        if b"metrics" in root.children:
            root.putChild(b"metrics", NodeMetricsResource(control))
    ops.node_status_of = lambda own: _whole_status(control, own, index)

    def reporter(what: str) -> dict[str, Any]:
        if what == "metrics":
            if ops.metrics is None:
                return {"text": ""}
            return {"text": generate_latest(ops.metrics.registry).decode("utf-8")}
        if what == "status":
            return ops.status()
        raise ValueError(f"unknown report {what!r}")

    return reporter


def _answer(d: Any, request: Any, render: Callable[[Any], bytes]) -> Any:
    def failed(failure: Any) -> bytes:
        log.failure("gathering the node's figures from its processes", failure)
        return json_response(request, 500, {"status": "error",
                                            "error": "the node's figures could not be gathered"})

    def write(body: bytes) -> None:
        if not request.finished and not request._disconnected:
            request.write(body)
            request.finish()

    d.addCallback(render)
    d.addErrback(failed)
    d.addCallback(write)
    return server.NOT_DONE_YET


class NodeHealthResource(Resource):
    """``/health`` of a node of several processes: this one answers, and lists them all."""

    isLeaf = True

    def __init__(self, control: Any, index: int) -> None:
        super().__init__()
        self.control = control
        self.index = index

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        own = {"status": "ok", "process": self.index, "pid": os.getpid()}

        def render(whole: Any) -> bytes:
            return json_response(request, 200, dict(own, processes=whole["processes"]))

        d = self.control.gather("health")
        d.addErrback(lambda f: {"processes": None})  # liveness: this process answers
        return _answer(d, request, render)


class NodeMetricsResource(Resource):
    """``/metrics`` of a node of several processes (Prometheus text format, 0.0.4)."""

    isLeaf = True

    def __init__(self, control: Any) -> None:
        super().__init__()
        self.control = control

    def render_GET(self, request: Any) -> Any:  # noqa: N802
        def render(whole: Any) -> bytes:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.setHeader(b"cache-control", b"no-store")
            return merge_metrics(whole)

        return _answer(self.control.gather("metrics"), request, render)

    render_HEAD = render_GET


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def merge_metrics(whole: dict[str, Any]) -> bytes:
    """Every process's exposition, each series labelled with its ``process``, and the
    supervisor's own figures."""
    families: dict[str, Metric] = {}
    for entry in whole["reports"]:
        report = entry.get("report")
        if not report:
            continue
        process = str(entry["process"])
        for family in text_string_to_metric_families(report["text"]):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            for s in family.samples:
                merged.samples.append(Sample(s.name, dict(s.labels, process=process), s.value,
                                             s.timestamp, s.exemplar))
    processes = whole["processes"]
    states = GaugeMetricFamily("qewd_processes", "The node's processes (config.processes), "
                               "by state: ready, starting, restarting, stopped.",
                               labels=["state"])
    for state in ("ready", "starting", "restarting", "stopped"):
        states.add_metric([state], sum(1 for p in processes if p["state"] == state))
    restarts = CounterMetricFamily("qewd_process_restarts", "Times the supervisor started a "
                                   "process again after it ended or was killed.",
                                   labels=["process"])
    for p in processes:
        restarts.add_metric([str(p["process"])], p["restarts"])
    missing = GaugeMetricFamily("qewd_process_reports_missing", "Ready processes whose "
                                "figures are missing from this scrape (no answer in time).",
                                value=sum(1 for e in whole["reports"] if "report" not in e))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), states, restarts, missing]))
    return generate_latest(registry)


# -- the status page


def _whole_status(control: Any, own: dict[str, Any], index: int) -> Any:
    d = control.gather("status")
    d.addCallback(lambda whole: merge_status(own, whole, index))
    return d


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def merge_status(own: dict[str, Any], whole: dict[str, Any], index: int) -> dict[str, Any]:
    """The status page's data for the whole node: ``own`` (the answering process's) with the
    figures of every process that reported summed in, and ``processes``."""
    reports = {e["process"]: e["report"] for e in whole["reports"] if e.get("report")}
    reports.setdefault(index, own)
    statuses = [reports[i] for i in sorted(reports)]
    conns: dict[str, Any] = {"total": 0, "by_framing": {}, "by_application": {},
                             "from_masters": 0}
    pool = {"size": 0, "busy": 0, "queued": 0, "max_queue": 0, "running": True}
    in_flight = 0
    recent: dict[tuple[str, str], list[float]] = {}
    since: dict[tuple[str, str], list[int]] = {}
    registrations: dict[tuple[str, str], int] = {}
    links: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    reasons: list[str] = []
    for i, status in zip(sorted(reports), statuses):
        c = status["connections"]
        conns["total"] += c["total"]
        conns["from_masters"] += c["from_masters"]
        _add(conns["by_framing"], c["by_framing"])
        _add(conns["by_application"], c["by_application"])
        for key in ("size", "busy", "queued", "max_queue"):
            pool[key] += status["pool"][key]
        pool["running"] = pool["running"] and status["pool"]["running"]
        in_flight += status["requests"]["in_flight"]
        for r in status["requests"]["recent"]:
            acc = recent.setdefault((r["application"], r["type"]), [0, 0, 0.0, 0.0])
            acc[0] += r["requests"]
            acc[1] += r["errors"]
            acc[2] += r["per_second"]
            acc[3] += r["mean_ms"] * r["requests"]
        for r in status["requests"]["since_start"]:
            acc2 = since.setdefault((r["application"], r["type"]), [0, 0])
            acc2[0] += r["requests"]
            acc2[1] += r["errors"]
        for r in status["registrations"]:
            key = (r["application"], r["mode"])
            registrations[key] = registrations.get(key, 0) + r["count"]
        for link in status["links"]:
            merged = links.get(link["url"])
            if merged is None:
                links[link["url"]] = dict(link, states=[link["state"]])
                continue
            merged["states"].append(link["state"])
            for key in ("in_flight", "queued", "registrations", "reregistrations"):
                merged[key] += link[key]
            merged["last_error"] = merged["last_error"] or link["last_error"]
        events.extend(status["events"])
        reasons.extend(f"process {i}: {why}" for why in status["server"]["reasons"])
    for link in links.values():
        states = sorted(set(link.pop("states")))
        link["state"] = states[0] if len(states) == 1 else "/".join(states)
    per_process = {i: s for i, s in zip(sorted(reports), statuses)}
    processes = []
    for p in whole["processes"]:
        s = per_process.get(p["process"])
        processes.append(dict(p, connections=s["connections"]["total"] if s else None,
                              in_flight=s["requests"]["in_flight"] if s else None,
                              pool_busy=s["pool"]["busy"] if s else None))
    missing = [p["process"] for p in whole["processes"]
               if p["state"] == "ready" and p["process"] not in reports]
    reasons.extend(f"process {i}: no figures (no answer in time)" for i in missing)
    reasons.extend(f"process {p['process']}: {p['state']}" for p in whole["processes"]
                   if p["state"] != "ready")
    server_part = dict(own["server"], reasons=reasons, ready=not reasons, process=index)
    return {
        **own,
        "server": server_part,
        "connections": conns,
        "pool": pool,
        "requests": {
            **own["requests"],
            "in_flight": in_flight,
            "recent": sorted(
                ({"application": a, "type": t, "requests": int(n), "errors": int(e),
                  "per_second": round(ps, 3), "mean_ms": round(ms / n, 1) if n else 0.0}
                 for (a, t), (n, e, ps, ms) in recent.items()),
                key=lambda r: (-r["requests"], r["application"], r["type"])),
            "since_start": [{"application": a, "type": t, "requests": n, "errors": e}
                            for (a, t), (n, e) in sorted(since.items())],
        },
        "registrations": [{"application": a, "mode": m, "count": n}
                          for (a, m), n in sorted(registrations.items())],
        "links": [links[url] for url in sorted(links)],
        "events": sorted(events, key=lambda e: e["time"], reverse=True)[:50],
        "push": _merge_push(statuses),
        "processes": processes,
    }


def _merge_push(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The push buses between nodes (``push`` in each status), per bus: up while every
    process's is, counts summed."""
    merged: dict[str, dict[str, Any]] = {}
    for status in statuses:
        for bus in status.get("push", []):
            m = merged.setdefault(bus["bus"], {"bus": bus["bus"], "up": True, "published": 0,
                                               "received": 0, "dropped": {}})
            m["up"] = m["up"] and bus["up"]
            m["published"] += bus["published"]
            m["received"] += bus["received"]
            _add(m["dropped"], bus["dropped"])
    return [merged[kind] for kind in sorted(merged)]
