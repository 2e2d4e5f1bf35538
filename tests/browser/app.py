"""
Application "browser-test", used by the browser tests: ``login`` and ``echo`` as in the seed,
plus handlers that let a test decide when replies go out and how requests fail.

``hold`` waits until the test calls ``release(key)``, so the order in which concurrent replies
reach the browser is chosen by the test, not by timing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from tests.fixtures import make_login

_held: dict[str, defer.Deferred[None]] = {}
_watchers: list[tuple[frozenset[str], defer.Deferred[None]]] = []


def held(*keys: str) -> defer.Deferred[None]:
    """Fires once a ``hold`` request is waiting for each of ``keys``."""
    d: defer.Deferred[None] = defer.Deferred()
    _watchers.append((frozenset(keys), d))
    _notify()
    return d


def release(key: str) -> None:
    """Let the ``hold`` request for ``key`` finish."""
    _held.pop(key).callback(None)


def release_all() -> None:
    """Finish every held request (a test's cleanup: a node stops only when they have ended)."""
    while _held:
        release(next(iter(_held)))
    _watchers.clear()


def _notify() -> None:
    for entry in list(_watchers):
        keys, d = entry
        if keys <= _held.keys():
            _watchers.remove(entry)
            d.callback(None)


login = make_login()  # the shared fixture (tests/fixtures.py)


def echo(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
    finished({"you sent": messageObj.get("params"), "user": session.get("username")})


async def hold(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
    params = messageObj.get("params") or {}
    key = str(params.get("key"))
    send({"text": "holding " + key})
    if params.get("fail"):
        finished({"error": "refused " + key})
        return
    if params.get("crash"):
        raise RuntimeError("crashed " + key)
    d: defer.Deferred[None] = defer.Deferred()
    _held[key] = d
    _notify()
    await d
    finished({"key": key, "text": "released " + key})


def items(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
    finished([1, 2, {"three": 3}])


def typed(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
    send({"type": "progress", "text": "step 1"})  # an intermediate message with its own type
    finished({"done": True})


def expire(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
    # The reissued JWT's exp is a microsecond after its iat (a whole second, rounded down):
    # it has expired by the time the browser can use it.
    session.timeout = 1e-6
    finished({"ok": True})


handlers = {"login": login, "echo": echo, "hold": hold, "items": items, "typed": typed,
            "expire": expire}
