# -*- test-case-name: tests.integration.test_haproxy -*-
"""
The handler module of the load-balancer tests (tests/integration/test_haproxy.py): every reply
names the process that answered (``pid``) and the session's user, so a test behind HAProxy
sees which node a request landed on and that the session followed it there.

- ``login``: the shared fixture (rob / secret);
- ``whoami``: ``{"pid", "username"}``;
- ``echo``: ``{"pid", "id"}`` (``params.id`` back); with ``params.release``, only once that
  file exists (as ``hold``);
- ``hold``: sends ``{"holding": pid}`` at once, then finishes ``{"released": True, "pid"}``
  once the file ``params.release`` exists (a test creates it; at most 60 s). Handler modules
  run in each node's own process, so a file is the gate several processes can share.
"""

from __future__ import annotations

import os
import time

from tests.fixtures import make_login

login = make_login(timeout=600)


def whoami(messageObj, session, send, finished):
    finished({"pid": os.getpid(), "username": session.get("username")})


def _wait_for(release: str) -> bool:
    deadline = time.monotonic() + 60
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)  # a worker thread of the node under test, not the test itself
    return bool(release) and os.path.exists(release)


def echo(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    if params.get("release"):
        _wait_for(str(params["release"]))
    finished({"pid": os.getpid(), "id": params.get("id")})


def hold(messageObj, session, send, finished):
    release = str((messageObj.get("params") or {}).get("release") or "")
    send({"holding": os.getpid()})
    finished({"released": _wait_for(release), "pid": os.getpid()})


handlers = {"login": login, "whoami": whoami, "echo": echo, "hold": hold}
