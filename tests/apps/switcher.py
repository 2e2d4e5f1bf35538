"""A local application whose ``signin`` goes on at another application (application switch,
docs/protocol.md §4.7): tests/interop/test_parity_interop.py."""


def signin(messageObj, session, send, finished):
    session["via"] = "portal"
    finished({"type": "login", "qewd_destination": "login_service",
              "qewd_application": "test-app", "params": messageObj.get("params") or {}})


def whoami(messageObj, session, send, finished):
    finished({"username": session.get("username"), "authenticated": session.get("authenticated"),
              "via": session.get("via")})


handlers = {"signin": signin, "whoami": whoami}
