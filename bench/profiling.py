"""
Profiling our node under load: py-spy (sampling, low overhead) for where the time goes, then
cProfile for call counts per reply. ``bash bench/run.sh profile`` (or
``python -m bench.runner profile --seconds 10 --clients 32 --type echo``);
``bash bench/run.sh profile --seed test`` (or ``login``): cProfile of both seed nodes under
the seed's own workload.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from .procs import REPO, Server, eio_url, log, raise_nofile
from .runner import run_generator


def profile(opts: argparse.Namespace) -> None:
    """py-spy (sampling, low overhead) and cProfile (call counts) of our node under the local
    async scenario at 32 clients; summaries go to bench/results/<stamp>/profile-*.txt.
    ``--seed test|login``: cProfile of both seed nodes (seed-master, seed-ms) under the seed's
    own workload instead (``profile_seed``)."""
    if getattr(opts, "seed", None):
        return profile_seed(opts)
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


def profile_seed(opts: argparse.Namespace) -> None:
    """cProfile of the seed's master and micro-service (bench/servers.py seed-master, seed-ms)
    under its own workload: ``test`` after a login, or the forwarded ``login``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(REPO, "bench", "results", f"profile-seed-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    raise_nofile()
    load = (["--app", "jwt", "--setup-login", "rob:secret", "--type", "test"] if opts.seed == "test"
            else ["--app", "jwt", "--request", "login", "--user", "rob", "--echo", "none"])
    load += ["--clients", str(opts.clients), "--warmup", "1", "--duration", str(opts.seconds)]
    stats = {name: os.path.join(logdir, f"{name}.pstats") for name in ("seed-master", "seed-ms")}
    ms = Server("seed-ms", logdir, "--cprofile", stats["seed-ms"]).start()
    try:
        master = Server("seed-master", logdir, "--ms-url", f"http://127.0.0.1:{ms.port}",
                        "--cprofile", stats["seed-master"]).start()
        try:
            r = run_generator(["--url", eio_url(master.port), *load], logdir, 120)
        finally:
            master.stop()
    finally:
        ms.stop()
    report = [f"# cProfile, seed {opts.seed}, {opts.clients} clients, {r['rps']} req/s under the "
              f"profiler ({r['finals_total']} replies in all); main threads only"]
    for name, path in stats.items():
        report += ["", f"## {name}", ""] + cprofile_summary(path, r["finals_total"], top=opts.top)
    out = os.path.join(logdir, "profile.txt")
    with open(out, "w") as f:
        f.write("\n".join(report) + "\n")
    print("\n".join(report))
    log(f"profile written to {out}")


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
    for (file, line, fn), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, ct, nc, f"{fn} ({'/'.join(file.split('/')[-2:])}:{line})"))
    total = sum(r[0] for r in rows) or 1
    lines = ["## by own time (tottime): calls per reply, µs per reply", ""]
    for tt, _ct, nc, name in sorted(rows, key=lambda r: -r[0])[:top]:
        lines.append(f"{100 * tt / total:5.1f}%  {nc / max(1, replies):6.2f} calls/reply  "
                     f"{tt / max(1, replies) * 1e6:7.1f} µs/reply  {name}")
    lines += ["", "## by cumulative time", ""]
    for _tt, ct, nc, name in sorted(rows, key=lambda r: -r[1])[:top]:
        lines.append(f"{ct / max(1, replies) * 1e6:8.1f} µs/reply cumulative  "
                     f"{nc / max(1, replies):6.2f} calls/reply  {name}")
    return lines
