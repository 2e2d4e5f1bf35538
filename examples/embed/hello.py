"""A minimal application: `hello` answers with a greeting; `count` keeps a counter in the JWT."""


def hello(messageObj, session, send, finished):
    name = (messageObj.get("params") or {}).get("name", "world")
    finished({"text": "Hello, %s!" % name})


async def count(messageObj, session, send, finished):
    # async def handlers run on the reactor thread: they must not block
    session["count"] = session.get("count", 0) + 1
    finished({"count": session["count"]})


handlers = {"hello": hello, "count": count}
