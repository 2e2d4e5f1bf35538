#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: set-up (Python, Chromium, Node.js and the Node
# test clients), a private QEWD.js peer on ports of its own, then trial.
# Ends with the line "N passed, N failed, N skipped"; exits non-zero on any failure, when no
# test ran, or when something the tests require is missing or does not start.
#
# Nothing is optional: the only way to let tests skip is the named opt-out
# QEWD_TEST_ALLOW_SKIP=interop,node,browser,balancer (or "all"; tests/strict.py), which .ci/run never
# uses. Arguments are trial's (default: tests). QEWD_TEST_JOBS sets trial's -j (default 2).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
allow=",${QEWD_TEST_ALLOW_SKIP:-},"
allowed() { [[ "$allow" == *",$1,"* || "$allow" == *",all,"* ]]; }
say() { echo "[test] $*"; }

started=$(date +%s)
bash scripts/setup.sh || exit 1
bash scripts/setup-browser.sh || allowed browser || exit 1
bash scripts/setup-node.sh || allowed node || exit 1

# A real redis-server for tests/documents (each test run starts its own on a free loopback port).
if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
  { apt-get install -y -q redis-server >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; } \
    || { echo "[test] could not install redis-server"; exit 1; }
fi
# Debian's HAProxy and nginx for tests/integration/test_haproxy.py (each test runs its own in the
# foreground on a loopback port; the packages' own services are not used).
for pkg in haproxy nginx; do
  if ! command -v "$pkg" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$pkg" ]]; then
    { apt-get install -y -q "$pkg" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$pkg" >/dev/null; }; } \
      || { say "could not install $pkg"; allowed balancer || exit 1; }
  fi
done

mkdir -p test-artifacts
peer_dir="$PWD/test-artifacts/peer"
holder=""
cleanup() {
  if [[ -f "$peer_dir/stop-peer.sh" ]]; then bash scripts/peer.sh private-stop "$peer_dir" >/dev/null; fi
  if [[ -n "$holder" ]]; then kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null; holder=""; fi
}
trap cleanup EXIT

# The QEWD.js reference peer for tests/interop: our own redis, micro-service and master, on
# three ports that tests/ports.py holds for this run (bound, not listening, SO_REUSEADDR: only
# servers that set SO_REUSEADDR, as redis-server and Node.js do, can listen on them, and
# nothing else can take them meanwhile); peer.sh checks that each port's listener is the pid
# it started. The tests get the addresses from test-artifacts/peer/peer.env.
coproc HOLD { exec .venv/bin/python -m tests.ports 3; }
holder=$HOLD_PID
read -r -u "${HOLD[0]}" redis_port && read -r -u "${HOLD[0]}" ms_port \
  && read -r -u "${HOLD[0]}" master_port || { say "could not reserve ports"; exit 1; }
if QEWD_REDIS_PORT=$redis_port QEWD_MS_PORT=$ms_port QEWD_MASTER_PORT=$master_port \
     bash scripts/peer.sh private-start "$peer_dir"; then
  # shellcheck disable=SC1091
  source "$peer_dir/peer.env"
else
  say "the QEWD.js peer did not start (logs in $peer_dir/logs)"
  allowed interop || exit 1
  unset QEWD_PEER_MASTER QEWD_PEER_MS QEWD_PEER_DIR
fi

out=test-artifacts/trial.log
jobs="${QEWD_TEST_JOBS:-2}"
# -m twisted.trial (not the trial script) so the working tree's tests package is importable.
.venv/bin/python -m twisted.trial -j"$jobs" --temp-directory=test-artifacts/_trial_temp \
  "${@:-tests}" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
cleanup

summary=$(grep -E '^(PASSED|FAILED) \(' "$out" | tail -n 1)
num() { echo "$summary" | grep -oE "$1=[0-9]+" | cut -d= -f2 | head -n1; }
passed=$(num successes); passed=${passed:-0}
failures=$(num failures); errors=$(num errors); unexp=$(num unexpectedSuccesses); skips=$(num skips)
failed=$(( ${failures:-0} + ${errors:-0} + ${unexp:-0} ))
if [[ -z "$summary" ]]; then failed=$(( failed + 1 )); say "trial printed no summary"; fi
if [[ "$passed" -eq 0 ]]; then say "no test ran"; fi
say "wall time $(( $(date +%s) - started )) s (set-up included), trial -j$jobs"
echo "${passed} passed, ${failed} failed, ${skips:-0} skipped"
if [[ "$passed" -eq 0 || "$failed" -ne 0 || "$status" -ne 0 ]]; then exit 1; fi
