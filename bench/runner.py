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
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "performance.md")
PEER_KIT = os.environ.get("QEWD_PEER_DIR",
                          os.path.join(os.path.dirname(REPO), "shared", "qewd-peer"))
QEWD_MASTER_PORT = int(os.environ.get("QEWD_MASTER_PORT", "18080"))
QEWD_MS_PORT = int(os.environ.get("QEWD_MS_PORT", "13000"))
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1")
GEN_CPU = os.environ.get("BENCH_GEN_CPU", "0")
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def eio_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def log(*parts: Any) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


# On a shared machine other work competes for both CPUs, and with the kernel's fair scheduler
# each wakeup of a server or client can wait a few ms behind it (a nice value does not help:
# it changes shares, not wakeup latency). So by default every bench process (servers, the
# generator and, for the run, the QEWD.js peer's processes) runs SCHED_FIFO at a low real-time
# priority; the kernel's RT throttling still leaves 5% of each CPU to everything else, and
# every cell is bounded in time. Round-robin, not FIFO: a process that spins (a QEWD.js node
# shutting down did) must not starve the others at the same priority. The link-recovery
# trials, which stop and start processes, run at normal priority. BENCH_PRIORITY=nice uses
# nice -10 instead, =off neither.
PRIORITY = os.environ.get("BENCH_PRIORITY", "rt")
RT_PRIO = "10"
NICE = "-10"


def _priority() -> str:
    if PRIORITY == "rt" and os.geteuid() == 0 and _have("chrt"):
        return "rt"
    if PRIORITY in ("rt", "nice") and os.geteuid() == 0:
        return "nice"
    return "off"


def _can_nice() -> bool:
    return _priority() == "nice"


def priority_prefix() -> list[str]:
    mode = _priority()
    if mode == "rt":
        return ["chrt", "-r", RT_PRIO]
    if mode == "nice":
        return ["nice", "-n", NICE]
    return []


def priority_text() -> str:
    return {"rt": f"all at SCHED_RR priority {RT_PRIO}", "nice": f"all at nice {NICE}",
            "off": "at normal priority"}[_priority()]


def taskset(cpu: str, priority: bool = True) -> list[str]:
    """The command prefix that pins to ``cpu`` and (``priority``) sets the bench's priority."""
    return ((["taskset", "-c", cpu] if cpu and _have("taskset") else [])
            + (priority_prefix() if priority else []))


def set_priority(pid: int, on: bool) -> None:
    """Give every thread of ``pid`` the bench's priority (``on``) or the normal one."""
    mode = _priority()
    if mode == "rt":
        cmd = ["chrt", "-a", "-r", "-p", RT_PRIO, str(pid)] if on else \
            ["chrt", "-a", "-o", "-p", "0", str(pid)]
        subprocess.run(cmd, capture_output=True, check=False)
    elif mode == "nice":
        renice(pid, int(NICE) if on else 0)


def renice(pid: int, value: int) -> None:
    """Set the nice value of every thread of ``pid``."""
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(task), value)
    except OSError:
        pass


def _have(tool: str) -> bool:
    return any(os.access(os.path.join(d, tool), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep))


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- processes ---------------------------------------------------------------------------------

