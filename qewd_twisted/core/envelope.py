# -*- test-case-name: tests.test_envelope -*-
"""
The QEWD envelope: every frame a client or a link sees is built here, and nowhere else.

A reply frame is ``{type, finished, message, responseTime}`` (docs/protocol.md §1.4); a request
that came with ``ms_requestId`` (a forward from a master) gets it echoed on the frame and, when
the message is an object, inside the message too (§4.5). The exceptions are QEWD's own: a JWT
rejection has no ``finished`` and no ``responseTime`` (the QEWD.js master's pre-check shape, as
the reference peer sends it), and a handler crash is typed ``"error"`` with the exception's text
as its message (§5.4).

Pure: plain functions over dicts and strings; imports only ``qewd_twisted.errors``. The node,
the local runner, the forwarder, the links and the transports call these; none of them writes
an envelope literal of its own. ``response_time`` is computed by the caller (who owns the clock)
with `response_time`.
"""

from __future__ import annotations

from typing import Any

from qewd_twisted import errors as E

__all__ = [
    "bad_ms_token", "crash", "error", "final_error", "from_link", "internal_error", "is_final",
    "jwt_rejection", "link_down", "link_timeout", "not_json", "relayed", "reply", "reply_since",
    "response_time", "transport_error",
]


def response_time(started: float, now: float) -> str:
    """QEWD's ``responseTime``: whole milliseconds since ``started``, as ``"12ms"``."""
    return f"{max(0, int((now - started) * 1000))}ms"


def is_final(frame: Any) -> bool:
    """True for a reply frame that ends its request: ``finished`` is true, or there is no
    ``finished`` key at all (QEWD's master-level JWT rejections, §1.4)."""
    return bool(frame["finished"]) if "finished" in frame else True


# -- frames the node makes ----------------------------------------------------------------


def reply(type: str, message: Any, response_time: str, rid: Any = None,
          finished: bool = True) -> dict[str, Any]:
    """A reply (``finished=False``: an intermediate one, from ``send()``). With ``rid`` the
    request's ``ms_requestId`` is echoed on the frame and in an object message (§4.5)."""
    frame: dict[str, Any] = {"type": type, "finished": finished, "message": message,
                             "responseTime": response_time}
    if rid is not None:
        frame["ms_requestId"] = rid
        if isinstance(message, dict):
            message["ms_requestId"] = rid
    return frame


def reply_since(type: str, message: Any, started: float, now: float, rid: Any = None,
                finished: bool = True) -> dict[str, Any]:
    """`reply` with its ``responseTime`` computed from ``started`` and ``now``: the same frame,
    in one call (a handler's every reply comes through here)."""
    ms = int((now - started) * 1000)
    frame: dict[str, Any] = {"type": type, "finished": finished, "message": message,
                             "responseTime": f"{ms}ms" if ms > 0 else "0ms"}
    if rid is not None:
        frame["ms_requestId"] = rid
        if isinstance(message, dict):
            message["ms_requestId"] = rid
    return frame


def error(type: str, text: str, response_time: str, rid: Any = None, *,
          disconnect: bool = False, status: int | None = None,
          **extra: Any) -> dict[str, Any]:
    """A final error reply: ``message: {error, [status: {code}], [disconnect], ...extra}``.
    ``disconnect`` is left out when ``rid`` is set (§2.4: a master's link must not be
    dropped for one user's bad token)."""
    message: dict[str, Any] = {"error": text, **extra}
    if status is not None:
        message["status"] = {"code": status}
    if disconnect and rid is None:
        message["disconnect"] = True
    return reply(type, message, response_time, rid)


def jwt_rejection(type: str, text: str, rid: Any = None) -> dict[str, Any]:
    """A JWT refused before any handler: no ``finished``, no ``responseTime`` (§1.4, as the
    QEWD.js master sends it); ``disconnect`` only towards a client, not a master's link."""
    frame: dict[str, Any] = {"type": type, "message": {"error": text}}
    if rid is None:
        frame["message"]["disconnect"] = True
    else:
        frame["ms_requestId"] = rid
    return frame


def crash(text: str, response_time: str, rid: Any = None) -> dict[str, Any]:
    """QEWD's reply to a handler that raised: type ``"error"``, the exception's text as the
    message (§5.4)."""
    frame: dict[str, Any] = {"type": "error", "finished": True, "message": text,
                             "responseTime": response_time}
    if rid is not None:
        frame["ms_requestId"] = rid
    return frame


