#!/usr/bin/env bash
# The QEWD.js reference peer for tests/interop (a real QEWD.js 2.52.3 master + micro-service
# on Redis, loopback only): start | stop | status.
#   bash scripts/peer.sh start    # install what is missing, start redis, micro-service, master
#   bash scripts/peer.sh stop     # stop what the kit's pid files name
#   bash scripts/peer.sh status   # exit 0 when redis, micro-service and master all answer
# The kit is ${QEWD_PEER_KIT:-<repo>/../shared/qewd-peer}. Its run-peer.sh installs the Node
# packages (npm ci) and redis-server (Debian) if missing, and runs from a writable copy
# (${QEWD_PEER_HOME:-${TMPDIR:-/tmp}/qewd-peer}) when the kit folder is read-only.
# Ports: QEWD_MASTER_PORT (18080), QEWD_MS_PORT (13000), QEWD_REDIS_PORT (16379); the tests
# read QEWD_PEER_MASTER / QEWD_PEER_MS (host:port), which default to the same.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="${QEWD_PEER_KIT:-$REPO/../shared/qewd-peer}"
KIT="$(cd "$KIT" 2>/dev/null && pwd || echo "$KIT")"
export QEWD_MASTER_PORT="${QEWD_MASTER_PORT:-18080}"
export QEWD_MS_PORT="${QEWD_MS_PORT:-13000}"
export QEWD_REDIS_PORT="${QEWD_REDIS_PORT:-16379}"

say() { echo "[peer.sh] $*"; }

kit_ok() {
  [[ -f "$KIT/run-peer.sh" && -f "$KIT/stop-peer.sh" ]] && return 0
  say "no QEWD.js peer kit at $KIT (set QEWD_PEER_KIT)" >&2
  return 1
}

# Where run-peer.sh runs the peer from (same rule as the kit's scripts).
run_dir() {
  if [[ -w "$KIT" ]]; then (cd "$KIT" && pwd); else echo "${QEWD_PEER_HOME:-${TMPDIR:-/tmp}/qewd-peer}"; fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

status() {
  local ok=0 name port
  for name in redis:$QEWD_REDIS_PORT ms:$QEWD_MS_PORT master:$QEWD_MASTER_PORT; do
    port="${name#*:}"
    if listening "$port"; then say "${name%%:*} 127.0.0.1:$port up"; else say "${name%%:*} 127.0.0.1:$port down"; ok=1; fi
  done
  say "kit $KIT, run folder $(run_dir)"
  return $ok
}

case "${1:-}" in
  start)
    kit_ok || exit 1
    if ! command -v node >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      say "node is missing: installing nodejs and npm (Debian)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    bash "$KIT/run-peer.sh" all || { say "run-peer.sh failed (logs in $(run_dir)/logs)" >&2; exit 1; }
    status
    ;;
  stop)
    kit_ok || exit 1
    bash "$KIT/stop-peer.sh" all
    ;;
  status)
    status
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
