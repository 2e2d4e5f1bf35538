"""The seed example's login micro-service node: application "test-app" on port 3000."""

import os

config = {
    "serverName": "qewd-twisted example login micro-service",
    "port": int(os.environ.get("QEWD_EXAMPLE_MS_PORT", "3000")),
    "poolSize": 2,
    "jwt": {"secret": os.environ.get("QEWD_EXAMPLE_SECRET", "someSecret123")},
    "moduleMap": {"test-app": "test_app.py"},
}
