"""Application "test-app": logs users in (rob / secret) for the master's "jwt" application."""


def login(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    username = params.get("username")
    progress = {"text": "checking credentials", "username": username}
    if params.get("progressType"):
        progress["type"] = params["progressType"]  # an intermediate frame with its own type
    send(progress)
    if username == "rob" and params.get("password") == "secret":
        session["userText"] = "Rob"
        session["username"] = username
        session["authenticated"] = True
        session.make_secret("username")
        session.make_secret("authenticated")
        session.timeout = 1200  # a longer sliding expiry once logged in
        finished({"ok": True})
    else:
        finished({"error": "Invalid login"})


handlers = {"login": login}
