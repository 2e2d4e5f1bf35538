# -*- test-case-name: tests.test_parity -*-
"""
Custom error responses per application (QEWD's ``this.setCustomErrorResponse``, §5.3).

A handler module's ``init(application, q)`` calls ``q.set_custom_error_response(
application=..., errorType=..., text=..., statusCode=...)`` (or with one dict, as QEWD.js
code does); from then on the errors of that type for that application carry ``text`` and
``status: {code: statusCode}`` instead of the node's own, over WebSocket and REST alike.

QEWD.js names eight error types but applies the text and code only for ``noTypeHandler`` and
``noDocumentStore``; for the other six it puts the stored ``{text, statusCode}`` object in
``error`` itself, and ``sessionNotAuthenticated`` is looked up before the application is known
(robtweed/qewd#6), so it never applies. Here every type gives the text and the code.
``noDocumentStore`` is accepted but never fires: this node needs no document store.

Pure; imports nothing from the package.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.logger import Logger

__all__ = ["ERROR_TYPES", "CustomErrors"]

log = Logger()

#: QEWD's error types (qewd/lib/appHandler.js), in the order it checks them.
ERROR_TYPES = frozenset({
    "noDocumentStore", "moduleLoadError", "noTypeHandler", "sessionNotAuthenticated",
    "serviceModuleLoad", "noServiceModuleType", "serviceNotAllowed", "serviceNotAllowedForUser",
})

DEFAULT_TEXT = "Unspecified Error"  # QEWD's, when text is missing
DEFAULT_STATUS = 400  # QEWD's '400'


class CustomErrors:
    """The table: application -> error type -> (text, status code)."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, tuple[str, int | str]]] = {}

    def set(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> bool:
        """QEWD's ``setCustomErrorResponse({application, errorType, text, statusCode})``:
        False (and nothing stored) without an application or error type, as QEWD.js;
        an error type QEWD does not know is refused with a warning."""
        p = dict(params or {}, **kw)
        application, error_type = p.get("application"), p.get("errorType")
        if not application or not error_type:
            return False
        if error_type not in ERROR_TYPES:
            log.warn("setCustomErrorResponse: unknown errorType {error_type!r} (known: "
                     "{known})", error_type=error_type, known=", ".join(sorted(ERROR_TYPES)))
            return False
        text = p.get("text") or DEFAULT_TEXT
        code = p.get("statusCode") or DEFAULT_STATUS
        if isinstance(code, str) and code.strip().isdigit():
            code = int(code)  # QEWD.js code passes '404'; a number serves WebSocket and REST
        self._table.setdefault(str(application), {})[error_type] = (str(text), code)
        return True

    def get(self, application: Any, error_type: str) -> tuple[str, int | str] | None:
        """``(text, status code)`` set for the pair, or None."""
        entry = self._table.get(application) if isinstance(application, str) else None
        return entry.get(error_type) if entry else None

    def apply(self, application: Any, error_type: str, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` (an ``{error, ...}`` reply message) with the custom text and status of
        ``error_type`` for ``application`` when one is set; the same object otherwise."""
        custom = self.get(application, error_type)
        if custom is None:
            return message
        text, code = custom
        return {**message, "error": text, "status": {"code": code}}

    def __bool__(self) -> bool:
        return bool(self._table)
