#!/usr/bin/env bash
# Set up a fresh clone: a virtualenv in .venv with qewd-twisted installed (non-editable, so
# twistd finds the `qewd` plugin), plus the test tools. Idempotent; prints where things are.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q ".[test]"
# The dropin cache may be stale or unwritable after an install: rebuild it now (STYLE.md).
.venv/bin/python - <<'PY'
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
names = sorted(p.tapname for p in getPlugins(IServiceMaker))
assert "qewd" in names, names
PY
echo "[setup] .venv ready: $(.venv/bin/python -c 'import qewd_twisted; print("qewd-twisted", qewd_twisted.__version__)')"
