"""A REST module for the REST tests (mounted at /api; served to primaries as application api)."""

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

from qewd_twisted.rest import create_rest_session, validate_rest_request


def get_user(args, finished):
    session = args.get("session")
    finished({"id": args["id"], "method": args["req"]["method"],
              "user": session.get("username") if session else None})


def create_user(args, finished):
    body = args["req"]["body"] or {}
    if "name" not in body:
        return finished({"error": "name is required", "status": {"code": 422}})
    finished({"ok": True, "name": body["name"]})


def login(args, finished):
    body = args["req"]["body"] or {}
    if body.get("username") != "rob" or body.get("password") != "secret":
        return finished({"error": "Invalid login", "status": {"code": 401}})
    session = create_rest_session(args)
    session["username"] = "rob"
    session.make_secret("username")
    session["authenticated"] = True
    session.timeout = 1200
    finished({"ok": True})


def private(args, finished):
    if not validate_rest_request(args, finished):
        return
    finished({"username": args["session"]["username"]})


def members(args, finished):  # authenticate: True in the table
    finished({"member": args["session"].get("username")})


def crash(args, finished):
    raise ValueError("boom")


async def later(args, finished):
    yield_value = await defer.succeed(args["x"])
    finished({"x": yield_value, "thread": "reactor"})


def echo(args, finished):
    req = args["req"]
    finished({k: req.get(k) for k in ("method", "path", "query", "body", "ip", "pathTemplate")}
             | {"args": {k: v for k, v in args.items() if k not in ("req", "session")}})


def cookie(args, finished):
    session = create_rest_session(args)
    session["username"] = "cookie-monster"
    finished({"ok": True, "qewd_send_jwt_as_cookie": {"name": "qewd", "directives": ["HttpOnly"]},
              "qewd_response_headers": {"X-Extra": "yes"}})


def listing(args, finished):
    finished([1, 2, 3])


def silent(args, finished):
    finished()


def never(args, finished):
    log.info("rest_api: holding {path}", path=args["req"].get("path"))


routes = [
    {"url": "/api/users/:id", "method": "GET", "handler": get_user},
    {"url": "/api/users", "method": "POST", "handler": create_user},
    {"url": "/api/login", "method": "POST", "handler": login},
    {"url": "/api/private", "method": "GET", "handler": private},
    {"url": "/api/members", "method": "GET", "handler": members, "authenticate": True},
    {"url": "/api/crash", "handler": crash},
    {"url": "/api/later/:x", "method": "GET", "handler": later},
    {"url": "/api/echo/*rest", "handler": echo},
    {"url": "/api/store/:destination/stock", "method": "GET", "handler": echo},
    {"url": "/api/cookie", "method": "GET", "handler": cookie},
    {"url": "/api/list", "method": "GET", "handler": listing},
    {"url": "/api/silent", "method": "GET", "handler": silent},
    {"url": "/api/never", "method": "GET", "handler": never},
]
