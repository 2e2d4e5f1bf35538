# -*- test-case-name: tests.test_parity -*-
"""
``ewd-fragment``: reading an HTML fragment for a client (docs/protocol.md §5.5).

QEWD.js reads ``<webServerRootPath><application>/<file>`` (or ``<webServerRootPath>services/<file>``
for ``params.isServiceFragment``, or ``<service module's folder>/fragments/<file>`` for an
allowed ``service``) and answers ``{fragmentName, content}``, or
``{error: "Fragment file <file> does not exist", file[, service][, isServiceFragment]}``.
It concatenates the client's file name into the path as is (§9 item 9), so ``../`` reads any
file the process can. Here a name is first checked as a relative path (no ``..`` component, not
absolute, no backslash, no NUL, no percent-encoded dot or separator), then resolved with every
symlink followed and kept only if it still lies inside its folder (the application's, the
services', or the service module's ``fragments``); only a regular file is opened. A refused
name gets the same answer as a missing file, so it tells the client nothing about what exists
outside. ``params.targetId`` and ``params.append`` are the browser client's business.

Blocking file I/O: `read_fragment` runs in a worker thread (`FragmentBuiltin`, the node's
built-in). Imports ``qewd_twisted.errors``, ``apps`` and ``core.envelope``.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from twisted.logger import Logger

from qewd_twisted import errors as E
from qewd_twisted.apps.modules import AppLoadError
from qewd_twisted.apps.pool import PoolFull
from qewd_twisted.core import envelope

__all__ = ["FragmentBuiltin", "fragment_folder", "fragment_path", "fragment_reply", "js_str",
           "read_fragment"]

_log = Logger()

# %2e (.), %2f (/), %5c (\), in either case, possibly double-encoded (%252f)
_ENCODED = re.compile(r"%(25)*(2e|2f|5c)", re.IGNORECASE)


def js_str(value: Any) -> str:
    """``value`` as JavaScript's string concatenation shows it (QEWD builds its texts so)."""
    if value is None:
        return "undefined"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return "[object Object]" if isinstance(value, dict) else ",".join(map(js_str, value))
    return str(value)


def _safe_relative(name: Any) -> bool:
    if not isinstance(name, str) or not name or len(name) > 1024:
        return False
    if "\x00" in name or "\\" in name or name.startswith("/") or _ENCODED.search(name):
        return False
    if re.match(r"^[A-Za-z]:", name):  # a drive letter
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts)


def fragment_path(folder: str, name: Any) -> str | None:
    """The real path of fragment ``name`` inside ``folder``, or None when the name is not a
    plain relative path or resolves (symlinks followed) outside ``folder``."""
    if not _safe_relative(name):
        return None
    try:
        base = os.path.realpath(folder)
        path = os.path.realpath(os.path.join(base, name))
    except (OSError, ValueError):
        return None
    if os.path.commonpath([base, path]) != base or path == base:
        return None
    return path


def fragment_reply(message: dict[str, Any]) -> dict[str, Any]:
    """QEWD's answer for a fragment that is not there (or whose name is refused)."""
    params = message.get("params")
    name = params.get("file") if isinstance(params, dict) else None
    reply: dict[str, Any] = {"error": E.FRAGMENT_MISSING.format(file=js_str(name)), "file": name}
    service = message.get("service")
    if service:
        reply["service"] = service
    if isinstance(params, dict) and params.get("isServiceFragment"):
        reply["isServiceFragment"] = True
    return reply


