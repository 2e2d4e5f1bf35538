"""A micro-service application with many users: user-N logs in with password N-wu-resu.

Each reply names the user it is for, so a test can tell when a reply reaches the wrong client.
"""

from tests.apps.gate import Gate

release = Gate()  # `wait` waits until the test opens it (release.hold(test) first)


def login(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    username = params.get("username")
    send({"text": "checking credentials", "username": username})
    if isinstance(username, str) and params.get("password") == username[::-1]:
        session["username"] = username
        session.make_secret("username")
        session["authenticated"] = True
        session.make_secret("authenticated")
        session.timeout = 1200
        finished({"ok": True, "username": username})
    else:
        finished({"error": "Invalid login", "username": username})


def typed(messageObj, session, send, finished):
    send({"type": "loginProgress", "step": 1})
    finished({"ok": True})


def crash(messageObj, session, send, finished):
    raise RuntimeError("micro-service handler failed")


def wait(messageObj, session, send, finished):
    send({"waiting": True})  # tells a test the handler is running
    release.wait(30)
    finished({"released": True})


async def silent(messageObj, session, send, finished):
    send({"silent": True})  # tells a test the request is in flight
    # never finishes: the master's microServiceTimeout ends the request


handlers = {"login": login, "typed": typed, "crash": crash, "wait": wait, "silent": silent}
