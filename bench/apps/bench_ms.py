"""
Application "bench-ms" on the benchmark's micro-service node: the forwarded scenario.

``login`` is the seed's test-app login (one intermediate ``send()``, then the session made
secret and a final reply) except that any username logs in with password ``secret``, so each
benchmark client can log in as its own user and check, in the returned token's secret
``username``, that the reply is its own. The final reply echoes ``params.nonce``.

It is an ``async def`` (it runs on the micro-service's reactor), so the forwarded rows measure
the forwarding itself; what a plain ``def`` handler adds (the hop to a pool thread and back) is
what the local sync rows show against the local async ones.
"""


async def login(messageObj, session, send, finished):
    params = messageObj.get("params") or {}
    username = params.get("username")
    send({"text": "checking credentials", "username": username})
    if isinstance(username, str) and username and params.get("password") == "secret":
        session["userText"] = username
        session["username"] = username
        session["authenticated"] = True
        session.make_secret("username")
        session.make_secret("authenticated")
        session.timeout = 1200
        finished({"ok": True, "nonce": params.get("nonce")})
    else:
        finished({"error": "Invalid login"})


handlers = {"login": login}
