"""
The benchmark report: markdown tables from the runner's results, the issue's targets, and the
results section of docs/performance.md (only the part between the two markers is replaced).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from .procs import GEN_CPU, REPO, SERVER_CPU, priority_text

DOC = os.path.join(REPO, "docs", "performance.md")
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def paired_ratio(a: dict | None, b: dict | None) -> float | None:
    """``a``'s throughput over ``b``'s: the median of the per-round ratios when both cells ran
    in every round (each round measures both systems a minute or two apart, so drift on a
    shared machine cancels out), else the ratio of the medians."""
    if not a or not b or not a.get("rps") or not b.get("rps"):
        return None
    ra, rb = a.get("rps_runs") or [], b.get("rps_runs") or []
    if ra and len(ra) == len(rb) and all(ra) and all(rb):
        return statistics.median(x / y for x, y in zip(ra, rb))
    return a["rps"] / b["rps"]


def _ratio(a: dict | None, b: dict | None) -> str:
    r = paired_ratio(a, b)
    return f"{r:.2f}" if r else "–"


def _find(cells: list[dict[str, Any]], scenario: str, system: str, n: int) -> dict | None:
    for c in cells:
        if c["scenario"] == scenario and c["system"] == system and c["clients"] == n:
            return c
    return None


Columns = dict[str, tuple[str, str]]  # a row's cells by name: (scenario, system)


def systems(**scenarios: str) -> Columns:
    """Each system's cell of a scenario, named by the system (``floor_tuned``: "floor-tuned")."""
    return {name: (scenario, name.replace("_", "-")) for name, scenario in scenarios.items()}


def matched(cells: list[dict[str, Any]], rows: Any, clients: Any,
            need: tuple[str, ...] = ("node",)) -> Any:
    """The table rows: for each ``(label, columns)`` of ``rows`` and each client count, the
    label, the count and the cells of ``columns`` (None where one did not run), when every cell
    named in ``need`` ran."""
    for label, columns in rows:
        for n in clients:
            found = {name: _find(cells, scenario, system, n)
                     for name, (scenario, system) in columns.items()}
            if all(found[name] is not None for name in need):
                yield label, n, found


