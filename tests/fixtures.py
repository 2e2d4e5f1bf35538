# -*- test-case-name: tests.test_node -*-
"""
The one login fixture of the tests (issue 12 item 7): QEWD's example login (robtweed/qewd
example/jwt, the peer's test-app) as a handler, the message a client sends for it, and a client
helper that sends it and collects the reply.

``make_login`` is the handler used by tests/apps/demo.py, tests/browser/app.py and
tests/test_node.py: an intermediate ``{"text": "checking credentials", "username": ...}`` (typed
when ``params.progressType`` is given), then for rob/secret ``{"ok": True}`` with ``userText``,
and ``username`` and ``authenticated`` as secret claims; otherwise ``{"error": "Invalid login"}``.
tests/test_fuzz.py and tests/test_token_attacks.py keep logins of their own on purpose (their
oracles model an exact-match login with no intermediate username).
``RecordingLink`` is the fake link that records what a node forwards (tests/test_node.py,
tests/test_parity_node.py).
May import only the standard library.
"""

from __future__ import annotations

from typing import Any, Callable

ROB = {"username": "rob", "password": "secret"}

Handler = Callable[[dict, Any, Any, Any], None]

__all__ = ["ROB", "RecordingLink", "log_in", "login_message", "make_login"]


def make_login(timeout: int | None = None) -> Handler:
    """The login handler; a successful login sets ``session.timeout`` when ``timeout`` is given
    (QEWD's example sets 60 on the peer, 1200 in its README)."""

    def login(messageObj: dict, session: Any, send: Any, finished: Any) -> None:
        params = messageObj.get("params") or {}
        progress = {"text": "checking credentials", "username": params.get("username")}
        if params.get("progressType"):
            progress["type"] = params["progressType"]
        send(progress)
        if params.get("username") == ROB["username"] and params.get("password") == ROB["password"]:
            session["userText"] = "Rob"
            session["username"] = params["username"]
            session["authenticated"] = True
            session.make_secret("username")  # a no-op in session-token mode
            session.make_secret("authenticated")
            if timeout is not None:
                session.timeout = timeout
            finished({"ok": True})
        else:
            finished({"error": "Invalid login"})

    return login


def login_message(token: str, username: str = ROB["username"],
                  password: str = ROB["password"], **params: Any) -> dict[str, Any]:
    """The ``login`` message a client sends (extra ``params`` such as ``progressType``)."""
    return {"type": "login", "token": token,
            "params": {"username": username, "password": password, **params}}


async def log_in(client: Any, token: str, username: str = ROB["username"],
                 password: str = ROB["password"], **params: Any) -> list[dict[str, Any]]:
    """Send ``login_message`` on ``client`` (anything with ``emit`` and an awaitable
    ``message()``); every frame up to the final one (``finished`` not false)."""
    client.emit(login_message(token, username, password, **params))
    frames = [await client.message()]
    while frames[-1].get("finished") is False:
        frames.append(await client.message())
    return frames


class RecordingLink:
    """A link (``ILink.send_request``) that only records what a node forwards to it, as
    ``(message, receiver)`` pairs in ``sent``, so a test answers through the receiver."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict, Any]] = []

    def send_request(self, message: dict, receiver: Any, timeout: Any) -> None:
        self.sent.append((message, receiver))