def fragment_folder(web_root: str | None, application: str, message: dict[str, Any],
                    apps: Any, errors: Any = None) -> str | dict[str, Any] | None:
    """Where ``message``'s fragment is read from, as QEWD.js picks it: the application's
    folder under ``web_root``; with an allowed ``service``, that service module's
    ``fragments`` folder; with ``params.isServiceFragment``, ``<web_root>/services``.
    Returns a reply message instead when the service is refused or the application's module
    does not load, and None when there is no such folder (every fragment is then missing).
    ``apps`` is the node's ``Applications``; ``errors`` its ``CustomErrors``."""
    params = message.get("params")
    service = message.get("service")
    folder: str | None = None
    if web_root is not None and _safe_relative(application) and "/" not in application:
        folder = os.path.join(web_root, application)
    if service:
        try:
            app = apps.get(application)
        except AppLoadError as e:
            reply = {"error": str(e), "reason": e.reason}
            return errors.apply(application, "moduleLoadError", reply) if errors else reply
        allowed = getattr(app.module, "servicesAllowed", None) if app.module else None
        if not (isinstance(allowed, dict) and isinstance(service, str) and allowed.get(service)):
            reply = {"error": E.SERVICE_NOT_PERMITTED.format(service=js_str(service),
                                                             application=application)}
            return errors.apply(application, "serviceNotAllowed", reply) if errors else reply
        try:
            module_file = getattr(apps.get(service).module, "__file__", None)
        except AppLoadError:
            module_file = None
        folder = (os.path.join(os.path.dirname(os.path.abspath(module_file)), "fragments")
                  if module_file else None)
    if isinstance(params, dict) and params.get("isServiceFragment"):
        folder = os.path.join(web_root, "services") if web_root is not None else None
    return folder


def read_fragment(folder: str | None, message: dict[str, Any]) -> dict[str, Any]:
    """Read ``message["params"]["file"]`` from ``folder`` and return the reply message:
    ``{fragmentName, content}``, or QEWD's missing-file error. Never reads outside
    ``folder`` (None: no folder, the fragment is missing); never blocks on a FIFO or device
    (only regular files are read)."""
    params = message.get("params")
    name = params.get("file") if isinstance(params, dict) else None
    path = fragment_path(folder, name) if folder is not None else None
    if path is None:
        return fragment_reply(message)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return fragment_reply(message)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return fragment_reply(message)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read()
    except OSError:
        return {"error": E.FRAGMENT_UNREADABLE.format(file=name)}
    finally:
        if fd >= 0:
            os.close(fd)
    return {"fragmentName": name, "content": data.decode("utf-8", errors="replace")}


class FragmentBuiltin:
    """The node's ``ewd-fragment`` built-in (a session built-in: ``req.session`` is set).

    Decides the folder on the reactor, reads the file in a worker pool thread, and answers
    as QEWD.js does: ``{fragmentName, content}`` or the error, with no refreshed token (QEWD.js
    answers fragments with the worker's bare ``finished``).
    """

    def __init__(self, clock: Any, web_root: str | None, apps: Any, pool: Any,
                 in_flight: Any, send: Any, custom_errors: Any = None) -> None:
        self._clock = clock
        self.web_root = web_root
        self._apps = apps
        self._pool = pool
        self._in_flight = in_flight
        self._send = send
        self._errors = custom_errors

    def _answer(self, req: Any, message: Any) -> None:
        self._send(req.conn, envelope.reply_since(req.type, message, req.started,
                                                  self._clock.seconds(), req.ms_request_id))

    def __call__(self, req: Any) -> None:
        folder = fragment_folder(self.web_root, req.application, req.message, self._apps,
                                 self._errors)
        if isinstance(folder, dict):
            self._in_flight.ended_early(req, "error")
            return self._answer(req, folder)
        self._in_flight.begin(req)
        d = self._pool.run(read_fragment, folder, req.message)
        d.addCallbacks(self._read, self._failed, callbackArgs=(req,), errbackArgs=(req,))

    def _read(self, message: dict[str, Any], req: Any) -> None:
        if req.done:
            return
        self._in_flight.end(req, "error" if "error" in message else "ok")
        self._answer(req, message)

    def _failed(self, failure: Any, req: Any) -> None:
        if not failure.check(PoolFull):
            _log.failure("reading fragment for {application}", failure,
                         application=req.application)
        if req.done:
            return
        self._in_flight.end(req, "503" if failure.check(PoolFull) else "error")
        if failure.check(PoolFull):
            message = {"error": E.SERVER_BUSY, "status": {"code": E.STATUS_BUSY}}
        else:
            message = {"error": E.INTERNAL_ERROR}
        self._answer(req, message)