def final_error(type: str, text: str) -> dict[str, Any]:
    """A bare final error with no timing: ``{type, finished: true, message: {error}}``."""
    return {"type": type, "finished": True, "message": {"error": text}}


def transport_error(text: str) -> dict[str, Any]:
    """What a transport answers to something it could not decode into a message."""
    return final_error("error", text)


def internal_error(request: Any) -> dict[str, Any]:
    """The answer to a message whose handling failed in the node itself (a bug)."""
    mtype = request.get("type") if isinstance(request, dict) else None
    return final_error(mtype if isinstance(mtype, str) else "error", E.INTERNAL_ERROR)


def not_json(frame: Any) -> dict[str, Any]:
    """Sent in place of ``frame`` when it could not be encoded as JSON: same type, finished,
    responseTime and ms_requestId, with an error message."""
    if not isinstance(frame, dict):
        return final_error("error", E.NOT_JSON_REPLY.format(type="error"))
    ftype = frame.get("type", "error")
    fallback: dict[str, Any] = {"type": ftype, "finished": frame.get("finished", True),
                                "message": {"error": E.NOT_JSON_REPLY.format(type=ftype)}}
    for key in ("responseTime", "ms_requestId"):
        if key in frame:
            fallback[key] = frame[key]
    return fallback


# -- frames of a forwarded request ----------------------------------------------------------


def _link_failure(type: Any, text: str, code: int, response_time: str | None,
                  rid: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": type, "finished": True,
                             "message": {"error": text, "status": {"code": code}}}
    if response_time is not None:
        frame["responseTime"] = response_time
    if rid is not None:
        frame["ms_requestId"] = rid
    return frame


def link_down(type: Any, response_time: str | None = None, rid: Any = None) -> dict[str, Any]:
    """A forwarded request's answer when its link is (or goes) down: QEWD's 503 text (§4.2
    item 4, §4.9). QEWD's frame has no ``type``; ours carries the request's, so the client's
    callback fires."""
    return _link_failure(type, E.MS_DOWN, E.STATUS_MS_DOWN, response_time, rid)


def link_timeout(type: Any, response_time: str | None = None,
                 rid: Any = None) -> dict[str, Any]:
    """A forwarded request's answer when its deadline passed (ours: QEWD has none, §4.2
    item 7)."""
    return _link_failure(type, E.MS_TIMEOUT, E.STATUS_MS_TIMEOUT, response_time, rid)


def bad_ms_token() -> dict[str, Any]:
    """The message of a final relayed reply whose token does not verify here (502)."""
    return {"error": E.BAD_MS_TOKEN, "status": {"code": E.STATUS_BAD_GATEWAY}}


def from_link(frame: dict[str, Any], request_type: Any) -> dict[str, Any]:
    """A frame from a remote node as its request's owner gets it: ``ms_requestId`` removed
    (from the frame and the message), a remote crash (type ``"error"``, §5.4) retyped to the
    request's type with its text as ``message.error``, and a type-less frame (a chained
    QEWD.js master's 503) given the request's type. ``frame`` is not changed."""
    out = {k: v for k, v in frame.items() if k != "ms_requestId"}
    message = out.get("message")
    if isinstance(message, dict) and "ms_requestId" in message:
        out["message"] = message = {k: v for k, v in message.items() if k != "ms_requestId"}
    if out.get("type") == "error" and request_type != "error" and is_final(frame):
        if isinstance(message, dict):
            out["type"] = request_type
        else:
            out = final_error(request_type, str(message))
    elif "type" not in out:
        out["type"] = request_type
    return out


def relayed(frame: dict[str, Any], request_type: str, response_time: str, rid: Any,
            final: bool) -> dict[str, Any]:
    """A reply from a link made ready for the client, in place: typed, timed, and with the
    client's own ``ms_requestId`` when it is itself a master's link. A remote's JWT rejection
    says ``disconnect``, but the client's own socket and token are fine (the fault is in the
    mesh), so it becomes a plain final error."""
    frame.setdefault("type", request_type)
    message = frame.get("message")
    if final and isinstance(message, dict) and "disconnect" in message:
        frame["message"] = {k: v for k, v in message.items() if k != "disconnect"}
        frame["finished"] = True
    frame["responseTime"] = response_time
    if rid is not None:
        frame["ms_requestId"] = rid
    return frame
