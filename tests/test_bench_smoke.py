# test-case-name: tests.test_bench_smoke
"""
The benchmark tooling (bench/) still works: a few seconds of it against the floor servers (as
subprocesses, as bench/run.sh starts them) and against our node (in-process), checking that the
results are well-formed and that the misdelivery checker catches a server that crosses replies.

Nothing here asserts a timing: throughput and latency only have to be present and numeric.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.integration.nodes import eio_url, port_of, start_node

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
SHORT = ["--warmup", "0.2", "--duration", "0.6", "--clients", "2"]
RESULT_KEYS = {
    "completed": int, "rps": float, "latency_ms": dict, "errors": int, "timeouts": int,
    "intermediates": int, "other_frames": int, "misdelivered": int, "invalid_tokens": int,
    "gen_cpu_s": float, "ready_clients": int, "error_kinds": dict, "misdelivery_kinds": dict,
}


class _Server(protocol.ProcessProtocol):
    """A ``python -m bench.servers ...`` child: ``ready`` fires with its port."""

    def __init__(self) -> None:
        self.ready: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"\n" in self.out:
            line = self.out.split(b"\n", 1)[0].decode()
            if line.startswith("READY "):
                self.ready.callback(int(line.split()[1]))
            else:
                self.ready.errback(RuntimeError(line))

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(self.err.decode(errors="replace")[-2000:]))
        self.ended.callback(None)


class BenchSmokeTests(TestCase):
    timeout = 90

    def server(self, *args: str) -> defer.Deferred[int]:
        proto = _Server()
        transport = reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-m", "bench.servers", *args, "--port", "0"],
            env=ENV, path=REPO)

        def stop() -> defer.Deferred[None]:
            if transport.pid is not None:
                transport.signalProcess("TERM")
            return proto.ended

        self.addCleanup(stop)
        return proto.ready

    @defer.inlineCallbacks
    def loadgen(self, url: str, *args: str) -> Any:
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "bench.loadgen", "--url", url, *SHORT, *args],
            env=ENV, path=REPO)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        result = json.loads(out.decode().strip().splitlines()[-1])
        self.check_well_formed(result)
        return result

    def check_well_formed(self, r: dict[str, Any]) -> None:
        for key, kind in RESULT_KEYS.items():
            self.assertIn(key, r)
            self.assertIsInstance(r[key], (int, float) if kind is float else kind, key)
        self.assertEqual(set(r["latency_ms"]), {"p50", "p90", "p99", "max", "mean"})
        self.assertEqual(r["ready_clients"], 2)
        self.assertGreater(r["completed"], 0)  # it ran; how fast is not this test's business
        for v in r["latency_ms"].values():
            self.assertIsInstance(v, float)

    def check_clean(self, r: dict[str, Any]) -> None:
        self.assertEqual((r["misdelivered"], r["errors"], r["timeouts"], r["invalid_tokens"]),
                         (0, 0, 0, 0), r)

    @defer.inlineCallbacks
    def test_floor(self):
        """The bare floor answers the generator; every reply's token names its own socket."""
        port = yield self.server("floor")
        r = yield self.loadgen(eio_url_for(port), "--echo", "none")
        self.check_clean(r)
        self.assertEqual(r["intermediates"], 0)

    @defer.inlineCallbacks
    def test_essential_floor(self):
        """floor-qewd runs the bench's echo with a real token: replies carry the echoed text
        and a re-issued token for their own socket."""
        port = yield self.server("floor-qewd")
        r = yield self.loadgen(eio_url_for(port), "--app", "bench", "--type", "echo")
        self.check_clean(r)
        self.assertGreater(r["completed"], 0)

    @defer.inlineCallbacks
    def test_checker_detects_misdelivery(self):
        """A floor that answers each client with another client's reply is caught."""
        port = yield self.server("floor", "--cross")
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "bench.loadgen", "--url", eio_url_for(port), *SHORT,
                             "--echo", "none", "--timeout", "0.2"], env=ENV, path=REPO)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        r = json.loads(out.decode().strip().splitlines()[-1])
        self.assertGreater(r["misdelivered"], 0)
        self.assertEqual(set(r["misdelivery_kinds"]), {"token socketId"})

    @defer.inlineCallbacks
    def test_bare_relay(self):
        """relay-front passes each frame to relay-back: one intermediate and one final each."""
        back = yield self.server("relay-back")
        front = yield self.server("relay-front", "--backend",
                                  f"ws://127.0.0.1:{back}/socket.io/")
        r = yield self.loadgen(eio_url_for(front), "--request", "login", "--echo", "none",
                               "--no-identity")
        self.check_clean(r)
        self.assertGreaterEqual(r["intermediates"], r["completed"])

    @defer.inlineCallbacks
    def test_node_with_processes(self):
        """bench.processes' server: node-master as a supervisor of 2 node processes, the
        server CPU read over all of them."""
        port = yield self.server("node-master", "--processes", "2")
        r = yield self.loadgen(eio_url_for(port), "--type", "echo")
        self.check_clean(r)

    def test_processes_context_switches_and_table(self):
        """bench.processes counts the context switches of every thread of the node's processes
        (children included) and shows them per request in its table."""
        import subprocess
        import threading

        from bench.processes import switches, table

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        slept, done = threading.Event(), threading.Event()

        def sleeps() -> None:
            for _ in range(20):
                threading.Event().wait(0.001)  # a voluntary context switch each
            slept.set()
            done.wait(30)

        sleeper = threading.Thread(target=sleeps)
        before = switches(os.getpid())
        sleeper.start()
        self.addCleanup(sleeper.join)
        self.addCleanup(done.set)
        self.assertTrue(slept.wait(30))
        self.assertGreaterEqual(switches(os.getpid()) - before, 20)  # this thread's counted
        self.assertGreaterEqual(switches(os.getpid()), switches(child.pid))
        self.assertIsNone(switches(2 ** 22 + 1))  # above pid_max: no such process
        out = {"clients": 32, "rounds": 1, "duration": 1, "cpus": 2, "rows": [
            {"scenario": "local-sync", "processes": 2, "rps": 10.0, "ratio": 1.0,
             "server_us_per_request": 90.0, "switches_per_request": 0.41, "errors": 0}]}
        self.assertIn("| local-sync | 2 | 10.0 | 1.0 | 90.0 | 0.41 | 0 |", table(out))

    @defer.inlineCallbacks
    def test_node_local_and_forwarded(self):
        """Our node: async and pool handlers, and a login forwarded to a micro-service node,
        each client logged in as its own user and checked in the token it gets back."""
        ms = start_node(self, moduleMap={"bench-ms": "bench.apps.bench_ms"}, base_dir=REPO)
        route = {"login": {"url": f"http://127.0.0.1:{port_of(ms)}",
                           "application": "bench-ms"}}
        master = start_node(self, moduleMap={"bench": "bench.apps.bench_app"},
                            u_services=[{"application": "bench", "types": route}],
                            base_dir=REPO)
        for link in master.micro_services.links.values():
            yield link.when_up()
        for mtype in ("echo", "echoSync"):
            r = yield self.loadgen(eio_url(master), "--type", mtype)
            self.check_clean(r)
        r = yield self.loadgen(eio_url(master), "--request", "login", "--inflight", "2")
        self.check_clean(r)
        self.assertGreaterEqual(r["intermediates"], r["completed"])

    @defer.inlineCallbacks
    def test_node_polling_and_upgraded(self):
        """bench/pollgen.py: long-polling clients and clients that upgrade, checked like the
        WebSocket ones (nonces, token socketIds)."""
        node = start_node(self, moduleMap={"bench": "bench.apps.bench_app"}, base_dir=REPO)
        for transport in ("polling", "upgrade"):
            r = yield self.loadgen(eio_url(node), "--transport", transport, "--type", "echo")
            self.check_clean(r)
            self.assertEqual(r["connections_lost"], 0)

    @defer.inlineCallbacks
    def test_seed_like_for_like(self):
        """The seed's own nodes (examples/jwt master + login micro-service, as bench.servers
        seed-master / seed-ms start them): `test` after a login, with its broadcast counted,
        and the forwarded `login`; CPU is read for both processes."""
        ms = yield self.server("seed-ms")
        master = yield self.server("seed-master", "--ms-url", f"http://127.0.0.1:{ms}")
        r = yield self.loadgen(eio_url_for(master), "--app", "jwt", "--setup-login",
                               "rob:secret", "--type", "test", "--server-pid", str(os.getpid()))
        self.check_clean(r)
        self.assertGreater(r["broadcasts"], 0)
        self.assertIsInstance(r["broadcast_fps"], float)
        self.assertGreaterEqual(r["other_frames"], r["broadcasts"])
        self.assertIn("server_us_per_request", r)
        r = yield self.loadgen(eio_url_for(master), "--app", "jwt", "--request", "login",
                               "--user", "rob", "--echo", "none")
        self.check_clean(r)
        self.assertGreaterEqual(r["intermediates"], r["completed"])
        self.assertEqual(r["broadcasts"], 0)

    def test_round_order(self):
        """The two cells of a like-for-like pair swap places every other round; other cells
        keep theirs."""
        from bench.runner import Cell, round_order

        def c(scenario: str, system: str, pair: str | None) -> Cell:
            return Cell(scenario, system, 1, lambda: "", [], lambda: [], pair=pair)

        cells = [c("a", "node", "a/1"), c("a", "qewd", "a/1"), c("b", "node", None),
                 c("d", "node", "d/1"), c("d", "qewd", "d/1")]
        keys = lambda cs: [x.scenario + x.system for x in cs]  # noqa: E731
        self.assertEqual(keys(round_order(cells, 0)), keys(cells))
        self.assertEqual(keys(round_order(cells, 1)),
                         ["aqewd", "anode", "bnode", "dqewd", "dnode"])
        self.assertEqual(keys(round_order(cells, 2)), keys(cells))

    def test_report(self):
        """The runner turns results into markdown tables with consistent columns, and only
        replaces its own section of docs/performance.md."""
        from bench import report, runner

        def cell(scenario: str, system: str, n: int, rps: float) -> dict[str, Any]:
            return {"scenario": scenario, "system": system, "clients": n, "runs": 1,
                    "rps": rps, "rps_runs": [rps],
                    "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
                    "errors": 0, "timeouts": 0, "misdelivered": 0, "misdelivery_kinds": {},
                    "error_kinds": {}, "invalid_tokens": 0, "intermediates_per_final": 0.0,
                    "other_frames": 0, "client_failures": {}, "gen_cpu_frac": 0.2,
                    "gen_us_per_request": 30.0, "server_cpu_frac": 0.9,
                    "server_us_per_request": 200.0}

        cells = [cell(s, y, n, 100.0 * (i + 1))
                 for i, (s, y) in enumerate([("local", "floor"), ("local", "qewd"),
                                             ("local", "floor-tuned"), ("local", "floor-qewd"),
                                             ("local-async", "node"), ("forwarded", "floor"),
                                             ("forwarded", "node"), ("forwarded", "qewd"),
                                             ("seed-test", "node"), ("seed-test", "qewd"),
                                             ("seed-login", "node"), ("seed-login", "qewd")])
                 for n in (1, 32)]
        cells.append(cell("ceiling", "floor", 32, 9000.0))
        results = {
            "machine": runner.machine(), "logdir": os.path.join(REPO, "bench", "results", "x"),
            "options": {"rounds": 1, "duration": 1.0, "warmup": 0.1, "quick": True,
                        "idle": 10},
            "cells": cells,
            "idle": [{"system": "node", "connections": 10, "requested": 10, "accept_s": 0.1,
                      "rss_before_kb": 1000, "rss_after_kb": 1100, "kb_per_connection": 10.0,
                      "other_processes_delta_kb": 0, "failures": {}, "misdelivered": 0}],
            "recovery": [{"system": "node", "ok_before_outage": True, "outage_errors": ["x"],
                          "restart_to_listening_s": 0.5, "restart_to_first_reply_s": 1.0,
                          "listening_to_first_reply_s": 0.5, "misdelivered": 0}],
        }
        text = report.render(results)
        table: list[str] = []
        for line in text.splitlines() + [""]:
            if line.startswith("|"):
                table.append(line)
            elif table:
                widths = {row.count("|") for row in table}
                self.assertEqual(len(widths), 1, "\n".join(table))
                table = []
        self.assertIn("node ÷ floor", text)
        self.assertIn("essential ÷ tuned floor", text)
        # the like-for-like table comes first, with the issue 19 targets
        self.assertLess(text.index("Like for like"), text.index("against the floors"))
        self.assertIn("| `test` (after one login", text)
        self.assertIn("issue 19: seed's `test` ≥ 5x QEWD.js, 32 client(s)", text)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"# Perf\n\nhand-written\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
        report.write_doc(results, path)
        with open(path) as f:
            written = f.read()
        self.assertIn("hand-written", written)
        self.assertIn("after", written)
        self.assertNotIn("\nold\n", written)
        self.assertIn("| local async (echo) | 1 |", written)


