"""
Interleaved A/B of two source trees: server CPU per request of the same bench server.

    python -m bench.ab --a ../main [--b .] [--kind node-master] [--type echo] \
        [--clients 32] [--rounds 4] [--duration 3]

Starts ``python -m bench.servers KIND`` from each tree (its own ``qewd_twisted`` and ``bench``
on ``PYTHONPATH``), both at once, on the server CPU, and runs the load generator against them
in the order A B B A A B ..., so drift on a shared machine falls on both alike. Prints each
run's server CPU µs per request (from /proc, over the measured window) and req/s, then the
medians. CPU per request, not req/s, is the figure to read on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from .procs import GEN_CPU, SERVER_CPU, eio_url, priority_prefix, raise_nofile
from .runner import run_generator


def _start(tree: str, kind: str, logdir: str, name: str, rt: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = (["taskset", "-c", SERVER_CPU] + (priority_prefix() if rt else [])
           + [sys.executable, "-m", "bench.servers", kind, "--port", "0"])
    err = open(os.path.join(logdir, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    line = p.stdout.readline().strip() if p.stdout else ""
    if not line.startswith("READY "):
        p.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    p.port = int(line.split()[1])  # type: ignore[attr-defined]
    return p


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--a", required=True, help="tree A (e.g. a checkout of main)")
    p.add_argument("--b", default=os.getcwd(), help="tree B (default: this one)")
    p.add_argument("--kind", default="node-master")
    p.add_argument("--type", default="echo", help="echo (async def) or echoSync (pool)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--rt", action="store_true",
                   help="servers at the bench's real-time priority (as bench/run.sh runs them; "
                        "the generator always is)")
    opts = p.parse_args(argv)
    raise_nofile()
    logdir = tempfile.mkdtemp(prefix="bench-ab-")
    trees = {"A": os.path.abspath(opts.a), "B": os.path.abspath(opts.b)}
    procs = {k: _start(t, opts.kind, logdir, k, opts.rt) for k, t in trees.items()}
    load = ["--app", "bench", "--type", opts.type, "--clients", str(opts.clients),
            "--warmup", str(opts.warmup), "--duration", str(opts.duration)]
    if opts.kind.startswith("floor"):
        load += ["--echo", "none"]
    results: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    try:
        for rnd in range(opts.rounds):
            for k in ("AB" if rnd % 2 == 0 else "BA"):
                proc = procs[k]
                r = run_generator(["--url", eio_url(proc.port), "--server-pid",  # type: ignore[attr-defined]
                                   str(proc.pid), *load], logdir, 120)
                results[k].append(r)
                print(f"round {rnd} {k}: {r['server_us_per_request']:7.1f} µs/request  "
                      f"{r['rps']:9.1f} req/s  errors {r['errors']} misdelivered "
                      f"{r['misdelivered']}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(15)
    for k, rs in results.items():
        us = [r["server_us_per_request"] for r in rs]
        rps = [r["rps"] for r in rs]
        print(f"{k} {trees[k]}: median {statistics.median(us):.1f} µs/request "
              f"(runs {', '.join(f'{u:.0f}' for u in us)}), median {statistics.median(rps):.0f} "
              f"req/s")
    print(f"generator on CPU {GEN_CPU}, servers on CPU {SERVER_CPU}; logs in {logdir}")


if __name__ == "__main__":
    main()
