"""The REST benchmark's routes (bench/rest.py): the same canned answer as the floor, from an
``async def`` route (reactor), a plain ``def`` route (worker pool), and the route a primary
forwards (``/fwd/users/:id``, served on the micro-service node)."""


async def user(args, finished):
    finished({"id": args["id"], "ok": True})


def user_sync(args, finished):
    finished({"id": args["id"], "ok": True})


routes = [
    {"url": "/api/users/:id", "method": "GET", "handler": user},
    {"url": "/api/sync/:id", "method": "GET", "handler": user_sync},
    {"url": "/fwd/users/:id", "method": "GET", "handler": user},
]