#: Our bench handlers against the floors and QEWD.js (the echo rows and the latency table).
BENCH_ROWS = (
    ("local async (echo)", systems(node="local-async", floor="local", qewd="local")),
    ("local sync (pool, echo)", systems(node="local-sync", floor="local", qewd="local")),
    ("local, QEWD.js's `test` work", systems(node="local-qewd-app", floor="local", qewd="local")),
    ("forwarded (bench `login`)", systems(node="forwarded", floor="forwarded", qewd="forwarded")),
)
TUNED_ROWS = tuple((label, systems(node=scenario, floor="local", floor_tuned="local",
                                    floor_qewd="local"))
                   for label, scenario in (("local async", "local-async"),
                                           ("local sync (pool)", "local-sync")))


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    o = results["options"]
    cells = results.get("cells", [])
    clients = sorted({c["clients"] for c in cells if c["scenario"] != "ceiling"})
    out = []
    out.append(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
               f"`bash bench/run.sh{' --quick' if o.get('quick') else ''}`: "
               f"{o['rounds']} round(s) of {o['duration']} s per cell after {o['warmup']} s "
               f"warm-up; every figure is the median of the rounds, and every ratio the median "
               f"of the per-round ratios.")
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

    out.extend(like_for_like(cells, clients))
    out.append("### Our bench handlers against the floors (echo rows) and QEWD.js "
               "(completed requests/s)")
    out.append("")
    out.append("These rows run the bench's own handlers (`bench/apps/`: an `echo` that "
               "broadcasts nothing, a micro-service `login` written as `async def`) against "
               "QEWD.js's `test` and `login`: they measure our stack against its floor, not "
               "like for like against QEWD.js (the table above does that).")
    out.append("")
    out.append("| scenario | clients | floor | node | QEWD.js | node ÷ floor | node ÷ QEWD.js |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, n, c in matched(cells, BENCH_ROWS, clients):
        node, fl, q = c["node"], c["floor"], c["qewd"]
        out.append(f"| {label} | {n} | {_f(fl and fl['rps'])} | {_f(node['rps'])} | "
                   f"{_f(q and q['rps'])} | {_ratio(node, fl)} | {_ratio(node, q)} |")
    out.append("")
    out.append("Floor for the local rows: the bare Autobahn server (canned reply); for the "
               "forwarded rows: the bare relay (front + back). QEWD.js local: the peer's `test` "
               "handler (it also broadcasts `{test: 'message 2'}` to every connected socket, so "
               "with N clients it sends N + 1 frames per request); QEWD.js forwarded: the peer's "
               "`login` (rob/secret) through its micro-service.")
    out.append("")
    tuned_rows = []
    for label, n, c in matched(cells, TUNED_ROWS, clients, need=("node", "floor_tuned")):
        node, fl, ft, fq = c["node"], c["floor"], c["floor_tuned"], c["floor_qewd"]
        tuned_rows.append(
            f"| {label} | {n} | {_f(fl and fl['rps'])} | {_f(ft['rps'])} | "
            f"{_f(node['rps'])} | {_ratio(ft, fl)} | {_ratio(node, ft)} | "
            f"{_ratio(fq, ft) if fq else '–'} | "
            f"{_f(ft['server_us_per_request'])} | {_f(fq and fq['server_us_per_request'])} | "
            f"{_f(node['server_us_per_request'])} |")
    if tuned_rows:
        out.append("#### Against a floor with the node's own Autobahn changes")
        out.append("")
        out.append("The floor above is stock Autobahn, as the issue defines it. Our node also "
                   "changes Autobahn's per-frame path (`qewd_twisted/transports/framing.py`: "
                   "no debug-log formatting, small frames unmasked with one XOR, text frames "
                   "built directly); "
                   "the tuned floor is the same canned-reply server with those changes, so "
                   "`node ÷ tuned floor` is the cost of QEWD's own work alone. The essential "
                   "floor (`floor-qewd`, bench/servers.py) is the tuned floor plus only the "
                   "steps no QEWD node can skip for the bench's `echo` (parse the message, find "
                   "the token in the cache and check its expiry, build the session, run the "
                   "handler, re-issue the token, encode the reply; no admission, accounting, "
                   "deadline or error handling): its ratio is a ceiling for `node ÷ tuned "
                   "floor` in this runtime.")
        out.append("")
        out.append("| scenario | clients | floor | tuned floor | node | tuned ÷ floor | "
                   "node ÷ tuned floor | essential ÷ tuned floor | tuned floor CPU µs/request | "
                   "essential CPU µs/request | node CPU µs/request |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        out += tuned_rows
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

    for label, n, c in matched(cells, BENCH_ROWS, clients):
        out.append(f"| {label} | {n} | {lat(c['floor'])} | {lat(c['node'])} | {lat(c['qewd'])} |")
    out.append("")
    out.extend(polling_section(cells))
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
        out.append(f"Driving the tuned floor (the fastest server here) with 32 clients x 8 "
                   f"requests in flight it completed "
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
    out.append("### Targets (issues 6 and 19)")
    out.append("")
    out.extend(targets(results))
    out.append("")
    out.append(f"Raw results: `{os.path.relpath(results['logdir'], REPO)}/results.json` "
               "(not committed).")
    return "\n".join(out)


def polling_section(cells: list[dict[str, Any]]) -> list[str]:
    """Engine.IO long-polling rows (issue 14): polling-only clients against QEWD.js's polling,
    and upgraded connections against WebSocket-only ones."""
    rows = []
    polling = (("polling only, QEWD.js's `test` work",
                {"node": ("polling", "node"), "other": ("polling", "qewd")}, ""),
               ("upgraded (polling, then WebSocket), async echo",
                {"node": ("upgraded", "node"), "other": ("local-async", "node")},
                " (WebSocket only)"))
    for label, columns, note in polling:
        for _, n, c in matched(cells, [(label, columns)], (1, 32)):
            node, other = c["node"], c["other"]
            rows.append(f"| {label} | {n} | {_f(node['rps'])} | "
                        f"{_f(other and other['rps'])}{note} | {_ratio(node, other)} | "
                        f"{_f(node['latency_ms']['p99'], 1)} / "
                        f"{_f(other and other['latency_ms']['p99'], 1)} | "
                        f"{node['misdelivered']} |")
    if not rows:
        return []
    return ["### Long-polling (Engine.IO 3)", "",
            "| scenario | clients | node req/s | compared with | ratio | p99 ms (node / other) "
            "| misdelivered |", "|---|---:|---:|---:|---:|---|---:|", *rows, "",
            "Polling clients keep one GET waiting and POST what they send (several packets per "
            "POST while one is in flight), as socket.io-client 2 does with "
            "`transports: ['polling']` (bench/pollgen.py). Both servers broadcast "
            "`{test: 'message 2'}` to every socket per request (QEWD.js's `test`).", ""]

SEED_ROWS = (("`test` (after one login; broadcasts `{test: 'message 2'}` to every socket)",
              "seed-test"),
             ("forwarded `login` (rob / secret, through the micro-service)", "seed-login"))


def like_for_like(cells: list[dict[str, Any]], clients: list[int]) -> list[str]:
    """The first table (issue 19): the seed's examples/jwt nodes against the QEWD.js peer,
    same handlers, same work, paired in every round."""
    def lat(c: dict | None) -> str:
        if c is None:
            return "–"
        return f"{_f(c['latency_ms']['p50'], 1)} / {_f(c['latency_ms']['p99'], 1)}"

    def mis(c: dict | None) -> str:
        return "–" if c is None else f"{c['misdelivered']}"

    rows = []
    seed_rows = [(label, systems(node=scenario, qewd=scenario)) for label, scenario in SEED_ROWS]
    for label, n, c in matched(cells, seed_rows, clients):
        node, q = c["node"], c["qewd"]
        rows.append(
            f"| {label} | {n} | {_f(node['rps'])} | {_f(q and q['rps'])} | "
            f"{_ratio(node, q)} | {lat(node)} | {lat(q)} | "
            f"{_f(node['server_us_per_request'])} | {_f(q and q['server_us_per_request'])} | "
            f"{_f(node.get('broadcast_fps'))} | {_f(q and q.get('broadcast_fps'))} | "
            f"{mis(node)} / {mis(q)} |")
    if not rows:
        return []
    return [
        "### Like for like: the seed's own workload",
        "",
        "Our examples/jwt master and login micro-service (`bench/servers.py` `seed-master`, "
        "`seed-ms`: the example's own config and handlers, plain `def`s in a pool of 2 "
        "threads) against the unmodified QEWD.js peer running the same example (master, "
        "micro-service, `poolSize: 2` worker processes each, Redis). The same generator "
        "arguments for both; the two cells of a row run back to back in every round, in "
        "alternating order. CPU per request counts every process of each system over the "
        "measured window (ours: master + micro-service; QEWD.js: master + micro-service + "
        "their forked workers + Redis). Broadcast frames: `{test: 'message 2'}` frames the "
        "clients received per second.",
        "",
        "| request | clients | node req/s | QEWD.js req/s | node ÷ QEWD.js | node p50 / p99 ms "
        "| QEWD.js p50 / p99 ms | node CPU µs/request | QEWD.js CPU µs/request | node broadcast "
        "frames/s | QEWD.js broadcast frames/s | misdelivered node / QEWD.js |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|",
        *rows,
        "",
    ]


def targets(results: dict[str, Any]) -> list[str]:
    cells = results.get("cells", [])
    lines = ["| target | measured | |", "|---|---|---|"]

    def add(name: str, value: str, ok: bool | None) -> None:
        lines.append(f"| {name} | {value} | {'met' if ok else 'not met' if ok is False else '–'} |")

    def ratio(s: str, sys_: str, n: int, s2: str, sys2: str) -> float | None:
        return paired_ratio(_find(cells, s, sys_, n), _find(cells, s2, sys2, n))

    for scenario, name in (("seed-test", "seed's `test`"), ("seed-login", "forwarded `login`")):
        for n, want in ((32, 5), (1, 3)):
            r = ratio(scenario, "node", n, scenario, "qewd")
            if r:
                add(f"issue 19: {name} ≥ {want}x QEWD.js, {n} client(s)", f"{r:.2f}x",
                    r >= want)
    seed = [c for c in cells if c["system"] == "node" and c["scenario"].startswith("seed-")]
    if seed:
        total = sum(c["misdelivered"] for c in seed)
        add("issue 19: zero misdelivered replies, seed rows (node)", str(total), total == 0)

    for n in (1, 32):
        r = ratio("local-async", "node", n, "local", "floor")
        add(f"local async ≥ 70% of the floor, {n} client(s)",
            f"{r:.0%}" if r else "–", (r >= 0.70) if r else None)
    for n in (1, 32, 200):
        r = ratio("forwarded", "node", n, "forwarded", "floor")
        if r:
            add(f"forwarded ≥ 60% of the bare relay, {n} client(s)", f"{r:.0%}", r >= 0.6)
    r = ratio("local-async", "node", 1, "local", "qewd")
    add("local ≥ 3x QEWD.js, 1 client", f"{r:.2f}x" if r else "–", (r >= 3) if r else None)
    r = ratio("forwarded", "node", 1, "forwarded", "qewd")
    add("forwarded ≥ 5x QEWD.js, 1 client", f"{r:.2f}x" if r else "–", (r >= 5) if r else None)
    r = ratio("polling", "node", 32, "polling", "qewd")
    add("polling ≥ 3x QEWD.js's polling, 32 clients", f"{r:.2f}x" if r else "–",
        (r >= 3) if r else None)
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
