#!/usr/bin/env bash
# Run every benchmark (issue 6) and write docs/performance.md.
#   bash bench/run.sh            # full set: 5 rounds, idle connections, link recovery (~10 min)
#   bash bench/run.sh --quick    # 1 round, shorter cells (~3 min)
#   bash bench/run.sh profile    # py-spy + cProfile of our node, local async, 32 clients
#   bash bench/run.sh rest [--rounds 3] [--duration 2]   # REST: floor, local, forwarded, QEWD.js
# Other options: python -m bench.runner --help. Raw results and server logs: bench/results/.
# Servers run on CPU 1 and the load generator on CPU 0; the QEWD.js peer (../shared/qewd-peer)
# is used if it runs (or can be started), moved to CPU 1 for the run and put back after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
# 10,000 idle connections need more descriptors than the usual 1024 on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The generator is faster with uvloop and orjson; both are optional. py-spy only for `profile`.
want=(uvloop orjson)
[[ "${1:-}" == "profile" ]] && want+=(py-spy)
for pkg in "${want[@]}"; do
  mod="${pkg//-/_}"; [[ "$pkg" == "py-spy" ]] && mod=""
  if [[ -n "$mod" ]]; then "$PY" -c "import $mod" 2>/dev/null && continue
  else command -v py-spy >/dev/null && continue; fi
  "$PY" -m pip install -q "$pkg" >/dev/null 2>&1 || echo "[bench] could not install $pkg (optional)" >&2
done
command -v taskset >/dev/null || echo "[bench] taskset not found: processes will not be pinned" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${1:-}" == "rest" ]]; then shift; exec "$PY" -m bench.rest "$@"; fi
exec "$PY" -m bench.runner "$@"
