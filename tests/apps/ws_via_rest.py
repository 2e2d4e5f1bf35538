"""A WebSocket application whose handler hands its request to a REST micro-service route
(QEWD-Up's use_microservice, §4.7)."""


def lookup(messageObj, session, send, finished):
    user_id = str((messageObj.get("params") or {}).get("id"))
    finished({"use_microservice": True, "request": {"path": "/api/users/" + user_id}})


handlers = {"lookup": lookup}