class Server:
    """A bench server process (``python -m bench.servers KIND``) on the server CPU."""

    def __init__(self, kind: str, logdir: str, *extra: str, cpu: str = SERVER_CPU,
                 port: int = 0, name: str | None = None) -> None:
        self.kind = kind
        self.name = name or kind
        self.extra = list(extra)
        self.cpu = cpu
        self.port = port
        self.logdir = logdir
        self.priority = True
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> "Server":
        cmd = taskset(self.cpu, self.priority) + [sys.executable, "-m", "bench.servers", self.kind,
                                   "--port", str(self.port), *self.extra]
        logf = open(os.path.join(self.logdir, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                     stderr=logf, text=True)
        logf.close()
        line = _readline(self.proc, timeout)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r} (see {self.name}.log)")
        self.port = int(line.split()[1])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Peer:
    """The QEWD.js reference peer (started by its own run-peer.sh; we only pin and restart)."""

    def __init__(self, kit: str = PEER_KIT) -> None:
        self.kit = kit
        if os.access(kit, os.W_OK):
            self.home = kit
        else:
            self.home = os.environ.get("QEWD_PEER_HOME",
                                       os.path.join(os.environ.get("TMPDIR", "/tmp"), "qewd-peer"))
        self._masks: dict[int, str] = {}

    def available(self) -> bool:
        return os.path.isfile(os.path.join(self.kit, "run-peer.sh"))

    def up(self) -> bool:
        return port_open(QEWD_MASTER_PORT) and port_open(QEWD_MS_PORT)

    def ensure(self, logdir: str) -> bool:
        if not self.available():
            return False
        if not self.up():
            log("starting the QEWD.js peer (run-peer.sh)")
            self._script("run-peer.sh", logdir)
        return self.up()

    def pid(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.home, "run", f"{name}.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def pids(self, names: tuple[str, ...] = ("master", "ms", "redis")) -> list[int]:
        out = []
        for n in names:
            pid = self.pid(n)
            if pid is not None:
                out += [pid] + children(pid)
        return out

    def pin(self, cpu: str, priority: bool = True) -> None:
        for pid in self.pids():
            if pid not in self._masks:
                mask = subprocess.run(["taskset", "-p", str(pid)], capture_output=True,
                                      text=True).stdout.strip().rsplit(" ", 1)[-1]
                self._masks[pid] = mask or "ff"
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], capture_output=True)
            set_priority(pid, priority)

    def unpin(self) -> None:
        every = ",".join(str(i) for i in range(os.cpu_count() or 1))
        for pid in self.pids():
            mask = self._masks.get(pid)
            cmd = ["taskset", "-a", "-p", mask, str(pid)] if mask else \
                ["taskset", "-a", "-p", "-c", every, str(pid)]
            subprocess.run(cmd, capture_output=True)
            set_priority(pid, False)

    def _script(self, script: str, logdir: str, *args: str, cpu: str | None = None) -> None:
        prefix = taskset(cpu, priority=False) if cpu else []
        with open(os.path.join(logdir, "peer.log"), "a") as f:
            subprocess.run(prefix + ["bash", os.path.join(self.kit, script), *args],
                           stdout=f, stderr=subprocess.STDOUT, timeout=120)

    def stop_ms(self, logdir: str) -> None:
        self._script("stop-peer.sh", logdir, "ms")

    def start_ms(self, logdir: str) -> None:
        self._script("run-peer.sh", logdir, "ms", cpu=SERVER_CPU)


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
    "local-async": "Local handler, `async def` (runs on the reactor)",
    "local-sync": "Local handler, plain `def` (runs in the worker pool)",
    "local-qewd-app": "Local handler doing exactly what QEWD.js's `test` does "
                      "(examples/jwt: beforeHandler, `test`, `to_all` broadcast; sync)",
    "forwarded": "Forwarded to a micro-service node (`login`: 1 intermediate + final)",
    "ceiling": "Generator ceiling: floor, 32 clients x 8 requests in flight",
}


def build_cells(sys_: dict[str, Any], clients: list[int], only: set[str] | None,
                qewd: bool) -> list[Cell]:
    floor, relay_front, relay_back, master, ms = (sys_[k] for k in
                                                  ("floor", "relay_front", "relay_back",
                                                   "master", "ms"))
    peer: Peer = sys_["peer"]
    cells: list[Cell] = []

    def want(s: str) -> bool:
        return only is None or s in only

    qm = lambda: eio_url(QEWD_MASTER_PORT)  # noqa: E731
    qpids = lambda: peer.pids(("master", "ms"))  # noqa: E731
    for n in clients:
        if want("local-async") or want("local-sync"):
            cells.append(Cell("local", "floor", n, lambda: eio_url(floor.port),
                              ["--app", "bench", "--type", "echo", "--echo", "none"],
                              lambda: [floor.pid]))
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
    if want("ceiling"):
        cells.append(Cell("ceiling", "floor", 32, lambda: eio_url(floor.port),
                          ["--app", "bench", "--type", "echo", "--echo", "none",
                           "--inflight", "8"], lambda: [floor.pid]))
    return cells


