"""
The scenario runner behind ``bash bench/run.sh``: starts the servers, runs every scenario against
every system in the same run, takes medians, and writes docs/performance.md.

Systems: ``floor`` (bench/servers.py floor; for forwarded requests the bare relay, relay-front +
relay-back), ``node`` (our node: bench/servers.py node-master + node-ms) and ``qewd`` (the
QEWD.js reference peer, ../shared/qewd-peer, master :18080 and micro-service :13000).

Every server process runs on CPU 1 and the load generator on CPU 0 (``taskset``); the peer's
already running processes are moved to CPU 1 for the run and put back afterwards. Each round
runs every load cell once, in the same order, so drift on a shared machine hits all systems
alike; the tables show the median of the rounds.

    python -m bench.runner [--quick] [--rounds N] [--duration S] [--only SCENARIO ...]
    python -m bench.runner profile [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .procs import (
    GEN_CPU,
    PEER_KIT,
    QEWD_MASTER_PORT,
    REPO,
    SERVER_CPU,
    Peer,
    Server,
    children,
    eio_url,
    env,
    log,
    raise_nofile,
    rss_kb,
    set_priority,
    taskset,
)
from .report import DOC, median, render, write_doc

# -- load cells -----------------------------------------------------------------------------------

@dataclass
class Cell:
    scenario: str
    system: str  # floor | node | qewd
    clients: int
    url: Callable[[], str]
    args: list[str]
    pids: Callable[[], list[int]]
    results: list[dict[str, Any]] = field(default_factory=list)
    pair: str | None = None  # like-for-like cells of one pair swap order every other round

    @property
    def key(self) -> str:
        return f"{self.scenario}/{self.system}/{self.clients}"


def run_generator(args: list[str], logdir: str, timeout: float) -> dict[str, Any]:
    cmd = taskset(GEN_CPU) + [sys.executable, "-m", "bench.loadgen", *args]
    with open(os.path.join(logdir, "loadgen.log"), "a") as errf:
        p = subprocess.run(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=errf,
                           text=True, timeout=timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"load generator failed ({p.returncode}): {p.stdout[-300:]}")
    return json.loads(lines[-1])


SCENARIOS = {
    "seed": "Like for like: the seed's examples/jwt master + login micro-service against the "
            "QEWD.js peer, same handlers (`test` with its broadcast, after one login; the "
            "forwarded `login`)",
    "local-async": "Local handler, `async def` (runs on the reactor)",
    "local-sync": "Local handler, plain `def` (runs in the worker pool)",
    "local-qewd-app": "Local handler doing exactly what QEWD.js's `test` does "
                      "(examples/jwt: beforeHandler, `test`, `to_all` broadcast; sync)",
    "forwarded": "Forwarded to a micro-service node (`login`: 1 intermediate + final)",
    "ceiling": "Generator ceiling: tuned floor, 32 clients x 8 requests in flight",
    "polling": "Engine.IO long-polling clients only (`transports: ['polling']`), QEWD.js's "
               "`test` work on both (1 and 32 clients)",
    "upgraded": "Clients that start on polling and upgrade to WebSocket, `async def` echo "
                "(against local-async's WebSocket-only clients)",
}
POLLING_CLIENTS = (1, 32)  # the polling rows


def build_cells(sys_: dict[str, Any], clients: list[int], only: set[str] | None,
                qewd: bool) -> list[Cell]:
    floor, floor_tuned, floor_qewd, relay_front, relay_back, master, ms, seed_master, seed_ms = (
        sys_.get(k) for k in ("floor", "floor_tuned", "floor_qewd", "relay_front", "relay_back",
                              "master", "ms", "seed_master", "seed_ms"))
    peer: Peer = sys_["peer"]
    cells: list[Cell] = []

    def want(s: str) -> bool:
        return only is None or s in only

    qm = lambda: eio_url(QEWD_MASTER_PORT)  # noqa: E731
    qpids = lambda: peer.pids(("master", "ms"))  # noqa: E731
    # like for like: every process of each system (QEWD.js: master, micro-service, their
    # forked workers (the generator adds children when its window starts) and Redis)
    qall = lambda: peer.pids(("master", "ms", "redis"))  # noqa: E731
    seed_pids = lambda: [seed_master.pid, seed_ms.pid]  # noqa: E731
    seed_loads = {
        "seed-test": ["--app", "jwt", "--setup-login", "rob:secret", "--type", "test"],
        "seed-login": ["--app", "jwt", "--request", "login", "--user", "rob", "--echo", "none",
                       "--timeout", "2"],
    }
    for n in clients:
        if want("seed"):
            for scenario, load in seed_loads.items():
                pair = f"{scenario}/{n}"
                cells.append(Cell(scenario, "node", n, lambda: eio_url(seed_master.port), load,
                                  seed_pids, pair=pair))
                if qewd:
                    cells.append(Cell(scenario, "qewd", n, qm, load, qall, pair=pair))
        if want("local-async") or want("local-sync"):
            cells.append(Cell("local", "floor", n, lambda: eio_url(floor.port),
                              ["--app", "bench", "--type", "echo", "--echo", "none"],
                              lambda: [floor.pid]))
            cells.append(Cell("local", "floor-tuned", n, lambda: eio_url(floor_tuned.port),
                              ["--app", "bench", "--type", "echo", "--echo", "none"],
                              lambda: [floor_tuned.pid]))
            if want("local-async"):
                cells.append(Cell("local", "floor-qewd", n, lambda: eio_url(floor_qewd.port),
                                  ["--app", "bench", "--type", "echo"],
                                  lambda: [floor_qewd.pid]))
            if qewd:
                cells.append(Cell("local", "qewd", n, qm,
                                  ["--app", "jwt", "--setup-login", "rob:secret", "--type",
                                   "test"], qpids))
        if want("local-async"):
            cells.append(Cell("local-async", "node", n, lambda: eio_url(master.port),
                              ["--app", "bench", "--type", "echo"], lambda: [master.pid]))
        if want("local-sync"):
            cells.append(Cell("local-sync", "node", n, lambda: eio_url(master.port),
                              ["--app", "bench", "--type", "echoSync"], lambda: [master.pid]))
        if want("local-qewd-app"):
            cells.append(Cell("local-qewd-app", "node", n, lambda: eio_url(master.port),
                              ["--app", "jwt", "--setup-login", "rob:secret", "--type", "test"],
                              lambda: [master.pid, ms.pid]))
        if want("forwarded"):
            cells.append(Cell("forwarded", "floor", n, lambda: eio_url(relay_front.port),
                              ["--app", "bench", "--request", "login", "--echo", "none",
                               "--no-identity"], lambda: [relay_front.pid, relay_back.pid]))
            cells.append(Cell("forwarded", "node", n, lambda: eio_url(master.port),
                              ["--app", "bench", "--request", "login"],
                              lambda: [master.pid, ms.pid]))
            if qewd:
                cells.append(Cell("forwarded", "qewd", n, qm,
                                  ["--app", "jwt", "--request", "login", "--user", "rob",
                                   "--echo", "none", "--timeout", "2"], qpids))
        if want("polling") and n in POLLING_CLIENTS:
            cells.append(Cell("polling", "node", n, lambda: eio_url(master.port),
                              ["--transport", "polling", "--app", "jwt", "--setup-login",
                               "rob:secret", "--type", "test"], lambda: [master.pid]))
            if qewd:
                cells.append(Cell("polling", "qewd", n, qm,
                                  ["--transport", "polling", "--app", "jwt", "--setup-login",
                                   "rob:secret", "--type", "test"], qpids))
        if want("upgraded") and n in POLLING_CLIENTS:
            cells.append(Cell("upgraded", "node", n, lambda: eio_url(master.port),
                              ["--transport", "upgrade", "--app", "bench", "--type", "echo"],
                              lambda: [master.pid]))
            if only is not None and not want("local-async"):  # its WebSocket-only pair
                cells.append(Cell("local-async", "node", n, lambda: eio_url(master.port),
                                  ["--app", "bench", "--type", "echo"], lambda: [master.pid]))
    if want("ceiling"):
        # the fastest server we have (the tuned floor), so the ceiling is above every cell
        cells.append(Cell("ceiling", "floor", 32, lambda: eio_url(floor_tuned.port),
                          ["--app", "bench", "--type", "echo", "--echo", "none",
                           "--inflight", "8"], lambda: [floor.pid]))
    return cells


def round_order(cells: list[Cell], rnd: int) -> list[Cell]:
    """The cells in run order for round ``rnd``: the two cells of a like-for-like pair run
    back to back, our node first in even rounds and QEWD.js first in odd ones, so drift within
    a round does not favour either system."""
    out = list(cells)
    if rnd % 2:
        i = 0
        while i < len(out) - 1:
            if out[i].pair is not None and out[i].pair == out[i + 1].pair:
                out[i], out[i + 1] = out[i + 1], out[i]
                i += 2
            else:
                i += 1
    return out


def summarize(cell: Cell) -> dict[str, Any]:
    rs = cell.results
    lat = {k: median([r["latency_ms"][k] for r in rs]) for k in ("p50", "p90", "p99", "max")}
    return {
        "scenario": cell.scenario, "system": cell.system, "clients": cell.clients,
        "runs": len(rs), "rps": median([r["rps"] for r in rs]),
        "rps_runs": [r["rps"] for r in rs], "latency_ms": lat,
        "errors": sum(r["errors"] for r in rs), "timeouts": sum(r["timeouts"] for r in rs),
        "misdelivered": sum(r["misdelivered"] for r in rs),
        "misdelivery_kinds": _merge([r["misdelivery_kinds"] for r in rs]),
        "error_kinds": _merge([r["error_kinds"] for r in rs]),
        "invalid_tokens": sum(r["invalid_tokens"] for r in rs),
        "intermediates_per_final": (round(sum(r["intermediates"] for r in rs)
                                          / max(1, sum(r["finals_total"] for r in rs)), 3)),
        "other_frames": sum(r["other_frames"] for r in rs),
        "client_failures": _merge([r["client_failures"] for r in rs]),
        "gen_cpu_frac": median([r["gen_cpu_frac"] for r in rs]),
        "gen_us_per_request": median([r["gen_us_per_request"] for r in rs]),
        "server_cpu_frac": median([r.get("server_cpu_frac") for r in rs]),
        "server_us_per_request": median([r.get("server_us_per_request") for r in rs]),
        "broadcast_fps": median([r.get("broadcast_fps") for r in rs]),
        "server_processes": max((r.get("server_processes") or 0) for r in rs),
    }


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


# -- idle connections and link recovery ---------------------------------------------------------

def idle_test(name: str, url: str, pid_of: Callable[[], list[int]], n: int, logdir: str,
              app: str = "bench", concurrency: int = 32) -> dict[str, Any]:
    pids = pid_of()
    time.sleep(0.5)
    before = {p: rss_kb(p) for p in pids}
    cmd = taskset(GEN_CPU) + [sys.executable, "-m", "bench.loadgen", "--mode", "idle", "--url",
                              url, "--app", app, "--clients", str(n), "--connect-concurrency",
                              str(concurrency), "--hold", "120"]
    with open(os.path.join(logdir, "loadgen.log"), "a") as errf:
        p = subprocess.Popen(cmd, cwd=REPO, env=env(), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errf, text=True)
        assert p.stdout is not None and p.stdin is not None
        ready = json.loads(p.stdout.readline() or "{}")
        time.sleep(1.0)
        after = {q: rss_kb(q) for q in pid_of() if q in before}
        p.stdin.write("close\n")
        p.stdin.flush()
        p.communicate(timeout=60)
    got = ready.get("ready_clients", 0)
    main_pid = pids[0]
    delta_kb = after.get(main_pid, 0) - before[main_pid]
    others = sum(after.get(q, 0) - before[q] for q in before if q != main_pid)
    return {
        "system": name, "connections": got, "requested": n, "accept_s": ready.get("accept_s"),
        "rss_before_kb": before[main_pid], "rss_after_kb": after.get(main_pid),
        "kb_per_connection": round(delta_kb / got, 2) if got else None,
        "other_processes_delta_kb": others,
        "failures": ready.get("client_failures"), "misdelivered": ready.get("misdelivered"),
    }


def recovery_trial(name: str, url: str, app: str, extra: list[str], stop: Callable[[], None],
                   start: Callable[[], None], logdir: str, down: float = 1.0) -> dict[str, Any]:
    cmd = taskset(GEN_CPU) + [sys.executable, "-m", "bench.loadgen", "--mode", "probe", "--url",
                              url, "--app", app, "--request", "login", "--duration", "40",
                              "--interval", "0.02", *extra]
    with open(os.path.join(logdir, "loadgen.log"), "a") as errf:
        p = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=errf,
                             text=True)
        time.sleep(2.0)
        t_stop = time.time()
        stop()
        stopped = time.time()
        time.sleep(down)
        t0 = time.time()
        start()
        t_listen = time.time()
        out, _ = p.communicate(timeout=60)
    result = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    events = result.get("events", [])
    ok_before = any(ok for t, ok, _ in events if t < t_stop)
    errors = sorted({e for t, ok, e in events if not ok})
    first = next((t for t, ok, _ in events if ok and t >= t0), None)
    return {
        "system": name, "ok_before_outage": ok_before, "outage_errors": errors,
        "stop_s": round(stopped - t_stop, 3), "recovered": result.get("recovered"),
        "restart_to_listening_s": round(t_listen - t0, 3),
        "restart_to_first_reply_s": round(first - t0, 3) if first else None,
        "listening_to_first_reply_s": round(first - t_listen, 3) if first else None,
        "misdelivered": result.get("misdelivered"),
    }


# -- machine -----------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "not found"

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import autobahn

    import qewd_twisted
    import twisted

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed (asyncio)"
    try:
        import orjson

        oj = orjson.__version__
    except ImportError:
        oj = "not installed (json)"
    qewd_js = "unknown"
    try:
        with open(os.path.join(PEER_KIT, "node_modules", "qewd", "package.json")) as f:
            qewd_js = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "twisted": twisted.__version__,
        "autobahn": autobahn.__version__, "qewd_twisted": qewd_twisted.__version__,
        "node": version(["node", "--version"]), "qewd_js": qewd_js,
        "uvloop": uv, "orjson": oj, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg_start": os.getloadavg(),
    }


# -- the whole run -----------------------------------------------------------------------------------

def run(opts: argparse.Namespace) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(REPO, "bench", "results", stamp)
    os.makedirs(logdir, exist_ok=True)
    raise_nofile()
    info = machine()
    log(f"logs in {logdir}; nofile={info['nofile']}")
    peer = Peer()
    qewd = not opts.no_qewd and peer.ensure(logdir)
    if not qewd:
        log("QEWD.js peer not available: its columns stay empty")
    started: list[Server] = []
    results: dict[str, Any] = {"machine": info, "options": vars(opts), "logdir": logdir}
    try:
        def up(server: Server) -> Server:
            started.append(server)
            return server.start()

        floor = up(Server("floor", logdir))
        floor_tuned = up(Server("floor-tuned", logdir))
        floor_qewd = up(Server("floor-qewd", logdir))
        relay_back = up(Server("relay-back", logdir))
        relay_front = up(Server("relay-front", logdir, "--backend",
                                f"ws://127.0.0.1:{relay_back.port}/socket.io/"))
        ms = up(Server("node-ms", logdir))
        master = up(Server("node-master", logdir, "--ms-url", f"http://127.0.0.1:{ms.port}"))
        seed_ms = up(Server("seed-ms", logdir))
        seed_master = up(Server("seed-master", logdir, "--ms-url",
                                f"http://127.0.0.1:{seed_ms.port}"))
        if qewd:
            peer.pin(SERVER_CPU)
        systems = {"floor": floor, "floor_tuned": floor_tuned, "floor_qewd": floor_qewd,
                   "relay_front": relay_front, "relay_back": relay_back,
                   "master": master, "ms": ms, "seed_master": seed_master, "seed_ms": seed_ms,
                   "peer": peer}
        only = set(opts.only) if opts.only else None
        cells = build_cells(systems, opts.clients, only, qewd)
        base = ["--warmup", str(opts.warmup), "--duration", str(opts.duration)]
        for rnd in range(opts.rounds):
            log(f"round {rnd + 1}/{opts.rounds}: {len(cells)} cells")
            if qewd:
                peer.pin(SERVER_CPU)  # QEWD forks workers lazily: pin the new ones too
            for cell in round_order(cells, rnd):
                pids = []
                for pid in cell.pids():
                    pids += ["--server-pid", str(pid)]
                args = ["--url", cell.url(), "--clients", str(cell.clients), *base, *pids,
                        *cell.args]
                try:
                    r = run_generator(args, logdir, timeout=120 + cell.clients)
                except Exception as e:  # a failed cell is reported, the run goes on
                    log(f"{cell.key}: {e}")
                    continue
                cell.results.append(r)
                log(f"{cell.key}: {r['rps']} req/s p99 {r['latency_ms']['p99']} ms "
                    f"misdelivered {r['misdelivered']} errors {r['errors']} "
                    f"timeouts {r['timeouts']}")
        results["cells"] = [summarize(c) for c in cells if c.results]

        if not opts.skip_idle:
            idle = []
            for name in ("floor", "node", "qewd"):
                if name == "qewd" and not qewd:
                    continue
                log(f"idle: {opts.idle} connections to {name}")
                if name == "qewd":
                    peer.pin(SERVER_CPU)
                    r = idle_test(name, eio_url(QEWD_MASTER_PORT),
                                  lambda: [peer.pid("master")] + children(peer.pid("master")),
                                  opts.idle, logdir, app="jwt")
                else:
                    fresh = Server("floor" if name == "floor" else "node-master", logdir,
                                   name=f"idle-{name}")
                    started.append(fresh)
                    fresh.start()
                    try:
                        r = idle_test(name, eio_url(fresh.port), lambda f=fresh: [f.pid],
                                      opts.idle, logdir)
                    finally:
                        fresh.stop()
                log(f"idle {name}: {r}")
                idle.append(r)
            results["idle"] = idle

        if not opts.skip_recovery:
            rec = []
            # Processes are stopped and started here: all at normal priority (see PRIORITY).
            for server in (master, ms):
                set_priority(server.pid, False)
                server.priority = False
            if qewd:
                peer.pin(SERVER_CPU, priority=False)
            for _ in range(opts.recovery_trials):
                def stop_ms() -> None:
                    ms.stop()

                def start_ms() -> None:
                    ms.start()

                r = recovery_trial("node", eio_url(master.port), "bench", [], stop_ms,
                                   start_ms, logdir)
                log(f"recovery node: {r}")
                rec.append(r)
                if qewd:
                    r = recovery_trial("qewd", eio_url(QEWD_MASTER_PORT), "jwt",
                                       ["--user", "rob", "--echo", "none"],
                                       lambda: peer.stop_ms(logdir),
                                       lambda: peer.start_ms(logdir), logdir)
                    log(f"recovery qewd: {r}")
                    rec.append(r)
            results["recovery"] = rec
    finally:
        for s in reversed(started):
            s.stop()
        if qewd:
            if peer.started_here:
                peer.stop(logdir)  # leave the machine as the run found it
            else:
                if not peer.up():
                    peer.ensure(logdir)
                peer.unpin()
    info["loadavg_end"] = os.getloadavg()
    with open(os.path.join(logdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


# -- command line -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["profile"]:
        p = argparse.ArgumentParser(prog="bench.runner profile")
        p.add_argument("--seconds", type=float, default=10)
        p.add_argument("--clients", type=int, default=32)
        p.add_argument("--type", default="echo")
        p.add_argument("--top", type=int, default=30)
        p.add_argument("--seed", choices=("test", "login"),
                       help="cProfile both seed nodes under the seed's own workload")
        from .profiling import profile

        profile(p.parse_args(argv[1:]))
        return
    p = argparse.ArgumentParser(prog="bench.runner", description="run the benchmarks")
    p.add_argument("--quick", action="store_true", help="1 round, short cells, 1 recovery trial")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float)
    p.add_argument("--warmup", type=float)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 32, 200])
    p.add_argument("--idle", type=int, default=10000, help="idle connections per system")
    p.add_argument("--recovery-trials", type=int)
    p.add_argument("--only", nargs="+", choices=sorted(SCENARIOS))
    p.add_argument("--skip-idle", action="store_true")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--no-qewd", action="store_true", help="leave the QEWD.js peer out")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    p.add_argument("--doc", default=DOC)
    opts = p.parse_args(argv)
    opts.rounds = opts.rounds or (1 if opts.quick else 5)
    opts.duration = opts.duration or (1.0 if opts.quick else 1.5)
    opts.warmup = opts.warmup if opts.warmup is not None else (0.3 if opts.quick else 0.4)
    opts.recovery_trials = opts.recovery_trials or (1 if opts.quick else 3)
    results = run(opts)
    if not opts.no_doc:
        write_doc(results, opts.doc)
        log(f"wrote {opts.doc}")
    print(render(results))


if __name__ == "__main__":
    main()
