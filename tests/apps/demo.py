"""A handler module used by the integration tests (loaded by dotted name through moduleMap)."""

from tests.apps.gate import Gate
from tests.fixtures import make_login

release = Gate()  # `blocked` waits until the test opens it (release.hold(test) first)


login = make_login(timeout=60)  # the shared fixture (tests/fixtures.py)


def echo(messageObj, session, send, finished):
    finished({"you sent": messageObj.get("params"), "user": session.get("username")})


def crash(messageObj, session, send, finished):
    return None.boom  # AttributeError, like the peer's test-app crash


def blocked(messageObj, session, send, finished):
    send({"blocked": True})  # tells a test the handler is running
    release.wait(30)
    finished({"released": True})


handlers = {"login": login, "echo": echo, "crash": crash, "blocked": blocked}