def median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


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
    import twisted

    import qewd_twisted

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
        relay_back = up(Server("relay-back", logdir))
        relay_front = up(Server("relay-front", logdir, "--backend",
                                f"ws://127.0.0.1:{relay_back.port}/socket.io/"))
        ms = up(Server("node-ms", logdir))
        master = up(Server("node-master", logdir, "--ms-url", f"http://127.0.0.1:{ms.port}"))
        if qewd:
            peer.pin(SERVER_CPU)
        systems = {"floor": floor, "relay_front": relay_front, "relay_back": relay_back,
                   "master": master, "ms": ms, "peer": peer}
        only = set(opts.only) if opts.only else None
        cells = build_cells(systems, opts.clients, only, qewd)
        base = ["--warmup", str(opts.warmup), "--duration", str(opts.duration)]
        for rnd in range(opts.rounds):
            log(f"round {rnd + 1}/{opts.rounds}: {len(cells)} cells")
            if qewd:
                peer.pin(SERVER_CPU)  # QEWD forks workers lazily: pin the new ones too
            for cell in cells:
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
            for i in range(opts.recovery_trials):
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
            if not peer.up():
                peer.ensure(logdir)
            peer.unpin()
    info["loadavg_end"] = os.getloadavg()
    with open(os.path.join(logdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


# -- the report ---------------------------------------------------------------------------------------

def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def _find(cells: list[dict[str, Any]], scenario: str, system: str, n: int) -> dict | None:
    for c in cells:
        if c["scenario"] == scenario and c["system"] == system and c["clients"] == n:
            return c
    return None


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    o = results["options"]
    cells = results.get("cells", [])
    clients = sorted({c["clients"] for c in cells if c["scenario"] != "ceiling"})
    out = []
    out.append(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
               f"`bash bench/run.sh{' --quick' if o.get('quick') else ''}`: "
               f"{o['rounds']} round(s) of {o['duration']} s per cell after {o['warmup']} s "
               f"warm-up; every figure is the median of the rounds.")
    out.append("")
    out.append(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gb']} GB, Linux "
               f"{m['kernel']}; Python {m['python']}, Twisted {m['twisted']}, Autobahn "
               f"{m['autobahn']}, qewd-twisted {m['qewd_twisted']}; Node {m['node']}, QEWD.js "
               f"{m['qewd_js']}; load generator on uvloop {m['uvloop']}, orjson {m['orjson']}. "
               f"Servers on CPU {SERVER_CPU}, load generator on CPU {GEN_CPU}, "
               f"{priority_text()}. Load average "
               f"{', '.join(f'{x:.1f}' for x in m['loadavg_start'])} at the start and "
               f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', ()))} at the end.")
    out.append("")

    def row_sets() -> list[tuple[str, str, str, str]]:
        # (label, node scenario, floor scenario, qewd scenario)
        return [
            ("local async", "local-async", "local", "local"),
            ("local sync (pool)", "local-sync", "local", "local"),
            ("local, QEWD.js's `test` work", "local-qewd-app", "local", "local"),
            ("forwarded", "forwarded", "forwarded", "forwarded"),
        ]

    out.append("### Throughput (completed requests/s)")
    out.append("")
    out.append("| scenario | clients | floor | node | QEWD.js | node ÷ floor | node ÷ QEWD.js |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, ns, fs, qs in row_sets():
        for n in clients:
            node = _find(cells, ns, "node", n)
            if node is None:
                continue
            fl = _find(cells, fs, "floor", n)
            q = _find(cells, qs, "qewd", n)
            out.append(f"| {label} | {n} | {_f(fl and fl['rps'])} | {_f(node['rps'])} | "
                       f"{_f(q and q['rps'])} | {_ratio(node['rps'], fl and fl['rps'])} | "
                       f"{_ratio(node['rps'], q and q['rps'])} |")
    out.append("")
    out.append("Floor for the local rows: the bare Autobahn server (canned reply); for the "
               "forwarded rows: the bare relay (front + back). QEWD.js local: the peer's `test` "
               "handler (it also broadcasts `{test: 'message 2'}` to every connected socket, so "
               "with N clients it sends N + 1 frames per request); QEWD.js forwarded: the peer's "
               "`login` (rob/secret) through its micro-service.")
    out.append("")
    out.append("### Latency (ms: p50 / p90 / p99 / max)")
    out.append("")
    out.append("| scenario | clients | floor | node | QEWD.js |")
    out.append("|---|---:|---|---|---|")

    def lat(c: dict | None) -> str:
        if c is None:
            return "–"
        la = c["latency_ms"]
        return " / ".join(_f(la[k], 1) for k in ("p50", "p90", "p99", "max"))

    for label, ns, fs, qs in row_sets():
        for n in clients:
            node = _find(cells, ns, "node", n)
            if node is None:
                continue
            out.append(f"| {label} | {n} | {lat(_find(cells, fs, 'floor', n))} | {lat(node)} | "
                       f"{lat(_find(cells, qs, 'qewd', n))} |")
    out.append("")
    out.append("### Correctness and cost (sums over all rounds; CPU per request is the median)")
    out.append("")
    out.append("| scenario | system | clients | misdelivered | errors | timeouts | intermediate "
               "frames per final | server CPU µs/request | generator CPU share |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cells:
        if c["scenario"] == "ceiling":
            continue
        kinds = ", ".join(f"{k}: {v}" for k, v in c["misdelivery_kinds"].items())
        mis = f"{c['misdelivered']}" + (f" ({kinds})" if kinds else "")
        out.append(f"| {c['scenario']} | {c['system']} | {c['clients']} | {mis} | {c['errors']} "
                   f"| {c['timeouts']} | {_f(c['intermediates_per_final'], 2)} | "
                   f"{_f(c['server_us_per_request'])} | {_f(c['gen_cpu_frac'], 2)} |")
    out.append("")
    errors = {}
    for c in cells:
        for k, v in c["error_kinds"].items():
            errors[f"{c['scenario']}/{c['system']}/{c['clients']}: {k}"] = v
        for k, v in c["client_failures"].items():
            errors[f"{c['scenario']}/{c['system']}/{c['clients']}: client failed: {k}"] = v
    if errors:
        out.append("Error texts seen: " + "; ".join(f"{k} ({v})" for k, v in errors.items())
                   + ".")
        out.append("")
    ceiling = _find(cells, "ceiling", "floor", 32)
    if ceiling:
        top = max((c["rps"] or 0) for c in cells if c["scenario"] != "ceiling") if cells else 0
        cap = (ceiling["rps"] / ceiling["gen_cpu_frac"]) if ceiling["gen_cpu_frac"] else None
        per = ceiling["gen_us_per_request"]
        out.append("### The load generator is not the bottleneck")
        out.append("")
        out.append(f"Driving the floor with 32 clients x 8 requests in flight it completed "
                   f"{_f(ceiling['rps'])} req/s using {_f(ceiling['gen_cpu_frac'] * 100)}% of "
                   f"its CPU ({_f(per)} µs of generator CPU per request): about "
                   f"{_f(cap)} req/s per generator CPU, against {_f(top)} req/s for the fastest "
                   f"scenario cell above. In every cell the generator's CPU share is in the "
                   f"table above (1.00 would mean it was saturated).")
        out.append("")
    idle = results.get("idle")
    if idle:
        out.append(f"### Idle registered connections ({o['idle']:,} per system)")
        out.append("")
        out.append("| system | connections | time to open + register all (s) | server RSS "
                   "before → after (MB) | KB per connection |")
        out.append("|---|---:|---:|---|---:|")
        for r in idle:
            ra = r["rss_after_kb"]
            out.append(f"| {r['system']} | {r['connections']:,} | {_f(r['accept_s'], 1)} | "
                       f"{r['rss_before_kb'] / 1024:.0f} → "
                       f"{(ra / 1024 if ra else 0):.0f} | {_f(r['kb_per_connection'], 1)} |")
        out.append("")
        out.append("32 connections are opened at a time (below the default listen backlog of "
                   "50); each connection registers (`ewd-register`, `jwt: true`) before it "
                   "counts. RSS is the server process's (for QEWD.js the master process, which "
                   "holds the sockets).")
        out.append("")
    rec = results.get("recovery")
    if rec:
        out.append("### Link recovery (micro-service restarted after 1 s down)")
        out.append("")
        out.append("| system | trials | restart → listening (s) | restart → first forwarded "
                   "reply (s) | listening → first reply (s) | errors while down |")
        out.append("|---|---:|---:|---:|---:|---|")
        for name in ("node", "qewd"):
            rs = [r for r in rec if r["system"] == name]
            if not rs:
                continue
            errs = sorted({e for r in rs for e in r["outage_errors"]})
            out.append(f"| {name} | {len(rs)} | "
                       f"{_f(median([r['restart_to_listening_s'] for r in rs]), 2)} | "
                       f"{_f(median([r['restart_to_first_reply_s'] for r in rs]), 2)} | "
                       f"{_f(median([r['listening_to_first_reply_s'] for r in rs]), 2)} | "
                       f"{'; '.join(errs)[:160]} |")
        out.append("")
        out.append("A probe client sends a forwarded `login` through the master every 20 ms "
                   "(without waiting for earlier replies: QEWD.js never answers a request that "
                   "was in flight when the link dropped); the micro-service is stopped "
                   "(SIGTERM; `stop-peer.sh ms` for QEWD.js), kept down 1 s, then started "
                   "again. \"restart\" is the moment the new process is launched, so the first "
                   "column includes the process's own start-up; the second is what the link "
                   "adds (reconnect, backoff, re-register, first request).")
        out.append("")
    out.append("### Targets (issue 6)")
    out.append("")
    out.extend(targets(results))
    out.append("")
    out.append(f"Raw results: `{os.path.relpath(results['logdir'], REPO)}/results.json` "
               "(not committed).")
    return "\n".join(out)


def targets(results: dict[str, Any]) -> list[str]:
    cells = results.get("cells", [])
    lines = ["| target | measured | |", "|---|---|---|"]

    def add(name: str, value: str, ok: bool | None) -> None:
        lines.append(f"| {name} | {value} | {'met' if ok else 'not met' if ok is False else '–'} |")

    def rps(s: str, sys_: str, n: int) -> float | None:
        c = _find(cells, s, sys_, n)
        return c["rps"] if c else None

    for n in (1, 32):
        a, f = rps("local-async", "node", n), rps("local", "floor", n)
        add(f"local async ≥ 70% of the floor, {n} client(s)",
            f"{a / f:.0%}" if a and f else "–", (a / f >= 0.70) if a and f else None)
    for n in (1, 32, 200):
        a, f = rps("forwarded", "node", n), rps("forwarded", "floor", n)
        if a and f:
            add(f"forwarded ≥ 60% of the bare relay, {n} client(s)", f"{a / f:.0%}", a / f >= 0.6)
    a, q = rps("local-async", "node", 1), rps("local", "qewd", 1)
    add("local ≥ 3x QEWD.js, 1 client", f"{a / q:.2f}x" if a and q else "–",
        (a / q >= 3) if a and q else None)
    a, q = rps("forwarded", "node", 1), rps("forwarded", "qewd", 1)
    add("forwarded ≥ 5x QEWD.js, 1 client", f"{a / q:.2f}x" if a and q else "–",
        (a / q >= 5) if a and q else None)
    mis = [c for c in cells if c["system"] == "node" and c["clients"] in (32, 200)]
    total = sum(c["misdelivered"] for c in mis)
    add("zero misdelivered replies at 32 and 200 clients (node)", str(total) if mis else "–",
        (total == 0) if mis else None)
    for s in ("local-async", "local-sync"):
        c = _find(cells, s, "node", 32)
        p99 = c["latency_ms"]["p99"] if c else None
        add(f"p99 < 20 ms at 32 clients, {s}", f"{p99:.1f} ms" if p99 else "–",
            (p99 < 20) if p99 else None)
    for r in results.get("idle", []):
        if r["system"] == "node":
            kb = r["kb_per_connection"]
            add(f"{r['requested']:,} idle connections < 30 KB each",
                f"{kb:.1f} KB ({r['connections']:,} connections)" if kb else "–",
                (kb < 30 and r["connections"] == r["requested"]) if kb else None)
    return lines


def write_doc(results: dict[str, Any], path: str = DOC) -> None:
    body = render(results)
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + BEGIN + "\n" + body + "\n" + END + tail
    else:
        text = ("# Performance\n\nSee bench/ and `bash bench/run.sh`.\n\n## Results\n\n"
                + BEGIN + "\n" + body + "\n" + END + "\n")
    with open(path, "w") as f:
        f.write(text)


# -- profiling --------------------------------------------------------------------------------------

def profile(opts: argparse.Namespace) -> None:
    """py-spy (sampling, low overhead) and cProfile (call counts) of our node under the local
    async scenario at 32 clients; summaries go to bench/results/<stamp>/profile-*.txt."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(REPO, "bench", "results", f"profile-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    raise_nofile()
    load = ["--app", "bench", "--type", opts.type, "--clients", str(opts.clients),
            "--warmup", "1", "--duration", str(opts.seconds)]
    # 1. py-spy on an unmodified node
    node = Server("node-master", logdir).start()
    try:
        raw = os.path.join(logdir, "pyspy.txt")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(node.pid), "--rate", "500",
                                "--duration", str(int(opts.seconds) + 1), "--format", "raw",
                                "--output", raw, "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = run_generator(["--url", eio_url(node.port), "--server-pid", str(node.pid), *load],
                          logdir, 120)
        spy.wait(60)
        log(f"under py-spy: {r['rps']} req/s, server {r.get('server_us_per_request')} µs/req")
    finally:
        node.stop()
    report = [f"# py-spy, node-master, {opts.type}, {opts.clients} clients, {r['rps']} req/s "
              f"({r['completed']} requests in the window)", ""]
    report += pyspy_summary(raw, top=opts.top)
    # 2. cProfile for call counts
    prof = os.path.join(logdir, "node.pstats")
    node = Server("node-master", logdir, "--cprofile", prof, name="node-cprofile").start()
    try:
        r2 = run_generator(["--url", eio_url(node.port), *load], logdir, 120)
    finally:
        node.stop()
    report += ["", f"# cProfile ({r2['rps']} req/s under the profiler; "
                   f"{r2['finals_total']} replies in all)", ""]
    report += cprofile_summary(prof, r2["finals_total"], top=opts.top)
    path = os.path.join(logdir, "profile.txt")
    with open(path, "w") as f:
        f.write("\n".join(report) + "\n")
    print("\n".join(report))
    log(f"profile written to {path}")


def pyspy_summary(raw_path: str, top: int = 30) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    selfc: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [x for x in stack.split(";") if not x.startswith(("process ", "thread "))]
            total += n
            if frames:
                leaf = _short(frames[-1])
                selfc[leaf] = selfc.get(leaf, 0) + n
            for fr in {_short(x) for x in frames}:
                incl[fr] = incl.get(fr, 0) + n
    lines = [f"{total} samples (all threads; idle threads are not sampled)", "",
             "## self time", ""]
    for name, n in sorted(selfc.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / total:5.1f}%  {name}")
    lines += ["", "## inclusive time", ""]
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top * 2]:
        lines.append(f"{100 * n / total:5.1f}%  {name}")
    return lines


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" with the package kept for our code
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def cprofile_summary(path: str, replies: int, top: int = 30) -> list[str]:
    import pstats

    st = pstats.Stats(path)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{fn} ({'/'.join(file.split('/')[-2:])}:{line})"))
    total = sum(r[0] for r in rows) or 1
    lines = ["## by own time (tottime): calls per reply, µs per reply", ""]
    for tt, ct, nc, name in sorted(rows, key=lambda r: -r[0])[:top]:
        lines.append(f"{100 * tt / total:5.1f}%  {nc / max(1, replies):6.2f} calls/reply  "
                     f"{tt / max(1, replies) * 1e6:7.1f} µs/reply  {name}")
    lines += ["", "## by cumulative time", ""]
    for tt, ct, nc, name in sorted(rows, key=lambda r: -r[1])[:top]:
        lines.append(f"{ct / max(1, replies) * 1e6:8.1f} µs/reply cumulative  "
                     f"{nc / max(1, replies):6.2f} calls/reply  {name}")
    return lines


# -- command line -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["profile"]:
        p = argparse.ArgumentParser(prog="bench.runner profile")
        p.add_argument("--seconds", type=float, default=10)
        p.add_argument("--clients", type=int, default=32)
        p.add_argument("--type", default="echo")
        p.add_argument("--top", type=int, default=30)
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
    opts.duration = opts.duration or (1.5 if opts.quick else 2.0)
    opts.warmup = opts.warmup if opts.warmup is not None else (0.3 if opts.quick else 0.5)
    opts.recovery_trials = opts.recovery_trials or (1 if opts.quick else 3)
    results = run(opts)
    if not opts.no_doc:
        write_doc(results, opts.doc)
        log(f"wrote {opts.doc}")
    print(render(results))


if __name__ == "__main__":
    main()
