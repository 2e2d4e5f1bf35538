"""
``processes: 1`` against ``processes: N`` on this machine (issue 16 item 5), with the existing
local rows of bench/runner.py (``local-async``: ``async def`` echo; ``local-sync``: plain
``def`` echo in the worker pool).

    python -m bench.processes [--processes 1 2] [--rounds 5] [--duration 10] [--clients 32]

One node-master (bench/servers.py) per process count, started once and kept for the run (the
one with more processes is a supervisor of node processes, as ``twistd qewd`` runs it). Each
round runs every scenario against every node back to back, the order swapped every other round
(paired rounds: drift on a shared machine hits both alike); the table shows the medians over
the rounds of requests/s and of the server CPU per request (µs, every process of the node
summed: the supervisor and its node processes), the context switches per request (voluntary +
involuntary, every thread of every process of the node, read from ``/proc`` before and after
each cell; requests counted as the cell's rate over its warm-up and measured window), and each
count's ratio to the first.

Unlike bench/runner.py nothing is pinned and everything runs at normal priority: the point is
what N processes make of every core, with the load generator sharing them (the issue's
setting). ``--nice -19`` runs the nodes and the generator at that nice value instead: the same
scheduling among them, less of other jobs' in between on a shared machine. Results go to stdout (a table) and ``bench/results/processes-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from .procs import REPO, Server, children, env, eio_url, log, raise_nofile, renice
from .report import median

SCENARIOS = {
    "local-async": ["--app", "bench", "--type", "echo"],
    "local-sync": ["--app", "bench", "--type", "echoSync"],
}


def generate(args: list[str], logdir: str, timeout: float, nice: int = 0) -> dict[str, Any]:
    """One load cell (bench.loadgen), unpinned, at normal priority (``nice``: at that nice
    value)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    with open(os.path.join(logdir, "loadgen.log"), "a") as errf:
        p = subprocess.run([*prefix, sys.executable, "-m", "bench.loadgen", *args], cwd=REPO,
                           env=env(),
                           stdout=subprocess.PIPE, stderr=errf, text=True, timeout=timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode or not lines:
        raise RuntimeError(f"load generator failed ({p.returncode}): {p.stdout[-300:]}")
    return json.loads(lines[-1])


def switches(pid: int) -> int | None:
    """Context switches (voluntary + involuntary) so far of every thread of ``pid`` and of
    its child processes, from /proc (None where /proc has no answer)."""
    total, pids = 0, [pid]
    try:
        while pids:
            p = pids.pop()
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None
    return total


def run(opts: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(REPO, "bench", "results", f"processes-{stamp}")
    os.makedirs(logdir, exist_ok=True)
    nodes: dict[int, Server] = {}
    results: dict[str, dict[int, list[dict[str, Any]]]] = {
        s: {n: [] for n in opts.processes} for s in opts.scenarios}
    try:
        for n in opts.processes:
            server = Server("node-master", logdir, "--processes", str(n), cpu="",
                            name=f"node-processes-{n}")
            server.priority = False
            nodes[n] = server.start(timeout=60)
            if opts.nice:
                for pid in [server.pid, *children(server.pid)]:
                    renice(pid, opts.nice)
            log(f"node with {n} process(es): pid {server.pid}, port {server.port}")
        base = ["--warmup", str(opts.warmup), "--duration", str(opts.duration),
                "--clients", str(opts.clients)]
        for rnd in range(opts.rounds):
            order = list(opts.processes) if rnd % 2 == 0 else list(reversed(opts.processes))
            for scenario in opts.scenarios:
                for n in order:
                    node = nodes[n]
                    args = ["--url", eio_url(node.port), "--server-pid", str(node.pid), *base,
                            *SCENARIOS[scenario]]
                    before = switches(node.pid)
                    try:
                        r = generate(args, logdir, timeout=120 + opts.clients, nice=opts.nice)
                    except Exception as e:  # a failed cell is reported, the run goes on
                        log(f"round {rnd + 1} {scenario} processes={n}: {e}")
                        continue
                    after = switches(node.pid)
                    requests = r["rps"] * (opts.warmup + opts.duration)
                    r["switches_per_request"] = (round((after - before) / requests, 2)
                                                 if requests and None not in (before, after)
                                                 else None)
                    results[scenario][n].append(r)
                    log(f"round {rnd + 1} {scenario} processes={n}: {r['rps']} req/s, "
                        f"server {r.get('server_us_per_request')} us/req over "
                        f"{r.get('server_processes')} processes, "
                        f"{r['switches_per_request']} context switches/req, errors {r['errors']}")
    finally:
        for server in nodes.values():
            server.stop()
    summary = []
    for scenario in opts.scenarios:
        first = None
        for n in opts.processes:
            rs = results[scenario][n]
            if not rs:
                continue
            rps = median([r["rps"] for r in rs])
            us = median([r.get("server_us_per_request") for r in rs
                         if r.get("server_us_per_request") is not None] or [None])
            cs = median([r["switches_per_request"] for r in rs
                         if r.get("switches_per_request") is not None] or [None])
            first = rps if first is None else first
            summary.append({"scenario": scenario, "processes": n, "rounds": len(rs),
                            "rps": rps, "server_us_per_request": us,
                            "switches_per_request": cs,
                            "ratio": round(rps / first, 3) if first else None,
                            "errors": sum(r["errors"] for r in rs),
                            "timeouts": sum(r["timeouts"] for r in rs)})
    out = {"when": stamp, "clients": opts.clients, "rounds": opts.rounds,
           "duration": opts.duration, "cpus": os.cpu_count(), "rows": summary,
           "cells": results}
    with open(os.path.join(REPO, "bench", "results", f"processes-{stamp}.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def table(out: dict[str, Any]) -> str:
    lines = [f"{out['clients']} clients, {out['rounds']} paired rounds of {out['duration']} s, "
             f"{out['cpus']} CPUs, medians",
             "",
             "| scenario | processes | req/s | × processes=first | server µs/request "
             "| context switches/request | errors |",
             "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['scenario']} | {r['processes']} | {r['rps']} | {r['ratio']} | "
                     f"{r['server_us_per_request']} | {r['switches_per_request']} | {r['errors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.processes", description=__doc__.split("\n\n")[1])
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS),
                   default=list(SCENARIOS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--nice", type=int, default=0,
                   help="run the nodes (every thread of every process) and the generator at "
                        "this nice value, e.g. -19 on a machine shared with other jobs (root)")
    opts = p.parse_args(argv)
    print(table(run(opts)))


if __name__ == "__main__":
    main()
