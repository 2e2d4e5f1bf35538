"""A handler module using q (documents) for tests/documents/test_service.py."""


def init(application, q):
    q.db.use("boot", application).increment()


def hit(messageObj, session, send, finished, q):
    session["hits"] = (session.get("hits") or 0) + 1
    finished({"n": q.db.use("hits").increment(), "boots": q.db.use("boot", "counter").value,
              "session_hits": session["hits"]})


async def peek(messageObj, session, send, finished, q):
    finished({"n": await q.db.run(lambda: q.db.use("hits").value)})


handlers = {"hit": hit, "peek": peek}
