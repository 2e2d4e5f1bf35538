# -*- test-case-name: tests.integration.test_haproxy -*-
"""
Real load balancers (Debian's HAProxy and nginx) in front of real nodes, for
tests/integration/test_haproxy.py.

The configurations come from docs/deployment.md: ``doc_block("haproxy")`` is the page's
HAProxy block as a user copies it, and ``loopback_haproxy`` / ``loopback_nginx`` only point it
at the test's loopback addresses (and shorten HAProxy's health-check interval), so the
configuration the tests run is the documented one. ``BalancerProcess`` runs one in the
foreground and kills it in the test's cleanup; ``wait_http`` polls a URL until it answers 200,
with a deadline. Loopback only.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from tests.integration.processes import REPO, TwistdProcess, WatchedProcess, write_startup
from tests.ports import reserve_port
from tests.strict import require

DOC = os.path.join(REPO, "docs", "deployment.md")

__all__ = ["BalancerProcess", "doc_block", "haproxy_path", "loopback_haproxy", "loopback_nginx",
           "nginx_path", "nginx_wrapper", "start_nodes", "wait_http"]


def _which(name: str) -> str | None:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def haproxy_path(test: TestCase) -> str:
    """HAProxy's executable; a missing one fails ``test`` (tests/strict.py, area balancer)."""
    path = _which("haproxy")
    if path is None:
        require(test, "balancer", "haproxy is not installed (apt-get install -y haproxy)")
    return path


def nginx_path(test: TestCase) -> str:
    path = _which("nginx")
    if path is None:
        require(test, "balancer", "nginx is not installed (apt-get install -y nginx)")
    return path


def doc_block(lang: str) -> str:
    """The one fenced block of docs/deployment.md tagged ``lang``."""
    with open(DOC, encoding="utf-8") as f:
        blocks = re.findall(r"^```" + re.escape(lang) + r"\n(.*?)^```", f.read(), re.M | re.S)
    if len(blocks) != 1:
        raise AssertionError(f"docs/deployment.md has {len(blocks)} ```{lang} blocks, not one")
    return blocks[0]


def loopback_haproxy(cfg: str, port: int, node_ports: list[int], inter: str = "100ms") -> str:
    """The documented HAProxy config, listening on 127.0.0.1:``port`` in front of nodes on
    ``node_ports``, checking them every ``inter`` (a node is down after one failed check),
    at most 1000 connections."""
    out: list[str] = []
    servers_done = False
    for line in cfg.splitlines():
        word = line.split()[0] if line.split() else ""
        if word == "maxconn":  # the test machine's file limit may be below what 20000 needs
            line = "    maxconn 1000"
        elif word == "bind":
            line = f"    bind 127.0.0.1:{port}"
        elif word == "default-server":
            line = re.sub(r"\binter \S+", f"inter {inter}", line)
            line = re.sub(r"\bfall \d+", "fall 1", re.sub(r"\brise \d+", "rise 1", line))
        elif word == "server":
            if servers_done:
                continue
            servers_done = True
            out.extend(f"    server node{i} 127.0.0.1:{p} check"
                       for i, p in enumerate(node_ports))
            continue
        out.append(line)
    if not servers_done:
        raise AssertionError("the HAProxy block has no server lines")
    return "\n".join(out) + "\n"


def loopback_nginx(block: str, port: int, node_ports: list[int]) -> str:
    """The documented nginx block, listening on 127.0.0.1:``port``, each upstream holding the
    nodes on ``node_ports`` (with the documented server parameters)."""
    out: list[str] = []
    in_upstream = False
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("upstream "):
            in_upstream, written = True, False
        elif in_upstream and stripped == "}":
            in_upstream = False
        if in_upstream and stripped.startswith("server "):
            if not written:
                params = " ".join(stripped.rstrip(";").split()[2:])
                out.extend(f"    server 127.0.0.1:{p} {params};" for p in node_ports)
                written = True
            continue
        if stripped.startswith("listen "):
            line = f"    listen 127.0.0.1:{port};"
        out.append(line)
    return "\n".join(out) + "\n"


