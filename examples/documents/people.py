"""People kept in the document store: q.db (docs/documents.md)."""


def init(application, q):
    q.db.use("people", "_meta").set_document({"application": application})


def save(messageObj, session, send, finished, q):
    p = messageObj.get("params") or {}
    if not isinstance(p.get("id"), (int, str)) or not p.get("id"):
        return finished({"error": "params.id is required"})
    person = q.db.use("people", p["id"])  # a bad id (None, a dict...) raises TypeError here
    person.delete()
    person.set_document({"name": p.get("name", ""), "tags": p.get("tags", [])})
    finished({"count": q.db.use("people").count_children() - 1})


def load(messageObj, session, send, finished, q):
    person = q.db.use("people", (messageObj.get("params") or {}).get("id", ""))
    if not person.exists:
        return finished({"error": "no such person"})
    finished(person.get_document(use_arrays=True))


async def visits(messageObj, session, send, finished, q):
    # async def runs on the reactor: documents through q.db.run, never directly
    n = await q.db.run(lambda: q.db.use("visits").increment())
    finished({"visits": n})


handlers = {"save": save, "load": load, "visits": visits}
