"""Handlers for the tests of a node of several processes (tests/integration/test_processes.py):
which process answered, server push to every socket, and a handler that never returns."""

import os
import time


def whoami(messageObj, session, send, finished):
    finished({"pid": os.getpid(), "socketId": session.get("socketId")})


async def shout(messageObj, session, send, finished, q):
    params = messageObj.get("params") or {}
    for seq in range(params.get("count", 1)):
        q.to_all({"type": "shout", "tag": params.get("tag"), "seq": seq, "pid": os.getpid()})
    finished({"sent": params.get("count", 1), "pid": os.getpid()})


async def tell(messageObj, session, send, finished, q):
    # one push to one socket (maybe on another process) and one to every client of an application
    params = messageObj.get("params") or {}
    sent = q.send_to_socket(params["socketId"], {"tag": "told", "seq": 0, "pid": os.getpid()})
    q.to_application({"tag": "app", "seq": 0, "pid": os.getpid()}, params["application"])
    q.to_all({"tag": "told-end", "seq": 0, "pid": os.getpid()})
    finished({"sent": sent})


async def spin(messageObj, session, send, finished):
    # a stuck reactor: the supervisor's watchdog must kill this process (bounded, to be safe)
    deadline = time.monotonic() + (messageObj.get("params") or {}).get("seconds", 120)
    while time.monotonic() < deadline:
        pass
    finished({"spun": True})


handlers = {"whoami": whoami, "shout": shout, "tell": tell, "spin": spin}
