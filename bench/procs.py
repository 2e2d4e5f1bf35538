"""
Processes for the benchmarks: the bench servers, the QEWD.js reference peer, CPU pinning and
scheduling priority, and what /proc says about them (RSS, children).
"""

from __future__ import annotations

import os
import resource
import select
import signal
import socket
import subprocess
import sys
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_KIT = os.environ.get("QEWD_PEER_DIR",
                          os.path.join(os.path.dirname(REPO), "shared", "qewd-peer"))
QEWD_MASTER_PORT = int(os.environ.get("QEWD_MASTER_PORT", "18080"))
QEWD_MS_PORT = int(os.environ.get("QEWD_MS_PORT", "13000"))
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1")
GEN_CPU = os.environ.get("BENCH_GEN_CPU", "0")


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
    return {"rt": f"all at SCHED_RR priority {RT_PRIO} (worker threads and worker processes "
                  f"one level above: {int(RT_PRIO) + 1})", "nice": f"all at nice {NICE}",
            "off": "at normal priority"}[_priority()]


def taskset(cpu: str, priority: bool = True) -> list[str]:
    """The command prefix that pins to ``cpu`` and (``priority``) sets the bench's priority."""
    return ((["taskset", "-c", cpu] if cpu and _have("taskset") else [])
            + (priority_prefix() if priority else []))


def set_priority(pid: int, on: bool, worker: bool = False) -> None:
    """Give every thread of ``pid`` the bench's priority (``on``) or the normal one.

    ``worker``: a worker process (QEWD.js's forked workers) gets one real-time level above its
    master, as our node's pool threads do (bench/servers.py ``workers_above_reactor``): on one
    shared CPU at equal SCHED_RR priority a woken worker would wait for its busy master to
    block, up to a 100 ms slice; the normal scheduler lets it in at once."""
    mode = _priority()
    if mode == "rt":
        prio = str(int(RT_PRIO) + 1) if worker else RT_PRIO
        cmd = ["chrt", "-a", "-r", "-p", prio, str(pid)] if on else \
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
            self.started_here = True
        return self.up()

    started_here = False  # ensure() started it: the run stops it again at the end

    def stop(self, logdir: str) -> None:
        log("stopping the QEWD.js peer (stop-peer.sh), as it was before the run")
        self._script("stop-peer.sh", logdir)

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
        workers = {c for n in ("master", "ms") if self.pid(n) for c in children(self.pid(n))}
        for pid in self.pids():
            if pid not in self._masks:
                mask = subprocess.run(["taskset", "-p", str(pid)], capture_output=True,
                                      text=True).stdout.strip().rsplit(" ", 1)[-1]
                self._masks[pid] = mask or "ff"
            subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], capture_output=True)
            set_priority(pid, priority, worker=pid in workers)

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
