# -*- test-case-name: tests.test_parity -*-
"""
Service modules: a message's ``service`` field runs its handler from another handler module
(docs/protocol.md §5.2, QEWD's ``servicesAllowed``).

An application's module exports ``servicesAllowed = {"<service>": True, ...}``; a message with
``service: "<service>"`` then runs the ``handlers[type]`` (and the ``beforeHandler`` /
``afterHandler`` / ``workerResponseHandlers``) of the service module, found like any module
(``moduleMap``: never an arbitrary import), with the same session, ``send`` and ``finished``.
The session can override the application's say per service: ``session["allowedServices"] =
{"<service>": True | False}`` (ewd-session's ``allowService`` / ``disallowService``: see
`allow_service`). Refusals carry QEWD's texts and the ``service`` name, and the application's
custom errors (``serviceNotAllowed``, ``serviceNotAllowedForUser``, ``noServiceModuleType``,
``serviceModuleLoad``) replace them.

As in QEWD.js, a service request runs the *service* module's ``beforeHandler``, not the
application's: what a service allows is the application's choice (``servicesAllowed``) and
the session's (``allowedServices``).

May import: ``qewd_twisted.errors`` and ``qewd_twisted.apps``.
"""

from __future__ import annotations

from typing import Any, Mapping

from qewd_twisted import errors as E
from qewd_twisted.apps.custom_errors import CustomErrors
from qewd_twisted.apps.fragments import js_str
from qewd_twisted.apps.modules import Application, AppLoadError

__all__ = ["SESSION_KEY", "ServiceRefused", "allow_service", "disallow_service",
           "select_service", "services_allowed"]

#: The session item that holds per-session overrides (ewd-session's ``allowedServices``).
SESSION_KEY = "allowedServices"


class ServiceRefused(Exception):
    """A service request that cannot run; ``message`` is the reply's message."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message.get("error"))
        self.message = message


def services_allowed(app: Application) -> Mapping[str, Any]:
    """The application module's ``servicesAllowed`` (empty when it has none)."""
    value = getattr(app.module, "servicesAllowed", None) if app.module is not None else None
    return value if isinstance(value, Mapping) else {}


def _session_overrides(session: Any) -> Mapping[str, Any]:
    try:
        value = session.get(SESSION_KEY)
    except AttributeError:
        return {}
    return value if isinstance(value, Mapping) else {}


def allow_service(session: Any, service: str) -> None:
    """ewd-session's ``session.allowService(service)``: this session may use ``service``."""
    session[SESSION_KEY] = {**_session_overrides(session), service: True}


def disallow_service(session: Any, service: str) -> None:
    """ewd-session's ``session.disallowService(service)``: this session may not."""
    session[SESSION_KEY] = {**_session_overrides(session), service: False}


def permitted(app: Application, session: Any, service: str) -> tuple[bool, bool | None]:
    """(allowed, the session's own say or None), as QEWD.js decides it."""
    allow = bool(services_allowed(app).get(service))
    overrides = _session_overrides(session)
    if service in overrides:
        own = overrides[service]
        return bool(own), own
    return allow, None


def select_service(apps: Any, app: Application, session: Any, message: Mapping[str, Any],
                   errors: CustomErrors | None = None) -> Application:
    """The service module's ``Application`` for ``message["service"]`` as requested by a
    session of ``app``; raises `ServiceRefused` with the reply's message otherwise.
    ``apps`` is the node's ``Applications`` (the service is looked up in ``moduleMap``)."""
    service = message.get("service")
    mtype = message.get("type")
    application = app.name
    name = js_str(service)
    custom = errors if errors is not None else CustomErrors()
    allowed, own = permitted(app, session, service) if isinstance(service, str) else (False, None)
    if not allowed:
        if own is False:
            kind, text = "serviceNotAllowedForUser", E.SERVICE_NOT_FOR_USER.format(service=name)
        else:
            kind = "serviceNotAllowed"
            text = E.SERVICE_NOT_PERMITTED.format(service=name, application=application)
        raise ServiceRefused(custom.apply(application, kind, {"error": text, "service": service}))
    try:
        svc = apps.get(service)
    except AppLoadError as e:
        raise ServiceRefused(custom.apply(
            application, "serviceModuleLoad",
            {"error": str(e), "reason": e.reason})) from None
    if mtype not in svc.handlers:
        text = E.NO_SERVICE_HANDLER.format(service=name, type=js_str(mtype))
        raise ServiceRefused(custom.apply(application, "noServiceModuleType",
                                          {"error": text, "service": service}))
    return svc
