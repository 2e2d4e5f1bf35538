#!/usr/bin/env bash
# Set up what the Node-based tests need: Node.js and npm (Debian's nodejs/npm with apt-get,
# only for what is missing; a Node.js that ships its own npm, such as NodeSource's, is kept),
# then QEWD's own client libraries in tests/js (npm ci from package-lock.json). Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if (( ${#missing[@]} )); then
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
  echo "[setup-node] installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "[setup-node] node or npm is still missing"; exit 1; }

if [[ ! -f tests/js/node_modules/socket.io-client/package.json \
      || ! -f tests/js/node_modules/ws/package.json ]]; then
  echo "[setup-node] npm ci in tests/js"
  (cd tests/js && npm ci --no-audit --no-fund --silent)
fi
echo "[setup-node] ready: node $(node --version), npm $(npm --version)," \
  "socket.io-client $(node -p "require('./tests/js/node_modules/socket.io-client/package.json').version")"