def eio_url_for(port: int) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket"


class RestBenchSmokeTests(TestCase):
    """bench/rest.py's generator and misdelivery check against a real node (in-process)."""

    timeout = 60

    @defer.inlineCallbacks
    def test_rest_load_and_misdelivery_check(self):
        from bench import rest
        from twisted.internet import threads

        from tests.test_rest_http import start_rest_node

        node = start_rest_node(self, routes=[
            {"path": "/api", "module": os.path.join(REPO, "bench", "apps", "rest_bench.py")},
            {"path": "/t", "module": "rest_api.py"}])  # /t/api/echo/...: answers no id
        port = port_of(node)
        result = yield threads.deferToThread(rest.load, port, "/api/users/", 2, 0.3)
        self.assertGreater(result["rps"], 0)
        self.assertEqual(result["errors"], 0)
        bad = yield threads.deferToThread(rest.misdelivered, port, "/api/users/", 20)
        self.assertEqual(bad, 0)
        crossed = yield threads.deferToThread(rest.misdelivered, port, "/t/api/echo/", 20)
        self.assertEqual(crossed, 20)  # the checker does catch replies that are not the asked

    @defer.inlineCallbacks
    def test_the_floor_serves_canned_json_on_the_nodes_site(self):
        from bench import rest
        from twisted.internet import reactor, threads

        site = rest.floor_site(reactor)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        result = yield threads.deferToThread(rest.load, listening.getHost().port,
                                             "/api/users/", 1, 0.2)
        self.assertGreater(result["rps"], 0)
        self.assertEqual(result["errors"], 0)


