"""Application "jwt" on the master: everything but login, which the micro-service handles."""


def beforeHandler(messageObj, session, send, finished):
    # Every message needs a logged-in session; the micro-service sets the secret
    # "authenticated" claim on a successful login.
    if not session.get("authenticated"):
        finished({"error": "You must be logged in"})
        return False


def test(messageObj, session, send, finished):
    session["date"] = 1700000000
    session["xxx"] = "Test data"
    session.make_secret("xxx")
    text = (messageObj.get("params") or {}).get("text")
    finished({"text": "You sent: %s" % (text,), "username": session.get("username")})


def test_response(message, send, q):
    # Runs on the reactor before the reply goes out: tell every connected browser.
    q.to_all({"test": "message 2"})
    return message


handlers = {"test": test}
workerResponseHandlers = {"test": test_response}
