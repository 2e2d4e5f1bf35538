"""
The seed example's master node (QEWD's example/jwt, in Python).

Browsers register with application "jwt". Their "login" messages are handled by application
"test-app" on the micro-service node (microservice.py, port 3000); everything else is handled
here by jwt_app.py. Run both with: bash scripts/run-example.sh
"""

import os

MS_URL = os.environ.get("QEWD_EXAMPLE_MS_URL", "http://127.0.0.1:3000")

config = {
    "serverName": "qewd-twisted example master",
    "port": int(os.environ.get("QEWD_EXAMPLE_PORT", "8080")),
    "poolSize": 2,
    "jwt": {"secret": os.environ.get("QEWD_EXAMPLE_SECRET", "someSecret123")},
    "moduleMap": {"jwt": "jwt_app.py"},
    "webServerRootPath": "www",
    "u_services": [
        {"application": "jwt", "types": {"login": {"url": MS_URL, "application": "test-app"}}},
    ],
}
