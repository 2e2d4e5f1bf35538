"""A handler module for the server-push tests: ``announce`` pushes numbered messages through q
(on the reactor thread: it is ``async def``), ``ping`` answers (a barrier: every push written
to a client before the reply arrives before it)."""


async def announce(messageObj, session, send, finished, q):
    p = messageObj["params"]
    for n in range(p["start"], p["start"] + p["count"]):
        message = {"type": "push", "scope": p["scope"], "n": n}
        if p["scope"] == "all":
            q.to_all(message)
        elif p["scope"] == "application":
            q.to_application(message, p["application"])
        else:
            q.send_to_socket(p["socket"], message)
    finished({"sent": p["count"]})


def ping(messageObj, session, send, finished):
    finished({"pong": True})


handlers = {"announce": announce, "ping": ping}
