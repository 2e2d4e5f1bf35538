"""The /api routes of examples/rest (docs/rest.md walks through them with curl)."""

from qewd_twisted.rest import create_rest_session, validate_rest_request

USERS = {"1": {"id": "1", "name": "Rob"}}


def login(args, finished):
    body = args["req"]["body"]
    if body.get("username") != "rob" or body.get("password") != "secret":
        return finished({"error": "Invalid login", "status": {"code": 401}})
    session = create_rest_session(args)      # becomes args["session"]: the reply gets its token
    session["username"] = "rob"
    session.make_secret("username")
    session["authenticated"] = True
    session.timeout = 1200
    finished({"ok": True})


def get_user(args, finished):
    user = USERS.get(args["id"])
    if user is None:
        return finished({"error": f"No user {args['id']}", "status": {"code": 404}})
    finished(user)


def create_user(args, finished):
    if not validate_rest_request(args, finished):   # a logged-in session is needed
        return
    name = args["req"]["body"].get("name")
    if not name:
        return finished({"error": "name is required", "status": {"code": 422}})
    user_id = str(len(USERS) + 1)
    USERS[user_id] = {"id": user_id, "name": name, "by": args["session"]["username"]}
    finished(USERS[user_id])


async def whoami(args, finished):              # async def: runs on the reactor
    session = args.get("session")
    finished({"username": session.get("username") if session else None})


routes = [
    {"url": "/api/login", "method": "POST", "handler": login},
    {"url": "/api/users/:id", "method": "GET", "handler": get_user},
    {"url": "/api/users", "method": "POST", "handler": create_user},
    {"url": "/api/whoami", "handler": whoami},
]
