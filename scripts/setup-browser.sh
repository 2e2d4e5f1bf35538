#!/usr/bin/env bash
# Set up what tests/browser needs: Debian's Chromium (apt-get, only when /usr/bin/chromium is
# missing) and Playwright for Python in .venv. Playwright drives the system Chromium; its own
# browser download (`playwright install`) is never used. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHROMIUM="${QEWD_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi
  echo "[setup-browser] installing chromium with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[[ -x "$CHROMIUM" ]] || { echo "[setup-browser] $CHROMIUM is still missing"; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  bash scripts/setup.sh
fi
if ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
  echo "[setup-browser] installing playwright into .venv"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q "playwright>=1.40,<2"
fi

echo "[setup-browser] ready: $("$CHROMIUM" --version 2>/dev/null | head -n1)," \
  "playwright $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("playwright"))')"
