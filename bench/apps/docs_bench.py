# -*- test-case-name: tests.test_bench_smoke -*-
"""
Application "docs" on bench/documents.py's node (``python -m bench.servers node-docs``): one
document operation per request, the same work as the QEWD.js handler ``op`` in
tests/interop/js/docs-app.js, so the two nodes are timed like for like over WebSocket.

``prepare`` makes ``params.name``: ``kids`` with 1,000 children, ``doc`` a 50-leaf document,
``value`` and ``counter``; ``op`` does ``params.op`` once on it and answers a small reply (the
new value, a count) so that reply size is the same on both nodes. Plain ``def`` handlers: they
run in the worker pool, where document calls may block (docs/documents.md).
"""

DOC = {"field%d" % k: "value %d" % k for k in range(50)}


def prepare(messageObj, session, send, finished, q):
    base = q.db.use(messageObj["params"]["name"])
    base.delete()
    base.use("kids").set_document({"k%d" % i: i for i in range(1000)})
    base.use("doc").set_document(DOC)
    base.use("value").value = "x"
    finished({"ok": True})


def _set(base, n):
    base.use("value").value = n
    return n


def _get(base, n):
    return base.use("value").value


def _set_document(base, n):
    base.use("doc").set_document(DOC)
    return 50


def _get_document(base, n):
    return len(base.use("doc").get_document(True))


def _increment(base, n):
    return base.use("counter").increment()


def _children(base, n):
    return len(base.use("kids").children())


OPS = {"set": _set, "get": _get, "set_document": _set_document,
       "get_document": _get_document, "increment": _increment, "children": _children}


def op(messageObj, session, send, finished, q):
    p = messageObj["params"]
    finished({"r": OPS[p["op"]](q.db.use(p["name"]), p.get("n", 0))})


def remove(messageObj, session, send, finished, q):
    q.db.use(messageObj["params"]["name"]).delete()
    finished({"ok": True})


handlers = {"prepare": prepare, "op": op, "remove": remove}
