"""A micro-service application run by several replicas (tests/integration/test_replicas.py):
every reply names the process that answered it (its pid) and the request's number."""

import os


def whoami(messageObj, session, send, finished):
    finished({"pid": os.getpid(), "n": (messageObj.get("params") or {}).get("n")})


async def hold(messageObj, session, send, finished):
    send({"holding": os.getpid(), "n": (messageObj.get("params") or {}).get("n")})
    # never finishes: the test kills this replica with the request in flight


handlers = {"whoami": whoami, "hold": hold}
