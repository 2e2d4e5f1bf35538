#!/usr/bin/env bash
# Run the seed example from a fresh clone: the login micro-service (port 3000) and the master
# (port 8080, serving examples/jwt/www). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
TWISTD=.venv/bin/twistd
$TWISTD --nodaemon --pidfile= qewd --config examples/jwt/microservice.py &
ms=$!
trap 'kill $ms 2>/dev/null; wait $ms 2>/dev/null' EXIT INT TERM
echo "[example] micro-service pid $ms on http://127.0.0.1:${QEWD_EXAMPLE_MS_PORT:-3000}"
echo "[example] master on http://127.0.0.1:${QEWD_EXAMPLE_PORT:-8080}/ : open it in a browser, log in as rob / secret"
$TWISTD --nodaemon --pidfile= qewd --config examples/jwt/master.py
