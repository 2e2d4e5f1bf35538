"""Startup file for the embedded node in qewd.tac: one local application on port 8090."""

import os

config = {
    "serverName": "embedded qewd node",
    "listen": os.environ.get("QEWD_EMBED_LISTEN", "tcp:8090:interface=127.0.0.1"),
    "poolSize": 2,
    "jwt": {"secret": os.environ.get("QEWD_EMBED_SECRET", "change-me-please")},
    "moduleMap": {"hello": "hello.py"},
}