class DocumentsBenchSmokeTests(TestCase):
    """bench/documents.py --smoke --no-js: both tables, every one of our rows present and
    numeric (a real redis-server, our node over WebSocket). Without the QEWD.js rows: the peer
    kit's synchronous Redis driver sometimes fails under load (docs/documents.md says how the
    bench re-runs those), and a test must not depend on that."""

    timeout = 120

    @defer.inlineCallbacks
    def test_documents_tables(self):
        from bench.documents import OPS

        from tests.documents.redisserver import redis_server_path

        if redis_server_path() is None:
            self.fail("redis-server is not installed (scripts/test.sh installs it)")
        out_dir = os.path.abspath(self.mktemp())
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-m", "bench.documents", "--smoke", "--no-js", "--out", out_dir],
            env=ENV, path=REPO)
        self.assertEqual(code, 0, err.decode(errors="replace")[-2000:])
        with open(os.path.join(out_dir, "documents.json")) as f:
            r = json.load(f)
        self.assertEqual(set(r["direct_us_per_op"]), {
            "ours, memory", "ours, SQLite", "raw sqlite3", "ours, Redis", "raw redis-py",
            "raw RESP (redis-py Connection)"})
        self.assertEqual(set(r["ws_us_per_op"]), {"our node (Redis)"})
        for table in (r["direct_us_per_op"], r["ws_us_per_op"]):
            for row, ops in table.items():
                self.assertEqual(set(ops), set(OPS), row)
                for op, us in ops.items():
                    self.assertIsInstance(us, float, (row, op))
                    self.assertGreater(us, 0, (row, op))
        self.assertEqual(set(r["ratios"]), {
            "ours SQLite / raw sqlite3 (throughput)", "ours Redis / raw redis-py (throughput)",
            "ours Redis / raw RESP (throughput)"})
        with open(os.path.join(out_dir, "documents.md")) as f:
            text = f.read()
        self.assertIn("| our node (Redis) |", text)
        self.assertIn("ours Redis / raw redis-py (throughput)", text)


class WsCostSmokeTests(TestCase):
    """bench/wscost.py drives the node's own WebSocket protocol in process (no timing
    asserted: only that every request got its reply with a fresh token)."""

    def test_runs_and_reports(self):
        import contextlib
        import io

        from bench import wscost

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            wscost.main(["--number", "20", "--observers"])
        self.assertRegex(out.getvalue(), r"^-?\d+\.\d µs per request")