def nginx_wrapper(http_block: str, prefix: str) -> str:
    """A whole nginx.conf around an ``http``-level block: foreground, one process, everything
    it writes under ``prefix``."""
    temps = "\n".join(f"    {name}_temp_path {prefix}/{name}_temp;"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    # master_process off: one process, so the cleanup's SIGKILL leaves no worker behind
    return (f"{user}daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\n"
            f"error_log stderr notice;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n    access_log off;\n{temps}\n{http_block}}}\n")


class BalancerProcess(WatchedProcess):
    """A load balancer running in the foreground; killed (SIGKILL) when the test ends."""

    def __init__(self, test: TestCase, label: str, argv: list[str]) -> None:
        WatchedProcess.__init__(self)
        self.label = label
        self.argv = argv
        test.addCleanup(self.kill)
        reactor.spawnProcess(self, argv[0], argv, env=dict(os.environ), path=REPO)

    def kill(self) -> defer.Deferred[Any] | None:
        """SIGKILL; fires once the process has ended (or after 10 s, so a cleanup that
        cannot finish says so instead of holding the test to its timeout)."""
        if self.transport is None or not self.transport.pid:
            return None
        self.transport.signalProcess("KILL")
        done: defer.Deferred[Any] = defer.Deferred()
        self.ended.addBoth(lambda r: done.callback(None) if not done.called else None)
        timer = reactor.callLater(10, lambda: done.called or done.errback(
            RuntimeError(f"{self.label} did not end within 10 s of SIGKILL")))
        done.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return done


@defer.inlineCallbacks
def wait_http(url: str, process: BalancerProcess, deadline: float = 20.0):
    """Poll ``url`` (GET) until it answers 200, at most ``deadline`` seconds; fails with the
    balancer's output if it never does or the balancer exits first."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    start = reactor.seconds()
    last = "no answer"
    while reactor.seconds() - start < deadline:
        if process.ended.called:
            break
        try:
            response = yield agent.request(b"GET", url.encode())
            body = yield readBody(response)
            if response.code == 200:
                return body
            last = f"{response.code} {body[:200]!r}"
        except Exception as e:  # not listening yet
            last = repr(e)
        yield task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{url} did not answer 200 within {deadline} s ({last}); "
                         f"{process.label} output:\n{process.output[-3000:]}")


def node_config(port: int, secret: str, redis_port: int, **more: Any) -> dict[str, Any]:
    """One node of the mesh: loopback ``port``, the shared ``secret`` and Redis (and ``more``
    keys)."""
    return {**more, 
        "listen": f"tcp:{port}:interface=127.0.0.1",
        "jwt": {"secret": secret},
        "database": {"type": "redis", "params": {"host": "127.0.0.1", "port": redis_port}},
        "moduleMap": {"lb": "tests.apps.lb", "demo": "tests.apps.demo"},  # demo: psio_client
        "poolSize": 8,
        "shutdownGracePeriod": more.get("shutdownGracePeriod", 1),
    }


@defer.inlineCallbacks
def start_nodes(test: TestCase, count: int, secret: str, redis_port: int, **more: Any):
    """``count`` ``twistd -n qewd`` processes sharing ``secret`` and the Redis on
    ``redis_port`` (``more``: other config keys); fires with ``[(port, TwistdProcess), ...]``
    once every one listens."""
    nodes = []
    for _ in range(count):
        port = reserve_port(test)
        startup = write_startup(test, repr(node_config(port, secret, redis_port, **more)))
        proc = TwistdProcess(test, startup)
        listening = proc.wait_for("started: listening")
        proc.start()
        nodes.append((port, proc, listening))
    for _, _, listening in nodes:
        yield listening
    return [(port, proc) for port, proc, _ in nodes]

