"""A handler module used by the integration tests (loaded by dotted name through moduleMap)."""

from tests.apps.gate import Gate

release = Gate()  # `blocked` waits until the test opens it (release.hold(test) first)


def login(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    progress = {"text": "checking credentials", "username": params.get("username")}
    if params.get("progressType"):
        progress["type"] = params["progressType"]
    send(progress)
    if params.get("username") == "rob" and params.get("password") == "secret":
        session["userText"] = "Rob"
        session["username"] = params["username"]
        session["authenticated"] = True
        session.make_secret("username")
        session.make_secret("authenticated")
        session.timeout = 60
        finished({"ok": True})
    else:
        finished({"error": "Invalid login"})


def echo(messageObj, session, send, finished):
    finished({"you sent": messageObj.get("params"), "user": session.get("username")})


def crash(messageObj, session, send, finished):
    return None.boom  # AttributeError, like the peer's test-app crash


def blocked(messageObj, session, send, finished):
    send({"blocked": True})  # tells a test the handler is running
    release.wait(30)
    finished({"released": True})


handlers = {"login": login, "echo": echo, "crash": crash, "blocked": blocked}
