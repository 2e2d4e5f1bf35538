#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: set-up, Node test clients, then trial.
# Ends with a line "N passed, N failed"; exits non-zero on any failure or when no test ran.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh || exit 1
bash scripts/setup-browser.sh || exit 1
if command -v npm >/dev/null 2>&1; then
  (cd tests/js && { [[ -d node_modules/socket.io-client && -d node_modules/ewd-client ]] || npm ci --no-audit --no-fund --silent; }) \
    || { echo "[test] npm ci in tests/js failed"; exit 1; }
fi
# A real redis-server for tests/documents (each test run starts its own on a free loopback port).
if ! command -v redis-server >/dev/null 2>&1 && [[ ! -x /usr/bin/redis-server ]]; then
  { apt-get install -y -q redis-server >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; } \
    || { echo "[test] could not install redis-server"; exit 1; }
fi
# The QEWD.js reference peer for tests/interop (../shared/qewd-peer): started here and stopped
# on exit, even on failure; a peer that was already running is left alone.
if bash scripts/peer.sh status >/dev/null 2>&1; then
  echo "[test] QEWD.js peer already running: using it"
else
  trap 'bash scripts/peer.sh stop' EXIT
  bash scripts/peer.sh start || { echo "[test] QEWD.js peer did not start"; [[ -z "${CI:-}" ]] || exit 1; }
fi
mkdir -p test-artifacts
out=test-artifacts/trial.log
# -m twisted.trial (not the trial script) so the working tree's tests package is importable.
.venv/bin/python -m twisted.trial --temp-directory=test-artifacts/_trial_temp "${@:-tests}" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
summary=$(grep -E '^(PASSED|FAILED) \(' "$out" | tail -n 1)
num() { echo "$summary" | grep -oE "$1=[0-9]+" | cut -d= -f2 | head -n1; }
passed=$(num successes); passed=${passed:-0}
failures=$(num failures); errors=$(num errors); unexp=$(num unexpectedSuccesses); skips=$(num skips)
failed=$(( ${failures:-0} + ${errors:-0} + ${unexp:-0} ))
if [[ -z "$summary" ]]; then failed=$(( failed + 1 )); echo "[test] trial printed no summary"; fi
echo "${passed} passed, ${failed} failed, ${skips:-0} skipped"
if [[ "$passed" -eq 0 ]]; then echo "[test] no test ran"; exit 1; fi
if [[ "$failed" -ne 0 || "$status" -ne 0 ]]; then exit 1; fi
