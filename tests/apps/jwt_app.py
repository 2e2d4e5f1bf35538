"""The master's local application in the micro-service tests (the seed's "jwt" app)."""


def beforeHandler(messageObj, session, send, finished):
    if not session.get("authenticated"):
        finished({"error": "You must be logged in"})
        return False


def test(messageObj, session, send, finished):
    finished({"text": "You sent: %s" % ((messageObj.get("params") or {}).get("text"),),
              "username": session.get("username")})


handlers = {"test": test}
