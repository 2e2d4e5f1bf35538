"""
Application "bench" on the benchmark's master node: the local-handler scenarios.

``echo`` (async def, runs on the reactor) and ``echoSync`` (plain def, runs in the worker pool)
do the same per-request session work as the QEWD.js peer's ``test`` handler (apps/jwt.js): set a
public ``date`` and a secret ``xxx``, so the re-issued token carries the same kind of claims, and
answer ``You sent: <params.text>``. Unlike the peer's handler they do not broadcast to every
socket (docs/performance.md says how that is accounted for).
"""


def _reply(messageObj, session, finished):
    session["date"] = 1700000000
    session["xxx"] = "Test data"
    session.make_secret("xxx")
    text = (messageObj.get("params") or {}).get("text")
    finished({"text": "You sent: %s" % (text,)})


async def echo(messageObj, session, send, finished):
    _reply(messageObj, session, finished)


def echoSync(messageObj, session, send, finished):
    _reply(messageObj, session, finished)


handlers = {"echo": echo, "echoSync": echoSync}
