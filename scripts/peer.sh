#!/usr/bin/env bash
# The QEWD.js reference peer for tests/interop (a real QEWD.js 2.52.3 master + micro-service
# on Redis, loopback only): start | stop | status.
#   bash scripts/peer.sh start    # install what is missing, start redis, micro-service, master
#   bash scripts/peer.sh stop     # stop what the kit's pid files name
#   bash scripts/peer.sh status   # exit 0 when redis, micro-service and master all answer
# The kit is ${QEWD_PEER_KIT:-<repo>/../shared/qewd-peer}. Its run-peer.sh installs the Node
# packages (npm ci) and redis-server (Debian) if missing. A kit laid without write bits is never
# written to (not even by root): start/stop then run a private copy in
# ${QEWD_PEER_RUN:-$TMPDIR/qewd-peer-run} (see private-start below).
# Ports: QEWD_MASTER_PORT (18080), QEWD_MS_PORT (13000), QEWD_REDIS_PORT (16379).
#
# The test suite's own peer (scripts/test.sh), never writing inside the kit:
#   bash scripts/peer.sh private-start DIR   # needs QEWD_{REDIS,MS,MASTER}_PORT set
#   bash scripts/peer.sh private-stop DIR
# private-start lays a writable copy of the kit in DIR (its node_modules entries are links into
# an installed tree: the kit's own when it has one, else ${QEWD_PEER_HOME:-$TMPDIR/qewd-peer},
# installed there once), starts redis, micro-service and master from DIR on the given ports,
# checks that each port's listening socket belongs to the pid the kit recorded (so a server
# that was already there is never taken for ours), and writes DIR/peer.env: the variables the
# interop tests read (QEWD_PEER_MASTER, QEWD_PEER_MS, QEWD_REDIS_PORT, QEWD_PEER_DIR).
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

# A kit laid without write bits (as CI lays ../shared) is never written to, even by root, for
# whom the kit's own `-w` test is always true: start/stop then use a private copy instead.
kit_read_only() {
  local perm
  perm="$(stat -c %A "$KIT" 2>/dev/null)" || return 1
  [[ ! -w "$KIT" || "${perm:2:1}" != w ]]
}
RUN_COPY="${QEWD_PEER_RUN:-${TMPDIR:-/tmp}/qewd-peer-run}"

