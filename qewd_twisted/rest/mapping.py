# -*- test-case-name: tests.test_rest_mapping -*-
"""
HTTP to QEWD and back: the body parser, the bearer token, and the mapping of a reply frame to an
HTTP status, headers and JSON body (ewd-qoper8-express's rules, docs/protocol.md §4.5 item 7,
§1.7). Pure: no Twisted, no I/O.

Imports ``qewd_twisted.errors`` and ``_json`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qs

from qewd_twisted import _json
from qewd_twisted import errors as E

__all__ = [
    "BodyError",
    "CORS_HEADERS",
    "HttpReply",
    "bearer_token",
    "error_reply",
    "parse_body",
    "parse_query",
    "reply_from_frame",
]

#: With ``cors: true``, on every REST and /ajax response (docs/protocol.md §1.7)
CORS_HEADERS = (
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Allow-Headers",
     "DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,"
     "Cache-Control,Content-Type,Authorization"),
    ("Access-Control-Allow-Methods", "GET, PUT, DELETE, POST, OPTIONS"),
    ("Access-Control-Allow-Origin", "*"),
)

# What never reaches an HTTP client in a successful body (§1.4, §4.5 item 7)
_STRIPPED = ("ewd_application", "restMessage", "ms_requestId")
# keys that make a successful message more than its own body
_SPECIAL = frozenset(_STRIPPED + ("qewd_response_headers", "qewd_send_jwt_as_cookie"))


class BodyError(ValueError):
    """The request body cannot be parsed: 400 with ``str(e)``."""


@dataclass
class HttpReply:
    """What goes back to the HTTP client."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_reply(status: int, text: Any, **extra: Any) -> HttpReply:
    return HttpReply(status, {"error": text, **extra})


def parse_query(raw: bytes | str) -> dict[str, Any]:
    """``a=1&b=2&b=3`` → ``{"a": "1", "b": ["2", "3"]}`` (Express's shape, flat)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    out: dict[str, Any] = {}
    for key, values in parse_qs(raw, keep_blank_values=True).items():
        out[key] = values[0] if len(values) == 1 else values
    return out


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """A request body as a handler sees it: JSON parsed, a form as a dict, nothing as ``{}``
    (body-parser's empty body), other text as a string. Raises BodyError."""
    if not raw or not raw.strip():
        return {}
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return parse_query(raw)
    if kind in ("", "application/json") or kind.endswith("+json"):
        try:
            return _json.loads_strict(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BodyError(E.BAD_JSON_BODY.format(reason="not UTF-8")) from e
        except ValueError as e:
            raise BodyError(E.BAD_JSON_BODY.format(reason=e)) from e
    return raw.decode("utf-8", "replace")


def bearer_token(headers: Mapping[str, Any], bearer: bool = True) -> str:
    """The JWT in ``Authorization: Bearer <jwt>`` ('' when absent), as QEWD's getRestJWT
    splits it (§3.8); with ``bearer=False`` the header's whole value."""
    value = headers.get("authorization")
    if not isinstance(value, str) or not value:
        return ""
    if not bearer:
        return value
    _, sep, token = value.partition("Bearer ")
    token = token.split("Bearer ")[0] if sep else ""
    return "" if token == "undefined" else token.strip()


def _status(message: Mapping[str, Any], default: int) -> int:
    status = message.get("status")
    code = status.get("code") if isinstance(status, Mapping) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and 200 <= code <= 599:
        return code
    return default


def _cookie(spec: Any, token: str) -> str:
    spec = spec if isinstance(spec, Mapping) else {}
    name = spec.get("name") if isinstance(spec.get("name"), str) else "JSESSIONID"
    directives = spec.get("directives")
    cookie = f"{name}={token}"
    if isinstance(directives, list) and directives:
        cookie += "".join(f"; {d}" for d in directives if isinstance(d, str))
    else:
        cookie += "; path=/"
    return cookie


def reply_from_frame(frame: Any, error_status: int = 400) -> HttpReply:
    """The final reply frame of a REST, /ajax or forwarded request, as HTTP.

    - a handler crash (``type: "error"`` with a string message): 500
      ``{"error": "Unexpected Exception occurred: <text>"}``;
    - ``message.error``: ``message.status.code`` or ``error_status`` (400), body
      ``{"error": ...}`` (or ``message.error.response`` when there is one);
    - success: 200, the message with ``qewd_response_headers`` applied as headers and, with
      ``qewd_send_jwt_as_cookie``, the token moved to ``Set-Cookie``.
    """
    if not isinstance(frame, Mapping):
        return error_reply(500, E.BAD_REPLY)
    message = frame.get("message")
    if (type(message) is dict and not message.get("error") and frame.get("type") != "error"
            and not (message.keys() & _SPECIAL)):
        return HttpReply(200, message)  # the common case: a plain success, as it is
    if frame.get("type") == "error" and not isinstance(message, Mapping):
        return error_reply(500, E.UNEXPECTED_EXCEPTION.format(error=message))
    if message is None and "error" in frame:
        message = {k: v for k, v in frame.items() if k in ("error", "status")}
    if isinstance(message, list):
        return HttpReply(200, message)
    if not isinstance(message, Mapping):
        return error_reply(400, E.BAD_REPLY)
    if message.get("error"):
        error = message["error"]
        status = _status(message, error_status)
        if isinstance(error, Mapping) and "response" in error:
            return HttpReply(status, error["response"])
        reply = error_reply(status, error)
        allow = message.get("allow")
        if status == 405 and isinstance(allow, list):
            reply.headers.append(("Allow", ", ".join(str(m) for m in allow)))
        return reply
    body = {k: v for k, v in message.items() if k not in _STRIPPED}
    headers: list[tuple[str, str]] = []
    extra = body.pop("qewd_response_headers", None)
    if isinstance(extra, Mapping):
        for name, value in extra.items():
            if isinstance(name, str) and _header_safe(name) and _header_safe(str(value)):
                headers.append((name, str(value)))
    cookie = body.pop("qewd_send_jwt_as_cookie", None)
    if cookie and isinstance(body.get("token"), str):
        headers.append(("Set-Cookie", _cookie(cookie, body.pop("token"))))
    return HttpReply(200, body, headers)


def _header_safe(text: str) -> bool:
    return bool(text) and "\r" not in text and "\n" not in text and "\0" not in text