# Where the peer runs from.
run_dir() {
  if kit_read_only; then echo "$RUN_COPY"; else (cd "$KIT" && pwd); fi
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

# An installed QEWD.js tree (node_modules with qewd 2.52.3) to link a private copy to.
installed() { [[ -f "$1/node_modules/qewd/package.json" && -e "$1/node_modules/tcp-netx/index.js" ]] \
  && grep -q '"version": "2.52.3"' "$1/node_modules/qewd/package.json"; }

copy_kit() {  # kit files without node_modules/run/logs/data into $1, writable
  mkdir -p "$1"
  (cd "$KIT" && tar cf - --exclude=./node_modules --exclude=./run --exclude=./logs --exclude=./data .) \
    | (cd "$1" && tar xf -) && chmod -R u+w "$1"
}

modules_home() {  # prints the folder whose node_modules a private copy links to
  if installed "$KIT"; then echo "$KIT"; return 0; fi
  local home="${QEWD_PEER_HOME:-${TMPDIR:-/tmp}/qewd-peer}"
  if ! installed "$home"; then
    say "installing the peer's Node packages in $home (the kit has none installed)" >&2
    copy_kit "$home" && (cd "$home" && bash ./run-peer.sh install) >&2 || return 1
  fi
  echo "$home"
}

# The socket listening on 127.0.0.1:$2 belongs to pid $1 (from /proc: no ss/netstat needed).
owns_port() {
  local pid="$1" hex inode
  hex=$(printf '%04X' "$2")
  for inode in $(awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p {print $10}' \
                   /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "socket:\[$inode\]" && return 0
  done
  return 1
}

private_start() {
  local dir="$1" from name port pid entry
  for name in QEWD_REDIS_PORT QEWD_MS_PORT QEWD_MASTER_PORT; do
    [[ -n "${!name:-}" ]] || { say "private-start: set $name" >&2; return 1; }
  done
  kit_ok || return 1
  if ! command -v node >/dev/null 2>&1; then say "node is required (scripts/test.sh installs it)" >&2; return 1; fi
  from="$(modules_home)" || { say "could not install the peer's Node packages" >&2; return 1; }
  rm -rf "$dir" && copy_kit "$dir" || return 1
  mkdir -p "$dir/node_modules"
  for entry in "$from"/node_modules/* "$from"/node_modules/.bin; do
    [[ -d "$entry" ]] && ln -s "$entry" "$dir/node_modules/$(basename "$entry")"
  done
  (cd "$dir" && bash ./run-peer.sh all) || { say "run-peer.sh failed (logs in $dir/logs)" >&2; return 1; }
  for name in redis:$QEWD_REDIS_PORT ms:$QEWD_MS_PORT master:$QEWD_MASTER_PORT; do
    port="${name#*:}"; name="${name%%:*}"
    pid="$(cat "$dir/run/$name.pid" 2>/dev/null)"
    if [[ -z "$pid" ]] || ! owns_port "$pid" "$port"; then
      say "$name: 127.0.0.1:$port is not served by our pid ${pid:-?} (see $dir/logs/$name.log)" >&2
      return 1
    fi
    say "$name 127.0.0.1:$port pid $pid (ours)"
  done
  {
    echo "export QEWD_PEER_MASTER=127.0.0.1:$QEWD_MASTER_PORT"
    echo "export QEWD_PEER_MS=127.0.0.1:$QEWD_MS_PORT"
    echo "export QEWD_REDIS_PORT=$QEWD_REDIS_PORT"
    echo "export QEWD_PEER_DIR=$dir"
  } >"$dir/peer.env"
}

case "${1:-}" in
  private-start)
    [[ -n "${2:-}" ]] || { echo "usage: $0 private-start DIR" >&2; exit 2; }
    dir="$(mkdir -p "$2" && cd "$2" && pwd)" || exit 1
    private_start "$dir" || { [[ -f "$dir/stop-peer.sh" ]] && bash "$dir/stop-peer.sh" all; exit 1; }
    ;;
  private-stop)
    [[ -n "${2:-}" ]] || { echo "usage: $0 private-stop DIR" >&2; exit 2; }
    if [[ -f "$2/stop-peer.sh" ]]; then bash "$2/stop-peer.sh" all; fi
    ;;
  start)
    kit_ok || exit 1
    if ! command -v node >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      say "node is missing: installing nodejs and npm (Debian)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    if kit_read_only; then
      if status >/dev/null 2>&1; then say "already running"; status; exit 0; fi
      private_start "$RUN_COPY" || { say "could not start the peer (logs in $RUN_COPY/logs)" >&2; exit 1; }
    else
      bash "$KIT/run-peer.sh" all || { say "run-peer.sh failed (logs in $(run_dir)/logs)" >&2; exit 1; }
    fi
    status
    ;;
  stop)
    kit_ok || exit 1
    if kit_read_only; then
      [[ -f "$RUN_COPY/stop-peer.sh" ]] && bash "$RUN_COPY/stop-peer.sh" all
      # a peer an older peer.sh ran from inside the kit (as root) is stopped too
      if compgen -G "$KIT/run/*.pid" >/dev/null; then bash "$KIT/stop-peer.sh" all; fi
    else
      bash "$KIT/stop-peer.sh" all
    fi
    ;;
  status)
    status
    ;;
  *)
    echo "usage: $0 start|stop|status|private-start DIR|private-stop DIR" >&2
    exit 2
    ;;
esac
